"""Compact sparse codes and their conversion to the outputs users see.

Every encoder in skdict (OMP, MP, TopK) produces, per row, at most ``k`` atom
indices and values. They are held as three arrays, ``indices`` (n, k), ``values``
(n, k) and ``counts`` (n,), which cost O(n k) memory whatever the number of atoms,
and are turned into a CSR matrix or a dense array only at the end.
"""

import numpy as np
import scipy.sparse as sp


def support_to_csr(indices, values, counts, n_components):
    """Build a CSR matrix from per-row supports (indices within a row sorted)."""
    n, k = indices.shape
    mask = np.arange(k) < counts[:, None]
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    codes = sp.csr_matrix(
        (values[mask], indices[mask], indptr), shape=(n, n_components)
    )
    codes.sort_indices()
    return codes


def support_to_dense(indices, values, counts, n_components, out=None):
    """Scatter per-row supports into a dense (n, n_components) array."""
    n, k = indices.shape
    if out is None:
        out = np.zeros((n, n_components), dtype=values.dtype)
    mask = np.arange(k) < counts[:, None]
    rows = np.broadcast_to(np.arange(n)[:, None], (n, k))
    out[rows[mask], indices[mask]] = values[mask]
    return out


def stack_csr(blocks, n_components, dtype):
    """Stack CSR blocks vertically (an empty list gives a 0-row matrix)."""
    if not blocks:
        return sp.csr_matrix((0, n_components), dtype=dtype)
    return sp.vstack(blocks, format="csr", dtype=dtype)
