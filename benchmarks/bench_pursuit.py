"""Batched sparse coding: skdict vs SPAMS vs scikit-learn, side by side.

Codes N rows of dimension m over n_atoms unit-norm atoms with k non-zeros
(float32, OMP), and prints the median time of each method, its ratio to SPAMS
and to the single GEMM ``D @ X.T`` of the same shape (the floor of any coding
pass), and the mean relative residual ``||x - x_hat|| / ||x||``. skdict is
timed twice: computing the Gram matrix ``D Dᵀ`` itself, as a one-off call does,
and given it, as an estimator's coding pass is (the ratio the issue's goal is
about: with few rows and many atoms the Gram matrix dominates the first).

SPAMS gets float64 Fortran-ordered arrays (given float32 it returned all-zero
codes). scikit-learn's ``orthogonal_mp_gram`` runs on a slice of the rows and is
extrapolated linearly: it codes one row at a time in Python.

Run: ``python benchmarks/bench_pursuit.py [--n-samples 50000] [--repeats 3]``.
"""

import argparse
import statistics
import time

import numpy as np

from skdict.datasets import make_sparse_signals
from skdict._rows import relative_errors
from skdict.pursuit import sparse_encode


def _median_time(fn, repeats):
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def _residual(X, codes, D):
    return float(relative_errors(X, X - codes @ D).mean())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-samples", type=int, default=50_000)
    parser.add_argument("--n-features", type=int, default=512)
    parser.add_argument("--n-atoms", type=int, default=4096)
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--sklearn-rows", type=int, default=5_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    n, m, K, k = args.n_samples, args.n_features, args.n_atoms, args.k
    X, D, _ = make_sparse_signals(n, m, K, k, dtype=np.float32, random_state=0)
    print(f"coding N={n:,} rows, m={m}, n_atoms={K}, k={k}, float32, "
          f"{args.threads} threads, median of {args.repeats}")

    sparse_encode(X[:64], D, n_nonzero_coefs=k)  # compile the numba kernels first
    rows = []
    t_gemm, _ = _median_time(lambda: X @ D.T, args.repeats)
    rows.append(("GEMM D @ X.T (floor)", t_gemm, None))

    def skdict_omp():
        return sparse_encode(X, D, n_nonzero_coefs=k, sparse_output=True, n_jobs=args.threads)

    t_ours, codes = _median_time(skdict_omp, args.repeats)
    rows.append(("skdict sparse_encode (omp)", t_ours, _residual(X, codes, D)))

    # An estimator computes D Dᵀ once per dictionary, not once per coding pass;
    # with few rows and many atoms that product outweighs the coding itself.
    gram = D @ D.T

    def skdict_omp_gram():
        return sparse_encode(
            X, D, n_nonzero_coefs=k, gram=gram, sparse_output=True, n_jobs=args.threads
        )

    t_gram, codes = _median_time(skdict_omp_gram, args.repeats)
    rows.append(("skdict sparse_encode (omp, Gram given)", t_gram, _residual(X, codes, D)))

    def skdict_mp():
        return sparse_encode(
            X, D, n_nonzero_coefs=k, algorithm="mp", sparse_output=True, n_jobs=args.threads
        )

    t_mp, codes = _median_time(skdict_mp, args.repeats)
    rows.append(("skdict sparse_encode (mp)", t_mp, _residual(X, codes, D)))

    t_spams = None
    try:
        import spams
    except ImportError:
        print("spams is not installed (pip install 'skdict[bench]'): skipping it")
    else:
        Xf = np.asfortranarray(X.T, dtype=np.float64)
        Df = np.asfortranarray(D.T, dtype=np.float64)
        t_spams, codes = _median_time(
            lambda: spams.omp(Xf, Df, L=k, numThreads=args.threads), args.repeats
        )
        rows.append(("spams.omp (float64)", t_spams, _residual(X, codes.T.tocsr(), D)))

    from sklearn.linear_model import orthogonal_mp_gram
    from threadpoolctl import threadpool_limits

    s = min(args.sklearn_rows, n)
    gram64 = gram.astype(np.float64)
    with threadpool_limits(args.threads):
        t_slice, codes = _median_time(
            lambda: orthogonal_mp_gram(
                gram64, (D @ X[:s].T).astype(np.float64), n_nonzero_coefs=k
            ),
            1,
        )
    rows.append((f"sklearn orthogonal_mp_gram (x{n / s:g} of {s:,} rows)", t_slice * n / s,
                 _residual(X[:s], codes.T, D)))

    header = f"{'method':<48}{'time (s)':>10}{'vs SPAMS':>10}{'vs GEMM':>10}{'residual':>10}"
    print(header)
    print("-" * len(header))
    for name, seconds, residual in rows:
        vs_spams = f"{seconds / t_spams:.2f}x" if t_spams else "n/a"
        res = f"{residual:.4f}" if residual is not None else ""
        print(f"{name:<48}{seconds:>10.2f}{vs_spams:>10}{seconds / t_gemm:>9.2f}x{res:>10}")
    print("targets: skdict omp <= 0.5x SPAMS and <= 3x GEMM")


if __name__ == "__main__":
    main()
