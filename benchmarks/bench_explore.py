"""Atom explorer at scale: build time, file sizes and first paint for 16,384 atoms.

A top-k coder over random unit atoms stands in for a fitted dictionary (the
explorer only needs ``components_``, ``transform`` and ``inverse_transform``),
so that the figures measure the explorer, not a dictionary fit. The site is
then opened in headless Debian chromium (``/usr/bin/chromium``) when present,
and the time until the atom list shows is reported.

Run: ``python benchmarks/bench_explore.py [--atoms 16384] [--samples 4000]``.
"""

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator

from skdict import ConceptBank
from skdict.explore import build_site


class TopKCoder(BaseEstimator):
    """Codes each row by its `k` largest correlations with fixed unit atoms."""

    def __init__(self, components, k=32):
        self.components = components
        self.k = k

    def fit(self, X=None, y=None):
        self.components_ = self.components
        return self

    def transform(self, X):
        blocks = []
        for start in range(0, len(X), 512):
            corr = X[start : start + 512] @ self.components_.T
            keep = np.argpartition(-np.abs(corr), self.k - 1, axis=1)[:, : self.k]
            rows = np.repeat(np.arange(len(corr)), self.k)
            values = np.take_along_axis(corr, keep, axis=1).ravel()
            blocks.append(sp.csr_matrix((values, (rows, keep.ravel())), shape=corr.shape))
        return sp.vstack(blocks).tocsr()

    def inverse_transform(self, codes):
        return np.asarray(codes @ self.components_)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--atoms", type=int, default=16384)
    parser.add_argument("--samples", type=int, default=4000)
    parser.add_argument("--features", type=int, default=384)
    parser.add_argument("--concepts", type=int, default=1000)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    D = rng.normal(size=(args.atoms, args.features)).astype(np.float32)
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    X = rng.normal(size=(args.samples, args.features)).astype(np.float32)
    images = rng.integers(0, 255, size=(args.samples, 16, 16), dtype=np.uint8)
    bank = ConceptBank(
        [f"concept {i}" for i in range(args.concepts)],
        rng.normal(size=(args.concepts, args.features)),
    )
    est = TopKCoder(D).fit()

    out = Path(tempfile.mkdtemp(prefix="skdict-explore-bench-"))
    start = time.perf_counter()
    index = build_site(est, X, out, bank=bank, images=images, top_k=16)
    build_s = time.perf_counter() - start

    files = [p for p in out.rglob("*") if p.is_file()]
    size = {p.relative_to(out).as_posix(): p.stat().st_size for p in files}
    first = sum(size[name] for name in ("index.html", "data/overview.js",
                                        "assets/explore.js", "assets/explore.css"))
    pages = [v for k, v in size.items() if k.startswith("data/pages/")]
    print(f"{args.atoms} atoms, {args.samples} samples x {args.features} features, "
          f"{args.concepts} concepts")
    print(f"build_site: {build_s:.1f} s, {len(files)} files, {sum(size.values()) / 1e6:.1f} MB")
    print(f"first paint loads {first / 1e3:.0f} kB; atom list data/atoms.js "
          f"{size['data/atoms.js'] / 1e3:.0f} kB; {len(pages)} atom pages of "
          f"{np.mean(pages) / 1e3:.0f} kB on average")

    if Path("/usr/bin/chromium").exists():
        from playwright.sync_api import sync_playwright

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium")
            page = browser.new_page()
            start = time.perf_counter()
            page.goto(index.as_uri())
            page.wait_for_selector("#stat-atoms")
            overview_s = time.perf_counter() - start
            page.wait_for_selector("#atom-rows tr")
            list_s = time.perf_counter() - start
            start = time.perf_counter()
            page.goto(index.as_uri() + f"#/atom/{args.atoms - 1}")
            page.wait_for_selector("#top-samples img")
            atom_s = time.perf_counter() - start
            browser.close()
        print(f"chromium: overview after {overview_s:.2f} s, sorted atom list after "
              f"{list_s:.2f} s, last atom's page after {atom_s:.2f} s")
    print(f"site: {index}")


if __name__ == "__main__":
    main()
