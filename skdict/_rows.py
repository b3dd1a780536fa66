"""Row-wise norms, normalisation and centring shared by metrics and concepts."""

import numpy as np


def _row_norms(X):
    return np.sqrt(np.einsum("ij,ij->i", X, X, dtype=np.float64))


def _unit_rows(D):
    """Rows scaled to unit norm; zero rows stay zero."""
    norms = _row_norms(D)
    return D / np.where(norms > 0, norms, 1.0).astype(D.dtype)[:, None]


def _centred_unit_rows(X, center):
    """Unit rows of X, after removing the mean row when `center` (SpLiCE centring)."""
    X = np.asarray(X, dtype=np.float64)
    if center:
        X = X - X.mean(axis=0)
    return _unit_rows(X)
