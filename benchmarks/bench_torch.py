"""The torch backend against the numba backend: sparse coding and one fit iteration.

Codes N synthetic rows of dimension m over n_atoms atoms with k non-zeros
(float32, OMP and MP), and runs one DoubleBatchKSVD iteration (coding + atom
update + re-seeding) on them, with the numba backend, torch on the CPU and, when
torch finds a GPU, torch on CUDA. Prints the median time of each and its ratio
to numba (above 1: slower than numba), and the largest difference of the codes
from numba's.

Run: ``python benchmarks/bench_torch.py [--n-samples 20000] [--repeats 3]``.
"""

import argparse
import statistics
import time

import numpy as np

from skdict import DoubleBatchKSVD
from skdict.datasets import make_sparse_signals
from skdict.pursuit import sparse_encode


def _median_time(fn, repeats, sync):
    times, result = [], None
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        result = fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def _backends():
    """(label, backend, device, sync) for every backend this machine can run."""
    import torch

    runs = [("numba", "numba", "cpu", lambda: None), ("torch cpu", "torch", "cpu", lambda: None)]
    if torch.cuda.is_available():
        runs.append(("torch cuda", "torch", "cuda", torch.cuda.synchronize))
    return runs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-samples", type=int, default=20_000)
    parser.add_argument("--n-features", type=int, default=256)
    parser.add_argument("--n-atoms", type=int, default=1024)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)

    n, m, K, k = args.n_samples, args.n_features, args.n_atoms, args.k
    X, D, _ = make_sparse_signals(n, m, K, k, dtype=np.float32, random_state=0)
    print(f"N={n:,} rows, m={m}, n_atoms={K}, k={k}, float32, n_jobs={args.threads}, "
          f"median of {args.repeats}")
    print(f"{'task':<12} {'backend':<11} {'seconds':>9} {'vs numba':>9} {'max |diff|':>11}")
    for algorithm in ("omp", "mp"):
        reference, numba_time = None, None
        for label, backend, device, sync in _backends():
            def code():
                return sparse_encode(
                    X, D, n_nonzero_coefs=k, algorithm=algorithm, backend=backend,
                    device=device, n_jobs=args.threads,
                )

            code()  # compile the numba kernels / warm up the device
            seconds, codes = _median_time(code, args.repeats, sync)
            if reference is None:
                reference, numba_time = codes, seconds
            diff = float(np.abs(codes - reference).max())
            print(f"{algorithm + ' coding':<12} {label:<11} {seconds:>9.3f} "
                  f"{seconds / numba_time:>9.2f} {diff:>11.2e}")

    numba_time = None
    for label, backend, device, sync in _backends():
        def one_iteration():
            return DoubleBatchKSVD(
                K, n_nonzero_coefs=k, max_iter=1, tol=0, backend=backend, device=device,
                n_jobs=args.threads, random_state=0,
            ).fit(X)

        one_iteration()
        seconds, _ = _median_time(one_iteration, args.repeats, sync)
        numba_time = numba_time or seconds
        print(f"{'fit 1 iter':<12} {label:<11} {seconds:>9.3f} {seconds / numba_time:>9.2f}")


if __name__ == "__main__":
    main()
