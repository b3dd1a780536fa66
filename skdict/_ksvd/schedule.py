"""Which rows each iteration sees, and when a fit has converged."""

import numpy as np

from .._dask import is_dask_array
from .._validation import check_samples


def take_rows(X, rows):
    """Rows of X (all for None) in memory; gathered and validated for dask."""
    if is_dask_array(X):
        return check_samples((X if rows is None else X[rows]).compute())
    return X if rows is None else X[rows]


def minibatches(n_samples, batch_size, rng):
    """Yield row indices of each iteration's batch; None means all rows."""
    if batch_size is None or batch_size >= n_samples:
        while True:
            yield None
    while True:
        perm = rng.permutation(n_samples)
        for start in range(0, n_samples - batch_size + 1, batch_size):
            yield np.sort(perm[start : start + batch_size])


def tol_window(n_samples, batch_size):
    """Iterations per epoch: the window over which convergence is judged."""
    if batch_size is None or batch_size >= n_samples:
        return 1
    return n_samples // batch_size


def converged(history, window, tol):
    if tol == 0 or len(history) < 2 * window:
        return False
    current = np.mean(history[-window:])
    previous = np.mean(history[-2 * window : -window])
    return abs(current - previous) <= tol * max(abs(previous), 1e-12)
