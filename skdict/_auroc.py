"""Area under the ROC curve for many score/label rows at once.

``sklearn.metrics.roc_auc_score`` handles one problem per call; naming thousands
of atoms needs one AUROC per atom. This uses the Mann-Whitney form,
``AUROC = (R_pos - n_pos (n_pos + 1) / 2) / (n_pos n_neg)`` with ``R_pos`` the
sum of the (tie-averaged) ranks of the positives, for every row in one pass.
"""

import numpy as np
import scipy.sparse as sp


def row_auroc(scores, labels):
    """AUROC of each row of `scores` as a predictor of the same row of `labels`.

    Parameters
    ----------
    scores : ndarray of shape (n_problems, n_samples)
        Real-valued predictions, one problem per row (C-contiguous is fastest).
    labels : ndarray or scipy.sparse matrix of shape (n_problems, n_samples)
        Truthy entries are the positives.

    Returns
    -------
    auroc : ndarray of shape (n_problems,)
        In [0, 1]; NaN for a row with no positive or no negative.
    """
    n = scores.shape[1]
    ranks = _row_ranks(scores)
    if sp.issparse(labels):
        positives = sp.csr_matrix(labels, dtype=bool).astype(np.float64)
        rank_sum = np.asarray(positives.multiply(ranks).sum(axis=1)).ravel()
        n_pos = np.asarray(positives.sum(axis=1)).ravel()
    else:
        positives = np.asarray(labels, dtype=bool)
        rank_sum = np.where(positives, ranks, 0.0).sum(axis=1)
        n_pos = positives.sum(axis=1).astype(np.float64)
    n_neg = n - n_pos
    auroc = np.full(scores.shape[0], np.nan)
    ok = (n_pos > 0) & (n_neg > 0)
    auroc[ok] = (rank_sum[ok] - n_pos[ok] * (n_pos[ok] + 1) / 2) / (n_pos[ok] * n_neg[ok])
    return auroc


def _row_ranks(scores):
    """1-based ranks within each row, ties given their average rank.

    Equals ``scipy.stats.rankdata(scores, axis=1)``, about three times faster:
    one sort of all rows, then tie groups found by running maxima / minima of
    their boundaries.
    """
    n = scores.shape[1]
    order = np.argsort(scores, axis=1)
    ordered = np.take_along_axis(scores, order, axis=1)
    position = np.arange(n)
    starts = np.ones(ordered.shape, dtype=bool)
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    ends = np.ones(ordered.shape, dtype=bool)
    ends[:, :-1] = starts[:, 1:]
    first = np.maximum.accumulate(np.where(starts, position, 0), axis=1)
    last = np.minimum.accumulate(np.where(ends, position, n)[:, ::-1], axis=1)[:, ::-1]
    ranks = np.empty(ordered.shape)
    np.put_along_axis(ranks, order, (first + last) / 2.0 + 1.0, axis=1)
    return ranks
