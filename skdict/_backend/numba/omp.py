"""Exact orthogonal matching pursuit on the Gram matrix, computed a few steps at a time.

The kernel works in the "Gram domain": it never touches the signals, only their
correlations with the atoms ``alpha0 = D x`` and the Gram matrix ``G = D Dᵀ``.
For the support chosen so far it keeps ``U = L⁻¹ G[support, :]``, where ``L`` is
the Cholesky factor of ``G[support, support]``:

* the new row of ``L`` for a candidate atom ``j`` is ``U[:, j]``;
* the new row of ``U`` is ``(G[j, :] - L[t, :t] U[:t, :]) / L[t, t]``;
* the correlations with the residual drop by ``v_t U[t, :]`` where
  ``v = L⁻¹ alpha0[support]``, and the squared residual norm drops by ``v_t²``.

Coefficients come from one back substitution ``Lᵀ gamma = v`` at the end.

The new row of ``U`` costs ``t * n_atoms`` multiply-adds, which is where OMP
spends its time (``k² n_atoms / 2`` per row against the ``n_features * n_atoms``
of the ``X Dᵀ`` product). Step by step, every step streams all previous rows of
``U`` from memory (2 MiB per row at 16,384 atoms and k = 32: L3, not L2) for one
multiply-add per float read. Here the rows of ``U`` for `BLOCK` steps are
computed in one pass over the atoms instead, tile by tile (see
:mod:`~skdict._backend.numba.tiles`), so that each previous row is read once
per block and two new rows share each read. That needs the block's atoms
before their correlations are known, so they are predicted:

1. *Predict*: OMP restricted to a few hundred candidate atoms, those with the
   largest ``|c|`` when the candidates were last chosen, runs `BLOCK` steps
   ahead on the candidates' columns of ``U`` (cheap: the candidates are ~2% of
   16,384 atoms).
2. *Compute*: the rows of ``U`` for those atoms and the correlations of every
   atom after each step, with the same recursion as above, over all atoms.
3. *Confirm*: each predicted atom must be the first atom with the largest
   ``|c|`` among all atoms at its step. The first step that fails is redone
   with the true choice, the correlations are rolled back to it, and the
   candidates are chosen again from the exact correlations there.

So the result is exact OMP: every choice is checked against all atoms, as the
step-by-step kernel makes it, and a wrong prediction only costs time. Ties go
to the first atom, and an atom within ``dep_tol`` of the span of the support is
skipped for the step, as in scikit-learn's ``orthogonal_mp_gram``.

Every kernel here is compiled with ``cache=True``: the first run of a new
install compiles them (tens of seconds of CPU for both dtypes) and later
processes load them from numba's cache, which lies in ``__pycache__`` next to
the source, or, where the package folder is read-only (a system-wide install),
in ``~/.cache/numba``; ``NUMBA_CACHE_DIR`` overrides both.
"""

import numpy as np
from numba import njit, prange

from ..jit import FASTMATH
from . import tiles
from .tiles import TILE

# Steps predicted and computed together. Two new rows of U share each read of
# the previous ones; longer blocks read them less often but waste more work
# when a prediction fails (about two failures per row at 16,384 atoms, k = 32).
BLOCK = 4
# Rows coded per parallel task: large enough to amortise the scratch buffers,
# small enough to balance load across threads.
ROWS_PER_TASK = 16


@njit(cache=True, fastmath=FASTMATH)
def _minus(u, Ub, w, q0, q1, width):
    """``u -= sum(w[q] * Ub[q])`` over ``q0 <= q < q1``, four rows of Ub per pass.

    Four rows per pass read and write ``u`` a quarter as often.
    """
    F = Ub.dtype.type
    q = q0
    while q + 4 <= q1:
        w0, w1, w2, w3 = F(w[q]), F(w[q + 1]), F(w[q + 2]), F(w[q + 3])
        U0, U1, U2, U3 = Ub[q], Ub[q + 1], Ub[q + 2], Ub[q + 3]
        for a in range(width):
            u[a] -= w0 * U0[a] + w1 * U1[a] + w2 * U2[a] + w3 * U3[a]
        q += 4
    while q < q1:
        w0 = F(w[q])
        U0 = Ub[q]
        for a in range(width):
            u[a] -= w0 * U0[a]
        q += 1


@njit(cache=True, fastmath=FASTMATH)
def _minus_two(u1, u2, Ub, w1, w2, q1, width):
    """`_minus` on two rows at once over ``q < q1``: each read of Ub serves both."""
    F = Ub.dtype.type
    q = 0
    while q + 4 <= q1:
        a0, a1, a2, a3 = F(w1[q]), F(w1[q + 1]), F(w1[q + 2]), F(w1[q + 3])
        b0, b1, b2, b3 = F(w2[q]), F(w2[q + 1]), F(w2[q + 2]), F(w2[q + 3])
        U0, U1, U2, U3 = Ub[q], Ub[q + 1], Ub[q + 2], Ub[q + 3]
        for a in range(width):
            x0, x1, x2, x3 = U0[a], U1[a], U2[a], U3[a]
            u1[a] -= a0 * x0 + a1 * x1 + a2 * x2 + a3 * x3
            u2[a] -= b0 * x0 + b1 * x1 + b2 * x2 + b3 * x3
        q += 4
    _minus(u1, Ub, w1, q, q1, width)
    _minus(u2, Ub, w2, q, q1, width)


@njit(cache=True, fastmath=FASTMATH)
def back_substitute(L, y, t, g, val_out):
    """Solve ``L[:t, :t]ᵀ g = y[:t]`` in float64, then store g in ``val_out``."""
    for s in range(t - 1, -1, -1):
        acc = y[s]
        for r in range(s + 1, t):
            acc -= L[r, s] * g[r]
        g[s] = acc / L[s, s]
        val_out[s] = g[s]


@njit(cache=True, fastmath=FASTMATH)
def _sum_squares(c, width):
    acc = 0.0
    for a in range(width):
        acc += np.float64(c[a]) * c[a]
    return acc


@njit(cache=True)
def _choose_candidates(C, bits, tmax, mask, K, tau_factor, spec):
    """Fill ``spec``'s candidate list with the atoms of largest ``|c|``, in atom order.

    The threshold starts at `tau_factor` times the root mean square of ``c``
    (the quantile that leaves the wanted share for Gaussian correlations) and
    rises while more atoms than the list holds pass it. Atoms are compared by
    their bit patterns (see :mod:`.tiles`), which needs no conversion.
    """
    cand = spec[0]
    cap = cand.shape[0] - TILE
    if cap >= K:
        for a in range(K):
            cand[a] = a
        return K
    j = tiles.argmax(bits, tmax, mask, K)
    if j < 0:
        return 0
    s2 = 0.0
    for b in range(C.shape[0]):
        s2 += _sum_squares(C[b], tiles.tile_width(K, b))
    top = abs(np.float64(tiles.get(C, j)))
    tau = min(tau_factor * np.sqrt(s2 / K), top)
    threshold = np.empty(1, dtype=C.dtype)
    while True:
        threshold[0] = tau
        tau_bits = threshold.view(bits.dtype)[0] & mask
        n = 0
        for b in range(C.shape[0]):
            if tmax[b] < tau_bits:
                continue
            cbits = bits[b]
            # Branch-free, into the list's spare `TILE` slots: ~1.6% of atoms
            # pass, and a branch would mispredict on each of them.
            first = b * TILE
            for a in range(tiles.tile_width(K, b)):
                cand[np.uint64(n)] = first + a
                n += cbits[a] & mask >= tau_bits
            if n > cap:
                break
        if n <= cap or tau >= top:
            return min(n, cap)
        tau += (top - tau) / 4


@njit(cache=True)
def _refresh(full, K, t, spec, support, mask, tau_factor):
    """Choose candidates from the correlations at step t and gather their state."""
    U, C, bits, _, tmax, _ = full
    cand, size, Ur, cc, _, jpos, stamp, posof = spec
    M = _choose_candidates(C, bits, tmax, mask, K, tau_factor, spec)
    epoch = size[1] + 1
    size[0] = M
    size[1] = epoch
    for p in range(M):
        a = cand[p]
        stamp[a] = epoch
        posof[a] = p
        cc[p] = C[a // TILE, a % TILE]
    # Row by row of U: candidates are sorted, so each row's reads ascend.
    for q in range(t):
        Urq = Ur[q]
        for p in range(M):
            a = np.uint64(cand[p])
            Urq[p] = U[a // np.uint64(TILE), np.uint64(q), a % np.uint64(TILE)]
    for q in range(t):
        a = support[q]
        jpos[q] = posof[a] if stamp[a] == epoch else -1


@njit(cache=True)
def _load_row(g, U, s):
    """Copy a row of the Gram matrix into row s of every tile of U.

    Read whole, the row streams from memory; tile by tile inside `_block`, its
    short pieces would each wait for memory.
    """
    for b in range(U.shape[0]):
        width = tiles.tile_width(g.shape[0], b)
        src = g[b * TILE : b * TILE + width]
        dst = U[b, s]
        for a in range(width):
            dst[a] = src[a]


@njit(cache=True, fastmath=FASTMATH)
def _predict(gram, x2, t, kmax, thresh2, dep_tol, mask, err2, U, spec, chol, support, rej):
    """Restricted OMP from step t for at most `BLOCK` accepted atoms.

    Writes the atoms to `support`, their rows of the Gram matrix to their rows
    of `U` (which `_block` turns into rows of U), and their rows of ``L``,
    ``v`` and the squared residual after each step to `chol`. Returns (atoms
    accepted, whether the row ends there: `kmax` atoms or `thresh2` reached).
    """
    cand, size, Ur, cc, ccbits, jpos = spec[:6]
    L, v, _, e2 = chol
    rej_step, rej_atom, n_rej = rej
    M = size[0]
    F = Ur.dtype.type
    n = 0
    while n < BLOCK and t + n < kmax:
        s = t + n
        jp = tiles.vector_argmax(ccbits, M, mask)
        if jp < 0:
            return n, False
        j = cand[jp]
        d = np.float64(gram[j, j])
        for q in range(s):
            w = np.float64(Ur[q, jp])
            L[s, q] = w
            d -= w * w
        if d <= dep_tol * gram[j, j]:
            # j lies in the span of the support: skip it for this step (the
            # confirmation clears it in the full correlations too).
            cc[jp] = 0
            k = n_rej[0]
            if k == rej_atom.shape[0]:
                return n, False
            rej_step[k] = s
            rej_atom[k] = j
            n_rej[0] = k + 1
            continue
        ltt = np.sqrt(d)
        L[s, s] = ltt
        vt = np.float64(cc[jp]) / ltt
        v[s] = vt
        _load_row(gram[j], U, s)
        u = Ur[s]
        for p in range(M):
            a = np.uint64(cand[p])
            u[p] = U[a // np.uint64(TILE), np.uint64(s), a % np.uint64(TILE)]
        _minus(u, Ur, L[s], 0, s, M)
        inv, vf = F(1.0 / ltt), F(vt)
        for p in range(M):
            u[p] *= inv
            cc[p] -= vf * u[p]
        support[s] = j
        jpos[s] = jp
        n += 1
        for q in range(s + 1):
            if jpos[q] >= 0:
                cc[jpos[q]] = 0
        err2 -= vt * vt
        e2[s] = err2
        if err2 <= thresh2 * x2:
            return n, True
    return n, t + n == kmax


@njit(cache=True)
def _clear_step(cb, b, support, n_chosen, rej, step):
    """Zero, in tile b, the chosen atoms and the atoms skipped at `step`.

    The residual is orthogonal to the support; clearing its round-off keeps a
    chosen atom from being picked twice.
    """
    for q in range(n_chosen):
        a = support[q]
        if a // TILE == b:
            cb[a % TILE] = 0
    rej_step, rej_atom, n_rej = rej
    for k in range(n_rej[0]):
        a = rej_atom[k]
        if rej_step[k] == step and a // TILE == b:
            cb[a % TILE] = 0


@njit(cache=True)
def _check(cbits, b, width, atom, i, mask, check):
    """Record |c| of the predicted `atom` of block step i, if it lies in tile b, and
    whether no earlier atom of the tile reaches it."""
    if atom // TILE != b:
        return
    spec_bits, first = check
    pos = atom % TILE
    value = cbits[pos] & mask
    spec_bits[i] = value
    first[i] = True
    for a in range(min(pos, width)):
        if cbits[a] & mask >= value:
            first[i] = False
            return


@njit(cache=True, fastmath=FASTMATH)
def _block(K, t, n, support, chol, full, rej, mask, check):
    """Rows t..t+n-1 of U and the correlations after each step, tile by tile.

    Rows t..t+n-1 of U hold the atoms' rows of the Gram matrix. The
    correlations at step t are kept in ``C0`` for `_replay`.
    """
    U, C, bits, C0, _, tm = full
    L, v = chol[0], chol[1]
    F = U.dtype.type
    for b in range(C.shape[0]):
        width = tiles.tile_width(K, b)
        Ub, cb, cbits, c0 = U[b], C[b], bits[b], C0[b]
        for a in range(width):
            c0[a] = cb[a]
        _check(cbits, b, width, support[t], 0, mask, check)
        s = t
        while s + 2 <= t + n:
            _minus_two(Ub[s], Ub[s + 1], Ub, L[s], L[s + 1], t, width)
            s += 2
        if s < t + n:
            _minus(Ub[s], Ub, L[s], 0, t, width)
        for s in range(t, t + n):
            u = Ub[s]
            _minus(u, Ub, L[s], t, s, width)
            inv, vt = F(1.0 / L[s, s]), F(v[s])
            for a in range(width):
                u[a] *= inv
                cb[a] -= vt * u[a]
            _clear_step(cb, b, support, s + 1, rej, s + 1)
            tm[s - t + 1, b] = tiles.tile_max(cbits, width, mask)
            if s + 1 < t + n:
                _check(cbits, b, width, support[s + 1], s - t + 1, mask, check)


@njit(cache=True)
def _confirmed(tm, t, n, support, check):
    """Number of predicted steps, from the first, that are the exact OMP choice."""
    spec_bits, first = check
    for i in range(n):
        b, best = tiles.best_tile(tm[i])
        if best <= 0 or support[t + i] // TILE != b or spec_bits[i] != best or not first[i]:
            return i
    return n


@njit(cache=True, fastmath=FASTMATH)
def _replay(t, s, support, v, full, rej, mask, K):
    """Roll the correlations back to step s from the block start t (as `_block` did)."""
    U, C, bits, C0, tmax, _ = full
    F = U.dtype.type
    for b in range(C.shape[0]):
        width = tiles.tile_width(K, b)
        Ub, cb, c0 = U[b], C[b], C0[b]
        for a in range(width):
            cb[a] = c0[a]
        for q in range(t, s):
            u = Ub[q]
            vq = F(v[q])
            for a in range(width):
                cb[a] -= vq * u[a]
            _clear_step(cb, b, support, q + 1, rej, q + 1)
        tmax[b] = tiles.tile_max(bits[b], width, mask)


@njit(cache=True)
def _clear_skipped(full, rej, step, mask, K):
    """Zero the atoms skipped at `step` in the full correlations."""
    C, bits, tmax = full[1], full[2], full[4]
    rej_step, rej_atom, n_rej = rej
    for k in range(n_rej[0]):
        if rej_step[k] == step:
            tiles.clear(C, bits, tmax, mask, rej_atom[k], K)


@njit(cache=True, fastmath=FASTMATH)
def _choose(t, gram, dep_tol, mask, full, chol, support, K):
    """The exact OMP choice at step t, from the correlations of every atom.

    Fills row t of ``L``, ``v`` and `support` and loads the atom's row of the
    Gram matrix into row t of U; returns False when no atom is left.
    """
    U, C, bits, _, tmax, _ = full
    L, v = chol[0], chol[1]
    while True:
        j = tiles.argmax(bits, tmax, mask, K)
        if j < 0:
            return False
        Ub, a = U[j // TILE], j % TILE
        d = np.float64(gram[j, j])
        for q in range(t):
            w = np.float64(Ub[q, a])
            L[t, q] = w
            d -= w * w
        if d <= dep_tol * gram[j, j]:
            # j lies in the span of the support: skip it for this step.
            tiles.clear(C, bits, tmax, mask, j, K)
            continue
        L[t, t] = np.sqrt(d)
        v[t] = np.float64(tiles.get(C, j)) / L[t, t]
        support[t] = j
        _load_row(gram[j], U, t)
        return True


@njit(cache=True, fastmath=FASTMATH)
def _omp_steps(alpha0, gram, x2, kmax, thresh2, dep_tol, mask, full, chol, rej, check, idx_out):
    """OMP one step at a time: the choice, then the row of U and the correlations."""
    K = alpha0.shape[0]
    tmax, tm = full[4], full[5]
    t, err2 = 0, x2
    while t < kmax and _choose(t, gram, dep_tol, mask, full, chol, idx_out, K):
        _block(K, t, 1, idx_out, chol, full, rej, mask, check)
        tmax[:] = tm[1]
        err2 -= chol[1][t] ** 2
        t += 1
        if err2 <= thresh2 * x2:
            break
    return t


@njit(cache=True, fastmath=FASTMATH)
def _omp_blocks(alpha0, gram, x2, kmax, thresh2, dep_tol, mask, tau_factor, full, spec, chol,
                rej, check, idx_out):
    """OMP `BLOCK` predicted steps at a time; return (support size, wrong predictions)."""
    U, C, bits, _, tmax, tm = full
    K = alpha0.shape[0]
    n_rej = rej[2]
    t, err2, wrong = 0, x2, 0
    while t < kmax:
        # Candidates from the exact correlations at every block: chosen once
        # per row instead, the prediction fails about twice per row at 16,384
        # atoms and k = 32; chosen per block, about once per hundred rows.
        _refresh(full, K, t, spec, idx_out, mask, tau_factor)
        n_rej[0] = 0
        n, ends = _predict(gram, x2, t, kmax, thresh2, dep_tol, mask, err2, U, spec, chol,
                           idx_out, rej)
        _clear_skipped(full, rej, t, mask, K)
        if n == 0:
            if tiles.argmax(bits, tmax, mask, K) < 0:
                break
            continue
        tm[0, :] = tmax
        _block(K, t, n, idx_out, chol, full, rej, mask, check)
        ok = _confirmed(tm, t, n, idx_out, check)
        if ok < n:
            _replay(t, t + ok, idx_out, chol[1], full, rej, mask, K)
            wrong += 1
        else:
            tmax[:] = tm[n]
        t += ok
        if ok:
            err2 = chol[3][t - 1]
        if ok == n and ends:
            break
    return t, wrong


@njit(cache=True, fastmath=FASTMATH)
def omp_row(alpha0, gram, x2, kmax, thresh2, dep_tol, mask, tau_factor, blocks, full, spec,
            chol, rej, check, idx_out, val_out):
    """Code one row by OMP; return (support size, number of wrong predictions)."""
    if x2 <= 0.0:
        return 0, 0
    tiles.load(alpha0, full[1], full[2], full[4], mask)
    rej[2][0] = 0
    wrong = 0
    if blocks:
        t, wrong = _omp_blocks(alpha0, gram, x2, kmax, thresh2, dep_tol, mask, tau_factor,
                               full, spec, chol, rej, check, idx_out)
    else:
        t = _omp_steps(alpha0, gram, x2, kmax, thresh2, dep_tol, mask, full, chol, rej, check,
                       idx_out)
    back_substitute(chol[0], chol[1], t, chol[2], val_out)
    return t, wrong


@njit(parallel=True, cache=True)
def omp_chunk(alpha0, gram, x2, kmax, thresh2, dep_tol, bits_type, mask, n_cand, tau_factor,
              blocks, idx, val, nnz, wrong):
    """OMP for every row of ``alpha0 = X_chunk Dᵀ``; fills idx/val/nnz row-wise.

    ``bits_type`` is the integer type as wide as the float dtype and ``mask``
    the selection rule on its bits (see :mod:`~skdict._backend.numba.tiles`);
    With `blocks`, ``n_cand`` candidate atoms (or all, when there are fewer)
    predict the steps, chosen above `tau_factor` times the root mean square
    correlation; without, OMP runs one step at a time.
    ``wrong[i]`` counts the wrong predictions of row i (each costs a block).
    """
    n, K = alpha0.shape
    n_tiles = (K + TILE - 1) // TILE
    cap = min(K, 2 * n_cand)
    dtype = alpha0.dtype
    for task in prange((n + ROWS_PER_TASK - 1) // ROWS_PER_TASK):
        C = np.zeros((n_tiles, TILE + tiles.PAD), dtype=dtype)
        Ur = np.empty((kmax, cap), dtype=dtype)
        cc = np.zeros(cap, dtype=dtype)
        full = (
            np.empty((n_tiles, kmax, TILE + tiles.PAD), dtype=dtype), C, C.view(bits_type),
            np.zeros((n_tiles, TILE + tiles.PAD), dtype=dtype), np.zeros(n_tiles, bits_type),
            np.zeros((BLOCK + 1, n_tiles), bits_type),
        )
        spec = (
            np.empty(cap + TILE, np.int64), np.zeros(2, np.int64), Ur, cc, cc.view(bits_type),
            np.empty(kmax, np.int64), np.zeros(K, np.int64), np.zeros(K, np.int64),
        )
        chol = (np.zeros((kmax, kmax)), np.empty(kmax), np.empty(kmax), np.empty(kmax))
        rej = (np.empty(4 * kmax + 64, np.int64), np.empty(4 * kmax + 64, np.int64),
               np.zeros(1, np.int64))
        check = (np.zeros(BLOCK, bits_type), np.zeros(BLOCK, np.bool_))
        for i in range(task * ROWS_PER_TASK, min(n, (task + 1) * ROWS_PER_TASK)):
            nnz[i], wrong[i] = omp_row(
                alpha0[i], gram, x2[i], kmax, thresh2, dep_tol, mask, tau_factor, blocks, full,
                spec, chol, rej, check, idx[i], val[i],
            )
