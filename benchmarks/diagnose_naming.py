"""What drives DB-KSVD's less specific, less unique atom names on bench_real?

On bench_real's sentence embeddings (1024 atoms, L0 = 8) the SAE's atom names
were more specific (0.751 vs 0.669) and more unique (0.910 vs 0.759). Four
suspects, measured for each model on the held-out rows:

* atoms used in both signs: the share of atoms whose minority sign has at least
  ``skdict._dictionary.MIN_SIGN_SHARE`` of their uses, and the minority sign's share of all uses
  (one name per atom describes only one direction);
* atoms close to single training rows: the share within cos 0.8 of one row
  (``init="data"`` starts every atom on a row);
* coherence: the largest and the mean nearest-neighbour ``|cos|`` between atoms;
* usage skew: the share of all uses taken by the top 1% of atoms, and the Gini
  coefficient of the usage.

Then the remedies they point at (non-negative codes, an init that is not data
rows) with their specificity and unique names. Run:
``python benchmarks/diagnose_naming.py [--n-sentences N] [--atoms K]``; writes
``benchmarks/results/real_60k/diagnosis.md``.
"""

import argparse
import time
from pathlib import Path

import numpy as np

from bench_real import L0, _corpus_data, _fit_ksvd, _fit_sae, _log
from skdict._dictionary import atom_usage, encoded
from skdict._rows import _unit_rows
from skdict.metrics import coherence, dictionary_scores

NEAR_ROW_COS = 0.8
VARIANTS = {
    "DB-KSVD signed, init=data (default)": ("ksvd", {}),
    "DB-KSVD signed, init=random": ("ksvd", {"init": "random"}),
    "DB-KSVD positive, init=data": ("ksvd", {"positive_code": True}),
    "DB-KSVD positive, init=random": ("ksvd", {"positive_code": True, "init": "random"}),
    "SAE TopK (defaults)": ("sae", {}),
    "SAE AbsTopK (defaults)": ("sae", {"activation": "abstopk"}),
}


def sign_usage(codes):
    """Share of alive atoms used in both signs (``Units.both``), and the minority
    sign's share of all uses."""
    units = atom_usage(codes.tocsc())
    uses = np.bincount(codes.indices, minlength=codes.shape[1])
    negative = np.bincount(codes.indices[codes.data < 0], minlength=codes.shape[1])
    minority = np.minimum(negative, uses - negative)
    return units.both[units.alive].mean(), minority.sum() / uses.sum()


def near_rows(D, X_train, threshold=NEAR_ROW_COS, chunk=8192):
    """Share of atoms within cos `threshold` (up to sign) of some training row."""
    D = _unit_rows(np.asarray(D, dtype=np.float32))
    best = np.zeros(D.shape[0], dtype=np.float32)
    for start in range(0, X_train.shape[0], chunk):
        rows = _unit_rows(np.asarray(X_train[start:start + chunk], dtype=np.float32))
        best = np.maximum(best, np.abs(D @ rows.T).max(axis=1))
    return float(np.mean(best >= threshold))


def neighbour_cos(D):
    """Mean over atoms of the largest ``|cos|`` with another atom."""
    D = _unit_rows(np.asarray(D, dtype=np.float64))
    cos = np.abs(D @ D.T)
    np.fill_diagonal(cos, 0.0)
    return float(cos.max(axis=1).mean())


def usage_skew(codes):
    """Share of uses by the top 1% of atoms, and the Gini coefficient of usage."""
    usage = np.sort(np.diff(codes.tocsc().indptr))[::-1].astype(np.float64)
    top = usage[:max(1, usage.size // 100)].sum() / usage.sum()
    ascending = usage[::-1]
    n = ascending.size
    gini = (2 * np.arange(1, n + 1) - n - 1) @ ascending / (n * ascending.sum())
    return float(top), float(gini)


def diagnose(model, X_train, X_test, bank):
    run = encoded(model, X_test)
    both, minority = sign_usage(run.codes)
    top, gini = usage_skew(run.codes)
    scores = dictionary_scores(model, X_test, bank, codes=run.codes,
                               scores=["signal_recovered", "specificity", "unique_name_ratio"])
    return {
        "test SR": scores["signal_recovered"],
        "both signs": both, "minority uses": minority,
        "near a row": near_rows(model.components_, X_train),
        "coherence": coherence(model), "mean NN cos": neighbour_cos(model.components_),
        "top 1% uses": top, "Gini": gini,
        "specific": scores["specificity"], "unique names": scores["unique_name_ratio"],
    }


def _table(rows):
    columns = list(rows[0][2])
    lines = ["| model | fit s | " + " | ".join(columns) + " |",
             "|---" * (len(columns) + 2) + "|"]
    for label, seconds, values in rows:
        lines.append(f"| {label} | {seconds:.0f} | "
                     + " | ".join(f"{values[c]:.3f}" for c in columns) + " |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-sentences", type=int, default=60_000)
    parser.add_argument("--atoms", type=int, default=1024)
    parser.add_argument("--out", default="benchmarks/results/real_60k/diagnosis.md")
    args = parser.parse_args(argv)
    X, bank, *_ = _corpus_data(args.n_sentences)
    n_train = int(0.8 * X.shape[0])
    X_train, X_test = X[:n_train], X[n_train:]
    rows = []
    for label, (kind, params) in VARIANTS.items():
        _log(label)
        fit = _fit_ksvd if kind == "ksvd" else _fit_sae
        model, seconds = fit(X_train, args.atoms, **params)
        rows.append((label, seconds, diagnose(model, X_train, X_test, bank)))
        _log(rows[-1][2])
    text = (f"### {args.atoms} atoms, L0 = {L0}, {n_train} train / {X_test.shape[0]} test rows"
            f" ({time.strftime('%Y-%m-%d')})\n\n{_table(rows)}\n")
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
