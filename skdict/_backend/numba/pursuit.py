"""Batched greedy pursuits on the Gram matrix, compiled with numba.

Both kernels work in the "Gram domain": they never touch the signals, only their
correlations with the atoms ``alpha0 = D x`` and the Gram matrix ``G = D Dᵀ``. One
chunk of rows is coded per call, rows in parallel (``prange`` over blocks of rows),
with scratch buffers allocated once per block instead of once per row.

OMP keeps, for the support chosen so far, ``U = L⁻¹ G[support, :]`` where ``L`` is
the Cholesky factor of ``G[support, support]``. Three facts make this cheap:

* the new row of ``L`` for a candidate atom ``j`` is ``U[:, j]`` (no triangular
  solve),
* the new row of ``U`` needs one contiguous row ``G[j, :]`` and the previous rows of
  ``U``, which stay in cache (``k * n_atoms`` floats per thread),
* the correlations with the residual drop by ``v_t * U[t, :]`` where ``v = L⁻¹
  alpha0[support]``, and the squared residual norm drops by ``v_t²``.

So each step reads one row of ``G`` from memory, while the textbook Batch-OMP update
``G[:, support] @ gamma`` reads ``t`` of them. Coefficients come from one back
substitution ``Lᵀ gamma = v`` at the end.

Every kernel here and in :mod:`skdict._backend.numba.atom_update` is compiled with
``cache=True``: the first run of a new install compiles them (about 10 s of CPU
for both dtypes) and later processes load them from numba's cache, which lies in
``__pycache__`` next to the source, or, where the package folder is read-only
(a system-wide install), in ``~/.cache/numba``; ``NUMBA_CACHE_DIR`` overrides both.
"""

import numpy as np
from numba import njit, prange

from ..jit import FASTMATH

# Rows coded per parallel task: large enough to amortise the scratch buffers,
# small enough to balance load across threads.
_ROWS_PER_BLOCK = 16


@njit(cache=True)
def _argmax_abs(bits, mask):
    """Index of the largest ``|c|``, reading ``c`` through its integer view ``bits``.

    With the sign bit masked off, the bit patterns of finite floats order like
    their absolute values, and an integer max reduction vectorises where a float
    one does not (LLVM keeps float max reductions scalar): about 6x faster for
    4096 atoms. Returns -1 when every entry is zero.
    """
    best = 0
    for a in range(bits.shape[0]):
        v = bits[a] & mask
        best = v if v > best else best
    if best == 0:
        return -1
    for a in range(bits.shape[0]):
        if bits[a] & mask == best:
            return a
    return -1


@njit(cache=True, fastmath=FASTMATH)
def _omp_row(alpha0, gram, x2, kmax, thresh2, dep_tol, U, c, bits, mask, L, v, g, idx_out, val_out):
    """Code one row by OMP; return the support size."""
    K = alpha0.shape[0]
    if x2 <= 0.0:
        return 0
    c[:] = alpha0
    err2 = x2
    t = 0
    while t < kmax:
        j = _argmax_abs(bits, mask)
        if j < 0:
            break
        d = np.float64(gram[j, j])
        for s in range(t):
            w = np.float64(U[s, j])
            L[t, s] = w
            d -= w * w
        if d <= dep_tol * gram[j, j]:
            # j lies in the span of the support: exclude it until the next step.
            c[j] = 0.0
            continue
        ltt = np.sqrt(d)
        L[t, t] = ltt
        vt = np.float64(c[j]) / ltt
        v[t] = vt
        _project_out(U, t, gram[j], L[t], K)
        inv = U.dtype.type(1.0 / ltt)
        Ut = U[t]
        vt_f = U.dtype.type(vt)
        for a in range(K):
            Ut[a] *= inv
            c[a] -= vt_f * Ut[a]
        idx_out[t] = j
        t += 1
        # The residual is orthogonal to the support; clear round-off so that no
        # chosen atom is picked twice.
        for s in range(t):
            c[idx_out[s]] = 0.0
        err2 -= vt * vt
        if err2 <= thresh2 * x2:
            break
    _back_substitute(L, v, t, g, val_out)
    return t


@njit(cache=True, fastmath=FASTMATH)
def _project_out(U, t, Gj, w, K):
    """``U[t] = Gj - sum_s w[s] U[s]`` over s < t, four rows of U per pass.

    Four rows per pass read and write ``U[t]`` a quarter as often; this loop is
    where OMP spends most of its time.
    """
    Ut = U[t]
    for a in range(K):
        Ut[a] = Gj[a]
    s = 0
    while s + 4 <= t:
        w0 = U.dtype.type(w[s])
        w1 = U.dtype.type(w[s + 1])
        w2 = U.dtype.type(w[s + 2])
        w3 = U.dtype.type(w[s + 3])
        U0, U1, U2, U3 = U[s], U[s + 1], U[s + 2], U[s + 3]
        for a in range(K):
            Ut[a] -= w0 * U0[a] + w1 * U1[a] + w2 * U2[a] + w3 * U3[a]
        s += 4
    while s < t:
        ws = U.dtype.type(w[s])
        Us = U[s]
        for a in range(K):
            Ut[a] -= ws * Us[a]
        s += 1


@njit(cache=True, fastmath=FASTMATH)
def _back_substitute(L, y, t, g, val_out):
    """Solve ``L[:t, :t]ᵀ g = y[:t]`` in float64, then store g in ``val_out``."""
    for s in range(t - 1, -1, -1):
        acc = y[s]
        for r in range(s + 1, t):
            acc -= L[r, s] * g[r]
        g[s] = acc / L[s, s]
        val_out[s] = g[s]


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
    _back_substitute(L, y, t, g, val_out)
    return t


@njit(cache=True, fastmath=FASTMATH)
def _mp_row(alpha0, gram, x2, kmax, thresh2, dep_tol, c, bits, mask, L, y, g, idx_out, val_out):
    """Code one row by matching pursuit, then refit the support by least squares."""
    if x2 <= 0.0:
        return 0
    c[:] = alpha0
    err2 = x2
    n_support = 0
    for _ in range(kmax):
        j = _argmax_abs(bits, mask)
        if j < 0:
            break
        a = c[j] / gram[j, j]
        err2 -= np.float64(a) * np.float64(c[j])
        Gj = gram[j]
        for b in range(c.shape[0]):
            c[b] -= a * Gj[b]
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
def omp_chunk(alpha0, gram, x2, kmax, thresh2, dep_tol, bits_type, mask, idx, val, nnz):
    """OMP for every row of ``alpha0 = X_chunk Dᵀ``; fills idx/val/nnz row-wise.

    ``bits_type`` is the integer type as wide as the float dtype and ``mask`` keeps
    every bit but the sign (see `_argmax_abs`).
    """
    n, K = alpha0.shape
    n_blocks = (n + _ROWS_PER_BLOCK - 1) // _ROWS_PER_BLOCK
    for b in prange(n_blocks):
        U = np.empty((kmax, K), dtype=alpha0.dtype)
        c = np.empty(K, dtype=alpha0.dtype)
        bits = c.view(bits_type)
        L = np.zeros((kmax, kmax))
        v = np.empty(kmax)
        g = np.empty(kmax)
        for i in range(b * _ROWS_PER_BLOCK, min(n, (b + 1) * _ROWS_PER_BLOCK)):
            nnz[i] = _omp_row(
                alpha0[i], gram, x2[i], kmax, thresh2, dep_tol, U, c, bits, mask, L, v, g,
                idx[i], val[i],
            )


@njit(parallel=True, cache=True)
def mp_chunk(alpha0, gram, x2, kmax, thresh2, dep_tol, bits_type, mask, idx, val, nnz):
    """Matching pursuit with least-squares refit for every row of a chunk."""
    n, K = alpha0.shape
    n_blocks = (n + _ROWS_PER_BLOCK - 1) // _ROWS_PER_BLOCK
    for b in prange(n_blocks):
        c = np.empty(K, dtype=alpha0.dtype)
        bits = c.view(bits_type)
        L = np.zeros((kmax, kmax))
        y = np.empty(kmax)
        g = np.empty(kmax)
        for i in range(b * _ROWS_PER_BLOCK, min(n, (b + 1) * _ROWS_PER_BLOCK)):
            nnz[i] = _mp_row(
                alpha0[i], gram, x2[i], kmax, thresh2, dep_tol, c, bits, mask, L, y, g,
                idx[i], val[i],
            )


_KERNELS = {"omp": omp_chunk, "mp": mp_chunk}

# Integer type of the same width as each float dtype, and the mask that clears
# the sign bit: the kernels find max |c| through this view (see _argmax_abs).
_SIGN_BITS = {
    np.dtype(np.float32): (np.int32, np.int32(0x7FFFFFFF)),
    np.dtype(np.float64): (np.int64, np.int64(0x7FFFFFFFFFFFFFFF)),
}


class NumbaCoder:
    """Runs the numba pursuits for a dictionary held in host memory.

    Parameters
    ----------
    dictionary : ndarray of shape (n_atoms, n_features)
    gram : ndarray of shape (n_atoms, n_atoms) or None
        Computed here when None.
    """

    def __init__(self, dictionary, gram):
        self.dictionary = dictionary
        self.gram = dictionary @ dictionary.T if gram is None else gram

    def support(self, X, algorithm, kmax, thresh2, dep_tol):
        """Code the rows of a chunk; return numpy (indices, values, counts)."""
        n = X.shape[0]
        alpha0 = X @ self.dictionary.T
        x2 = np.einsum("ij,ij->i", X, X, dtype=np.float64)
        indices = np.zeros((n, kmax), dtype=np.int32)
        values = np.zeros((n, kmax), dtype=X.dtype)
        counts = np.zeros(n, dtype=np.int64)
        bits_type, mask = _SIGN_BITS[X.dtype]
        _KERNELS[algorithm](
            alpha0, self.gram, x2, kmax, thresh2, dep_tol, bits_type, mask,
            indices, values, counts,
        )
        return indices, values, counts
