"""Non-negative orthogonal matching pursuit on the Gram matrix, compiled with numba.

NN-OMP (Bruckstein, Elad & Zibulevsky, 2008): each step adds to the support the
atom of largest *positive* correlation with the residual, then solves the
non-negative least squares (NNLS) problem on the support. A row stops after
``kmax`` steps, when no correlation is positive, or once its relative residual
is below the tolerance. Atoms whose NNLS coefficient is zero stay in the support
(they used a step) but are not part of the code.

Like the OMP kernel this works in the Gram domain, on ``alpha0 = D x`` and
``G = D Dᵀ`` only. NNLS on the support is Lawson & Hanson's active-set method,
warm-started from the previous step's solution: the passive set (the atoms with
a positive coefficient) gets the new atom, its least-squares solution is taken by
a Cholesky factorisation of ``G[passive, passive]``, and coefficients that would
turn negative are clipped by the largest feasible step and leave the set; atoms
of the support whose gradient ``alpha0_j - G_j a`` turns positive re-enter it.

"Positive" means above ``dep_tol * ||x||``, the rounding level of the
correlations: an atom in the span of the passive atoms has zero gradient, so no
linearly dependent atom is ever picked, and a row fitted exactly stops instead
of adding atoms with round-off coefficients.
"""

import numpy as np
from numba import njit, prange

from ..jit import FASTMATH
from .pursuit import NumbaCoder

# Rows coded per parallel task, as in the OMP kernel.
_ROWS_PER_BLOCK = 16


@njit(cache=True)
def _argmax_positive(bits):
    """Index of the largest positive entry of ``c``, read through its integer view.

    Positive floats order like their bit patterns read as signed integers, and
    negative floats read as negative integers; an integer max reduction
    vectorises where a float one does not. Returns -1 when no entry is positive.
    """
    best = 0
    for a in range(bits.shape[0]):
        v = bits[a]
        best = v if v > best else best
    if best == 0:
        return -1
    for a in range(bits.shape[0]):
        if bits[a] == best:
            return a
    return -1


@njit(cache=True, fastmath=FASTMATH)
def _solve_passive(alpha0, gram, support, passive, t, dep_tol, L, order, y, z):
    """Least squares on the passive slots of the support: ``z[s]`` for passive ``s``,
    0 elsewhere. A slot whose atom depends on earlier passive ones leaves the set."""
    p = 0
    for s in range(t):
        z[s] = 0.0
        if not passive[s]:
            continue
        j = support[s]
        d = np.float64(gram[j, j])
        for q in range(p):
            w = np.float64(gram[support[order[q]], j])
            for r in range(q):
                w -= L[q, r] * L[p, r]
            w /= L[q, q]
            L[p, q] = w
            d -= w * w
        if d <= dep_tol * gram[j, j]:
            passive[s] = False
            continue
        L[p, p] = np.sqrt(d)
        order[p] = s
        p += 1
    for q in range(p):
        acc = np.float64(alpha0[support[order[q]]])
        for r in range(q):
            acc -= L[q, r] * y[r]
        y[q] = acc / L[q, q]
    for q in range(p - 1, -1, -1):
        acc = y[q]
        for r in range(q + 1, p):
            acc -= L[r, q] * z[order[r]]
        z[order[q]] = acc / L[q, q]


@njit(cache=True, fastmath=FASTMATH)
def _gradient(alpha0, gram, support, passive, a, t, j):
    """``alpha0_j - G_j a``: the correlation of atom ``j`` with the residual."""
    w = np.float64(alpha0[j])
    for q in range(t):
        if passive[q]:
            w -= a[q] * gram[support[q], j]
    return w


@njit(cache=True, fastmath=FASTMATH)
def _nnls(alpha0, gram, support, passive, a, t, dep_tol, gtol, L, order, y, z):
    """Lawson-Hanson NNLS on the support's ``t`` slots, from the feasible ``a``."""
    for _ in range(3 * t + 3):
        _solve_passive(alpha0, gram, support, passive, t, dep_tol, L, order, y, z)
        step, blocking = 1.0, -1
        for s in range(t):
            if passive[s] and z[s] <= 0.0:
                gap = a[s] - z[s]
                ratio = a[s] / gap if gap > 0.0 else 0.0
                if ratio < step or blocking < 0:
                    step, blocking = ratio, s
        if blocking >= 0:
            # Move towards z as far as every coefficient stays non-negative; the
            # ones that reach zero leave the passive set.
            for s in range(t):
                if passive[s]:
                    a[s] += step * (z[s] - a[s])
                    if a[s] <= 0.0 or s == blocking:
                        a[s] = 0.0
                        passive[s] = False
            continue
        for s in range(t):
            a[s] = z[s] if passive[s] else 0.0
        best, enter = gtol, -1
        for s in range(t):
            if not passive[s]:
                w = _gradient(alpha0, gram, support, passive, a, t, support[s])
                if w > best:
                    best, enter = w, s
        if enter < 0:
            return
        passive[enter] = True


@njit(cache=True, fastmath=FASTMATH)
def _nnomp_row(
    alpha0, gram, x2, kmax, thresh2, dep_tol, c, bits, a, passive, L, order, y, z,
    idx_out, val_out,
):
    """Code one row by NN-OMP; return the number of non-zero coefficients."""
    if x2 <= 0.0:
        return 0
    gtol = dep_tol * np.sqrt(x2)
    c[:] = alpha0
    t = 0
    while t < kmax:
        for s in range(t):
            c[idx_out[s]] = 0.0
        j = _argmax_positive(bits)
        if j < 0 or c[j] <= gtol:
            break
        idx_out[t] = j
        a[t] = 0.0
        passive[t] = True
        t += 1
        _nnls(alpha0, gram, idx_out, passive, a, t, dep_tol, gtol, L, order, y, z)
        c[:] = alpha0
        err2 = x2
        for s in range(t):
            if passive[s]:
                Gj = gram[idx_out[s]]
                coef = c.dtype.type(a[s])
                for b in range(c.shape[0]):
                    c[b] -= coef * Gj[b]
                err2 -= a[s] * alpha0[idx_out[s]]
        if err2 <= thresh2 * x2:
            break
    n = 0
    for s in range(t):
        if passive[s]:
            idx_out[n] = idx_out[s]
            val_out[n] = a[s]
            n += 1
    return n


@njit(parallel=True, cache=True)
def nnomp_chunk(alpha0, gram, x2, kmax, thresh2, dep_tol, bits_type, idx, val, nnz):
    """NN-OMP for every row of ``alpha0 = X_chunk Dᵀ``; fills idx/val/nnz row-wise.

    ``bits_type`` is the signed integer type as wide as the float dtype (see
    `_argmax_positive`).
    """
    n, K = alpha0.shape
    n_blocks = (n + _ROWS_PER_BLOCK - 1) // _ROWS_PER_BLOCK
    for b in prange(n_blocks):
        c = np.empty(K, dtype=alpha0.dtype)
        bits = c.view(bits_type)
        a = np.zeros(kmax)
        passive = np.zeros(kmax, dtype=np.bool_)
        L = np.zeros((kmax, kmax))
        order = np.zeros(kmax, dtype=np.int64)
        y = np.empty(kmax)
        z = np.zeros(kmax)
        for i in range(b * _ROWS_PER_BLOCK, min(n, (b + 1) * _ROWS_PER_BLOCK)):
            nnz[i] = _nnomp_row(
                alpha0[i], gram, x2[i], kmax, thresh2, dep_tol, c, bits, a, passive, L,
                order, y, z, idx[i], val[i],
            )


_BITS = {np.dtype(np.float32): np.int32, np.dtype(np.float64): np.int64}


class NNOMPCoder(NumbaCoder):
    """Runs the numba NN-OMP for a dictionary held in host memory (parameters as
    :class:`~skdict._backend.numba.pursuit.NumbaCoder`)."""

    def support(self, X, algorithm, kmax, thresh2, dep_tol):
        """Code the rows of a chunk (`algorithm` is "omp"); return numpy
        (indices, values, counts)."""
        alpha0, x2, indices, values, counts = self.start(X, kmax)
        nnomp_chunk(alpha0, self.gram, x2, kmax, thresh2, dep_tol, _BITS[X.dtype],
                    indices, values, counts)
        return indices, values, counts
