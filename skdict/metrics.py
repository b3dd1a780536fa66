"""Scores of a dictionary: reconstruction, sparsity and atom recovery.

All scores are "higher is better".
"""

import numpy as np

from ._validation import check_samples


def _row_norms(X):
    return np.sqrt(np.einsum("ij,ij->i", X, X, dtype=np.float64))


def _relative_errors(X, residual):
    """``||r_i|| / ||x_i||`` per row; a zero row reconstructed exactly scores 0."""
    num = _row_norms(residual)
    den = _row_norms(X)
    out = np.zeros_like(num)
    np.divide(num, den, out=out, where=den > 0)
    out[(den == 0) & (num > 0)] = 1.0
    return out


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
    return float(1.0 - _relative_errors(X, X - X_hat).mean())


def explained_variance(X, X_hat):
    """``1 - sum ||x_i - x̂_i||² / sum ||x_i - x̄||²`` (1 - FVU, SAEBench convention).

    Equals ``sklearn.metrics.r2_score(X, X_hat, multioutput="variance_weighted")``.

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


def _unit_rows(D):
    norms = _row_norms(D)
    return D / np.where(norms > 0, norms, 1.0)[:, None]
