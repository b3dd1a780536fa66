"""Area under the ROC curve for many score/label columns at once.

``sklearn.metrics.roc_auc_score`` handles one column per call; naming thousands
of atoms needs one AUROC per atom. This uses the Mann-Whitney form,
``AUROC = (R_pos - n_pos (n_pos + 1) / 2) / (n_pos n_neg)`` with ``R_pos`` the
sum of the (tie-averaged) ranks of the positives, for every column in one pass.
"""

import numpy as np
import scipy.sparse as sp
from scipy.stats import rankdata


def column_auroc(scores, labels):
    """AUROC of each column of `scores` as a predictor of the same column of `labels`.

    Parameters
    ----------
    scores : ndarray of shape (n_samples, n_columns)
        Real-valued predictions.
    labels : ndarray or scipy.sparse matrix of shape (n_samples, n_columns)
        Truthy entries are the positives.

    Returns
    -------
    auroc : ndarray of shape (n_columns,)
        In [0, 1]; NaN for a column with no positive or no negative.
    """
    n = scores.shape[0]
    ranks = rankdata(scores, axis=0)
    if sp.issparse(labels):
        positives = sp.csc_matrix(labels, dtype=bool).astype(np.float64)
        rank_sum = np.asarray(positives.multiply(ranks).sum(axis=0)).ravel()
        n_pos = np.asarray(positives.sum(axis=0)).ravel()
    else:
        positives = np.asarray(labels, dtype=bool)
        rank_sum = np.where(positives, ranks, 0.0).sum(axis=0)
        n_pos = positives.sum(axis=0).astype(np.float64)
    n_neg = n - n_pos
    auroc = np.full(scores.shape[1], np.nan)
    ok = (n_pos > 0) & (n_neg > 0)
    auroc[ok] = (rank_sum[ok] - n_pos[ok] * (n_pos[ok] + 1) / 2) / (n_pos[ok] * n_neg[ok])
    return auroc
