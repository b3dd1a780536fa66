"""Matching pursuit on the Gram matrix, then a least-squares refit of its support.

Each step picks the atom with the largest ``|c|`` and lowers every correlation
by ``a * G[j, :]``: one pass over a row of the Gram matrix and over the
correlations, which hold their per-tile maxima (see
:mod:`~skdict._backend.numba.tiles`), so the next choice needs no extra pass.
"""

import numpy as np
from numba import njit, prange

from ..jit import FASTMATH
from . import tiles
from .omp import ROWS_PER_TASK, back_substitute
from .tiles import TILE


@njit(cache=True, fastmath=FASTMATH)
def _cholesky_refit(alpha0, gram, support, n_support, dep_tol, L, y, g, val_out):
    """Least-squares coefficients on a support; drop atoms dependent on earlier ones.

    Returns the number of atoms kept; the kept atoms are compacted to the front
    of ``support``.
    """
    t = 0
    for p in range(n_support):
        j = support[p]
        d = np.float64(gram[j, j])
        for s in range(t):
            w = np.float64(gram[support[s], j])
            for r in range(s):
                w -= L[s, r] * L[t, r]
            w /= L[s, s]
            L[t, s] = w
            d -= w * w
        if d <= dep_tol * gram[j, j]:
            continue
        L[t, t] = np.sqrt(d)
        support[t] = j
        t += 1
    for s in range(t):
        acc = np.float64(alpha0[support[s]])
        for r in range(s):
            acc -= L[s, r] * y[r]
        y[s] = acc / L[s, s]
    back_substitute(L, y, t, g, val_out)
    return t


@njit(cache=True, fastmath=FASTMATH)
def _mp_row(alpha0, gram, x2, kmax, thresh2, dep_tol, mask, C, bits, tmax, L, y, g, idx_out,
            val_out):
    """Code one row by matching pursuit, then refit the support by least squares."""
    if x2 <= 0.0:
        return 0
    K = alpha0.shape[0]
    tiles.load(alpha0, C, bits, tmax, mask)
    err2 = x2
    n_support = 0
    for _ in range(kmax):
        j = tiles.argmax(bits, tmax, mask, K)
        if j < 0:
            break
        cj = tiles.get(C, j)
        a = cj / gram[j, j]
        err2 -= np.float64(a) * np.float64(cj)
        Gj = gram[j]
        for b in range(C.shape[0]):
            width = tiles.tile_width(K, b)
            cb = C[b]
            src = Gj[b * TILE : b * TILE + width]
            for x in range(width):
                cb[x] -= a * src[x]
            tmax[b] = tiles.tile_max(bits[b], width, mask)
        new = True
        for s in range(n_support):
            if idx_out[s] == j:
                new = False
        if new:
            idx_out[n_support] = j
            n_support += 1
        if err2 <= thresh2 * x2:
            break
    return _cholesky_refit(alpha0, gram, idx_out, n_support, dep_tol, L, y, g, val_out)


@njit(parallel=True, cache=True)
def mp_chunk(alpha0, gram, x2, kmax, thresh2, dep_tol, bits_type, mask, idx, val, nnz):
    """Matching pursuit with least-squares refit for every row of a chunk."""
    n, K = alpha0.shape
    n_tiles = (K + TILE - 1) // TILE
    for task in prange((n + ROWS_PER_TASK - 1) // ROWS_PER_TASK):
        C = np.zeros((n_tiles, TILE + tiles.PAD), dtype=alpha0.dtype)
        bits = C.view(bits_type)
        tmax = np.zeros(n_tiles, bits_type)
        L = np.zeros((kmax, kmax))
        y = np.empty(kmax)
        g = np.empty(kmax)
        for i in range(task * ROWS_PER_TASK, min(n, (task + 1) * ROWS_PER_TASK)):
            nnz[i] = _mp_row(
                alpha0[i], gram, x2[i], kmax, thresh2, dep_tol, mask, C, bits, tmax, L, y, g,
                idx[i], val[i],
            )
