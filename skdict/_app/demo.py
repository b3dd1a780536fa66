"""``skdict demo``: the end-to-end run on the built-in data, its table and report.

Part 1 is the synthetic experiment of the K-SVD paper (Aharon, Elad &
Bruckstein 2006), where the true dictionary is known; part 2 takes apart the
CLS embeddings of a small ViT trained in seconds on scikit-learn's digits,
names the atoms through the ViT's class head and checks the names against the
digits' labels. Every method gets the same number of atoms and the same number
of non-zeros per code.
"""

import time

import numpy as np
from sklearn.decomposition import MiniBatchDictionaryLearning
from tqdm.auto import tqdm

from .. import metrics
from .._parallel import thread_limits
from ..concepts import ConceptBank, describe_atoms
from ..datasets import make_sparse_signals
from ..ksvd import DoubleBatchKSVD
from ..sae import SparseAutoencoder
from .report import Report, format_table

COLUMNS = [
    "data", "method", "signal recovered", "explained variance", "atom recovery",
    "faithfulness", "specificity", "unique names", "alive atoms", "fit time (s)",
]
# "fit time (s)" excludes numba's compilation and torch's start-up (see _warm_up).
_SYNTHETIC_SIZES = dict(n_components=50, n_nonzero=3)
_DIGITS_SIZES = dict(n_components=64, n_nonzero=4)
# Atoms listed by name in the report, the most used first.
_N_NAMED_ATOMS = 12
# Seeds of the synthetic part, its iterations, the ViT's training options and
# the iterations (epochs for the autoencoder) on the digits embeddings.
_BUDGETS = {
    "quick": dict(seeds=1, synthetic_iter=20, vit=dict(max_epochs=8, batch_size=64),
                  digits_iter=10),
    "full": dict(seeds=5, synthetic_iter=80, vit={}, digits_iter=40),
}


# sklearn's L1 penalty is in the units of the data: alpha=1 (its default) is
# degenerate on unit-norm embeddings (atoms copy rows). The demo sets alpha to
# this share of the RMS row norm, the best held-out signal recovered of
# {0.01, 0.03, 0.1, 0.3} x RMS on both parts' data (80/20 split): synthetic
# 0.50 / 0.54 / 0.69 / 0.81 (alpha=1: 0.73), digits 0.925 / 0.927 / 0.930 / 0.928.
_MBDL_ALPHA_PER_NORM = 0.3


def _rms_norm(X):
    return float(np.sqrt(np.mean(np.einsum("ij,ij->i", X, X))))


def _methods(n_components, n_nonzero, max_iter, seed, data_scale):
    """The estimators compared, with the same number of atoms and the same L0."""
    return {
        "DoubleBatchKSVD": DoubleBatchKSVD(
            n_components, n_nonzero_coefs=n_nonzero, max_iter=max_iter, tol=0,
            random_state=seed),
        "SparseAutoencoder": SparseAutoencoder(
            n_components, activation="topk", k=n_nonzero, device="cpu", random_state=seed),
        "SparseAutoencoder (AbsTopK)": SparseAutoencoder(
            n_components, activation="abstopk", k=n_nonzero, device="cpu", random_state=seed),
        "sklearn MiniBatchDictionaryLearning": MiniBatchDictionaryLearning(
            n_components, alpha=_MBDL_ALPHA_PER_NORM * data_scale,
            transform_algorithm="omp", transform_n_nonzero_coefs=n_nonzero,
            max_iter=max_iter, random_state=seed),
    }


def _warm_up(X, n_nonzero):
    """Run every method once on a few rows, so that fit times exclude compilation.

    numba compiles (or loads from its cache) each kernel for X's dtype at its
    first call, and torch initialises itself at its first model: seconds that
    belong to no method's fit.
    """
    rows = X[:64]
    for estimator in _methods(8, n_nonzero, max_iter=2, seed=0,
                              data_scale=_rms_norm(rows)).values():
        with thread_limits(None, work=rows.size * 8):
            estimator.fit(rows).transform(rows)


def _fit_and_score(estimator, X, bank, center):
    """Fit time, reconstruction scores and the description scores against `bank`.

    BLAS, numba and torch are sized once for the whole step, to the work of one
    pass over X: scikit-learn's estimator would otherwise run BLAS on every
    core for matrices this small.
    """
    with thread_limits(None, work=X.size * estimator.n_components):
        start = time.perf_counter()
        estimator.fit(X)
        seconds = time.perf_counter() - start
        scores = metrics.dictionary_scores(estimator, X, bank, center=center)
    return {
        "signal recovered": scores["signal_recovered"],
        "explained variance": scores["explained_variance"],
        "faithfulness": scores["faithfulness"],
        "specificity": scores["specificity"],
        "unique names": scores["unique_name_ratio"],
        # specificity and unique names divide by the alive atoms: show how many
        "alive atoms": (1 - scores["dead_fraction"]) * len(estimator.components_),
        "fit time (s)": seconds,
    }


def _mean_rows(per_seed):
    """Average each method's scores over seeds."""
    return {
        name: {key: float(np.nanmean([s[key] for s in scores])) for key in scores[0]}
        for name, scores in per_seed.items()
    }


def _signed_bank(atoms):
    names = [f"{sign}true atom {i}" for sign in "+-" for i in range(len(atoms))]
    return ConceptBank(names, np.vstack([atoms, -atoms]), center=False)


def synthetic_part(budget, bar):
    """K-SVD paper recovery: 20 x 50 dictionary, 1500 signals of 3 atoms, 20 dB noise.

    The true atoms and their negatives, named "+true atom i" and "-true atom i",
    are the concept bank: a learned atom's name is then the signed true atom it
    is closest to. Both signs are needed because the true codes are symmetric
    about zero, so the sign rule of :func:`~skdict.describe_atoms` (flip an atom
    whose mean non-zero code is negative) may name either sign of an atom.
    """
    seeds, max_iter = budget["seeds"], budget["synthetic_iter"]
    per_seed, history = {}, None
    for seed in range(seeds):
        X, D_true, _ = make_sparse_signals(random_state=seed)
        if seed == 0:
            _warm_up(X, _SYNTHETIC_SIZES["n_nonzero"])
        bank = _signed_bank(D_true)
        for name, estimator in _methods(**_SYNTHETIC_SIZES, max_iter=max_iter, seed=seed,
                                        data_scale=_rms_norm(X)).items():
            bar.set_postfix_str(f"synthetic: {name}, seed {seed}")
            scores = _fit_and_score(estimator, X, bank, center=False)
            scores["atom recovery"] = metrics.atom_recovery_rate(D_true, estimator.components_)
            per_seed.setdefault(name, []).append(scores)
            if name == "DoubleBatchKSVD" and history is None:
                history = estimator.error_
        bar.update()
    return {
        "key": "synthetic",
        "title": "Synthetic signals with a known dictionary (K-SVD paper)",
        "setting": (
            "20 x 50 uniform dictionary, 1500 signals of 3 atoms, 20 dB noise; 50 atoms "
            f"and L0 = 3 for every method, {max_iter} iterations (epochs for the sparse "
            f"autoencoder), mean of {seeds} seeds. The concept bank is the true dictionary "
            "with both signs of every atom. The true codes take both signs while TopK "
            "codes are non-negative, so the TopK autoencoder would need two latents per "
            "true atom and recovers almost none; AbsTopK codes are signed. sklearn's alpha is "
            f"{_MBDL_ALPHA_PER_NORM} x the RMS row norm (its default, 1, ignores the data's "
            "scale)."
        ),
        "scores": _mean_rows(per_seed),
        "history": history,
    }


def _digits_embeddings(budget, bar):
    """Train the digits ViT; its last block's CLS embeddings of all 1797 digits."""
    from ..datasets import load_digits_images, make_digits_vit, train_digits_vit
    from ..embeddings import TimmEmbedder
    from ..projection import ClassEmbeddingProjector

    bar.set_postfix_str("digits: training the ViT")
    start = time.perf_counter()
    vit = train_digits_vit(random_state=0, **budget["vit"])
    train_seconds = time.perf_counter() - start
    bar.update()
    images, y = load_digits_images(return_X_y=True)
    X = TimmEmbedder(vit, layer=-1, token="cls", device="cpu").fit_transform(images)
    projector = ClassEmbeddingProjector(vit, device="cpu").fit()
    test_images, y_test = load_digits_images(subset="test", return_X_y=True)
    random_projector = ClassEmbeddingProjector(make_digits_vit(random_state=1),
                                               device="cpu").fit()
    identifiability = {
        "trained ViT": projector.identifiability(test_images, y_test).cls,
        "random ViT": random_projector.identifiability(test_images, y_test).cls,
    }
    return X, images, y, projector, identifiability, train_seconds


def _name_atoms(estimator, X, y, bank, projector):
    """Each used atom's name from the bank and from the class head, and label purity.

    Purity is the share of the digits using the atom (in its sign) whose label
    is the atom's name: how often the name is right on this data.
    """
    desc = describe_atoms(estimator, bank, X=X)
    pushes = projector.project_directions(estimator.components_ * desc.signs[:, None])
    codes = np.asarray(estimator.transform(X)) * desc.signs[None, :]
    fires = codes > 0
    usage = fires.sum(axis=0)
    atoms = []
    for k in np.argsort(-usage, kind="stable"):
        if usage[k] == 0:
            break
        name = str(desc.names[k, 0])
        atoms.append({
            "atom": int(k),
            "usage": int(usage[k]),
            "name": name,
            "cosine": float(desc.scores[k, 0]),
            "head class": str(projector.classes_[np.argmax(pushes[k])]),
            "purity": float(np.mean(y[fires[:, k]].astype(str) == name)),
        })
    return atoms


def digits_part(budget, bar):
    """Dictionaries of the digits ViT's CLS embeddings, named by its class head."""
    X, images, y, projector, identifiability, train_seconds = _digits_embeddings(budget, bar)
    bank = ConceptBank.from_class_head(projector)
    max_iter = budget["digits_iter"]
    _warm_up(X, _DIGITS_SIZES["n_nonzero"])
    scores, fitted = {}, {}
    for name, estimator in _methods(**_DIGITS_SIZES, max_iter=max_iter, seed=0,
                                    data_scale=_rms_norm(X)).items():
        bar.set_postfix_str(f"digits: {name}")
        scores[name] = _fit_and_score(estimator, X, bank, center=True)
        fitted[name] = estimator
        bar.update()
    atoms = _name_atoms(fitted["DoubleBatchKSVD"], X, y, bank, projector)
    return {
        "key": "digits ViT",
        "title": "CLS embeddings of a ViT trained on sklearn's digits",
        "setting": (
            f"4-block, 64-wide timm ViT trained for {train_seconds:.0f} s on 1347 digits; "
            f"CLS token after the last block for all 1797 digits; 64 atoms and L0 = 4 for "
            f"every method, {max_iter} iterations or epochs. The concept bank is the ViT's class "
            "head (one direction per digit). sklearn's alpha is "
            f"{_MBDL_ALPHA_PER_NORM} x the RMS row norm."
        ),
        "scores": scores,
        "identifiability": identifiability,
        "atoms": atoms,
        "explorer": (fitted["DoubleBatchKSVD"], X, images[:, 0], y, bank, projector),
    }


def _history_figure(history):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot(np.arange(1, len(history) + 1), history)
    ax.set_xlabel("iteration")
    ax.set_ylabel("signal recovered")
    ax.set_title("DoubleBatchKSVD on the synthetic signals")
    fig.tight_layout()
    return fig


def _identifiability_figure(curves):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3))
    for label, curve in curves.items():
        blocks = np.arange(1, len(curve) + 1)
        ax.plot(blocks, curve, marker="o", label=label)
    ax.set_xticks(blocks)
    ax.set_xlabel("block")
    ax.set_ylabel("CLS class identifiability")
    ax.set_ylim(0.4, 1.02)
    ax.legend()
    fig.tight_layout()
    return fig


def _table_rows(parts):
    return [
        [part["key"], method, *(_cell(c, scores.get(c)) for c in COLUMNS[2:])]
        for part in parts
        for method, scores in part["scores"].items()
    ]


def _cell(column, value):
    """Atom counts are means over seeds: an integer when every seed agrees."""
    if column == "alive atoms" and value is not None and float(value).is_integer():
        return int(value)
    return value


def _build_explorer(out_dir, explorer):
    from ..explore import build_site

    estimator, X, images, y, bank, projector = explorer
    return build_site(estimator, X, out_dir, bank=bank, images=images,
                      labels=[f"digit {d}" for d in y], projector=projector)


def _write_report(out_dir, parts, rows, quick):
    synthetic, digits = parts
    report = Report("skdict demo")
    report.add_text(
        "DoubleBatchKSVD, TopK and AbsTopK SparseAutoencoders and scikit-learn's "
        "MiniBatchDictionaryLearning with the same "
        "number of atoms and the same number of non-zeros per code. Faithfulness, "
        "specificity and unique names score the atoms' names from the concept bank of "
        "each part; all scores are higher-is-better. Fit times are the seconds of "
        "fit alone, after a warm-up run that compiled numba's kernels and started torch."
    )
    report.add_table("Results", COLUMNS, rows)
    report.add_heading(synthetic["title"])
    report.add_text(synthetic["setting"])
    report.add_figure("synthetic_history", _history_figure(synthetic["history"]),
                      "Signal recovered per iteration (seed 0).")
    report.add_heading(digits["title"])
    report.add_text(digits["setting"])
    report.add_figure("identifiability", _identifiability_figure(digits["identifiability"]),
                      "Share of classes ranked below the true one when the CLS token of "
                      "each block is projected through the class head (Vilas et al. 2023).")
    atom_columns = ["atom", "usage", "name", "cosine", "head class", "purity"]
    report.add_table(
        "The most used DoubleBatchKSVD atoms, named by the class-head concept bank "
        "(cosine), by the classes they push through the head, and the share of the "
        "digits using each atom that carry its name (purity; chance is 10%)",
        atom_columns, [[a[c] for c in atom_columns] for a in digits["atoms"][:_N_NAMED_ATOMS]],
    )
    report.add_link("Browse every atom in the explorer", "explorer/index.html")
    results = {
        "quick": quick,
        "columns": COLUMNS,
        "rows": rows,
        "parts": {p["key"]: {"setting": p["setting"], "scores": p["scores"]} for p in parts},
        "identifiability": {k: list(v) for k, v in digits["identifiability"].items()},
        "atoms": digits["atoms"],
    }
    return report.write(out_dir, results)


def run_demo(out_dir, *, quick=False, quiet=False):
    """Run both parts, print the table and write the report; return the exit code."""
    import matplotlib

    matplotlib.use("Agg")
    budget = _BUDGETS["quick" if quick else "full"]
    with tqdm(total=budget["seeds"] + 5, disable=quiet, desc="demo", unit="step") as bar:
        parts = [synthetic_part(budget, bar), digits_part(budget, bar)]
        bar.set_postfix_str("explorer")
        _build_explorer(f"{out_dir}/explorer", parts[1]["explorer"])
        bar.update()
    rows = _table_rows(parts)
    print(format_table(COLUMNS, rows))
    atoms = parts[1]["atoms"]
    agree = np.mean([a["name"] == a["head class"] for a in atoms])
    purity = np.average([a["purity"] for a in atoms], weights=[a["usage"] for a in atoms])
    print(
        f"\ndigits ViT, DoubleBatchKSVD: {len(atoms)} atoms used; names from the class-head "
        f"bank agree with the top pushed class for {agree:.0%}; a digit using an atom "
        f"carries its name {purity:.0%} of the time (usage-weighted; chance: 10%)."
    )
    path = _write_report(out_dir, parts, rows, quick)
    if not quiet:
        print(f"report: {path}")
    return 0
