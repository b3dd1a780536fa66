"""The numbers the atom explorer shows, computed from codes and atoms.

Everything here works on a scipy.sparse CSC matrix of codes, so that a
dictionary of 16,384 atoms over many samples never needs a dense
(n_samples, n_atoms) array, and on the unit-norm atoms in chunks, so that the
(n_atoms, n_atoms) cosine matrix is never held whole.
"""

import numpy as np
import scipy.sparse as sp
from scipy.optimize import linear_sum_assignment

# Rows of the atom-by-atom cosine matrix computed at once (chunk x n_atoms floats).
_COSINE_CHUNK = 1024


def atom_statistics(codes):
    """Usage (share of samples firing) and mean |activation| where each atom fires."""
    n_samples = codes.shape[0]
    counts = np.diff(codes.indptr)
    magnitude = np.asarray(abs(codes).sum(axis=0)).ravel()
    mean = np.divide(magnitude, counts, out=np.zeros(counts.shape), where=counts > 0)
    return counts / n_samples, mean


def top_samples(codes, k, top_k):
    """Indices and activations of the `top_k` samples with the largest |activation| of atom k.

    Ordered from the largest magnitude down; only samples where the atom fires.
    """
    start, stop = codes.indptr[k], codes.indptr[k + 1]
    rows, values = codes.indices[start:stop], codes.data[start:stop]
    if len(values) > top_k:
        keep = np.argpartition(-np.abs(values), top_k - 1)[:top_k]
        rows, values = rows[keep], values[keep]
    order = np.lexsort((rows, -np.abs(values)))
    return rows[order], values[order]


def activation_histogram(codes, k, bins=20):
    """Histogram of atom k's non-zero activations: ``(counts, lo, hi)``."""
    values = codes.data[codes.indptr[k] : codes.indptr[k + 1]]
    if len(values) == 0:
        return [], 0.0, 0.0
    counts, edges = np.histogram(values, bins=bins)
    return counts.tolist(), float(edges[0]), float(edges[-1])


def l0_histogram(codes):
    """Number of samples per count of non-zero coefficients: ``(counts, lo, hi)``.

    One bin per integer count when there are at most 64 distinct counts.
    """
    l0 = np.diff(sp.csr_matrix(codes).indptr)
    lo, hi = int(l0.min()), int(l0.max())
    if hi - lo < 64:
        counts = np.bincount(l0 - lo, minlength=hi - lo + 1)
        return counts.tolist(), lo, hi + 1
    counts, edges = np.histogram(l0, bins=32)
    return counts.tolist(), float(edges[0]), float(edges[-1])


def unit_rows(D):
    D = np.asarray(D, dtype=np.float64)
    norms = np.linalg.norm(D, axis=1)
    return D / np.where(norms > 0, norms, 1.0)[:, None]


def nearest_atoms(components, n_neighbors):
    """For each atom, the `n_neighbors` other atoms of largest |cos|, with their cosines."""
    # float32 halves the time of the chunked products and partitions; the
    # cosines are shown to three digits.
    D = unit_rows(components).astype(np.float32)
    n_atoms = D.shape[0]
    n_neighbors = min(n_neighbors, n_atoms - 1)
    indices = np.empty((n_atoms, n_neighbors), dtype=np.intp)
    cosines = np.empty((n_atoms, n_neighbors))
    for start in range(0, n_atoms, _COSINE_CHUNK):
        stop = min(start + _COSINE_CHUNK, n_atoms)
        cos = D[start:stop] @ D.T
        cos[np.arange(stop - start), np.arange(start, stop)] = 0.0
        if n_neighbors == 0:
            continue
        part = np.argpartition(-np.abs(cos), n_neighbors - 1, axis=1)[:, :n_neighbors]
        part_cos = np.take_along_axis(cos, part, axis=1)
        order = np.argsort(-np.abs(part_cos), axis=1, kind="stable")
        indices[start:stop] = np.take_along_axis(part, order, axis=1)
        cosines[start:stop] = np.take_along_axis(part_cos, order, axis=1)
    return indices, cosines


def match_atoms(components, other_components):
    """Hungarian matching of two dictionaries on |cos|.

    Returns
    -------
    rows, cols : ndarray of int
        Matched atoms, ``min(n_atoms, n_other)`` pairs, sorted by decreasing |cos|.
    cosines : ndarray
        Signed cosine of each pair.
    """
    cos = unit_rows(components) @ unit_rows(other_components).T
    rows, cols = linear_sum_assignment(np.abs(cos), maximize=True)
    pair_cos = cos[rows, cols]
    order = np.argsort(-np.abs(pair_cos), kind="stable")
    return rows[order], cols[order], pair_cos[order]


def top_classes(scores, classes, n_classes):
    """The classes a direction pushes most (largest scores) and least, with the scores."""
    order = np.argsort(-scores, kind="stable")
    n = min(n_classes, len(order))
    push = [[classes[i], float(scores[i])] for i in order[:n]]
    pull = [[classes[i], float(scores[i])] for i in order[::-1][:n]]
    return push, pull
