"""Area under the ROC curve of one score vector for many sparse sets of positives.

Faithfulness asks, for every atom, how well one concept's cosines to all rows
predict the rows where the atom fires. The cosines depend on the concept only,
and the positives are sparse, so each concept's scores are sorted once and each
of its atoms' AUROC comes from binary searches of its positives in that sorted
vector: ``O(n log n)`` per concept plus ``O(n_pos log n)`` per atom, instead of
a sort of all rows for every atom.

The Mann-Whitney form, ``AUROC = (R_pos - n_pos (n_pos + 1) / 2) / (n_pos n_neg)``
with ``R_pos`` the sum of the positives' 1-based ranks among all rows, ties
given their average rank: a value with ``lo`` rows strictly below it and ``hi``
rows at or below it has the average rank ``(lo + hi + 1) / 2``, exactly what
``scipy.stats.rankdata`` gives it and ``sklearn.metrics.roc_auc_score`` counts.
"""

import numpy as np


def auroc_of_positive_sets(scores, rows, bounds):
    """AUROC of `scores` as a predictor of each set of positive rows.

    Parameters
    ----------
    scores : ndarray of shape (n_samples,)
        Real-valued predictions; sorted in place (the caller's buffer).
    rows : ndarray of int of shape (n_positives,)
        The positive rows of every set, one set after the other, distinct within
        a set.
    bounds : ndarray of int of shape (n_sets + 1,)
        Set ``j`` holds ``rows[bounds[j]:bounds[j + 1]]``.

    Returns
    -------
    auroc : ndarray of shape (n_sets,)
        In [0, 1]; NaN for a set with no positive or no negative.
    """
    n = scores.shape[0]
    values = scores[rows]
    scores.sort()
    ranks = (
        np.searchsorted(scores, values, side="left")
        + np.searchsorted(scores, values, side="right")
        + 1
    ) / 2.0
    n_pos = np.diff(bounds).astype(np.float64)
    set_of = np.repeat(np.arange(n_pos.size), np.diff(bounds))
    rank_sum = np.bincount(set_of, weights=ranks, minlength=n_pos.size)
    n_neg = n - n_pos
    auroc = np.full(n_pos.size, np.nan)
    ok = (n_pos > 0) & (n_neg > 0)
    auroc[ok] = (rank_sum[ok] - n_pos[ok] * (n_pos[ok] + 1) / 2) / (n_pos[ok] * n_neg[ok])
    return auroc
