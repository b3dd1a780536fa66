"""The torch backend: parity with the numba kernels, recovery, estimator checks."""

import numpy as np
import pytest

from skdict import DoubleBatchKSVD
from skdict._backend import resolve_backend
from skdict._parallel import thread_limits
from skdict.datasets import make_sparse_signals
from skdict._rows import _row_norms
from skdict.metrics import atom_recovery_rate
from skdict.pursuit import sparse_encode
from _checks import estimator_check_params
from _tolerance import assert_same_codes

torch = pytest.importorskip("torch")

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is present")

# Fits run torch on one thread: its many small kernels gain nothing from more,
# and on a shared CI machine a second spinning thread only waits for a core.
_ONE_THREAD = dict(n_jobs=1)



def _unit_dictionary(rng, n_atoms, n_features, dtype=np.float64):
    D = rng.standard_normal((n_atoms, n_features))
    return (D / np.linalg.norm(D, axis=1, keepdims=True)).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("algorithm", ["omp", "mp"])
@pytest.mark.parametrize("tol", [None, 0.4])
def test_pursuit_matches_numba_on_generic_data(rng, dtype, algorithm, tol):
    D = _unit_dictionary(rng, 80, 24, dtype)
    X = rng.standard_normal((200, 24)).astype(dtype)
    kwargs = dict(n_nonzero_coefs=8, algorithm=algorithm, tol=tol)
    numba_codes = sparse_encode(X, D, backend="numba", **kwargs)
    torch_codes = sparse_encode(X, D, backend="torch", **kwargs)
    assert torch_codes.dtype == dtype
    assert_same_codes(torch_codes, numba_codes, D, dtype)


@pytest.mark.parametrize("algorithm", ["omp", "mp"])
def test_ties_go_to_the_first_atom(algorithm):
    # Every atom correlates equally with x: both backends must pick atom 0.
    D = np.eye(4)
    X = np.ones((2, 4))
    for backend in ("numba", "torch"):
        codes = sparse_encode(X, D, n_nonzero_coefs=1, algorithm=algorithm, backend=backend)
        np.testing.assert_array_equal(codes, [[1, 0, 0, 0], [1, 0, 0, 0]])


@pytest.mark.parametrize("algorithm", ["omp", "mp"])
def test_zero_rows_and_dependent_atoms_match_numba(rng, algorithm):
    D = _unit_dictionary(rng, 10, 5)
    D = np.vstack([D, D[:3], -D[3:5]])  # duplicated atoms are linearly dependent
    X = np.vstack([np.zeros((3, 5)), rng.standard_normal((20, 5))])
    kwargs = dict(n_nonzero_coefs=5, algorithm=algorithm)
    torch_codes = sparse_encode(X, D, backend="torch", **kwargs)
    assert not torch_codes[:3].any()
    assert np.isfinite(torch_codes).all()
    assert np.all((torch_codes != 0).sum(axis=1) <= 5)
    # a duplicate ties with its original up to round-off, so either may be
    # picked; the reconstructions must agree
    numba_codes = sparse_encode(X, D, backend="numba", **kwargs)
    np.testing.assert_allclose(torch_codes @ D, numba_codes @ D, atol=1e-10)


@pytest.mark.parametrize("weighted", [True, False])
@pytest.mark.parametrize("atom_batch_size", [1, 7])
def test_atom_update_matches_numba(rng, atom_batch_size, weighted):
    from skdict._backend.numba import NumbaBackend
    from skdict._backend.torch import TorchBackend

    X, _, _ = make_sparse_signals(n_samples=300, random_state=0)
    D = _unit_dictionary(rng, 50, X.shape[1])
    codes = sparse_encode(X, D, n_nonzero_coefs=3, sparse_output=True)
    order = rng.permutation(50)
    x_norms = _row_norms(X)

    options = dict(
        groups=[(0, 50, order)], atom_batch_size=atom_batch_size, x_norms=x_norms,
        weight_floor=0.05, weighted=weighted, n_power_iter=2,
    )
    D_numba, codes_numba = D.copy(), codes.copy()
    residual_numba = NumbaBackend().update_dictionary(X, D_numba, codes_numba, **options)
    D_torch, codes_torch = D.copy(), codes.copy()
    residual_torch = TorchBackend(torch.device("cpu")).update_dictionary(
        X, D_torch, codes_torch, **options
    )
    assert not np.allclose(D_torch, D)
    np.testing.assert_allclose(D_torch, D_numba, atol=1e-12)
    np.testing.assert_allclose(codes_torch.data, codes_numba.data, atol=1e-12)
    np.testing.assert_allclose(residual_torch, residual_numba, atol=1e-12)
    np.testing.assert_allclose(residual_torch, X - codes_torch @ D_torch, atol=1e-12)


def test_fit_matches_numba_backend(rng):
    X = rng.standard_normal((400, 12))
    # random atoms: atoms copied from rows would code those rows exactly, and
    # the picks after that are round-off
    params = dict(
        n_components=30, n_nonzero_coefs=3, max_iter=4, tol=0, init="random", random_state=0
    )
    numba_fit = DoubleBatchKSVD(**params, backend="numba").fit(X)
    torch_fit = DoubleBatchKSVD(**params, backend="torch", **_ONE_THREAD).fit(X)
    np.testing.assert_allclose(torch_fit.error_, numba_fit.error_, atol=1e-8)
    np.testing.assert_allclose(torch_fit.components_, numba_fit.components_, atol=1e-8)


def test_nested_groups_with_torch():
    X, _, _ = make_sparse_signals(n_samples=500, random_state=0)
    params = dict(n_nonzero_coefs=4, nested_groups=(10, 50), max_iter=3, random_state=0)
    torch_fit = DoubleBatchKSVD(50, **params, backend="torch", **_ONE_THREAD).fit(X)
    numba_fit = DoubleBatchKSVD(50, **params, backend="numba").fit(X)
    # rows equal to an atom leave a round-off residual whose later picks are
    # arbitrary, so the fits agree closely rather than exactly
    np.testing.assert_allclose(torch_fit.error_, numba_fit.error_, atol=1e-3)
    codes = torch_fit.transform(X)
    assert np.all((codes[:, :10] != 0).sum(axis=1) <= 2)


@pytest.mark.parametrize(
    "estimator, check",
    estimator_check_params(
        DoubleBatchKSVD(n_components=8, n_nonzero_coefs=1, max_iter=5, backend="torch", random_state=0)
    ),
)
def test_sklearn_estimator_checks_with_torch(estimator, check):
    check(estimator)


def test_chunk_rows_bound_the_pursuit_state():
    from skdict._backend.torch import TorchBackend

    # (k + 2) x n_atoms float32 per row in 64 MiB on the CPU, 1 GiB on a GPU
    assert TorchBackend(torch.device("cpu")).chunk_rows(16384, 32, 4) == 30
    assert TorchBackend(torch.device("cuda")).chunk_rows(16384, 32, 4) == 481
    assert TorchBackend(torch.device("cpu")).chunk_rows(50, 3, 8) == 64 * 2**20 // (5 * 50 * 8)
    assert TorchBackend(torch.device("cpu")).chunk_rows(10**6, 30, 8) == 16


def test_backend_resolution():
    def pair(backend, device):
        resolved = resolve_backend(backend, device)
        return resolved.name, resolved.device

    assert pair("auto", "cpu") == ("numba", None)
    assert pair("numba", "cpu") == ("numba", None)
    assert pair("torch", "cpu") == ("torch", torch.device("cpu"))
    expected_auto = "torch" if torch.cuda.is_available() else "numba"
    assert pair("auto", "auto")[0] == expected_auto
    with pytest.raises(ValueError, match="backend='numba' runs on the CPU"):
        resolve_backend("numba", "cuda")
    with pytest.raises(ValueError, match="backend must be one of"):
        resolve_backend("jax", "cpu")


@no_cuda
@pytest.mark.parametrize("backend", ["auto", "torch"])
def test_cuda_without_gpu_is_a_clear_error(rng, backend):
    X = rng.standard_normal((20, 4))
    with pytest.raises(ValueError, match="no CUDA GPU"):
        DoubleBatchKSVD(4, n_nonzero_coefs=1, backend=backend, device="cuda").fit(X)
    with pytest.raises(ValueError, match="no CUDA GPU"):
        sparse_encode(X, np.eye(4), n_nonzero_coefs=1, backend=backend, device="cuda")


def test_thread_limits_bound_torch_and_restore():
    before = torch.get_num_threads()
    with thread_limits(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


@needs_cuda
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("algorithm", ["omp", "mp"])
def test_cuda_pursuit_matches_numba(rng, dtype, algorithm):
    D = _unit_dictionary(rng, 80, 24, dtype)
    X = rng.standard_normal((200, 24)).astype(dtype)
    kwargs = dict(n_nonzero_coefs=8, algorithm=algorithm)
    assert_same_codes(
        sparse_encode(X, D, backend="torch", device="cuda", **kwargs),
        sparse_encode(X, D, backend="numba", **kwargs),
        D,
        dtype,
    )


@needs_cuda
def test_cuda_fit_recovers_dictionary():
    X, D_true, _ = make_sparse_signals(random_state=0)
    ksvd = DoubleBatchKSVD(50, n_nonzero_coefs=3, max_iter=80, tol=0, device="cuda", random_state=0)
    assert atom_recovery_rate(D_true, ksvd.fit(X).components_) >= 0.9
