"""Re-seeding: unused, rare and duplicated atoms restart from badly coded rows."""

import numpy as np

from .._backend.numba.atom_update import find_duplicates

# Atoms closer than this (|cos|) to a more-used atom are re-seeded.
DUPLICATE_COS = 0.99


def reseed(D, residual, usage, gram):
    """Replace unused, rarely used and duplicated atoms, in place.

    An atom is rarely used when fewer rows than a quarter of the mean usage use
    it; only the least used one percent of atoms (at least one) are replaced per
    call, so that dictionaries with a long tail of legitimately rare atoms do not
    churn. New atoms are the residual directions of the worst-reconstructed
    rows, one row per atom. Updates ``gram`` in place.
    """
    n_atoms = D.shape[0]
    rare = np.flatnonzero((usage > 0) & (usage < usage.mean() / 4))
    rare = rare[np.argsort(usage[rare], kind="stable")][: max(1, n_atoms // 100)]
    dead = find_duplicates(gram, usage, DUPLICATE_COS) | (usage == 0)
    dead[rare] = True
    dead = np.flatnonzero(dead)
    errors = np.einsum("ij,ij->i", residual, residual, dtype=np.float64)
    worst = np.argsort(-errors, kind="stable")[: dead.size]
    worst = worst[errors[worst] > 0]
    dead = dead[: worst.size]
    if dead.size == 0:
        return
    D[dead] = residual[worst] / np.sqrt(errors[worst])[:, None]
    _refresh_gram(gram, D, dead)


def _refresh_gram(gram, D, atoms):
    rows = D[atoms] @ D.T
    gram[atoms, :] = rows
    gram[:, atoms] = rows.T
