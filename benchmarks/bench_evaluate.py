"""Everything after the fit, at the fit's scale: encode, describe, explore, score.

Runs the ``skdict`` commands a user runs after ``skdict fit``, each in its own
process, on 200,000 real sentence embeddings (all-MiniLM-L6-v2, 384-d, the
``bench-real`` corpus with every sentence of every man page; fewer rows if this
machine's man pages hold fewer) with a bank of 2,500 concepts (the 1,000
ImageNet class names and the 1,500 most frequent words of the corpus), at 1024
and 4096 atoms, and prints wall time and peak RSS of each, and each one's time
as a multiple of ``encode`` on the same rows.

Goals (2 cores, 4096 atoms): ``score`` <= 1.5x ``encode`` when it encodes
itself, <= 0.5x given ``--codes``; ``explore`` <= 2x; ``describe`` <= 1.2x;
peak RSS of each <= 1.5 GB.

Run: ``python benchmarks/bench_evaluate.py`` (embeds the corpus once, about 20
minutes on 2 cores, cached under ``~/.cache/skdict``); ``--rows 50000 --atoms
1024`` for a quick look.
"""

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

import _real_corpus as corpus
from _commands import time_commands
from skdict import ConceptBank
from skdict.explore import site_size

N_CLASSES_AND_WORDS = (1000, 1500)


def _log(*args):
    print(time.strftime("%H:%M:%S"), *args, flush=True)


def load_data(n_rows, log=_log):
    """``(X, bank)``: the first `n_rows` corpus sentences' embeddings and the concept bank."""
    sentences = corpus.build_corpus(per_page=None)[:n_rows]
    X = corpus.embed(sentences, label="evaluate", log=log)
    names = corpus.concept_names(sentences, n_words=N_CLASSES_AND_WORDS[1])
    bank = ConceptBank(names, corpus.embed(names, label="evaluate-concepts", log=log))
    return X, bank


def commands(folder, n_atoms, args):
    """The commands of one dictionary size, in the order a user runs them."""
    X, bank = folder / "X.npy", folder / "bank.npz"
    model, codes, site = (folder / f"{n_atoms}.skdict", folder / f"{n_atoms}-codes.npz",
                          folder / f"site-{n_atoms}")
    concepts = ["--concepts", bank]
    return [
        ("fit", ["fit", X, "--n-components", n_atoms, "--n-nonzero", args.n_nonzero,
                 "--batch-size", args.batch_size, "--max-iter", args.max_iter, "-o", model]),
        ("encode", ["encode", model, X, "-o", codes]),
        ("describe --embeddings", ["describe", model, "--embeddings", X, *concepts]),
        ("describe --codes", ["describe", model, "--codes", codes, *concepts]),
        ("explore", ["explore", model, X, "--out", site, *concepts]),
        ("explore --codes", ["explore", model, X, "--out", site, "--codes", codes, *concepts]),
        ("score", ["score", model, X, *concepts]),
        ("score --codes", ["score", model, X, "--codes", codes, *concepts]),
    ], site


def _table(results, n_rows):
    sizes = list(results)
    lines = [
        f"| command ({n_rows:,} rows) | " + " | ".join(f"{k} atoms" for k in sizes)
        + " | " + " | ".join(f"x encode ({k})" for k in sizes) + " |",
        "|---" * (1 + 2 * len(sizes)) + "|",
    ]
    for label in results[sizes[0]]:
        cells = [f"{results[k][label][0]:.1f} s, {results[k][label][1]:.2f} GB" for k in sizes]
        ratios = [f"{results[k][label][0] / results[k]['encode'][0]:.2f}" for k in sizes]
        lines.append(f"| `skdict {label}` | " + " | ".join(cells + ratios) + " |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--atoms", type=int, nargs="+", default=[1024, 4096])
    parser.add_argument("--n-nonzero", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=50_000)
    parser.add_argument("--max-iter", type=int, default=5)
    args = parser.parse_args(argv)

    X, bank = load_data(args.rows)
    _log(f"{X.shape[0]:,} x {X.shape[1]} embeddings, {len(bank):,} concepts")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        np.save(folder / "X.npy", X)
        bank.save(folder / "bank.npz")
        for n_atoms in args.atoms:
            _log(f"{n_atoms} atoms, k = {args.n_nonzero}:")
            steps, site = commands(folder, n_atoms, args)
            results[n_atoms] = time_commands(steps, log=_log)
            n_files, n_bytes = site_size(site)
            _log(f"  explorer: {n_files} files, {n_bytes / 2**20:.1f} MB")
    print()
    print(_table(results, X.shape[0]))
    print("\ngoals (4096 atoms): score <= 1.5x encode, score --codes <= 0.5x, "
          "explore <= 2x, describe <= 1.2x; peak RSS of each <= 1.5 GB")


if __name__ == "__main__":
    main()
