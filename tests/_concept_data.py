"""Synthetic data with known concepts, shared by the concept and metric tests.

The bank's concept vectors are the generating atoms: each row of X is a sum of
`n_active` of them with weights in [0.5, 1.5] (clearly present, never faint),
plus a little noise, so a dictionary equal to the bank is well described by it.
"""

import numpy as np
from sklearn.decomposition import SparseCoder

from skdict import ConceptBank


def make_concept_data(
    n_samples=1000, n_features=64, n_concepts=40, n_active=3, *, noise=0.02,
    center=True, random_state=0,
):
    """X (n_samples, n_features), the bank of its true concepts, and the true codes."""
    rng = np.random.default_rng(random_state)
    concepts = rng.standard_normal((n_concepts, n_features))
    concepts /= np.linalg.norm(concepts, axis=1, keepdims=True)
    codes = np.zeros((n_samples, n_concepts))
    support = np.argsort(rng.random((n_samples, n_concepts)), axis=1)[:, :n_active]
    np.put_along_axis(codes, support, rng.uniform(0.5, 1.5, support.shape), axis=1)
    X = codes @ concepts + noise * rng.standard_normal((n_samples, n_features))
    names = [f"concept {i}" for i in range(n_concepts)]
    return X, ConceptBank(names, concepts, center=center), codes


def oracle_coder(bank, n_active=3):
    """A fixed dictionary equal to the bank's concepts, coding by OMP."""
    return SparseCoder(
        bank.embeddings.astype(np.float64), transform_algorithm="omp",
        transform_n_nonzero_coefs=n_active,
    )


def make_antipodal_data(seed=0):
    """Rows built from 40 concepts that come in opposite pairs (c and -c), and a
    dictionary of 20 atoms, one per pair, coded by signed OMP."""
    _, bank, _ = make_concept_data(n_concepts=20, random_state=seed)
    pairs = bank.embeddings.astype(np.float64)
    names = [f"concept {i}" for i in range(20)] + [f"not concept {i}" for i in range(20)]
    both = ConceptBank(names, np.vstack([pairs, -pairs]))
    rng = np.random.default_rng(seed)
    codes = np.zeros((1000, 40))
    support = np.argsort(rng.random((1000, 40)), axis=1)[:, :3]
    np.put_along_axis(codes, support, rng.uniform(0.5, 1.5, support.shape), axis=1)
    X = codes @ both.embeddings.astype(np.float64) + 0.02 * rng.standard_normal((1000, 64))
    coder = SparseCoder(pairs, transform_algorithm="omp", transform_n_nonzero_coefs=3)
    return X, both, coder

