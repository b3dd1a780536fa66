"""The ``skdict`` command (also ``python -m skdict``)."""

import argparse
import time

from sklearn.decomposition import MiniBatchDictionaryLearning

from .datasets import make_sparse_signals
from .ksvd import DoubleBatchKSVD
from .metrics import atom_recovery_rate, signal_recovered


def _recovery_table(seeds, max_iter):
    """The K-SVD paper's synthetic experiment, skdict vs scikit-learn."""
    rows = []
    for name, make in [
        ("DoubleBatchKSVD", lambda s: DoubleBatchKSVD(
            50, n_nonzero_coefs=3, max_iter=max_iter, tol=0, random_state=s)),
        ("sklearn MiniBatchDictionaryLearning", lambda s: MiniBatchDictionaryLearning(
            50, transform_algorithm="omp", transform_n_nonzero_coefs=3, max_iter=max_iter,
            random_state=s)),
    ]:
        recovery, signal, seconds = [], [], []
        for seed in range(seeds):
            X, D_true, _ = make_sparse_signals(random_state=seed)
            start = time.perf_counter()
            model = make(seed).fit(X)
            seconds.append(time.perf_counter() - start)
            recovery.append(atom_recovery_rate(D_true, model.components_))
            signal.append(signal_recovered(X, model.transform(X) @ model.components_))
        rows.append((name, sum(recovery) / seeds, sum(signal) / seeds, sum(seconds) / seeds))
    return rows


def _demo(args):
    seeds, max_iter = (2, 20) if args.quick else (5, 80)
    print(
        "K-SVD synthetic experiment (Aharon et al. 2006): 20x50 dictionary, 1500 signals "
        f"of 3 atoms, 20 dB noise, {max_iter} iterations, mean of {seeds} seeds"
    )
    header = f"{'method':<38}{'atom recovery':>15}{'signal recovered':>18}{'fit time (s)':>14}"
    print(header)
    print("-" * len(header))
    for name, recovery, signal, seconds in _recovery_table(seeds, max_iter):
        print(f"{name:<38}{recovery:>15.1%}{signal:>18.3f}{seconds:>14.2f}")
    return 0


def main(argv=None):
    """Run the ``skdict`` command line; return the exit code."""
    parser = argparse.ArgumentParser(prog="skdict", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run the built-in demonstration")
    demo.add_argument("--quick", action="store_true", help="fewer seeds and iterations")
    demo.set_defaults(run=_demo)
    args = parser.parse_args(argv)
    return args.run(args)
