"""Non-negative OMP (positive=True) against a numpy reference, on both backends."""

import numpy as np
import pytest
from scipy.optimize import nnls

from skdict.pursuit import sparse_encode
from _tolerance import assert_same_codes, code_atol


def _unit_dictionary(rng, n_atoms, n_features):
    D = rng.standard_normal((n_atoms, n_features))
    return D / np.linalg.norm(D, axis=1, keepdims=True)


def _nnomp_reference(x, D, k, tol=None):
    """Bruckstein, Elad & Zibulevsky (2008): add the atom of largest positive
    correlation with the residual, then non-negative least squares on the support."""
    support, coef, residual = [], np.zeros(0), x.copy()
    for _ in range(k):
        corr = D @ residual
        corr[support] = -np.inf
        j = int(np.argmax(corr))
        if corr[j] <= 0:
            break
        support.append(j)
        coef = nnls(D[support].T, x)[0]
        residual = x - D[support].T @ coef
        if tol is not None and np.linalg.norm(residual) <= tol * np.linalg.norm(x):
            break
    code = np.zeros(D.shape[0])
    code[support] = coef
    return code, len(support)


def _references(X, D, k, tol=None):
    return np.array([_nnomp_reference(x, D, k, tol)[0] for x in X])


@pytest.mark.parametrize("k", [3, 8, 20])
@pytest.mark.parametrize("seed", range(3))
def test_matches_numpy_reference(k, seed, backend):
    rng = np.random.default_rng(seed)
    D = _unit_dictionary(rng, 60, 20)
    # An offset makes many correlations positive at once, so NNLS often drops
    # atoms of the support (the active-set path) as well as adding them.
    X = rng.standard_normal((80, 20)) + 0.5
    expected = _references(X, D, k)
    codes = sparse_encode(X, D, n_nonzero_coefs=k, positive=True, backend=backend)
    assert codes.min() >= 0
    np.testing.assert_array_equal(codes != 0, expected != 0)
    # Both solve least squares on the same passive set in float64: they differ by
    # cond(G_S) * (rounding of the correlations) * ||c||.
    assert np.all(np.abs(codes - expected) <= code_atol(D, expected, np.float64))


def test_reference_exercises_dropped_atoms():
    """The data above make NNLS zero atoms of the support: the test covers that path."""
    rng = np.random.default_rng(0)
    D = _unit_dictionary(rng, 60, 20)
    X = rng.standard_normal((80, 20)) + 0.5
    codes, steps = zip(*(_nnomp_reference(x, D, 20) for x in X))
    assert np.sum(np.array(codes) != 0) < np.sum(steps)


def test_float32_matches_float64_reference(backend):
    rng = np.random.default_rng(1)
    D = _unit_dictionary(rng, 100, 32).astype(np.float32)
    X = (rng.standard_normal((60, 32)) + 0.3).astype(np.float32)
    codes = sparse_encode(X, D, n_nonzero_coefs=6, positive=True, backend=backend)
    assert codes.dtype == np.float32
    assert_same_codes(codes, _references(X.astype(np.float64), D.astype(np.float64), 6),
                      D, np.float32)


def test_stops_when_no_correlation_is_positive(backend):
    D = np.eye(4)
    X = np.array([[3.0, -2.0, 0.0, 1.0], [-1.0, -1.0, -1.0, -1.0]])
    codes = sparse_encode(X, D, n_nonzero_coefs=4, positive=True, backend=backend)
    np.testing.assert_array_equal(codes, [[3.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0]])


def test_pursuit_tol_stops_rows_as_the_reference_does(backend):
    rng = np.random.default_rng(2)
    D = _unit_dictionary(rng, 50, 16)
    X = rng.standard_normal((40, 16)) + 0.5
    codes = sparse_encode(X, D, n_nonzero_coefs=12, tol=0.5, positive=True, backend=backend)
    expected = _references(X, D, 12, tol=0.5)
    np.testing.assert_array_equal(codes != 0, expected != 0)
    assert (codes != 0).sum(axis=1).max() < 12


def test_positive_codes_need_omp():
    with pytest.raises(ValueError, match="algorithm='omp'"):
        sparse_encode(np.ones((2, 3)), np.eye(3), n_nonzero_coefs=1, algorithm="mp",
                      positive=True)
