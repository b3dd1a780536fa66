"""Row-wise norms, errors, normalisation and chunk sizes shared across skdict."""

import numpy as np


def _row_norms(X):
    return np.sqrt(np.einsum("ij,ij->i", X, X, dtype=np.float64))


def relative_errors(X, residual):
    """``||r_i|| / ||x_i||`` per row; a zero row reconstructed exactly scores 0."""
    num = _row_norms(residual)
    den = _row_norms(X)
    out = np.zeros_like(num)
    np.divide(num, den, out=out, where=den > 0)
    out[(den == 0) & (num > 0)] = 1.0
    return out


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


def rows_per_buffer(n_columns, itemsize, budget=32 * 2**20, low=64, high=65536):
    """Rows of a (rows, n_columns) buffer that fit `budget` bytes, within [low, high].

    Chunked loops use it so that memory stays O(chunk x n_columns) for any number
    of rows, while chunks stay large enough to amortise each call's overhead.
    """
    return int(np.clip(budget // (n_columns * itemsize), low, high))
