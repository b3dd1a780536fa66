"""Out-of-core (memory maps) and distributed (dask) fitting and coding."""

import tracemalloc

import numpy as np
import pytest
import scipy.sparse as sp

import skdict._backend.numba as numba_backend
from skdict import DoubleBatchKSVD
from skdict.datasets import make_sparse_signals


@pytest.fixture
def memmap_X(tmp_path):
    X, _, _ = make_sparse_signals(80_000, 64, 128, 4, dtype=np.float32, random_state=0)
    np.save(tmp_path / "X.npy", X)
    return np.load(tmp_path / "X.npy", mmap_mode="r")


def _peak_bytes(fn):
    tracemalloc.start()
    try:
        result = fn()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memmap_fit_and_transform_stay_within_chunks(memmap_X, monkeypatch):
    monkeypatch.setattr(numba_backend, "_CHUNK_BYTES", 2**20)  # 1 MiB of correlations per chunk
    ksvd = DoubleBatchKSVD(128, n_nonzero_coefs=4, batch_size=2000, max_iter=5,
                           sparse_output=True, random_state=0)
    ksvd.fit(memmap_X[:3000]).transform(memmap_X[:10])  # compile kernels outside the trace
    _, fit_peak = _peak_bytes(lambda: ksvd.fit(memmap_X))
    codes, transform_peak = _peak_bytes(lambda: ksvd.transform(memmap_X))
    assert sp.issparse(codes) and codes.shape == (80_000, 128)
    # X is 20 MB; neither step may hold a copy of it, or dense codes (40 MB)
    assert fit_peak < memmap_X.nbytes / 4, fit_peak
    assert transform_peak < memmap_X.nbytes / 2, transform_peak
    in_memory = ksvd.transform(np.asarray(memmap_X))
    assert (codes != in_memory).nnz == 0


def test_memmap_fit_equals_in_memory_fit(memmap_X):
    params = dict(n_components=128, n_nonzero_coefs=4, batch_size=5000, max_iter=3,
                  random_state=0)
    a = DoubleBatchKSVD(**params).fit(memmap_X)
    b = DoubleBatchKSVD(**params).fit(np.array(memmap_X))
    np.testing.assert_array_equal(a.components_, b.components_)


@pytest.fixture(scope="module")
def dask_client():
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                           host="127.0.0.1", dashboard_address=None)
    client = Client(cluster)
    yield client
    client.close()
    cluster.close()


def test_dask_fit_equals_single_machine_fit(dask_client):
    import dask.array as da

    X, D_true, _ = make_sparse_signals(3000, random_state=0)
    X_dask = da.from_array(X, chunks=(700, 20))
    params = dict(n_components=50, n_nonzero_coefs=3, max_iter=8, batch_size=1000, tol=0,
                  random_state=0)
    distributed = DoubleBatchKSVD(**params).fit(X_dask)
    local = DoubleBatchKSVD(**params).fit(X)
    np.testing.assert_allclose(distributed.components_, local.components_, atol=1e-10)
    # the distributed history is the signal recovered on all rows
    full = local.inverse_transform(local.transform(X))
    from skdict.metrics import signal_recovered

    assert distributed.error_[-1] == pytest.approx(signal_recovered(X, full), abs=1e-9)
    assert distributed.n_features_in_ == 20


@pytest.mark.parametrize("sparse_output", [False, True])
def test_dask_transform_returns_dask_array(dask_client, sparse_output):
    import dask.array as da

    X, _, _ = make_sparse_signals(1000, random_state=1)
    ksvd = DoubleBatchKSVD(50, n_nonzero_coefs=3, max_iter=2, random_state=0,
                           sparse_output=sparse_output).fit(X)
    codes = ksvd.transform(da.from_array(X, chunks=(300, 10)))
    assert isinstance(codes, da.Array) and codes.shape == (1000, 50)
    computed = codes.compute()
    expected = ksvd.transform(X)
    if sparse_output:
        assert sp.issparse(computed)
        assert (computed != expected).nnz == 0
    else:
        np.testing.assert_array_equal(computed, expected)


def test_dask_input_errors(dask_client):
    import dask.array as da

    X, _, _ = make_sparse_signals(500, random_state=0)
    with pytest.raises(ValueError, match="needs batch_size"):
        DoubleBatchKSVD(50, n_nonzero_coefs=3).fit(da.from_array(X, chunks=100))
    ksvd = DoubleBatchKSVD(50, n_nonzero_coefs=3, max_iter=1).fit(X)
    with pytest.raises(ValueError, match="X has 5 features"):
        ksvd.transform(da.ones((10, 5)))
    bad = X.copy()
    bad[3, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        DoubleBatchKSVD(50, n_nonzero_coefs=3, batch_size=500, max_iter=1).fit(
            da.from_array(bad, chunks=100)
        )
