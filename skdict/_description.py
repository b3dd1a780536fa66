"""Machinery of the description scores: name the atoms of one encoding of X, score
each alive atom, and average over draws of a null for the chance level.

Nothing here holds an (n_samples, n_atoms) or (n_samples, n_concepts) array:
faithfulness computes the cosines of all rows with a block of concepts at a
time (a buffer of at most ``_SCORE_BYTES``), ranks each concept's cosines once
and scores every atom named by it from its sparse positives, for the real bank
and every null draw in the same pass over the rows.
"""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
from sklearn.utils import check_random_state

from ._auroc import auroc_of_positive_sets
from ._parallel import effective_n_threads
from ._rows import _row_norms, _unit_rows, rows_per_buffer
from .concepts import (
    RandomBanks,
    check_bank,
    check_same_space,
    concept_vectors,
    top_concepts,
)

# Draws of the null averaged for the chance level (``baseline``).
_N_BASELINE_DRAWS = 5
# The null of ``baseline=True``: see check_baseline.
_DEFAULT_NULL = "gaussian"
_NULLS = ("gaussian", "shuffled", "sphere")
# Bytes of the (concepts x n_samples) cosine block faithfulness ranks at once.
_SCORE_BYTES = 512 * 2**20
# Distinct concepts scored per block by specificity: bounds (concepts x atoms).
_CONCEPT_CHUNK = 256


class Described:
    """An :class:`~skdict._dictionary.Encoded` run seen by a concept bank.

    Holds what every description score shares: the signed unit atoms (an atom
    whose codes are mostly negative is named as ``-d_k``), the row cosines
    (centred or not) and the bank.
    """

    def __init__(self, run, bank, center):
        self.run, self.bank, self.center = run, check_bank(bank), center
        check_same_space(run.components, self.bank)
        self.atoms = _unit_rows(run.components.astype(np.float64) * run.signs[:, None])
        self.alive = run.alive

    def draws(self, names, null, random_state):
        """``(T, concepts)`` per draw: the real bank once, or each draw of `null`."""
        return list(_null_assignments(self, names, null, check_random_state(random_state)))


def assign(atoms, T, names):
    """Concept index of each atom: the given `names`, or each atom's closest concept."""
    n_atoms = atoms.shape[0]
    if names is None:
        return top_concepts(atoms, T, 1)[0][:, 0]
    names = np.asarray(names)
    if names.shape != (n_atoms,) or not np.issubdtype(names.dtype, np.integer):
        raise ValueError(
            f"names must be an int array of shape ({n_atoms},), one concept index "
            f"per atom; got shape {names.shape} and dtype {names.dtype}."
        )
    if names.min() < 0 or names.max() >= T.shape[0]:
        raise ValueError(
            f"names holds concept indices outside [0, {T.shape[0] - 1}]; each entry "
            "must index the bank."
        )
    return names


def faithfulness_per_atom(described, draws, *, score_bytes=_SCORE_BYTES):
    """AUROC per alive atom (NaN elsewhere) for each draw: shape (n_draws, n_atoms).

    `score_bytes` bounds the block of cosines (concepts x rows) held at once.
    """
    run = described.run
    alive = np.flatnonzero(described.alive)
    vectors, rows = _concept_rows(draws, alive)
    out = np.full((len(draws), run.components.shape[0]), np.nan)
    if alive.size == 0:
        return out
    draw_of = np.repeat(np.arange(len(draws)), alive.size)
    atom_of = np.tile(alive, len(draws))
    order = np.argsort(rows, kind="stable")
    starts = np.searchsorted(rows[order], np.arange(vectors.shape[0] + 1))
    fires = run.fires
    cosines = _RowCosines(run.X, described.center)
    block = max(1, score_bytes // (cosines.dtype.itemsize * max(run.n_samples, 1)))

    def score(concept, scores):
        requests = order[starts[concept]:starts[concept + 1]]
        atoms = atom_of[requests]
        bounds = np.concatenate([[0], np.cumsum(np.diff(fires.indptr)[atoms])])
        positives = np.concatenate(
            [fires.indices[fires.indptr[k]:fires.indptr[k + 1]] for k in atoms]
        )
        out[draw_of[requests], atoms] = auroc_of_positive_sets(scores, positives, bounds)

    with ThreadPoolExecutor(effective_n_threads(None)) as pool:
        for lo in range(0, vectors.shape[0], block):
            hi = min(lo + block, vectors.shape[0])
            scores = cosines.scores(vectors[lo:hi])
            list(pool.map(score, range(lo, hi), scores))
    return out


def _concept_rows(draws, alive):
    """The distinct concept vectors the draws name alive atoms with, and the row
    of that stack each (draw, alive atom) uses, draw after draw.

    Draws that share a bank (the real bank and its shuffled names) share rows,
    so each concept's cosines are computed and ranked once.
    """
    banks, vectors, rows = {}, [], []
    offset = 0
    used_by_bank = {}
    for T, concepts in draws:
        used_by_bank.setdefault(id(T), [T, []])[1].append(concepts[alive])
    for key, (T, named) in used_by_bank.items():
        used = np.unique(np.concatenate(named))
        banks[key] = (offset, used)
        vectors.append(T[used])
        offset += used.size
    for T, concepts in draws:
        start, used = banks[id(T)]
        rows.append(start + np.searchsorted(used, concepts[alive]))
    return np.vstack(vectors), np.concatenate(rows)


class _RowCosines:
    """Cosines of every row of X (centred, SpLiCE-style, when asked) with concept vectors.

    The mean row and the inverse norms of the centred rows are computed once,
    in float64; each block of concepts then costs one pass over the rows: the
    chunk is centred, multiplied by the concepts and scaled by its rows'
    inverse norms, in X's precision (float32 for float32 embeddings).
    """

    def __init__(self, X, center):
        self.X = X
        self.dtype = np.dtype(np.float64 if X.dtype == np.float64 else np.float32)
        self.mean = np.zeros(X.shape[1])
        chunk = rows_per_buffer(X.shape[1], 8)
        if center:
            for start in range(0, X.shape[0], chunk):
                self.mean += np.asarray(X[start:start + chunk]).sum(axis=0, dtype=np.float64)
            self.mean /= max(X.shape[0], 1)
        norms = np.concatenate([
            _row_norms(np.asarray(X[start:start + chunk], dtype=np.float64) - self.mean)
            for start in range(0, X.shape[0], chunk)
        ] or [np.empty(0)])
        # zero rows stay zero, as _unit_rows leaves them
        self.inverse_norms = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)

    def scores(self, T):
        """``T @ unit_rows(X).T`` of shape (n_concepts, n_samples), in `dtype`."""
        T = np.asarray(T, dtype=self.dtype)
        mean = self.mean.astype(self.dtype)
        scale = self.inverse_norms.astype(self.dtype)
        out = np.empty((T.shape[0], self.X.shape[0]), dtype=self.dtype)
        # a chunk's rows and its (concepts x rows) product stay small
        chunk = rows_per_buffer(self.X.shape[1] + T.shape[0], self.dtype.itemsize)
        for start in range(0, self.X.shape[0], chunk):
            stop = min(start + chunk, self.X.shape[0])
            rows = np.asarray(self.X[start:stop], dtype=self.dtype) - mean
            product = T @ rows.T
            product *= scale[start:stop]
            out[:, start:stop] = product
        return out


def specificity_per_atom(described, draws):
    """1.0 / 0.0 per alive atom (NaN elsewhere) for each draw: shape (n_draws, n_atoms).

    Whether an atom is the closest atom to its name depends only on the name,
    so the (concepts x atoms) cosines are taken for the distinct names only.
    """
    atoms = described.atoms
    alive = np.flatnonzero(described.alive)
    out = np.full((len(draws), atoms.shape[0]), np.nan)
    for d, (T, concepts) in enumerate(draws):
        used, which = np.unique(concepts[alive], return_inverse=True)
        retrieved = np.empty(used.size, dtype=np.intp)
        for start in range(0, used.size, _CONCEPT_CHUNK):
            block = used[start:start + _CONCEPT_CHUNK]
            retrieved[start:start + block.size] = np.argmax(T[block] @ atoms.T, axis=1)
        out[d, alive] = retrieved[which] == alive
    return out


def check_baseline(baseline):
    """The null a `baseline` value asks for: None (the score itself) or a name in ``_NULLS``.

    True means the Gaussian null: random banks with the bank's own mean and
    covariance keep the geometry of the concepts (the anisotropy of real
    embeddings) and go through the same naming, so they measure what geometry
    alone scores; see the "Metrics" page of the documentation.
    """
    if baseline is False or baseline is None:
        return None
    if baseline is True:
        return _DEFAULT_NULL
    if isinstance(baseline, str) and baseline in _NULLS:
        return baseline
    raise ValueError(
        f"baseline must be False, True or one of {list(_NULLS)}, got {baseline!r}."
    )


def _null_assignments(described, names, null, rng):
    """Yield ``(T, concepts)`` for each draw of `null` (or once for the real bank)."""
    bank, center, atoms = described.bank, described.center, described.atoms
    if null in (None, "shuffled"):
        T = concept_vectors(bank, center)
        concepts = assign(atoms, T, names)
        if null is None:
            yield T, concepts
            return
        alive = np.flatnonzero(described.alive)
        for _ in range(_N_BASELINE_DRAWS):
            shuffled = concepts.copy()
            shuffled[alive] = concepts[alive][rng.permutation(alive.size)]
            yield T, shuffled
        return
    banks = RandomBanks(bank, null)
    for _ in range(_N_BASELINE_DRAWS):
        T = concept_vectors(banks.draw(rng), center)
        yield T, assign(atoms, T, names)


def average(per_draw, alive, *, per_atom, count_dead=False):
    """Average per-atom scores over draws, then over atoms (or return them per atom).

    `count_dead` scores dead atoms 0 instead of skipping them.
    """
    scores = per_draw.mean(axis=0)
    if count_dead:
        scores[~alive] = 0.0
    if per_atom:
        return scores
    finite = scores[np.isfinite(scores)]
    return float(finite.mean()) if finite.size else float("nan")
