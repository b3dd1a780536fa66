"""A row's correlations with every atom, held in tiles that each keep their maximum.

The pursuits pick, at every step, the atom with the largest ``|c|``. Scanning all
``n_atoms`` correlations for it costs a pass over them on top of the pass that
updates them; here the update of a tile (`TILE` atoms) also takes that tile's
maximum while the tile is in cache, and the step's choice reads only the
``n_atoms / TILE`` maxima and one tile.

Tiles are rows of a 2-D array whose row stride is `TILE` + `PAD` floats: with a
power-of-two stride, the same offset in consecutive rows maps to the same L1
cache set, and kernels that read several rows at once evict their own lines.

Maxima are taken on the integer view of the floats (``bits``) with ``mask``
applied: with the sign bit masked off, the bit patterns of finite floats order
like their absolute values, and integer max reductions vectorise where float
ones do not (LLVM keeps float max reductions scalar), about 6x faster. The
selection rule lives in ``mask`` alone: a mask that keeps the sign bit orders
the signed values instead (negative floats are negative integers), which is
the rule a non-negative pursuit needs.
"""

from numba import njit

TILE = 1024
PAD = 16


@njit(cache=True)
def tile_width(n_atoms, b):
    """Atoms held by tile `b` (the last tile may be partial)."""
    return min(TILE, n_atoms - b * TILE)


@njit(cache=True)
def tile_max(bits, width, mask):
    """Largest ``bits & mask`` over the first `width` entries (0 when all are zero)."""
    # numba widens ``int32 & int32`` to int64; narrowing it back keeps the
    # comparisons at the width of `bits`, twice as many per vector.
    to_bits = bits.dtype.type
    best = to_bits(0)
    for a in range(width):
        v = to_bits(bits[a] & mask)
        best = v if v > best else best
    return best


@njit(cache=True)
def load(row, C, bits, tmax, mask):
    """Copy `row` into the tiles `C` and set every tile's maximum."""
    K = row.shape[0]
    for b in range(C.shape[0]):
        width = tile_width(K, b)
        src = row[b * TILE : b * TILE + width]
        cb = C[b]
        for a in range(width):
            cb[a] = src[a]
        tmax[b] = tile_max(bits[b], width, mask)


@njit(cache=True)
def best_tile(tmax):
    """(first tile holding the largest maximum, that maximum)."""
    best = tmax[0]
    for b in range(1, tmax.shape[0]):
        best = tmax[b] if tmax[b] > best else best
    b = 0
    while tmax[b] != best:
        b += 1
    return b, best


@njit(cache=True)
def argmax(bits, tmax, mask, n_atoms):
    """First atom with the largest ``bits & mask``; -1 when every entry is zero."""
    b, best = best_tile(tmax)
    if best <= 0:
        return -1
    cb = bits[b]
    for a in range(tile_width(n_atoms, b)):
        if cb[a] & mask == best:
            return b * TILE + a
    return -1


@njit(cache=True)
def clear(C, bits, tmax, mask, atom, n_atoms):
    """Set one correlation to zero and keep its tile's maximum exact."""
    b, a = atom // TILE, atom % TILE
    was = bits[b, a] & mask
    C[b, a] = 0
    if was == tmax[b] and was > 0:
        tmax[b] = tile_max(bits[b], tile_width(n_atoms, b), mask)


@njit(cache=True)
def get(C, atom):
    """The correlation of one atom."""
    return C[atom // TILE, atom % TILE]


@njit(cache=True)
def vector_argmax(bits, n, mask):
    """First index of the largest ``bits & mask`` among the first `n`; -1 when all are zero."""
    best = tile_max(bits, n, mask)
    if best <= 0:
        return -1
    for a in range(n):
        if bits[a] & mask == best:
            return a
    return -1
