"""k-sparse probing: can k latents of the dictionary tell a class apart?

The definition of SAEBench (Karvonen et al., 2025, "Sparse probing";
``get_top_k_mean_diff_mask`` in
``sae_bench/evals/sparse_probing/probe_training.py``) and of sae-probes
(Kantamneni et al., 2025, "Are Sparse Autoencoders Useful? A Case Study in
Sparse Probing"; ``run_normal_baseline`` in
``sae_probes/train_sae_probes.py``): on the training rows, rank the latents by
the absolute difference of their mean code between the positive and the
negative rows, keep the top k, fit a logistic regression on those k codes alone
and score it on held-out rows. The same probe on the dense rows is the
reference the latents are compared with.

Only the k chosen columns of the codes are ever dense: the class means come
from one sparse product, the columns from a slice of the CSC codes.
"""

from numbers import Integral

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import get_scorer
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils import column_or_1d

from ._description import _N_BASELINE_DRAWS
from ._dictionary import encoded
from ._null_dictionary import mean_nonzeros, omp_codes, random_dictionaries

# SAEBench's probes: scikit-learn's L2 logistic regression, with more
# iterations than its default so that they converge.
_PROBE_MAX_ITER = 1000


def sparse_probing(
    estimator, X, y, *, k=(1, 2, 5), test_size=0.25, C=1.0, scoring="balanced_accuracy",
    baseline=False, random_state=0, codes=None,
):
    """k-sparse probing: held-out accuracy of a linear probe on the k latents that
    differ most between classes, with the dense probe as the reference.

    For a binary task, the latents are ranked by ``|mean_{y=1} a_k - mean_{y=0} a_k|``
    over the training rows; a logistic regression is fit on the top ``k``
    latents' codes (standardised) and scored on the held-out rows. With more
    than two classes, each class against the rest is one task and the scores
    are averaged over tasks (as SAEBench averages its binary tasks). This is
    the definition of SAEBench and sae-probes (see the Notes).

    Parameters
    ----------
    estimator : estimator
        A fitted dictionary learner, or a Pipeline whose last step is one.
    X : array-like of shape (n_samples, n_features)
        Data (the Pipeline's input), not the dictionary's training rows if
        possible.
    y : array-like of shape (n_samples,)
        Class of each row; at least two classes, each with two rows or more.
    k : int or sequence of int, default=(1, 2, 5)
        Numbers of latents to probe with (SAEBench's default), each in
        ``[1, n_components]``.
    test_size : float, default=0.25
        Share of the rows held out, stratified by class.
    C : float, default=1.0
        Inverse L2 penalty of the logistic regression (SAEBench's value).
    scoring : str, default="balanced_accuracy"
        A scikit-learn scorer name (``"accuracy"``, ``"roc_auc"``, ...);
        balanced accuracy is 0.5 for a probe that says nothing whatever the
        class balance.
    baseline : bool, default=False
        Also return the null level ``"k{k}_null"``: the same probing on the
        codes of random dictionaries with the same number of atoms, drawn from
        the normal distribution with the mean and covariance of X (in the
        dictionary's space), coding X by OMP with the estimator's mean number
        of non-zeros (mean over five draws).
    random_state : int, RandomState instance or None, default=0
        Seeds the split and the null draws.
    codes : array-like or sparse matrix of shape (n_samples, n_components), default=None
        The estimator's codes of X, used instead of encoding X.

    Returns
    -------
    scores : dict of str to float
        ``"k{k}"`` for each k, ``"dense"`` for the probe on every feature of X
        in the dictionary's space, and ``"k{k}_null"`` with `baseline`.

    Notes
    -----
    Definition followed: SAEBench, "Sparse probing" (Karvonen et al., 2025;
    ``get_top_k_mean_diff_mask`` and ``train_sklearn_probe`` in
    ``sae_bench/evals/sparse_probing/probe_training.py``) and sae-probes
    (Kantamneni et al., 2025; ``run_normal_baseline`` in
    ``sae_probes/train_sae_probes.py``), both
    ranking by absolute class-mean difference on the training rows and
    probing with an L2 logistic regression. Differences: the k codes are
    standardised on the training rows, so that the L2 penalty does not
    depend on the units of the codes (skdict's estimators code in the units
    of X); SAEBench balances its classes by subsampling the negatives, here
    the probe weighs the classes (``class_weight="balanced"``) and balanced
    accuracy scores them equally; sae-probes tunes ``C`` on a validation
    split and reports AUC (``scoring="roc_auc"``).

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.decomposition import SparseCoder
    >>> from skdict.metrics import sparse_probing
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 2, 400)
    >>> X = rng.normal(size=(400, 4)) + 3 * y[:, None] * np.eye(4)[0]
    >>> coder = SparseCoder(np.eye(4), transform_algorithm="threshold",
    ...                     transform_alpha=0.0)
    >>> scores = sparse_probing(coder, X, y, k=[1, 4])
    >>> sorted(scores)
    ['dense', 'k1', 'k4']
    >>> bool(scores["k1"] > 0.9)
    True
    """
    run = encoded(estimator, X, codes)
    n_atoms = run.components.shape[0]
    ks = _check_ks(k, n_atoms)
    y = _check_labels(y, run.n_samples)
    train, test = train_test_split(np.arange(run.n_samples), test_size=test_size,
                                   stratify=y, random_state=random_state)
    tasks = [y == label for label in np.unique(y)]
    if len(tasks) == 2:
        tasks = tasks[1:]
    scorer = get_scorer(scoring)
    probe = _Probe(train, test, tasks, C, scorer)
    scores = dict(zip((f"k{k}" for k in ks), probe.top_k(run.codes, ks)))
    scores["dense"] = probe.dense(run.X)
    if baseline:
        n_nonzero = mean_nonzeros(run.codes)
        null = random_dictionaries(*run.components.shape, _N_BASELINE_DRAWS, random_state,
                                   X=run.X)
        draws = [probe.top_k(omp_codes(run.X, D, n_nonzero), ks) for D in null]
        scores.update(zip((f"k{k}_null" for k in ks), np.mean(draws, axis=0).tolist()))
    return scores


class _Probe:
    """Probes of each task on one train / test split, scored by `scorer`."""

    def __init__(self, train, test, tasks, C, scorer):
        self.train, self.test, self.tasks, self.C, self.scorer = train, test, tasks, C, scorer

    def _score(self, features, task):
        model = make_pipeline(StandardScaler(), LogisticRegression(
            C=self.C, class_weight="balanced", max_iter=_PROBE_MAX_ITER))
        model.fit(features[self.train], task[self.train])
        return self.scorer(model, features[self.test], task[self.test])

    def top_k(self, codes, ks):
        """Mean score over tasks of the probe on each k top latents of CSR `codes`."""
        by_atom = codes.tocsc()
        train_codes = codes[self.train]
        per_task = []
        for task in self.tasks:
            positive = task[self.train].astype(np.float64)
            means = train_codes.T @ np.column_stack([positive, 1.0 - positive])
            difference = means[:, 0] / positive.sum() - means[:, 1] / (1.0 - positive).sum()
            ranked = np.argsort(-np.abs(difference), kind="stable")[:max(ks)]
            columns = by_atom[:, ranked].toarray()
            per_task.append([self._score(columns[:, :k], task) for k in ks])
        return np.mean(per_task, axis=0).tolist()

    def dense(self, X):
        X = np.asarray(X)
        return float(np.mean([self._score(X, task) for task in self.tasks]))


def _check_ks(k, n_atoms):
    ks = [k] if isinstance(k, Integral) else list(k)
    if not ks or not all(isinstance(v, Integral) and 1 <= v <= n_atoms for v in ks):
        raise ValueError(
            f"k must be an int or a non-empty list of ints in [1, {n_atoms}] (the number "
            f"of atoms); got {k!r}."
        )
    return sorted({int(v) for v in ks})


def _check_labels(y, n_samples):
    if y is None:
        raise ValueError(
            "sparse_probing needs the class of each row: pass y (with a GridSearchCV "
            "scorer, fit the search with search.fit(X, y))."
        )
    y = column_or_1d(y)
    if y.shape[0] != n_samples:
        raise ValueError(f"y has {y.shape[0]} labels but X has {n_samples} rows.")
    labels, counts = np.unique(y, return_counts=True)
    if labels.size < 2 or counts.min() < 2:
        raise ValueError(
            "y must hold at least two classes with two rows each, to train and test "
            f"a probe; got counts {dict(zip(labels.tolist(), counts.tolist()))}."
        )
    return y
