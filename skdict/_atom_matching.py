"""Atoms of one dictionary matched to those of another: reseed stability (two fits)
and ground-truth recovery (a fit and the generating dictionary).

Both compare atoms up to sign by ``|cos|`` and match them two ways: each atom
to its best partner (several atoms may share one), and one to one by the
optimal assignment (Hungarian algorithm, ``scipy.optimize.linear_sum_assignment``),
whose mean ``|cos|`` is the "mean correlation coefficient" (MCC) of SAELens'
synthetic evaluations and of Song et al. (2025). The ``(n_atoms_a, n_atoms_b)``
cosine matrix is the largest array held; no step reads rows of data except the
F1 score, which works from sparse codes.
"""

from numbers import Real

import numpy as np
import scipy.sparse as sp
from scipy.optimize import linear_sum_assignment
from sklearn.utils import check_random_state

from ._description import _N_BASELINE_DRAWS
from ._dictionary import components_from, encoded, to_dictionary_space
from ._null_dictionary import mean_nonzeros, omp_codes, random_dictionaries
from ._rows import _unit_rows


def reseed_stability(estimator_a, estimator_b, X=None, *, threshold=0.9, baseline=False,
                     random_state=0):
    """Share of the atoms of one fit found again in another fit (another seed).

    Atoms are compared up to sign and scale by ``|cos|``. Three numbers:

    - ``"matched"``: share of the atoms of `estimator_a` with some atom of
      `estimator_b` at ``|cos| >= threshold`` (best match, several atoms may
      share a partner);
    - ``"assigned"``: the same under the optimal one-to-one assignment of the
      atoms (maximum total ``|cos|``), divided by the atoms of `estimator_a`;
    - ``"mcc"``: the mean ``|cos|`` of the assigned pairs (pairwise MCC).

    Parameters
    ----------
    estimator_a, estimator_b : estimator or array-like of shape (n_atoms, n_features)
        Two fitted dictionaries (or Pipelines ending in one, or their atoms as
        rows) of the same space, typically the same settings with another
        `random_state`.
    X : array-like of shape (n_samples, n_features), default=None
        Data (the Pipeline's input), used only to shape the null's random
        atoms; None draws them uniformly on the sphere.
    threshold : float, default=0.9
        Smallest ``|cos|`` that counts as the same atom.
    baseline : bool, default=False
        Also return the null levels (``"matched_null"``, ...): the same scores
        between two random dictionaries of the same sizes, drawn from the
        normal distribution with the mean and covariance of X (in the
        dictionary's space), or uniformly on the sphere without X (mean over
        five draws).
    random_state : int, RandomState instance or None, default=0
        Seeds the null draws.

    Returns
    -------
    scores : dict of str to float
        ``"matched"``, ``"assigned"``, ``"mcc"``, in [0, 1], and with
        `baseline` their ``"_null"`` levels.

    Notes
    -----
    The share matched at a ``|cos|`` threshold after an optimal one-to-one
    matching follows Paulo & Belrose (2025, "Sparse Autoencoders Trained on
    the Same Data Learn Different Features", Hungarian matching of the
    latents of two seeds); the mean matched ``|cos|`` is the pairwise MCC of
    Song et al. (2025, "Position: Mechanistic Interpretability Should
    Prioritize Feature Consistency in SAEs"), as SAELens computes it
    (``sae_lens.synthetic.evals.mean_correlation_coefficient``). The cost is
    the ``(n_atoms_a, n_atoms_b)`` cosine matrix and an assignment on it
    (seconds for 4,096 atoms).

    Examples
    --------
    >>> import numpy as np
    >>> from skdict.metrics import reseed_stability
    >>> D = np.eye(4)
    >>> reseed_stability(D, -D[[1, 0, 3, 2]])
    {'matched': 1.0, 'assigned': 1.0, 'mcc': 1.0}
    >>> reseed_stability(D, [[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]])["assigned"]
    0.25
    """
    threshold = _check_threshold(threshold)
    A, B = _same_space(components_from(estimator_a), components_from(estimator_b),
                       "estimator_a", "estimator_b")
    scores = _stability(A, B, threshold)
    if baseline:
        rng = check_random_state(random_state)
        rows = None if X is None else to_dictionary_space(estimator_a, X)
        draws = zip(random_dictionaries(*A.shape, _N_BASELINE_DRAWS, rng, X=rows),
                    random_dictionaries(*B.shape, _N_BASELINE_DRAWS, rng, X=rows))
        _add_null(scores, [_stability(RA, RB, threshold) for RA, RB in draws])
    return scores


def ground_truth_recovery(estimator, true_components, X=None, true_codes=None, *,
                          baseline=False, random_state=0, codes=None):
    """How well a dictionary recovers known generating atoms: MCC and F1.

    - ``"mcc"``: the mean ``|cos|`` between the learned and the true atoms
      under their optimal one-to-one assignment (over ``min(n_atoms,
      n_true_atoms)`` pairs): 1 when every true atom is learned;
    - ``"f1"`` (when `X` and `true_codes` are given): each learned atom is
      paired with the true atom closest to it (largest ``|cos|``) and scored
      as a detector of it, the rows where its code is non-zero against the
      rows where the true code is non-zero; the mean F1 over learned atoms
      (0 for an atom that never fires).

    Parameters
    ----------
    estimator : estimator or array-like of shape (n_atoms, n_features)
        A fitted dictionary (or a Pipeline ending in one); for ``"mcc"``
        alone, its atoms as rows do.
    true_components : array-like of shape (n_true_atoms, n_features)
        The generating atoms, e.g. the second output of
        :func:`skdict.datasets.make_sparse_signals`.
    X : array-like of shape (n_samples, n_features), default=None
        Signals drawn from the true atoms, for ``"f1"``.
    true_codes : array-like or sparse matrix of shape (n_samples, n_true_atoms), \
            default=None
        Their true codes (the third output of ``make_sparse_signals``).
    baseline : bool, default=False
        Also return the null levels ``"mcc_null"`` (and ``"f1_null"``): the
        same scores of random dictionaries with as many atoms, drawn from the
        normal distribution with the mean and covariance of X (uniformly on
        the sphere without X), coding X by OMP with the estimator's mean
        number of non-zeros (mean over five draws).
    random_state : int, RandomState instance or None, default=0
        Seeds the null draws.
    codes : array-like or sparse matrix of shape (n_samples, n_atoms), default=None
        The estimator's codes of X, used instead of encoding X.

    Returns
    -------
    scores : dict of str to float
        ``"mcc"`` and, with X, ``"f1"``, in [0, 1]; with `baseline`, their
        ``"_null"`` levels.

    Notes
    -----
    Definitions followed: SAELens' evaluation of SAEs on synthetic data
    (``sae_lens.synthetic.evals``: ``mean_correlation_coefficient``, the MCC
    of Song et al., 2025, and ``ClassificationMetricsCalculator``, the
    F1 of each latent as a detector of its best-matching true feature). A
    code counts as firing when non-zero, so signed codes (DoubleBatchKSVD,
    AbsTopK) fire in both directions, as SAELens counts them. Unlike
    :func:`atom_recovery_rate` (a hard ``1 - |cos| < 0.01`` criterion per true
    atom), MCC degrades smoothly.

    Examples
    --------
    >>> from skdict.datasets import make_sparse_signals
    >>> from skdict.metrics import ground_truth_recovery
    >>> X, D, A = make_sparse_signals(300, random_state=0)
    >>> ground_truth_recovery(D, D)
    {'mcc': 1.0}
    """
    learned = components_from(estimator)
    truth = _unit_rows(np.asarray(components_from(true_components), dtype=np.float64))
    learned, truth = _same_space(learned, truth, "estimator", "true_components")
    with_f1 = X is not None
    if with_f1 != (true_codes is not None):
        raise ValueError(
            "The F1 score needs both X and true_codes (the codes that generated X); "
            "pass both, or neither for the MCC alone."
        )
    if with_f1:
        run = encoded(estimator, X, codes)
        true_fires = _true_fires(true_codes, run.n_samples, truth.shape[0])
        scores = _recovery(learned, truth, run.by_atom, true_fires)
    else:
        scores = _recovery(learned, truth)
    if baseline:
        draws = random_dictionaries(*learned.shape, _N_BASELINE_DRAWS, random_state,
                                    X=run.X if with_f1 else None)
        if with_f1:
            n_nonzero = mean_nonzeros(run.codes)
            nulls = [_recovery(D, truth, omp_codes(run.X, D, n_nonzero).tocsc(), true_fires)
                     for D in draws]
        else:
            nulls = [_recovery(D, truth) for D in draws]
        _add_null(scores, nulls)
    return scores


def _abs_cosines(A, B):
    return np.abs(_unit_rows(np.asarray(A, dtype=np.float64))
                  @ _unit_rows(np.asarray(B, dtype=np.float64)).T)


def _assigned(cos):
    """``|cos|`` of the pairs of the optimal one-to-one assignment."""
    rows, cols = linear_sum_assignment(cos, maximize=True)
    return cos[rows, cols]


def _stability(A, B, threshold):
    cos = _abs_cosines(A, B)
    assigned = _assigned(cos)
    return {
        "matched": float(np.mean(cos.max(axis=1) >= threshold)),
        "assigned": float(np.sum(assigned >= threshold) / A.shape[0]),
        "mcc": float(assigned.mean()),
    }


def _recovery(learned, truth, by_atom=None, true_fires=None):
    cos = _abs_cosines(learned, truth)
    scores = {"mcc": float(_assigned(cos).mean())}
    if by_atom is not None:
        scores["f1"] = _detection_f1(by_atom, true_fires, cos.argmax(axis=1))
    return scores


def _detection_f1(by_atom, true_fires, partner):
    """Mean F1 of each atom's firing (CSC codes) as a detector of its partner's."""
    fires = by_atom.copy()
    fires.data = np.ones_like(fires.data)
    expected = true_fires[:, partner]
    hits = np.asarray(fires.multiply(expected).sum(axis=0)).ravel()
    fired = np.diff(fires.indptr)
    present = np.diff(expected.indptr)
    # F1 = 2 TP / (2 TP + FP + FN) = 2 TP / (fired + present); 0 when both are empty
    total = fired + present
    return float(np.mean(np.divide(2 * hits, total, out=np.zeros(total.size),
                                   where=total > 0)))


def _true_fires(true_codes, n_samples, n_true_atoms):
    fires = sp.csc_matrix(true_codes)
    if fires.shape != (n_samples, n_true_atoms):
        raise ValueError(
            f"true_codes has shape {fires.shape}; expected ({n_samples}, {n_true_atoms}), "
            "one row per row of X and one column per true atom."
        )
    fires.eliminate_zeros()
    fires.data = np.ones_like(fires.data, dtype=np.float64)
    return fires


def _same_space(A, B, name_a, name_b):
    if A.shape[1] != B.shape[1]:
        raise ValueError(
            f"{name_a} has atoms of {A.shape[1]} features but {name_b} of {B.shape[1]}; "
            "both must describe the same space."
        )
    return A, B


def _check_threshold(threshold):
    if not isinstance(threshold, Real) or not 0 < threshold <= 1:
        raise ValueError(f"threshold must be a |cos| in (0, 1], got {threshold!r}.")
    return float(threshold)


def _add_null(scores, draws):
    for name in list(scores):
        scores[f"{name}_null"] = float(np.mean([draw[name] for draw in draws]))
