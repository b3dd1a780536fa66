"""Paper scale: 1M x 768 embeddings into 16,384 atoms with k = 32, out of core.

The DB-KSVD paper learns tens of thousands of atoms from millions of CLIP
embeddings. This script builds a float32 memory map of that shape from a known
dictionary (k non-zeros per row drawn with Zipf-like atom frequencies, as real
concepts are far from equally common, plus 20 dB noise) and a held-out set of
10,000 rows, then

1. fits DoubleBatchKSVD in minibatches of ``--batch-size`` rows read from the
   memory map, scoring the held-out rows every ``--eval-every`` iterations, and
   stops at the plateau: when three evaluations in a row gained less than 1%
   (relative) of the held-out signal recovered, or at ``--budget`` minutes;
2. times each phase of one iteration on its own with the learned dictionary
   (minibatch read, Gram matrix, the ``X Dᵀ`` GEMM, the pursuit inner loop, the
   atom update, re-seeding), so that the pursuit's cost above its GEMM floor is
   visible, and scales them to 100k rows;
3. transforms all rows to CSR codes (chunk by chunk, never dense): in
   process with ``--no-evaluate`` or ``--dask``, else as ``skdict encode`` in 5.;
4. trains a SparseAutoencoder (same latents, same k, default parameters) on the
   same minibatches for the same wall time, one ``partial_fit`` per minibatch,
   scoring the held-out rows after each: the two time-to-quality curves go to
   one plot;
5. runs what a user runs next, each command in its own process with its wall
   time and peak RSS: ``skdict encode``, then ``score``, ``describe`` and
   ``explore`` given the codes ``encode`` wrote (``--codes``), with a bank of
   2,500 random unit concepts in the embeddings' space (skipped with
   ``--no-evaluate``);
6. with ``--dask``, transforms every row and runs a dask fit iteration's
   coding step (every row coded and scored) on a 2-worker LocalCluster whose
   workers read their blocks from the memory map themselves, and compares both
   with the single-process results.

Peak RSS is the process's maximum resident set; it counts the pages of the
memory map that were read, so it is an upper bound on what the fit needed.

Goals (2 idle cores): fit to the held-out plateau <= 20 min, peak RSS <= 8 GB,
transform of 1M rows <= 10 min, OMP <= 2.0x and MP <= 1.3x their GEMM floor;
each of ``score --codes``, ``describe`` and ``explore`` <= 10 min and <= 8 GB.

Run: ``python benchmarks/bench_paper_scale.py`` (about an hour and 3.2 GB of
disk in a temp dir); ``--rows 100000 --batch-size 20000 --max-iter 4 --no-sae``
for a quick look at the paper's shape; ``--backend torch --device cuda`` on a GPU.
"""

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

import skdict
from _commands import time_commands
from skdict import ConceptBank, DoubleBatchKSVD
from skdict.explore import site_size
from skdict.metrics import atom_recovery_rate, signal_recovered
from skdict._backend.numba import NumbaBackend
from skdict.pursuit import GramEncoder

CHUNK = 20_000  # rows generated or transformed per step: bounds memory


def _zipf_supports(rng, n_rows, n_atoms, k, exponent=1.0):
    """k distinct atoms per row, atom j drawn with weight ~ 1 / (j + 10)^exponent.

    Gumbel top-k: the k largest of log-weight + Gumbel noise are a weighted
    sample without replacement. Atom order is shuffled so frequency is not index.
    """
    log_w = -exponent * np.log(np.arange(n_atoms) + 10.0)
    log_w = log_w[rng.permutation(n_atoms)].astype(np.float32)
    supports = np.empty((n_rows, k), dtype=np.int64)
    step = max(1, 2**25 // n_atoms)
    for start in range(0, n_rows, step):
        stop = min(n_rows, start + step)
        # rng.random can return 0, whose Gumbel key would be -inf: clip to tiny.
        u = np.maximum(rng.random((stop - start, n_atoms), dtype=np.float32), np.float32(1e-30))
        keys = log_w - np.log(-np.log(u))
        supports[start:stop] = np.argpartition(-keys, k, axis=1)[:, :k]
    return supports


def _signals(rng, D, n_rows, k, snr_db):
    supports = _zipf_supports(rng, n_rows, D.shape[0], k)
    coefs = rng.standard_normal((n_rows, k)).astype(np.float32)
    X = np.einsum("nk,nkf->nf", coefs, D[supports], optimize=True)
    power = np.mean(X * X)
    X += rng.standard_normal(X.shape).astype(np.float32) * np.sqrt(power / 10 ** (snr_db / 10))
    return X.astype(np.float32)


def write_data(folder, n_rows, n_features, n_atoms, k, n_test, snr_db=20.0, seed=0):
    """Write train.npy (memory map), test.npy and atoms.npy; return their paths."""
    rng = np.random.default_rng(seed)
    D = rng.standard_normal((n_atoms, n_features)).astype(np.float32)
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    folder = Path(folder)
    np.save(folder / "atoms.npy", D)
    np.save(folder / "test.npy", _signals(rng, D, n_test, k, snr_db))
    X = np.lib.format.open_memmap(folder / "train.npy", mode="w+", dtype=np.float32,
                                  shape=(n_rows, n_features))
    step = max(1, min(CHUNK, 2**28 // (n_features * k * 4)))
    for start in range(0, n_rows, step):
        stop = min(n_rows, start + step)
        X[start:stop] = _signals(rng, D, stop - start, k, snr_db)
    X.flush()
    del X
    return folder / "train.npy", folder / "test.npy", folder / "atoms.npy"


def _held_out(D, X_test, k, backend, device):
    from skdict.pursuit import sparse_encode

    codes = sparse_encode(X_test, D, n_nonzero_coefs=k, sparse_output=True,
                          backend=backend, device=device)
    return signal_recovered(X_test, codes @ D)


def _peak_rss_gb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def fit_to_plateau(X, X_test, args):
    """Fit with minibatches, scoring held-out rows; return (model, curve, seconds)."""
    curve, start = [], time.perf_counter()

    def callback(state):
        iteration = state.estimator.n_iter_
        if iteration % args.eval_every:
            return False
        score = _held_out(state.components, X_test, args.k, args.backend, args.device)
        curve.append((time.perf_counter() - start, iteration, score))
        print(f"  it {iteration:4d}  {curve[-1][0]:7.0f} s  held-out signal recovered "
              f"{score:.4f}", flush=True)
        gains = [b[2] - a[2] for a, b in zip(curve[-4:-1], curve[-3:])]
        return len(curve) >= 4 and all(g < 0.01 * abs(score) for g in gains)

    model = DoubleBatchKSVD(
        args.atoms, n_nonzero_coefs=args.k, pursuit=args.pursuit, batch_size=args.batch_size,
        max_iter=args.max_iter,
        tol=0, max_time=args.budget * 60, sparse_output=True, backend=args.backend,
        device=args.device, random_state=0, callback=callback,
    )
    model.fit(X)
    return model, curve, time.perf_counter() - start


def _timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def time_phases(model, X, args):
    """Seconds of each phase of one iteration, on one minibatch, with model's atoms."""
    from skdict._ksvd.reseed import reseed

    rng = np.random.default_rng(1)
    rows = np.sort(rng.choice(X.shape[0], min(args.batch_size, X.shape[0]), replace=False))
    D = np.ascontiguousarray(model.components_, dtype=np.float32)
    phases = {}
    phases["read minibatch (I/O)"], X_batch = _timed(lambda: np.asarray(X[rows]))
    phases["Gram D Dᵀ"], gram = _timed(lambda: D @ D.T)
    step = NumbaBackend().chunk_rows(D.shape[0], args.k, 4)

    def gemm_only():
        for s in range(0, X_batch.shape[0], step):
            X_batch[s:s + step] @ D.T

    floor, _ = _timed(gemm_only)
    phases["GEMM X Dᵀ (floor)"] = floor
    t_encode = {}
    for algorithm in ("omp", "mp"):
        encoder = GramEncoder(D, args.k, algorithm=algorithm, gram=gram)
        t_encode[algorithm], coded = _timed(lambda: encoder.encode(X_batch, sparse_output=True))
        phases[f"{algorithm.upper()} inner loop"] = t_encode[algorithm] - floor
        if algorithm == args.pursuit:
            codes = coded
        if algorithm == "omp":
            wrong = encoder._coder.mispredictions.mean()
    D_work = D.copy()
    phases["atom update"], residual = _timed(
        lambda: model._update_dictionary(X_batch, D_work, codes.copy(), NumbaBackend())
    )
    usage = np.bincount(codes.indices, minlength=D.shape[0])
    phases["re-seeding"], _ = _timed(lambda: reseed(D_work, residual, usage, gram.copy()))
    return phases, rows.size, t_encode, wrong


def sae_curve(X, X_test, args, seconds):
    """SparseAutoencoder defaults, one partial_fit per minibatch, for `seconds`."""
    from skdict import SparseAutoencoder

    device = "cpu" if args.device in (None, "cpu") else args.device
    sae = SparseAutoencoder(args.atoms, k=args.k, device=device, random_state=0)
    rng = np.random.default_rng(2)
    curve, start, seen = [], time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        perm = rng.permutation(X.shape[0])
        for lo in range(0, X.shape[0], args.batch_size):
            sae.partial_fit(np.asarray(X[np.sort(perm[lo:lo + args.batch_size])]))
            seen += min(args.batch_size, X.shape[0] - lo)
            score = signal_recovered(X_test, sae.inverse_transform(sae.transform(X_test)))
            curve.append((time.perf_counter() - start, seen, score))
            print(f"  SAE {seen:>10,} rows  {curve[-1][0]:7.0f} s  held-out {score:.4f}",
                  flush=True)
            if time.perf_counter() - start >= seconds:
                break
    return curve


def evaluate(folder, model, train, args):
    """Time ``skdict encode``, then ``score``, ``describe`` and ``explore`` on its
    codes, each in its own process, with a bank of random unit concepts."""
    folder = Path(folder)
    rng = np.random.default_rng(3)
    bank = ConceptBank([f"concept {i}" for i in range(args.concepts)],
                       rng.standard_normal((args.concepts, args.features)))
    paths = {name: folder / name for name in ("model.skdict", "bank.npz", "codes.npz", "site")}
    skdict.save(model, paths["model.skdict"])
    bank.save(paths["bank.npz"])
    model_path, codes, concepts = paths["model.skdict"], paths["codes.npz"], [
        "--concepts", paths["bank.npz"]]
    results = time_commands([
        ("encode", ["encode", model_path, train, "-o", codes]),
        ("score --codes", ["score", model_path, train, "--codes", codes, *concepts]),
        ("describe --codes", ["describe", model_path, "--codes", codes, *concepts]),
        ("explore --codes", ["explore", model_path, train, "--out", paths["site"], "--codes",
                             codes, *concepts]),
    ])
    n_files, n_bytes = site_size(paths["site"])
    print(f"{'command':<28}{'min':>8}{'peak RSS GB':>13}{'x encode':>10}")
    for label, (seconds, rss) in results.items():
        print(f"{label:<28}{seconds / 60:>8.1f}{rss:>13.2f}"
              f"{seconds / results['encode'][0]:>10.2f}")
    print(f"explorer: {n_files:,} files, {n_bytes / 2**20:.0f} MB; {args.concepts:,} concepts")


def _dask_rows(path, start, stop):
    return np.asarray(np.load(path, mmap_mode="r")[start:stop])


def _local_relative_error(X, D, codes):
    """Mean of ||x - c D|| / ||x|| over all rows, from the in-process codes."""
    total = 0.0
    for s in range(0, X.shape[0], CHUNK):
        rows = np.asarray(X[s:s + CHUNK], dtype=np.float64)
        residual = rows - codes[s:s + CHUNK] @ D.astype(np.float64)
        norms = np.linalg.norm(rows, axis=1)
        total += np.sum(np.linalg.norm(residual, axis=1) / np.where(norms > 0, norms, 1))
    return total / X.shape[0]


def dask_check(model, path, X, local, local_time):
    """On a 2-worker LocalCluster reading the memory map: transform every row,
    and run a dask fit iteration's coding step (every row coded with the current
    atoms and scored on the workers); compare both with the in-process results."""
    import dask
    import dask.array as da
    from distributed import Client, LocalCluster

    n, m = X.shape
    blocks = [
        da.from_delayed(dask.delayed(_dask_rows)(str(path), s, min(n, s + CHUNK)),
                        shape=(min(n, s + CHUNK) - s, m), dtype=np.float32)
        for s in range(0, n, CHUNK)
    ]
    X_dask = da.concatenate(blocks, axis=0)
    D = np.ascontiguousarray(model.components_, dtype=np.float32)
    with LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster):
        dask_time, codes = _timed(lambda: model.transform(X_dask).compute())
        error_time, remote_error = _timed(
            lambda: 1 - model._signal_recovered(X_dask, None, D, None))
    codes = sp.csr_matrix(codes)
    same_support = np.mean([
        np.array_equal(np.sort(local[i].indices), np.sort(codes[i].indices))
        for i in range(min(2000, n))
    ])
    print(f"dask 2-worker transform: {dask_time:.0f} s vs {local_time:.0f} s in process "
          f"(overhead {dask_time / local_time:.2f}x); identical supports on {same_support:.1%} "
          f"of the first 2000 rows, max |code difference| {abs(local - codes).max():.2e}")
    local_error = _local_relative_error(X, D, local)
    print(f"dask fit iteration, coding + scoring every row on the workers: {error_time:.0f} s; "
          f"mean relative error {remote_error:.6f} (in process, from the codes above: "
          f"{local_error:.6f})")


def _plot(curves, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, curve in curves.items():
        if curve:
            ax.plot([c[0] / 60 for c in curve], [c[2] for c in curve], marker="o", label=name)
    ax.set_xlabel("wall time (min)")
    ax.set_ylabel("held-out signal recovered")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=768)
    parser.add_argument("--atoms", type=int, default=16_384)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--test-rows", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=100_000)
    parser.add_argument("--eval-every", type=int, default=2)
    parser.add_argument("--budget", type=float, default=60, help="minutes for the fit")
    parser.add_argument("--max-iter", type=int, default=10_000,
                        help="iterations at most (fewer for a quick check)")
    parser.add_argument("--pursuit", default="omp", choices=["omp", "mp"],
                        help="the fit's sparse coder (the phases time both)")
    parser.add_argument("--backend", default="auto", choices=["auto", "numba", "torch"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-sae", action="store_true")
    parser.add_argument("--dask", action="store_true")
    parser.add_argument("--no-evaluate", action="store_true")
    parser.add_argument("--concepts", type=int, default=2500,
                        help="random unit concepts of the evaluation's bank")
    parser.add_argument("--dir", default=None, help="where to write the data (default: temp)")
    parser.add_argument("--plot", default="paper_scale_time_to_quality.png")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        t_write, (train, test, atoms) = _timed(lambda: write_data(
            tmp, args.rows, args.features, args.atoms, args.k, args.test_rows))
        X = np.load(train, mmap_mode="r")
        X_test, D_true = np.load(test), np.load(atoms)
        print(f"wrote {args.rows:,} x {args.features} float32 rows ({X.nbytes / 1e9:.1f} GB) "
              f"in {t_write:.0f} s; {args.atoms} atoms, k={args.k}, batch {args.batch_size:,}")

        _timed(lambda: DoubleBatchKSVD(64, n_nonzero_coefs=4, max_iter=1, random_state=0)
               .fit(X_test[:256]))  # compile the kernels outside the measurements
        print("fit (held-out scored every", args.eval_every, "iterations):")
        model, curve, t_fit = fit_to_plateau(X, X_test, args)
        rss_fit = _peak_rss_gb()
        recovery = atom_recovery_rate(D_true, model.components_)
        held_out = _held_out(model.components_, X_test, args.k, args.backend, args.device)

        phases, batch_rows, t_encode, wrong = time_phases(model, X, args)
        # `skdict encode` below is the transform of every row; transform in
        # process only where nothing else does (or dask needs the codes).
        in_process = args.no_evaluate or args.dask
        if in_process:
            t_transform, codes = _timed(lambda: model.transform(X))
        rss = _peak_rss_gb()

        print(f"\nfit: {t_fit / 60:.1f} min, {model.n_iter_} iterations of {batch_rows:,} rows; "
              f"held-out signal recovered {held_out:.4f}; atom recovery {recovery:.3f}; "
              f"peak RSS after fit {rss_fit:.2f} GB")
        print(f"{'phase (one iteration)':<28}{'s':>9}{'s / 100k rows':>15}")
        for name, seconds in phases.items():
            per = seconds * 100_000 / batch_rows if name != "Gram D Dᵀ" else seconds
            print(f"{name:<28}{seconds:>9.2f}{per:>15.2f}")
        floor = phases["GEMM X Dᵀ (floor)"]
        for algorithm, seconds in t_encode.items():
            print(f"{algorithm.upper()} (GEMM + inner loop) = {seconds / floor:.2f}x its GEMM "
                  f"floor ({args.features} x {args.atoms}, k={args.k})")
        print(f"OMP wrong predictions per row (last chunk): {wrong:.3f}")
        if in_process:
            print(f"transform of {args.rows:,} rows (CSR, {codes.nnz:,} non-zeros): "
                  f"{t_transform / 60:.1f} min; peak RSS {rss:.2f} GB")

        if not args.no_evaluate:
            print("after the fit: skdict commands, each in its own process")
            evaluate(tmp, model, train, args)

        curves = {"DoubleBatchKSVD": curve}
        if not args.no_sae:
            print("SparseAutoencoder, defaults, same minibatches and wall time:")
            curves["SparseAutoencoder"] = sae_curve(X, X_test, args, t_fit)
        if args.dask:
            dask_check(model, train, X, codes, t_transform)
        plot = _plot(curves, args.plot)
        if plot:
            print(f"time-to-quality plot: {plot}")
        print("goals: fit <= 20 min to the held-out plateau (0.879), peak RSS <= 8 GB, "
              "transform <= 10 min, OMP <= 2.0x and MP <= 1.3x the GEMM; score --codes, "
              "describe and explore <= 10 min and <= 8 GB each")


if __name__ == "__main__":
    main()
