"""Dictionary learning: skdict's DoubleBatchKSVD vs SPAMS trainDL vs scikit-learn.

Two races on synthetic signals with a known dictionary (20 dB noise):

1. small: m=64, 256 atoms, N=20,000, k=5. Time until 98% of the true atoms are
   recovered (1 - |cos| < 0.01). skdict is watched by a callback (its own time
   only); SPAMS and scikit-learn are black boxes, so they are rerun with doubling
   budgets and the first budget that reaches 98% is reported.
2. scale: m=512, 4096 atoms, N=50,000, k=16. SPAMS trains for two epochs; skdict
   gets the same wall-clock time (``max_time``). Atom recovery and signal
   recovered are reported for both.

SPAMS gets float64 Fortran-ordered arrays. Run:
``python benchmarks/bench_ksvd.py [--skip-scale] [--budget 120]``.
"""

import argparse
import time

import numpy as np
from sklearn.decomposition import MiniBatchDictionaryLearning

from skdict import DoubleBatchKSVD
from skdict.datasets import make_sparse_signals
from skdict.metrics import atom_recovery_rate, signal_recovered
from skdict.pursuit import sparse_encode

TARGET = 0.98


def _skdict_time_to_target(X, D_true, k, budget, **params):
    """Seconds of fitting until recovery >= TARGET (callback time excluded)."""
    state = {"excluded": 0.0, "reached": None, "recovery": 0.0}
    start = time.perf_counter()

    def watch(fit):
        tick = time.perf_counter()
        state["recovery"] = atom_recovery_rate(D_true, fit.components)
        if state["recovery"] >= TARGET:
            state["reached"] = tick - start - state["excluded"]
        state["excluded"] += time.perf_counter() - tick
        return state["reached"] is not None

    DoubleBatchKSVD(
        D_true.shape[0], n_nonzero_coefs=k, max_iter=100_000, tol=0, max_time=budget,
        callback=watch, random_state=0, **params,
    ).fit(X)
    return state["reached"], state["recovery"]


def _black_box_time_to_target(fit, D_true, budget):
    """Rerun ``fit(size)`` with doubling sizes; first (seconds, recovery) reaching TARGET."""
    size, spent, recovery = 1, 0.0, 0.0
    while spent < budget:
        start = time.perf_counter()
        D = fit(size)
        seconds = time.perf_counter() - start
        spent += seconds
        recovery = atom_recovery_rate(D_true, D)
        if recovery >= TARGET:
            return seconds, recovery
        size *= 2
    return None, recovery


def _spams_fit(X, K, k, threads, **kwargs):
    import spams

    Xf = np.asfortranarray(X.T, dtype=np.float64)
    return np.asarray(
        spams.trainDL(Xf, K=K, lambda1=k, mode=3, numThreads=threads, verbose=False, **kwargs)
    ).T


def _small_race(args):
    X, D_true, _ = make_sparse_signals(20_000, 64, 256, 5, dtype=np.float32, random_state=0)
    rows = []
    for label, params in [
        ("skdict DoubleBatchKSVD (full batch)", {}),
        ("skdict DoubleBatchKSVD (batch_size=4096)", {"batch_size": 4096}),
    ]:
        seconds, recovery = _skdict_time_to_target(X, D_true, 5, args.budget, **params)
        rows.append((label, seconds, recovery))
    try:
        import spams  # noqa: F401
    except ImportError:
        print("spams is not installed (pip install 'skdict[bench]'): skipping it")
    else:
        seconds, recovery = _black_box_time_to_target(
            lambda epochs: _spams_fit(X, 256, 5, args.threads, batchsize=512,
                                      iter=epochs * len(X) // 512),
            D_true, args.budget,
        )
        rows.append(("spams.trainDL(mode=3)", seconds, recovery))
    seconds, recovery = _black_box_time_to_target(
        lambda epochs: MiniBatchDictionaryLearning(
            256, alpha=0.1, batch_size=512, max_iter=epochs, random_state=0
        ).fit(X).components_,
        D_true, args.budget,
    )
    rows.append(("sklearn MiniBatchDictionaryLearning", seconds, recovery))

    print(f"\n1) time to {TARGET:.0%} atom recovery: m=64, 256 atoms, N=20,000, k=5, 20 dB "
          f"(budget {args.budget:g} s each)")
    header = f"{'method':<44}{'time (s)':>10}{'vs SPAMS':>10}{'recovery':>10}"
    print(header + "\n" + "-" * len(header))
    spams_time = next((s for name, s, _ in rows if name.startswith("spams")), None)
    for name, seconds, recovery in rows:
        shown = f"{seconds:.2f}" if seconds is not None else "not reached"
        ratio = f"{seconds / spams_time:.2f}x" if seconds and spams_time else "n/a"
        print(f"{name:<44}{shown:>10}{ratio:>10}{recovery:>10.1%}")


def _scale_race(args):
    n, m, K, k = 50_000, 512, 4096, 16
    X, D_true, _ = make_sparse_signals(n, m, K, k, dtype=np.float32, random_state=0)
    rows = []
    try:
        import spams  # noqa: F401
    except ImportError:
        print("spams is not installed: the scale race needs its time; using --budget")
        budget = args.budget
    else:
        start = time.perf_counter()
        D = _spams_fit(X, K, k, args.threads, batchsize=512, iter=2 * n // 512)
        budget = time.perf_counter() - start
        codes = sparse_encode(X, D, n_nonzero_coefs=k, sparse_output=True)
        rows.append(("spams.trainDL(mode=3), 2 epochs", budget, atom_recovery_rate(D_true, D),
                     signal_recovered(X, codes @ D)))
    for label, params in [
        ("skdict DoubleBatchKSVD (full batch)", {}),
        ("skdict DoubleBatchKSVD (batch_size=10,000)", {"batch_size": 10_000}),
    ]:
        start = time.perf_counter()
        model = DoubleBatchKSVD(
            K, n_nonzero_coefs=k, max_iter=100_000, tol=0, max_time=budget, random_state=0,
            **params,
        ).fit(X)
        seconds = time.perf_counter() - start
        rows.append((f"{label}, {model.n_iter_} it", seconds,
                     atom_recovery_rate(D_true, model.components_),
                     signal_recovered(X, model.inverse_transform(model.transform(X)))))

    print(f"\n2) learning at scale: m={m}, {K} atoms, N={n:,}, k={k}, 20 dB, "
          f"skdict given SPAMS's time ({budget:.0f} s)")
    header = f"{'method':<52}{'time (s)':>10}{'recovery':>10}{'signal rec.':>12}"
    print(header + "\n" + "-" * len(header))
    for name, seconds, recovery, signal in rows:
        print(f"{name:<52}{seconds:>10.1f}{recovery:>10.1%}{signal:>12.3f}")
    print("target: skdict >= 90% of atoms within SPAMS's two-epoch time")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=120.0,
                        help="seconds each method may spend in the small race")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-scale", action="store_true")
    args = parser.parse_args(argv)
    _small_race(args)
    if not args.skip_scale:
        _scale_race(args)


if __name__ == "__main__":
    main()
