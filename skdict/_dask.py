"""Dask arrays in and out: block-wise transform and distributed scoring.

Dask stays optional: whether X is a dask array is decided without importing
dask, and dask is imported only when one is given.
"""

import numpy as np
import scipy.sparse as sp

from ._optional import import_optional
from ._validation import FLOAT_DTYPES


def is_dask_array(X):
    """True for a ``dask.array.Array`` (checked without importing dask)."""
    return type(X).__module__.startswith("dask.") and hasattr(X, "map_blocks")


def check_dask_array(estimator, X, *, reset):
    """Check shape and dtype of a dask array lazily; return it in a float dtype.

    Values are not checked here (that would compute X): each block is checked
    when it is computed.
    """
    if X.ndim != 2:
        raise ValueError(f"Expected a 2D dask array for X, got {X.ndim} dimensions.")
    if np.isnan(X.shape[0]) or any(np.isnan(c) for c in X.chunks[0]):
        raise ValueError(
            "X has unknown chunk sizes; call X.compute_chunk_sizes() first."
        )
    if X.dtype not in FLOAT_DTYPES:
        X = X.astype(np.float64)
    n_features = X.shape[1]
    if reset:
        estimator.n_features_in_ = n_features
    elif n_features != estimator.n_features_in_:
        raise ValueError(
            f"X has {n_features} features, but {type(estimator).__name__} is "
            f"expecting {estimator.n_features_in_} features as input."
        )
    # One chunk across features: every block holds whole rows.
    return X.rechunk({1: -1})


def dask_transform(estimator, X):
    """``estimator.transform`` block by block; a dask array of codes (CSR blocks
    when ``sparse_output=True``)."""
    dask = import_optional("dask", "dask", "transforming a dask array")
    X = check_dask_array(estimator, X, reset=False)
    n_components = estimator.components_.shape[0]
    # Explicit meta: dask would otherwise call the block function on an empty
    # block to guess it, which fails on the delayed estimator argument.
    if estimator.sparse_output:
        meta = sp.csr_matrix((0, 0), dtype=X.dtype)
    else:
        meta = np.empty((0, 0), dtype=X.dtype)
    return X.map_blocks(
        _transform_block,
        dask.delayed(estimator, pure=True),
        dtype=X.dtype,
        chunks=(X.chunks[0], (n_components,)),
        meta=meta,
    )


def _transform_block(block, estimator):
    return estimator.transform(block)


def dask_relative_error_sum(X, error_fn, *args):
    """Sum over all rows of ``error_fn(block, *args)`` (per-row errors), on the cluster."""
    dask = import_optional("dask", "dask", "fitting a dask array")
    args = [dask.delayed(a, pure=True) for a in args]
    errors = X.map_blocks(
        error_fn, *args, dtype=np.float64, drop_axis=1, chunks=(X.chunks[0],),
        meta=np.empty(0, dtype=np.float64),
    )
    return float(errors.sum().compute())
