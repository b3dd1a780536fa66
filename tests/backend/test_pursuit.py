import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.linear_model import orthogonal_mp_gram

from skdict._backend import resolve_backend
from skdict.pursuit import GramEncoder, sparse_encode
from _checks import BACKENDS
from _tolerance import assert_same_codes


def _unit_dictionary(rng, n_atoms, n_features, dtype=np.float64):
    D = rng.standard_normal((n_atoms, n_features))
    return (D / np.linalg.norm(D, axis=1, keepdims=True)).astype(dtype)


def _omp_reference(x, D, k):
    """Textbook OMP: pick the atom most correlated with the residual, refit by lstsq."""
    support = []
    residual = x.copy()
    coef = np.zeros(0)
    for _ in range(k):
        corr = D @ residual
        corr[support] = 0
        support.append(int(np.argmax(np.abs(corr))))
        coef = np.linalg.lstsq(D[support].T, x, rcond=None)[0]
        residual = x - D[support].T @ coef
    return support, coef


def _mp_reference(x, D, k):
    """Matching pursuit for k steps, then least squares on the distinct atoms chosen."""
    support = []
    residual = x.copy()
    for _ in range(k):
        corr = D @ residual
        j = int(np.argmax(np.abs(corr)))
        residual = residual - corr[j] / (D[j] @ D[j]) * D[j]
        if j not in support:
            support.append(j)
    coef = np.linalg.lstsq(D[support].T, x, rcond=None)[0]
    return support, coef


@pytest.mark.parametrize("algorithm, reference", [("omp", _omp_reference), ("mp", _mp_reference)])
@pytest.mark.parametrize("seed", range(5))
def test_matches_numpy_reference(algorithm, reference, seed, backend):
    rng = np.random.default_rng(seed)
    D = _unit_dictionary(rng, 40, 15)
    X = rng.standard_normal((30, 15))
    codes = sparse_encode(X, D, n_nonzero_coefs=6, algorithm=algorithm, backend=backend)
    for x, code in zip(X, codes):
        support, coef = reference(x, D, 6)
        assert set(np.flatnonzero(code)) == set(support)
        # float64 Cholesky updates vs an SVD least-squares solve: they differ by
        # ~cond(G_S) * eps64 (cond < 1e3 for 6 of 40 random atoms in 15-D), far
        # below 1e-8, which would still catch a wrong coefficient.
        np.testing.assert_allclose(code[support], coef, atol=1e-8)


def test_omp_matches_sklearn_on_generic_data(rng):
    D = _unit_dictionary(rng, 200, 64)
    X = rng.standard_normal((300, 64))
    ours = sparse_encode(X, D, n_nonzero_coefs=12)
    theirs = orthogonal_mp_gram(D @ D.T, D @ X.T, n_nonzero_coefs=12).T
    np.testing.assert_array_equal(ours != 0, theirs != 0)
    # float64, the same support, and two least-squares solves: cond(G_S) * eps64 << 1e-8.
    np.testing.assert_allclose(ours, theirs, atol=1e-8)


def test_omp_recovers_exact_sparse_codes(rng):
    D = _unit_dictionary(rng, 100, 50)
    A = np.zeros((20, 100))
    for row in A:
        row[rng.choice(100, 4, replace=False)] = rng.uniform(1, 2, 4) * rng.choice([-1, 1], 4)
    codes = sparse_encode(A @ D, D, n_nonzero_coefs=4)
    # exact codes exist; float64 recovers them up to cond(G_S) * eps64 * |A| << 1e-10
    np.testing.assert_allclose(codes, A, atol=1e-10)


def test_float32_in_float32_out(rng, backend):
    D = _unit_dictionary(rng, 64, 16, np.float32)
    X = rng.standard_normal((50, 16)).astype(np.float32)
    codes = sparse_encode(X, D, n_nonzero_coefs=5, backend=backend)
    assert codes.dtype == np.float32
    ref = sparse_encode(X.astype(np.float64), D.astype(np.float64), n_nonzero_coefs=5)
    assert_same_codes(codes, ref, D, np.float32)
    # float64 dictionary with float32 data still codes in float32
    assert sparse_encode(
        X, D.astype(np.float64), n_nonzero_coefs=5, backend=backend
    ).dtype == np.float32


@pytest.mark.parametrize("algorithm", ["omp", "mp"])
def test_sparse_output_equals_dense(rng, algorithm):
    D = _unit_dictionary(rng, 80, 20)
    X = rng.standard_normal((40, 20))
    dense = sparse_encode(X, D, n_nonzero_coefs=7, algorithm=algorithm)
    codes = sparse_encode(X, D, n_nonzero_coefs=7, algorithm=algorithm, sparse_output=True)
    assert sp.issparse(codes) and codes.format == "csr"
    assert codes.has_sorted_indices
    np.testing.assert_array_equal(codes.toarray(), dense)
    assert np.all(codes.getnnz(axis=1) <= 7)


def test_many_chunks_equal_one_chunk(rng, backend):
    D = _unit_dictionary(rng, 50, 10)
    X = rng.standard_normal((1000, 10))
    resolved = resolve_backend(backend, "cpu")
    whole = GramEncoder(D, 3, backend=resolved).encode(X)
    assert resolved.chunk_rows(50, 3, 8) >= X.shape[0]  # one chunk by default
    resolved.chunk_rows = lambda n_atoms, n_nonzero_coefs, itemsize: 64
    np.testing.assert_array_equal(GramEncoder(D, 3, backend=resolved).encode(X), whole)


def test_numba_chunks_hold_32_mib_of_correlations():
    from skdict._backend.numba import NumbaBackend

    assert NumbaBackend().chunk_rows(16384, 32, 4) == 32 * 2**20 // (16384 * 4)
    assert NumbaBackend().chunk_rows(50, 3, 8) == 65536
    assert NumbaBackend().chunk_rows(10**6, 3, 8) == 64


@pytest.mark.parametrize("algorithm", ["omp", "mp"])
def test_tol_stops_rows_early(rng, algorithm, backend):
    D = _unit_dictionary(rng, 60, 30)
    X = rng.standard_normal((100, 30))
    kwargs = dict(n_nonzero_coefs=30, algorithm=algorithm, backend=backend)
    codes = sparse_encode(X, D, tol=0.5, **kwargs)
    rel = np.linalg.norm(X - codes @ D, axis=1) / np.linalg.norm(X, axis=1)
    assert np.all(rel <= 0.5 + 1e-6)
    full = sparse_encode(X, D, **kwargs)
    assert (codes != 0).sum() < (full != 0).sum()


def test_gram_argument_is_used(rng):
    D = _unit_dictionary(rng, 30, 10)
    X = rng.standard_normal((5, 10))
    ref = sparse_encode(X, D, n_nonzero_coefs=3)
    np.testing.assert_array_equal(sparse_encode(X, D, n_nonzero_coefs=3, gram=D @ D.T), ref)
    with pytest.raises(ValueError, match="gram has shape"):
        sparse_encode(X, D, n_nonzero_coefs=3, gram=np.eye(4))


def test_zero_rows_and_dependent_atoms_give_no_warnings(rng, recwarn):
    D = _unit_dictionary(rng, 10, 5)
    D = np.vstack([D, D[:3]])  # duplicated atoms are linearly dependent
    X = np.vstack([np.zeros((3, 5)), rng.standard_normal((4, 5))])
    codes = sparse_encode(X, D, n_nonzero_coefs=5)
    assert not codes[:3].any()
    assert np.isfinite(codes).all()
    assert len(recwarn) == 0


def test_n_jobs_does_not_change_codes(rng):
    D = _unit_dictionary(rng, 40, 12)
    X = rng.standard_normal((200, 12))
    np.testing.assert_array_equal(
        sparse_encode(X, D, n_nonzero_coefs=4, n_jobs=1),
        sparse_encode(X, D, n_nonzero_coefs=4, n_jobs=-1),
    )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(n_nonzero_coefs=0), "n_nonzero_coefs=0 must be between 1"),
        (dict(n_nonzero_coefs=11), "n_nonzero_coefs=11 must be between 1"),
        (dict(n_nonzero_coefs=2, algorithm="lars"), "algorithm must be one of"),
        (dict(n_nonzero_coefs=2, tol=2.0), "tol must be None or a float"),
    ],
)
def test_bad_parameters(rng, kwargs, match):
    D = _unit_dictionary(rng, 10, 4)
    with pytest.raises(ValueError, match=match):
        sparse_encode(rng.standard_normal((3, 4)), D, **kwargs)


@pytest.mark.parametrize(
    "X, match",
    [
        (np.array([[np.nan, 1.0, 2.0, 3.0]]), "Input X contains NaN"),
        (np.array([[np.inf, 1.0, 2.0, 3.0]]), "Input X contains infinity"),
        (np.ones(4), "Expected 2D array"),
        (np.ones((0, 4)), "0 sample"),
        (np.ones((2, 4)) + 1j, "Complex data not supported"),
        (np.array([["a", "b", "c", "d"]], dtype=object), "X must contain numbers only"),
        (np.ones((2, 5)), "dictionary has 4 features per atom but X has 5"),
    ],
)
def test_bad_input(rng, X, match):
    D = _unit_dictionary(rng, 10, 4)
    with pytest.raises(ValueError, match=match):
        sparse_encode(X, D, n_nonzero_coefs=2)


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    X=arrays(
        np.float64,
        st.tuples(st.integers(1, 12), st.just(6)),
        elements=st.floats(-1e3, 1e3, allow_subnormal=False),
    ),
    k=st.integers(1, 6),
    algorithm=st.sampled_from(["omp", "mp"]),
)
def test_fuzz_codes_are_least_squares_on_their_support(X, k, algorithm, backend):
    rng = np.random.default_rng(1)
    D = _unit_dictionary(rng, 12, 6)
    codes = sparse_encode(X, D, n_nonzero_coefs=k, algorithm=algorithm, backend=backend)
    assert codes.shape == (X.shape[0], 12)
    assert np.isfinite(codes).all()
    assert np.all((codes != 0).sum(axis=1) <= k)
    residual = X - codes @ D
    norms = np.linalg.norm(X, axis=1)
    assert np.all(np.linalg.norm(residual, axis=1) <= norms * (1 + 1e-9) + 1e-9)
    # both algorithms end with a least-squares fit on the support, so the
    # residual has no component along it; float64 solves on |x| <= 1e3 * sqrt(6)
    # leave ~cond * eps64 * |x| (cond < 1e3 here), far below 1e-8 of |x| + 1
    scale = norms[:, None] + 1
    np.testing.assert_allclose(np.where(codes != 0, residual @ D.T, 0) / scale, 0, atol=1e-8)


def test_gram_encoder_refuses_rows_in_another_dtype(rng):
    D = rng.standard_normal((8, 5))
    encoder = GramEncoder(D, 2)
    with pytest.raises(ValueError, match="X is float32 but the dictionary is float64"):
        encoder.encode(rng.standard_normal((3, 5)).astype(np.float32))


@pytest.mark.parametrize("algorithm, reference", [("omp", _omp_reference), ("mp", _mp_reference)])
def test_matches_numpy_reference_across_tiles(algorithm, reference, backend):
    from skdict._backend.numba.tiles import TILE

    rng = np.random.default_rng(0)
    D = _unit_dictionary(rng, 2 * TILE + 37, 48)  # three tiles, the last partial
    X = rng.standard_normal((20, 48))
    codes = sparse_encode(X, D, n_nonzero_coefs=10, algorithm=algorithm, backend=backend)
    for x, code in zip(X, codes):
        support, coef = reference(x, D, 10)
        assert set(np.flatnonzero(code)) == set(support)
        # float64 solves on 10 of 2085 random atoms in 48-D: cond(G_S) * eps64 << 1e-8
        np.testing.assert_allclose(code[support], coef, atol=1e-8)
