"""Out-of-core scaling: time and peak memory of DoubleBatchKSVD on a memory map.

Writes a float32 ``.npy`` of synthetic signals (m=512, 4096 atoms, k=16, 20 dB)
once, chunk by chunk, then for 250k, 500k and 1M rows of it measures, each in a
fresh process so that peak RSS is that step's own:

- ``transform`` with ``sparse_output=True`` (CSR codes, never dense),
- one ``fit`` iteration with ``batch_size=100_000`` (numba backend).

Time should grow linearly with rows and peak RSS stay flat apart from the CSR
codes (target: <= 6 GB at 1M rows). Peak RSS counts the pages of the memory map
that were read, so it is an upper bound on the memory the process needed.

Run: ``python benchmarks/bench_scale.py [--rows 250000 500000 1000000] [--dir DIR]``.
"""

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

N_FEATURES, N_ATOMS, K = 512, 4096, 16


def _write_signals(path, n_rows, chunk=100_000):
    from skdict.datasets import make_sparse_signals

    _, D, _ = make_sparse_signals(1, N_FEATURES, N_ATOMS, K, random_state=0)
    X = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32,
                                  shape=(n_rows, N_FEATURES))
    for start in range(0, n_rows, chunk):
        stop = min(n_rows, start + chunk)
        X[start:stop], _, _ = make_sparse_signals(
            stop - start, N_FEATURES, N_ATOMS, K, dictionary=D, dtype=np.float32,
            random_state=start + 1,
        )
    X.flush()
    np.save(Path(path).with_suffix(".atoms.npy"), D)


def _measure(path, n_rows, step):
    """Run one step in this process; print a JSON line with time and peak RSS."""
    from skdict import DoubleBatchKSVD

    X = np.load(path, mmap_mode="r")[:n_rows]
    D = np.load(Path(path).with_suffix(".atoms.npy")).astype(np.float32)
    model = DoubleBatchKSVD(N_ATOMS, n_nonzero_coefs=K, batch_size=100_000, max_iter=1,
                            init=D, sparse_output=True, random_state=0)
    model.fit(X[:2000])  # compile the kernels outside the measurement
    start = time.perf_counter()
    if step == "transform":
        codes = model.transform(X)
        extra = {"nnz": int(codes.nnz)}
    else:
        model.set_params(init="data").fit(X)
        extra = {"signal_recovered": float(model.error_[-1])}
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"rows": n_rows, "step": step, "seconds": seconds, "peak_rss": peak,
                      **extra}))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[250_000, 500_000, 1_000_000])
    parser.add_argument("--dir", default=None, help="where to write the .npy (default: temp)")
    parser.add_argument("--measure", nargs=3, metavar=("PATH", "ROWS", "STEP"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        path, rows, step = args.measure
        _measure(path, int(rows), step)
        return

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = str(Path(tmp) / "signals.npy")
        start = time.perf_counter()
        _write_signals(path, max(args.rows))
        print(f"wrote {max(args.rows):,} x {N_FEATURES} float32 signals in "
              f"{time.perf_counter() - start:.0f} s; {N_ATOMS} atoms, k={K}")
        header = f"{'rows':>10}{'step':>26}{'time (s)':>10}{'s / 100k rows':>15}{'peak RSS (GB)':>15}"
        print(header + "\n" + "-" * len(header))
        for rows in args.rows:
            for step in ["transform", "fit"]:
                out = subprocess.run(
                    [sys.executable, __file__, "--measure", path, str(rows), step],
                    check=True, capture_output=True, text=True,
                ).stdout.strip().splitlines()[-1]
                r = json.loads(out)
                label = "transform (CSR)" if step == "transform" else "fit, 1 it of 100k rows"
                per = r["seconds"] / rows * 100_000
                print(f"{rows:>10,}{label:>26}{r['seconds']:>10.1f}{per:>15.2f}"
                      f"{r['peak_rss'] / 1e9:>15.2f}")
        print("target: peak RSS <= 6 GB at 1M rows; transform time linear in rows")


if __name__ == "__main__":
    main()
