"""numba kernels of the K-SVD dictionary update, on CSR codes and a dense residual.

The residual ``E = X - A D`` of the current batch is held dense and kept exact
while atoms change. Atoms are updated in batches: every atom of a batch computes
its rank-1 update from the same residual, in parallel, and then the residual rows
those atoms touch are corrected, in parallel over rows.
"""

import numpy as np
from numba import njit, prange

from ..jit import FASTMATH


def update_dictionary(
    X, D, codes, *, groups, atom_batch_size, x_norms, weight_floor, weighted, n_power_iter,
    positive=False,
):
    """K-SVD update of every group's atoms; return the residual.

    Parameters
    ----------
    X : ndarray of shape (n, n_features)
        The batch of rows, in the dtype of `D`.
    D : ndarray of shape (n_atoms, n_features)
        Atoms, updated in place.
    codes : csr_matrix of shape (n, n_atoms)
        Codes of `X`; ``codes.data`` is updated in place.
    groups : list of (lo, hi, order)
        Atom groups updated one after the other, each on the residual left by
        the groups before it, with its atoms visited in ``order``.
    atom_batch_size : int
        Atoms updated together from the same residual.
    x_norms : ndarray of shape (n,)
        Norms of the rows of `X`.
    weight_floor : float
        Relative residual below which a row's weight stops growing.
    weighted : bool
        Majorise-minimise weights for the mean relative error; False weighs
        every row 1 (the classic squared-error K-SVD update).
    n_power_iter : int
        Power iterations per atom.
    positive : bool, default=False
        Keep the (non-negative) codes non-negative: see ``_rank1_atom``.

    Returns
    -------
    residual : ndarray of shape (n, n_features)
        ``X - codes @ D`` with the updated atoms and codes.
    """
    indptr, indices, data = codes.indptr, codes.indices, codes.data
    atom_ptr, atom_rows, atom_pos = atom_positions(indptr, indices, D.shape[0])
    residual = np.array(X, dtype=D.dtype, order="C", copy=True)
    for lo, hi, order in groups:
        subtract_codes(residual, indptr, indices, data, D, lo, hi)
        update_atoms(
            residual, D, indptr, indices, data, atom_ptr, atom_rows, atom_pos,
            order, atom_batch_size, x_norms, weight_floor, weighted, n_power_iter, positive,
        )
    return residual


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def subtract_codes(E, indptr, indices, data, D, lo, hi):
    """``E -= A[:, lo:hi] @ D[lo:hi]`` for CSR codes A, in place."""
    m = E.shape[1]
    for i in prange(E.shape[0]):
        for p in range(indptr[i], indptr[i + 1]):
            j = indices[p]
            if lo <= j < hi:
                a = data[p]
                for f in range(m):
                    E[i, f] -= a * D[j, f]


@njit(cache=True)
def atom_positions(indptr, indices, n_atoms):
    """Transpose CSR structure: for each atom, its rows and their CSR positions."""
    counts = np.zeros(n_atoms + 1, dtype=np.int64)
    for p in range(indices.shape[0]):
        counts[indices[p] + 1] += 1
    atom_ptr = np.cumsum(counts)
    fill = atom_ptr[:-1].copy()
    rows = np.empty(indices.shape[0], dtype=np.int64)
    pos = np.empty(indices.shape[0], dtype=np.int64)
    for i in range(indptr.shape[0] - 1):
        for p in range(indptr[i], indptr[i + 1]):
            q = fill[indices[p]]
            rows[q] = i
            pos[q] = p
            fill[indices[p]] += 1
    return atom_ptr, rows, pos


@njit(cache=True, fastmath=FASTMATH)
def _rank1_atom(
    E, d, rows, coefs, x_norms, floor, weighted, n_power_iter, positive, v_out, u_out
):
    """Weighted rank-1 update of one atom from its restricted residual.

    Fits ``E_k = E[rows] + coefs dᵀ`` (the residual without atom ``d``) by
    ``u vᵀ`` minimising ``sum_r w_r ||E_k[r] - u_r v||²`` with the
    majorise-minimise weights ``w_r = 1 / (||x_r|| max(||e_r||, floor ||x_r||))``,
    ``e_r`` the current residual row. Because ``||e|| <= (||e||² + ||e_0||²) /
    (2 ||e_0||)``, any step that lowers this weighted problem lowers ``sum_r
    ||e_r|| / ||x_r||``, the loss whose complement is the signal recovered
    (Huber-smoothed below ``floor`` relative error, where the weight is capped). For fixed ``v`` the best
    ``u_r = E_k[r] · v`` whatever the weights; ``v`` is the leading eigenvector of
    ``sum_r w_r E_k[r]ᵀ E_k[r]``, reached by power iteration.

    ``E_k`` is never formed: products with it use ``E[rows]`` and the old atom
    ``d``. Starting from ``d`` makes a few iterations enough (each one can only
    improve on ``d``), and keeps ``v · d >= 0``, which fixes the sign of the new
    atom. Writes the unit atom to ``v_out`` and the coefficients to ``u_out``.

    With ``weighted`` False every ``w_r = 1``: the classic K-SVD update, the
    leading singular pair of ``E_k`` (squared Frobenius error).

    With ``positive`` the coefficients are kept non-negative: ``u_r = max(E_k[r]
    · v, 0)``, the best non-negative coefficient for a fixed ``v``, and ``v``
    is refitted to those clipped coefficients, which is exact too (``v ∝ sum_r
    w_r u_r E_k[r]``). Each half step is a minimisation, so starting from the
    current atom and its non-negative codes (a feasible point) the weighted
    loss never rises, and the atom keeps the orientation its codes use.
    """
    m = d.shape[0]
    n = rows.shape[0]
    weights = np.empty(n)
    for r in range(n):
        e = E[rows[r]]
        e2 = 0.0
        for f in range(m):
            e2 += e[f] * e[f]
        xn = x_norms[rows[r]]
        if not weighted:
            weights[r] = 1.0
        elif xn > 0:
            # Rows fitted exactly would get infinite weight; cap it.
            weights[r] = 1.0 / (xn * max(np.sqrt(e2), floor * xn))
        else:
            weights[r] = 0.0
    v_out[:] = d
    for it in range(n_power_iter + 1):
        dv = 0.0
        for f in range(m):
            dv += d[f] * v_out[f]
        for r in range(n):
            acc = 0.0
            e = E[rows[r]]
            for f in range(m):
                acc += e[f] * v_out[f]
            u_out[r] = acc + coefs[r] * dv
            if positive and u_out[r] < 0.0:
                u_out[r] = 0.0
        if it == n_power_iter:
            return
        w = 0.0
        for r in range(n):
            w += weights[r] * u_out[r] * coefs[r]
        for f in range(m):
            v_out[f] = w * d[f]
        for r in range(n):
            wu = weights[r] * u_out[r]
            e = E[rows[r]]
            for f in range(m):
                v_out[f] += wu * e[f]
        norm = 0.0
        for f in range(m):
            norm += v_out[f] * v_out[f]
        if norm <= 0.0:
            # E_k is zero on these rows: the atom has nothing left to explain.
            v_out[:] = d
            u_out[:] = 0.0
            return
        scale = 1.0 / np.sqrt(norm)
        for f in range(m):
            v_out[f] *= scale


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def update_atoms(
    E, D, indptr, indices, data, atom_ptr, atom_rows, atom_pos, order, atom_batch_size,
    x_norms, floor, weighted, n_power_iter, positive,
):
    """Update the atoms ``order`` in batches; keep ``E``, ``D`` and ``data`` consistent.

    Within a batch every atom takes the rank-1 update of its restricted residual
    from the same ``E`` (in parallel over atoms); then every row of ``E`` that a
    batch atom touches is corrected by ``-(a_new d_new - a_old d_old)`` for each
    batch atom it uses (in parallel over rows), and the new atoms and
    coefficients are written back.
    """
    n, m = E.shape
    new_D = np.empty((atom_batch_size, m), dtype=D.dtype)
    new_data = np.empty_like(data)
    slot = np.full(D.shape[0], -1, dtype=np.int64)  # batch slot of each atom, or -1
    row_mark = np.full(n, -1, dtype=np.int64)
    touched = np.empty(n, dtype=np.int64)
    for start in range(0, order.shape[0], atom_batch_size):
        batch = order[start:start + atom_batch_size]
        nb = batch.shape[0]
        for s in prange(nb):
            k = batch[s]
            p0, p1 = atom_ptr[k], atom_ptr[k + 1]
            if p1 == p0:
                new_D[s] = D[k]
                continue
            coefs = np.empty(p1 - p0, dtype=data.dtype)
            for r in range(p1 - p0):
                coefs[r] = data[atom_pos[p0 + r]]
            u = np.empty(p1 - p0, dtype=data.dtype)
            _rank1_atom(
                E, D[k], atom_rows[p0:p1], coefs, x_norms, floor, weighted, n_power_iter,
                positive, new_D[s], u,
            )
            for r in range(p1 - p0):
                new_data[atom_pos[p0 + r]] = u[r]
        n_touched = 0
        for s in range(nb):
            k = batch[s]
            slot[k] = s
            for q in range(atom_ptr[k], atom_ptr[k + 1]):
                i = atom_rows[q]
                if row_mark[i] != start:
                    row_mark[i] = start
                    touched[n_touched] = i
                    n_touched += 1
        for t in prange(n_touched):
            i = touched[t]
            for p in range(indptr[i], indptr[i + 1]):
                s = slot[indices[p]]
                if s < 0:
                    continue
                a_new = new_data[p]
                a_old = data[p]
                d_old = D[indices[p]]
                d_new = new_D[s]
                for f in range(m):
                    E[i, f] -= a_new * d_new[f] - a_old * d_old[f]
        for s in range(nb):
            k = batch[s]
            D[k] = new_D[s]
            for q in range(atom_ptr[k], atom_ptr[k + 1]):
                data[atom_pos[q]] = new_data[atom_pos[q]]
            slot[k] = -1


@njit(parallel=True, cache=True)
def find_duplicates(gram, usage, threshold):
    """Mark the less-used atom of every pair with ``|cos| > threshold``.

    Ties in usage mark the atom with the larger index, so one of each pair
    survives. Works on the Gram matrix of unit-norm atoms, row by row, without
    an O(n_atoms²) temporary.
    """
    K = gram.shape[0]
    marked = np.zeros(K, dtype=np.bool_)
    for i in prange(K):
        for j in range(K):
            if j != i and abs(gram[i, j]) > threshold:
                if usage[j] > usage[i] or (usage[j] == usage[i] and j < i):
                    marked[i] = True
                    break
    return marked
