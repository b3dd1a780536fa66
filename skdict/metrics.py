"""Scores of a dictionary: reconstruction, atom descriptions, sparsity, atom recovery.

Scores (``signal_recovered``, ``explained_variance``, ``faithfulness``,
``specificity``, ``unique_name_ratio``, ``atom_recovery_rate`` and the scorers)
are "higher is better". ``l0``, ``dead_fraction`` and ``coherence`` are
statistics where lower usually means sparser, livelier or less redundant. See
the "Metrics" page of the documentation for formulas, sources and failure modes.
"""

from numbers import Real

import numpy as np

from ._description import (
    Described,
    average,
    check_baseline,
    faithfulness_per_atom,
    specificity_per_atom,
)
from ._dictionary import components_from, components_of, encoded
from ._rows import _unit_rows, relative_errors
from ._validation import check_samples
from .concepts import check_bank, check_same_space

# Atoms per block when computing coherence: bounds the (block x atoms) Gram.
_ATOM_CHUNK = 1024


def _check_pair(X, X_hat):
    X = check_samples(X, "X")
    X_hat = check_samples(X_hat, "X_hat")
    if X.shape != X_hat.shape:
        raise ValueError(
            f"X and X_hat must have the same shape, got {X.shape} and {X_hat.shape}."
        )
    return X, X_hat


def signal_recovered(X, X_hat):
    """Share of the signal a reconstruction recovers: ``1 - mean_i ||x_i - x̂_i|| / ||x_i||``.

    The DB-KSVD authors' measure ("recovers 2/3 of the signal"). 1 for an exact
    reconstruction, 0 for ``X_hat = 0``, negative when the reconstruction is
    worse than zero. A zero row counts as recovered when reconstructed as zero
    and as fully missed otherwise.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        Data.
    X_hat : array-like of shape (n_samples, n_features)
        Reconstruction of X.

    Returns
    -------
    score : float
        At most 1.

    Examples
    --------
    >>> from skdict.metrics import signal_recovered
    >>> signal_recovered([[3.0, 4.0]], [[3.0, 0.0]])
    0.2
    """
    X, X_hat = _check_pair(X, X_hat)
    return float(1.0 - relative_errors(X, X - X_hat).mean())


def explained_variance(X, X_hat):
    """``1 - sum ||x_i - x̂_i||² / sum ||x_i - x̄||²`` (1 - FVU, SAEBench convention).

    Equals ``sklearn.metrics.r2_score(X, X_hat, multioutput="variance_weighted")``;
    unlike ``sklearn.metrics.explained_variance_score`` it does not forgive a
    constant offset between X and X_hat.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        Data.
    X_hat : array-like of shape (n_samples, n_features)
        Reconstruction of X.

    Returns
    -------
    score : float
        At most 1; 0 for reconstructing every row by the mean row.

    Examples
    --------
    >>> from skdict.metrics import explained_variance
    >>> explained_variance([[1.0, 0.0], [-1.0, 0.0]], [[0.5, 0.0], [-0.5, 0.0]])
    0.75
    """
    X, X_hat = _check_pair(X, X_hat)
    total = np.sum((X - X.mean(axis=0, dtype=np.float64)) ** 2, dtype=np.float64)
    if total == 0:
        raise ValueError("explained_variance is undefined when every row of X is equal.")
    return float(1.0 - np.sum((X - X_hat) ** 2, dtype=np.float64) / total)


def atom_recovery_rate(true_components, components, *, threshold=0.01):
    """Share of true atoms found: those with ``1 - max_k |cos(d_true, d_k)| < threshold``.

    The criterion of Aharon, Elad & Bruckstein (2006) for the K-SVD synthetic
    experiment. Atoms are compared up to sign and scale.

    Parameters
    ----------
    true_components : array-like of shape (n_true_atoms, n_features)
        Ground-truth atoms as rows.
    components : array-like of shape (n_atoms, n_features)
        Learned atoms as rows.
    threshold : float, default=0.01
        Largest ``1 - |cos|`` that still counts as found.

    Returns
    -------
    rate : float
        In [0, 1].

    Examples
    --------
    >>> import numpy as np
    >>> from skdict.metrics import atom_recovery_rate
    >>> atom_recovery_rate(np.eye(3), -2 * np.eye(3)[:2])
    0.6666666666666666
    """
    D_true = check_samples(true_components, "true_components")
    D = check_samples(components, "components")
    if D_true.shape[1] != D.shape[1]:
        raise ValueError(
            f"true_components has {D_true.shape[1]} features but components has "
            f"{D.shape[1]}; both must describe atoms of the same space."
        )
    cos = np.abs(_unit_rows(D_true) @ _unit_rows(D).T)
    return float(np.mean(1.0 - cos.max(axis=1) < threshold))


def faithfulness(
    estimator, X, bank, *, names=None, center=True, baseline=False, per_atom=False,
    random_state=0, codes=None,
):
    """How well atom names predict the atoms firing: mean AUROC over alive atoms.

    For atom ``k`` named ``c(k)``, the cosine ``s_ik = cos(x_i, t_c(k))`` between
    each row and the name is used as a predictor of the atom firing on that row,
    ``s_k a_ik > 0`` (``s_k`` the atom's sign, see :func:`skdict.describe_atoms`;
    for non-negative codes this is ``a_ik != 0``). The score is the area under
    the ROC curve of that predictor, averaged over the alive atoms: 1 when the
    rows most similar to the name are exactly those using the atom, 0.5 when the
    name says nothing about it (CLIP-Dissect-style, with AUROC as the
    similarity-to-activation measure).

    Parameters
    ----------
    estimator : estimator
        A fitted dictionary learner, or a Pipeline whose last step is one.
    X : array-like of shape (n_samples, n_features)
        Data (the Pipeline's input); should hold both rows that use each atom
        and rows that do not.
    bank : ConceptBank
        Concepts in the dictionary's space.
    names : array-like of int of shape (n_components,), default=None
        An explicit description: ``names[k]`` is the index in `bank` of atom
        ``k``'s concept. None names each atom by its closest concept.
    center : bool, default=True
        SpLiCE centring of the cosines: remove the mean row of X (in the
        dictionary's space) and, if the bank centres, the bank's mean concept,
        then renormalise. False uses raw cosines on both sides.
    baseline : bool or {"gaussian", "shuffled", "sphere"}, default=False
        Return a chance level instead: the same score under a null, averaged
        over a few draws. ``"gaussian"`` (also ``True``): banks of the same size
        drawn from a normal distribution with the bank's own mean and covariance,
        naming atoms as the real bank does (`names`, if given, index them);
        ``"shuffled"``: the atom -> concept assignment randomly permuted among
        the alive atoms; ``"sphere"``: banks drawn uniformly on the unit sphere,
        easy to beat on anisotropic embeddings. See the "Metrics" page of the
        documentation for what each null answers.
    per_atom : bool, default=False
        Return one AUROC per atom instead of the mean.
    random_state : int, RandomState instance or None, default=0
        Seeds the draws of `baseline`.
    codes : array-like or sparse matrix of shape (n_samples, n_components), default=None
        The estimator's codes of X (``transform(X)``, or the file ``skdict
        encode`` writes), used instead of encoding X again.

    Returns
    -------
    score : float or ndarray of shape (n_components,)
        In [0, 1]. Per atom: NaN for dead atoms and for atoms firing on every
        row (no negatives to rank); the mean skips them (NaN if none is left).

    Notes
    -----
    The cosines depend on the concept, not on the atom: each concept's cosines
    to all rows are ranked once, and each atom's AUROC comes from the ranks of
    its own (sparse) positives. The cost is ``O(n_concepts n log n + nnz log n)``
    for the concepts that name some atom, in memory bounded by a block of
    concepts' cosines, whatever the number of atoms.

    See Also
    --------
    specificity : Whether each atom's name retrieves it back.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.decomposition import SparseCoder
    >>> from skdict import ConceptBank
    >>> from skdict.metrics import faithfulness
    >>> rng = np.random.default_rng(0)
    >>> bank = ConceptBank(["a", "b", "c", "d"], np.eye(4))
    >>> X = rng.exponential(size=(200, 4)) * (rng.random((200, 4)) < 0.3)
    >>> coder = SparseCoder(np.eye(4), transform_algorithm="threshold",
    ...                     transform_alpha=0.0)
    >>> faithfulness(coder, X, bank, center=False)
    1.0
    """
    return _description_score(
        faithfulness_per_atom, estimator, X, bank, names=names, center=center,
        baseline=baseline, per_atom=per_atom, random_state=random_state, codes=codes,
    )


def specificity(
    estimator, X, bank, *, names=None, center=True, baseline=False, per_atom=False,
    count_dead=False, random_state=0, codes=None,
):
    """Share of alive atoms whose name retrieves them back among all atoms.

    Atom ``k`` named ``c(k)`` is specific when it is the atom closest to its
    name: ``argmax_j cos(s_j d_j, t_c(k)) == k`` (a mutual nearest-neighbour
    check between atoms and concepts). Read it together with
    :func:`unique_name_ratio`: many atoms can share one vague name.

    Parameters
    ----------
    estimator : estimator
        A fitted dictionary learner, or a Pipeline whose last step is one.
    X : array-like of shape (n_samples, n_features)
        Data (the Pipeline's input), used to find alive atoms and atom signs.
    bank : ConceptBank
        Concepts in the dictionary's space.
    names : array-like of int of shape (n_components,), default=None
        Explicit atom -> concept index assignment; None names each atom by its
        closest concept.
    center : bool, default=True
        Use the bank's centred concepts (when the bank centres); False uses
        the raw unit embeddings.
    baseline : bool or {"gaussian", "shuffled", "sphere"}, default=False
        Return a chance level instead, as in :func:`faithfulness`:
        ``"gaussian"`` (also ``True``) Gaussian banks with the bank's mean and
        covariance, ``"shuffled"`` permuted names, ``"sphere"`` uniform banks.
    per_atom : bool, default=False
        Return 1.0 / 0.0 per atom (NaN for dead atoms, 0.0 with `count_dead`)
        instead of the share.
    count_dead : bool, default=False
        Count dead atoms (used by no row of X) as not specific, i.e. divide by
        all atoms instead of the alive ones, so that killing atoms cannot raise
        the score. Report :func:`dead_fraction` next to the default.
    random_state : int, RandomState instance or None, default=0
        Seeds the draws of `baseline`.
    codes : array-like or sparse matrix of shape (n_samples, n_components), default=None
        The estimator's codes of X, used instead of encoding X again.

    Returns
    -------
    score : float or ndarray of shape (n_components,)
        In [0, 1].

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.decomposition import SparseCoder
    >>> from skdict import ConceptBank
    >>> from skdict.metrics import specificity
    >>> bank = ConceptBank(["a", "b", "c"], np.eye(3))
    >>> coder = SparseCoder(np.eye(3), transform_algorithm="threshold",
    ...                     transform_alpha=0.0)
    >>> specificity(coder, np.eye(3), bank)
    1.0
    >>> specificity(coder, np.eye(3), bank, names=[0, 0, 2])
    0.6666666666666666
    >>> specificity(coder, [[1.0, 0.0, 0.0]], bank, count_dead=True)
    0.3333333333333333
    """
    return _description_score(
        specificity_per_atom, estimator, X, bank, names=names, center=center,
        baseline=baseline, per_atom=per_atom, random_state=random_state, codes=codes,
        count_dead=count_dead,
    )


def _describe(estimator, X, bank, center, codes):
    """The encoded rows seen by `bank`; the bank is checked before any encoding."""
    check_same_space(components_of(estimator), check_bank(bank))
    return Described(encoded(estimator, X, codes), bank, center)


def _description_score(
    per_atom_score, estimator, X, bank, *, names, center, baseline, per_atom, random_state,
    codes, count_dead=False,
):
    """Score a description with `per_atom_score`, or its chance level under a null."""
    null = check_baseline(baseline)
    described = _describe(estimator, X, bank, center, codes)
    per_draw = per_atom_score(described, described.draws(names, null, random_state))
    return average(per_draw, described.alive, per_atom=per_atom, count_dead=count_dead)


def unique_name_ratio(
    estimator, X, bank, *, names=None, center=True, count_dead=False, codes=None
):
    """Distinct names among alive atoms, over the number of alive atoms.

    ``|{c(k) : k alive}| / n_alive``: 1 when every alive atom has its own
    concept, ``1 / n_alive`` when one concept names them all.

    Parameters
    ----------
    estimator : estimator
        A fitted dictionary learner, or a Pipeline whose last step is one.
    X : array-like of shape (n_samples, n_features)
        Data (the Pipeline's input), used to find alive atoms and atom signs.
    bank : ConceptBank
        Concepts in the dictionary's space.
    names : array-like of int of shape (n_components,), default=None
        Explicit atom -> concept index assignment; None names each atom by its
        closest concept.
    center : bool, default=True
        Name atoms with the bank's centred concepts (when the bank centres).
    count_dead : bool, default=False
        Divide by all atoms instead of the alive ones: dead atoms count as
        names that say nothing, so killing atoms cannot raise the ratio.
    codes : array-like or sparse matrix of shape (n_samples, n_components), default=None
        The estimator's codes of X, used instead of encoding X again.

    Returns
    -------
    ratio : float
        In [0, 1]; NaN when no atom is alive (0 with `count_dead`).

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.decomposition import SparseCoder
    >>> from skdict import ConceptBank
    >>> from skdict.metrics import unique_name_ratio
    >>> bank = ConceptBank(["a", "b", "c"], np.eye(3))
    >>> coder = SparseCoder(np.eye(3), transform_algorithm="threshold",
    ...                     transform_alpha=0.0)
    >>> unique_name_ratio(coder, np.eye(3), bank, names=[1, 1, 2])
    0.6666666666666666
    >>> unique_name_ratio(coder, [[1.0, 0.0, 0.0]], bank, count_dead=True)
    0.3333333333333333
    """
    described = _describe(estimator, X, bank, center, codes)
    return _unique_names(described, described.draws(names, None, 0)[0][1], count_dead)


def _unique_names(described, concepts, count_dead=False):
    concepts = concepts[described.alive]
    n_atoms = described.alive.size if count_dead else concepts.size
    if n_atoms == 0:
        return float("nan")
    return float(np.unique(concepts).size / n_atoms)


def l0(estimator, X, *, codes=None):
    """Mean number of non-zero codes per row of X.

    Parameters
    ----------
    estimator : estimator
        A fitted dictionary learner, or a Pipeline whose last step is one.
    X : array-like of shape (n_samples, n_features)
        Data (the Pipeline's input).
    codes : array-like or sparse matrix of shape (n_samples, n_components), default=None
        The estimator's codes of X, used instead of encoding X again.

    Returns
    -------
    l0 : float
        In [0, n_components]; lower is sparser.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.decomposition import SparseCoder
    >>> from skdict.metrics import l0
    >>> coder = SparseCoder(np.eye(3), transform_algorithm="threshold",
    ...                     transform_alpha=0.0)
    >>> l0(coder, [[1.0, 0.0, 2.0], [0.0, 0.0, 3.0]])
    1.5
    """
    run = encoded(estimator, X, codes)
    return float(run.codes.nnz / run.n_samples)


def dead_fraction(estimator, X, *, codes=None):
    """Share of atoms that no row of X uses.

    Parameters
    ----------
    estimator : estimator
        A fitted dictionary learner, or a Pipeline whose last step is one.
    X : array-like of shape (n_samples, n_features)
        Data (the Pipeline's input).
    codes : array-like or sparse matrix of shape (n_samples, n_components), default=None
        The estimator's codes of X, used instead of encoding X again.

    Returns
    -------
    fraction : float
        In [0, 1]; lower is better.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.decomposition import SparseCoder
    >>> from skdict.metrics import dead_fraction
    >>> coder = SparseCoder(np.eye(4), transform_algorithm="threshold",
    ...                     transform_alpha=0.0)
    >>> dead_fraction(coder, [[1.0, 0.0, 2.0, 0.0]])
    0.5
    """
    return float(1.0 - encoded(estimator, X, codes).alive.mean())


def coherence(estimator_or_components):
    """Mutual coherence: the largest ``|cos(d_i, d_j)|`` between two distinct atoms.

    Parameters
    ----------
    estimator_or_components : estimator or array-like of shape (n_components, n_features)
        A fitted dictionary learner (or a Pipeline ending in one), or atoms as rows.

    Returns
    -------
    coherence : float
        In [0, 1]; 1 means two atoms are parallel (a duplicate), 0 that all
        atoms are orthogonal. 0 for a single atom.

    Examples
    --------
    >>> from skdict.metrics import coherence
    >>> coherence([[1.0, 0.0], [1.0, 1.0], [0.0, -2.0]])
    0.7071067811865475
    """
    D = _unit_rows(np.asarray(components_from(estimator_or_components), dtype=np.float64))
    largest = 0.0
    for start in range(0, D.shape[0], _ATOM_CHUNK):
        cos = np.abs(D[start:start + _ATOM_CHUNK] @ D.T)
        rows = np.arange(cos.shape[0])
        cos[rows, start + rows] = 0.0
        largest = max(largest, float(cos.max(initial=0.0)))
    return largest


# Scores of dictionary_scores: those computed from the codes alone, and those
# that also need a concept bank.
_CODE_SCORES = ("signal_recovered", "explained_variance", "l0", "dead_fraction")
_BANK_SCORES = ("faithfulness", "specificity", "unique_name_ratio")
_RECONSTRUCTION = _CODE_SCORES[:2]


def dictionary_scores(
    estimator, X, bank=None, *, scores=None, codes=None, names=None, center=True,
    baseline=False, random_state=0,
):
    """Several scores of one dictionary from a single encoding of X.

    Calling :func:`signal_recovered`, :func:`faithfulness`,
    :func:`specificity` ... one after the other encodes X once per call (and
    once more per null level); this encodes X once (or takes its `codes`) and
    computes every score from that encoding, the null levels of faithfulness
    and specificity from the same null draws, in one pass over the rows per
    block of concepts. The values equal those of the separate functions.

    Parameters
    ----------
    estimator : estimator
        A fitted dictionary learner, or a Pipeline whose last step is one.
    X : array-like of shape (n_samples, n_features)
        Data (the Pipeline's input).
    bank : ConceptBank, default=None
        Concepts in the dictionary's space, needed for ``"faithfulness"``,
        ``"specificity"`` and ``"unique_name_ratio"``.
    scores : sequence of str, default=None
        Which scores, among ``"signal_recovered"``, ``"explained_variance"``,
        ``"l0"``, ``"dead_fraction"``, ``"faithfulness"``, ``"specificity"`` and
        ``"unique_name_ratio"``. None: all of them, less the description scores
        when `bank` is None.
    codes : array-like or sparse matrix of shape (n_samples, n_components), default=None
        The estimator's codes of X (``transform(X)``, or the file ``skdict
        encode`` writes), used instead of encoding X.
    names : array-like of int of shape (n_components,), default=None
        Explicit atom -> concept assignment; None names atoms by best match.
    center : bool, default=True
        SpLiCE centring, see :func:`faithfulness`.
    baseline : bool or {"gaussian", "shuffled", "sphere"}, default=False
        Also return the null levels ``"faithfulness_null"`` and
        ``"specificity_null"`` (for the scores asked for), as the `baseline`
        of :func:`faithfulness` computes them.
    random_state : int, RandomState instance or None, default=0
        Seeds the null draws.

    Returns
    -------
    scores : dict of str to float
        One entry per score (``explained_variance`` raises as
        :func:`explained_variance` does when every row is equal).

    See Also
    --------
    make_dictionary_scorer : The same as a ``GridSearchCV`` scorer.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.decomposition import SparseCoder
    >>> from skdict import ConceptBank
    >>> from skdict.metrics import dictionary_scores
    >>> coder = SparseCoder(np.eye(3), transform_algorithm="threshold",
    ...                     transform_alpha=0.0)
    >>> bank = ConceptBank(["a", "b", "c"], np.eye(3))
    >>> X = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 3.0], [1.0, 1.0, 0.0]])
    >>> scores = dictionary_scores(coder, X, bank, scores=["l0", "specificity"])
    >>> scores
    {'l0': 1.25, 'specificity': 1.0}
    """
    scores = _check_scores(scores, bank)
    null = check_baseline(baseline)
    described = None
    if bank is not None and set(scores) & set(_BANK_SCORES):
        described = _describe(estimator, X, bank, center, codes)
        run = described.run
    else:
        run = encoded(estimator, X, codes)
    out = {}
    if set(scores) & set(_RECONSTRUCTION):
        recovered, explained = run.reconstruction
        if "explained_variance" in scores and not np.isfinite(explained):
            raise ValueError("explained_variance is undefined when every row of X is equal.")
        out.update(signal_recovered=recovered, explained_variance=explained)
    out["l0"] = float(run.codes.nnz / run.n_samples)
    out["dead_fraction"] = float(1.0 - run.alive.mean())
    if described is not None:
        real = described.draws(names, None, random_state)
        draws = real + (described.draws(names, null, random_state) if null else [])
        for name, per_atom_score in (("faithfulness", faithfulness_per_atom),
                                     ("specificity", specificity_per_atom)):
            if name in scores:
                per_draw = per_atom_score(described, draws)
                out[name] = average(per_draw[:1], described.alive, per_atom=False)
                if null:
                    out[f"{name}_null"] = average(per_draw[1:], described.alive,
                                                  per_atom=False)
        out["unique_name_ratio"] = _unique_names(described, real[0][1])
    nulls = [f"{name}_null" for name in scores if null and name in _BANK_SCORES[:2]]
    return {name: out[name] for name in [*scores, *nulls]}


def _check_scores(scores, bank):
    known = (*_CODE_SCORES, *_BANK_SCORES)
    if scores is None:
        return list(known if bank is not None else _CODE_SCORES)
    if isinstance(scores, str):
        scores = [scores]
    scores = list(scores)
    unknown = [name for name in scores if name not in known]
    if unknown or not scores:
        raise ValueError(
            f"scores must be a non-empty list of names among {list(known)}; got {scores!r}."
        )
    needs_bank = [name for name in scores if name in _BANK_SCORES]
    if needs_bank and bank is None:
        raise ValueError(f"{needs_bank} need a concept bank: pass bank=ConceptBank(...).")
    return scores


def _reconstruction_score(estimator, X, kind):
    return dictionary_scores(estimator, X, scores=[kind])[kind]


class _DictionaryScorer:
    """A ``scorer(estimator, X, y=None) -> float`` for GridSearchCV, picklable."""

    def __init__(self, factory, score_func, **kwargs):
        self._factory = factory
        self._score_func = score_func
        self._kwargs = kwargs

    def __call__(self, estimator, X, y=None):
        return self._score_func(estimator, X, **self._kwargs)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self._kwargs.items())
        return f"{self._factory}({args})"


def make_reconstruction_scorer(kind="signal_recovered"):
    """Scorer of the reconstruction ``inverse_transform(transform(X))`` of X.

    Parameters
    ----------
    kind : {"signal_recovered", "explained_variance"}, default="signal_recovered"
        :func:`signal_recovered` or :func:`explained_variance`.

    Returns
    -------
    scorer : callable
        ``scorer(estimator, X, y=None) -> float``, higher is better. With a
        Pipeline, X goes through every step before the last, and the
        reconstruction is compared with X in the dictionary's space.

    Examples
    --------
    >>> from sklearn.decomposition import MiniBatchDictionaryLearning
    >>> from sklearn.model_selection import cross_val_score
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> from skdict.datasets import make_sparse_signals
    >>> from skdict.metrics import make_reconstruction_scorer
    >>> X, _, _ = make_sparse_signals(200, 8, 12, 2, random_state=0)
    >>> model = make_pipeline(StandardScaler(), MiniBatchDictionaryLearning(
    ...     12, transform_algorithm="omp", transform_n_nonzero_coefs=2,
    ...     max_iter=5, random_state=0))
    >>> scores = cross_val_score(model, X, cv=2,
    ...                          scoring=make_reconstruction_scorer("explained_variance"))
    >>> bool(scores.min() > 0.5)
    True
    """
    if kind not in _RECONSTRUCTION:
        raise ValueError(
            f"kind must be one of {sorted(_RECONSTRUCTION)}, got {kind!r}."
        )
    return _DictionaryScorer("make_reconstruction_scorer", _reconstruction_score, kind=kind)


reconstruction_scorer = make_reconstruction_scorer("signal_recovered")
reconstruction_scorer.__doc__ = """Scorer of :func:`signal_recovered`:
``reconstruction_scorer(estimator, X, y=None) -> float``."""


def make_faithfulness_scorer(bank, *, names=None, center=True):
    """Scorer of :func:`faithfulness` with a fixed concept bank.

    Parameters
    ----------
    bank : ConceptBank
        Concepts in the dictionary's space.
    names : array-like of int of shape (n_components,), default=None
        Explicit atom -> concept assignment; None names atoms by best match.
    center : bool, default=True
        SpLiCE centring, see :func:`faithfulness`.

    Returns
    -------
    scorer : callable
        ``scorer(estimator, X, y=None) -> float`` in [0, 1].
    """
    return _DictionaryScorer(
        "make_faithfulness_scorer", faithfulness, bank=check_bank(bank), names=names,
        center=center,
    )


def make_specificity_scorer(bank, *, names=None, center=True):
    """Scorer of :func:`specificity` with a fixed concept bank.

    Parameters
    ----------
    bank : ConceptBank
        Concepts in the dictionary's space.
    names : array-like of int of shape (n_components,), default=None
        Explicit atom -> concept assignment; None names atoms by best match.
    center : bool, default=True
        Use the bank's centred concepts, see :func:`specificity`.

    Returns
    -------
    scorer : callable
        ``scorer(estimator, X, y=None) -> float`` in [0, 1].
    """
    return _DictionaryScorer(
        "make_specificity_scorer", specificity, bank=check_bank(bank), names=names,
        center=center,
    )


def make_dictionary_scorer(bank=None, *, scores=None, names=None, center=True):
    """Multi-metric scorer: every score of :func:`dictionary_scores` from one encoding.

    ``GridSearchCV(scoring=make_dictionary_scorer(bank), refit="signal_recovered")``
    encodes each held-out fold once for all scores, where a dict of single
    scorers (``{"sr": reconstruction_scorer, "faith":
    make_faithfulness_scorer(bank), ...}``) encodes it once per scorer.

    Parameters
    ----------
    bank : ConceptBank, default=None
        Concepts in the dictionary's space; without one, only the scores that
        need no names are computed.
    scores : sequence of str, default=None
        The scores to return, see :func:`dictionary_scores`.
    names : array-like of int of shape (n_components,), default=None
        Explicit atom -> concept assignment; None names atoms by best match.
    center : bool, default=True
        SpLiCE centring, see :func:`faithfulness`.

    Returns
    -------
    scorer : callable
        ``scorer(estimator, X, y=None) -> dict`` of score name to value, as
        scikit-learn's multi-metric evaluation takes it. ``l0`` and
        ``dead_fraction`` are statistics, lower meaning sparser and livelier:
        refit on another key.

    Examples
    --------
    >>> from sklearn.model_selection import cross_validate
    >>> from skdict import DoubleBatchKSVD
    >>> from skdict.datasets import make_sparse_signals
    >>> from skdict.metrics import make_dictionary_scorer
    >>> X, _, _ = make_sparse_signals(200, 8, 12, 2, random_state=0)
    >>> model = DoubleBatchKSVD(12, n_nonzero_coefs=2, max_iter=5, random_state=0)
    >>> result = cross_validate(model, X, cv=2, scoring=make_dictionary_scorer())
    >>> sorted(key for key in result if key.startswith("test_"))
    ['test_dead_fraction', 'test_explained_variance', 'test_l0', 'test_signal_recovered']
    """
    bank = None if bank is None else check_bank(bank)
    return _DictionaryScorer(
        "make_dictionary_scorer", dictionary_scores, bank=bank,
        scores=_check_scores(scores, bank), names=names, center=center,
    )


class _SparsestWithin:
    """Picklable ``refit`` callable of :func:`refit_sparsest`."""

    def __init__(self, param, score, tolerance):
        self.param, self.score, self.tolerance = param, score, tolerance

    def __call__(self, cv_results):
        key = f"mean_test_{self.score}"
        if key not in cv_results:
            scorers = sorted(k[len("mean_test_"):] for k in cv_results
                             if k.startswith("mean_test_"))
            raise ValueError(
                f"cv_results_ has no {key!r}; pass score= the name of a scorer of the "
                f"search (one of {scorers})."
            )
        if f"param_{self.param}" not in cv_results:
            raise ValueError(
                f"cv_results_ has no parameter {self.param!r}; pass param= a key of the "
                "parameter grid, e.g. 'ksvd__n_nonzero_coefs'."
            )
        mean = np.asarray(cv_results[key], dtype=np.float64)
        best = int(np.nanargmax(mean))
        slack = self.tolerance
        if slack == "std":
            slack = float(cv_results[f"std_test_{self.score}"][best])
        values = np.ma.getdata(cv_results[f"param_{self.param}"]).astype(np.float64)
        good = np.flatnonzero(mean >= mean[best] - slack)
        smallest = good[values[good] == values[good].min()]
        # among candidates sharing the smallest value (other parameters differ), the best
        return int(smallest[np.argmax(mean[smallest])])

    def __repr__(self):
        return (f"refit_sparsest({self.param!r}, score={self.score!r}, "
                f"tolerance={self.tolerance!r})")


def refit_sparsest(param, *, score="score", tolerance="std"):
    """A ``GridSearchCV`` `refit` callable: the sparsest setting that scores almost best.

    More non-zeros (or atoms) always reconstruct better, so refitting on the
    best held-out reconstruction picks the largest value of the grid. This picks
    the smallest value of `param` whose mean held-out score is within
    `tolerance` of the best one: the sparser model, unless it loses more than
    the search can resolve (the "one standard error" rule of Hastie, Tibshirani
    & Friedman, *The Elements of Statistical Learning*, §7.10).

    Parameters
    ----------
    param : str
        The sparsity parameter as named in the grid, e.g.
        ``"ksvd__n_nonzero_coefs"`` or ``"k"``; smaller is sparser.
    score : str, default="score"
        The scorer whose mean held-out score is compared: its name in the
        search's `scoring` dict, or ``"score"`` for a single scorer.
    tolerance : float or "std", default="std"
        Largest loss of mean score to accept, in the score's units; ``"std"``
        uses the standard deviation over folds of the best setting.

    Returns
    -------
    refit : callable
        ``refit(cv_results) -> int``, the index of the chosen setting, to pass
        as ``GridSearchCV(..., refit=refit)``.

    Examples
    --------
    >>> from skdict.metrics import refit_sparsest
    >>> refit = refit_sparsest("k")
    >>> cv_results = {"param_k": [4, 8, 16], "mean_test_score": [0.60, 0.67, 0.68],
    ...               "std_test_score": [0.01, 0.02, 0.015]}
    >>> refit(cv_results)  # 8 is within one standard deviation (0.015) of 16
    1

    With a search: ``GridSearchCV(pipe, {"ksvd__n_nonzero_coefs": [4, 8, 16]},
    scoring=reconstruction_scorer, refit=refit_sparsest("ksvd__n_nonzero_coefs"))``.
    """
    if not (tolerance == "std" or (isinstance(tolerance, Real) and tolerance >= 0)):
        raise ValueError(f"tolerance must be a non-negative number or 'std', got {tolerance!r}.")
    return _SparsestWithin(param, score, tolerance)


# Interpretability beyond names (k-sparse probing, reseed stability, ground-truth
# recovery): each in its own module, re-exported here.
from ._atom_matching import ground_truth_recovery, reseed_stability  # noqa: E402
from ._probing import sparse_probing  # noqa: E402


class _LabelledScorer(_DictionaryScorer):
    """A scorer whose score function reads the labels ``y`` too."""

    def __call__(self, estimator, X, y=None):
        return self._score_func(estimator, X, y, **self._kwargs)


def make_sparse_probing_scorer(k=(1, 5), **kwargs):
    """Multi-metric scorer of :func:`sparse_probing` for ``GridSearchCV``.

    Parameters
    ----------
    k : int or sequence of int, default=(1, 5)
        Numbers of latents to probe with.
    **kwargs
        Other parameters of :func:`sparse_probing` (``test_size``, ``C``,
        ``scoring``, ``baseline``, ``random_state``).

    Returns
    -------
    scorer : callable
        ``scorer(estimator, X, y) -> dict`` with ``"k{k}"`` per k and
        ``"dense"``; each held-out fold is split again into the probes'
        training and test rows. The search must be fit with labels:
        ``search.fit(X, y)``.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.model_selection import cross_validate
    >>> from skdict import DoubleBatchKSVD
    >>> from skdict.metrics import make_sparse_probing_scorer
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 2, 300)
    >>> X = rng.normal(size=(300, 8)) + 2 * y[:, None] * np.eye(8)[0]
    >>> model = DoubleBatchKSVD(8, n_nonzero_coefs=2, max_iter=5, random_state=0)
    >>> result = cross_validate(model, X, y, cv=2, scoring=make_sparse_probing_scorer(k=1))
    >>> sorted(key for key in result if key.startswith("test_"))
    ['test_dense', 'test_k1']
    """
    unknown = set(kwargs) - {"test_size", "C", "scoring", "baseline", "random_state"}
    if unknown:
        raise TypeError(
            f"make_sparse_probing_scorer got unexpected parameters {sorted(unknown)}; "
            "it takes those of sparse_probing but codes."
        )
    return _LabelledScorer("make_sparse_probing_scorer", sparse_probing, k=k, **kwargs)
