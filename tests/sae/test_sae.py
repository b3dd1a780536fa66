import pickle
import subprocess
import sys
import tracemalloc

import joblib
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
import scipy.sparse as sp
from scipy.optimize import minimize

torch = pytest.importorskip("torch")

import skdict.sae as sae_module  # noqa: E402
from skdict import SparseAutoencoder  # noqa: E402
from skdict._sae import training as _sae_training  # noqa: E402
from skdict.datasets import make_sparse_signals  # noqa: E402
from skdict.metrics import explained_variance  # noqa: E402
from _checks import estimator_check_params
from _tolerance import dot_rtol

# One torch thread: the models are tiny, and CI machines are shared.
FAST = dict(device="cpu", n_jobs=1, random_state=0)


def _small(**params):
    return SparseAutoencoder(**{"n_components": 50, "k": 3, "max_iter": 5,
                                "batch_size": 100, **FAST, **params})


@pytest.fixture(scope="module")
def signals():
    X, D, _ = make_sparse_signals(600, nonnegative=True, dtype=np.float32, random_state=0)
    return X, D


@pytest.mark.parametrize(
    "estimator, check",
    estimator_check_params(SparseAutoencoder(8, k=1, max_iter=2, batch_size=16, **FAST)),
)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def recovery_fit():
    """m=64, 256 atoms, k=5, 20 dB, non-negative codes (the issue's setup)."""
    X, D_true, _ = make_sparse_signals(10_000, 64, 256, 5, nonnegative=True,
                                       dtype=np.float32, random_state=0)
    sae = SparseAutoencoder(256, k=5, max_iter=25, batch_size=256, learning_rate=4e-3,
                            early_stopping=False, **FAST).fit(X)
    return X, D_true, sae


def test_topk_recovers_atoms_of_nonnegative_sparse_signals(recovery_fit):
    X, D_true, sae = recovery_fit
    cos = np.abs(D_true @ sae.components_.T).max(axis=1)
    assert np.mean(1 - cos < 0.05) >= 0.8
    assert explained_variance(X, sae.inverse_transform(sae.transform(X))) >= 0.85


def test_loss_curve_halves(recovery_fit):
    _, _, sae = recovery_fit
    assert sae.n_iter_ == 25 and sae.loss_curve_.shape == (25,)
    assert sae.loss_curve_[-1] < sae.loss_curve_[0] / 2


def test_decoder_rows_have_unit_norm(recovery_fit):
    _, _, sae = recovery_fit
    # rows renormalised in float32: a 20-term norm rounds by dot_rtol(20) ~ 8e-7
    np.testing.assert_allclose(np.linalg.norm(sae.components_, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("activation", ["topk", "batchtopk", "relu", "jumprelu"])
def test_each_activation_trains_and_codes_sparsely(signals, activation):
    X, _ = signals
    sae = _small(activation=activation, max_iter=15, early_stopping=False,
                 learning_rate=3e-3).fit(X)
    assert sae.loss_curve_[-1] < 0.7 * sae.loss_curve_[0]
    codes = sae.transform(X)
    assert codes.min() >= 0
    l0 = (codes > 0).sum(axis=1).mean()
    assert 0 < l0 < 25
    assert explained_variance(X, sae.inverse_transform(codes)) > 0.5
    if activation == "topk":
        assert (codes > 0).sum(axis=1).max() <= 3
    if activation == "batchtopk":
        # on average k per row at inference too, through the learned threshold:
        # a threshold, unlike a per-row top-k, lets the count vary between rows
        per_row = (codes > 0).sum(axis=1)
        assert 1 <= l0 <= 6 and np.unique(per_row).size > 1
        assert np.isfinite(sae.threshold_) and sae.threshold_ > 0
    if activation == "jumprelu":
        assert sae.threshold_.shape == (50,) and np.all(sae.threshold_ >= 0)


@pytest.mark.parametrize("activation, coefs", [("relu", (1e-4, 0.5)),
                                               ("jumprelu", (1e-4, 0.05))])
def test_sparsity_coef_trades_sparsity(activation, coefs):
    # L1 for relu; for jumprelu the L0 penalty reaches the thresholds only
    # through the straight-through estimator, so this also tests that gradient
    X, _, _ = make_sparse_signals(600, nonnegative=True, random_state=1)
    l0 = [
        (_small(activation=activation, l1_coef=c, max_iter=10, early_stopping=False,
                learning_rate=1e-2).fit(X).transform(X) > 0).sum(axis=1).mean()
        for c in coefs
    ]
    assert l0[1] < l0[0] / 2


def test_auxk_reduces_dead_latents():
    # one latent per row and a large learning rate: without AuxK, latents pushed
    # away from the data early never fire again
    X, _, _ = make_sparse_signals(4000, 64, 1024, 4, nonnegative=True,
                                  dtype=np.float32, random_state=0)
    params = dict(n_components=512, k=1, max_iter=6, batch_size=100, learning_rate=1e-2,
                  early_stopping=False, **FAST)
    without = SparseAutoencoder(auxk_coef=0.0, **params).fit(X)
    with_auxk = SparseAutoencoder(**params).fit(X)
    assert without.dead_fraction_ > 0.2
    assert with_auxk.dead_fraction_ < without.dead_fraction_ / 2
    ev = [explained_variance(X, m.inverse_transform(m.transform(X))) for m in (without, with_auxk)]
    assert ev[1] > ev[0]


def test_geometric_median_matches_direct_minimisation(rng):
    X = rng.standard_normal((40, 3)) * [1.0, 2.0, 0.5] + [5.0, -1.0, 2.0]
    X[:5] += 30  # outliers pull the mean, barely the median
    median = _sae_training.geometric_median(X)
    objective = lambda m: np.linalg.norm(X - m, axis=1).sum()  # noqa: E731
    reference = minimize(objective, X.mean(axis=0), method="Nelder-Mead",
                         options=dict(xatol=1e-10, fatol=1e-12, maxiter=20_000)).x
    np.testing.assert_allclose(median, reference, atol=1e-4)
    assert objective(median) <= objective(reference) + 1e-8


def test_geometric_median_of_collinear_points_is_the_middle_one():
    X = np.array([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [10.0, 0.0], [100.0, 0.0]])
    np.testing.assert_allclose(_sae_training.geometric_median(X), [2.0, 0.0], atol=1e-5)


@pytest.mark.parametrize("init", ["geometric_median", "mean"])
def test_decoder_bias_starts_at_the_data_centre(signals, init):
    X, _ = signals
    X = X + 3.0
    # a learning rate so small that the bias stays where it started
    sae = _small(decoder_bias_init=init, learning_rate=1e-12, max_iter=1).fit(X)
    train = X[np.sort(np.random.RandomState(0).permutation(len(X))[60:])]
    expected = (_sae_training.geometric_median(train) if init == "geometric_median"
                else train.mean(axis=0))
    # The SAE averages (or runs Weiszfeld on) the same rows in another order and
    # stores float32: a 540-row reduction rounds by dot_rtol(540) ~ 3e-6 relative,
    # and every entry is >= 3, so a relative tolerance suffices.
    np.testing.assert_allclose(sae.decoder_bias_, expected, rtol=dot_rtol(np.float32, len(train)))


def test_inverse_transform_folds_back_scale_and_bias(signals):
    X, _ = signals
    X = 1000.0 * X + 50.0
    sae = _small(max_iter=10, early_stopping=False, learning_rate=3e-3).fit(X)
    assert sae.scale_ > 100
    zero = sae.inverse_transform(np.zeros((1, 50), dtype=np.float32))
    np.testing.assert_allclose(zero[0], sae.decoder_bias_)
    assert explained_variance(X, sae.inverse_transform(sae.transform(X))) > 0.5


def test_same_random_state_gives_identical_components(signals):
    X, _ = signals
    a = _small().fit(X)
    b = _small().fit(X)
    c = _small(random_state=1).fit(X)
    np.testing.assert_array_equal(a.components_, b.components_)
    np.testing.assert_array_equal(a.loss_curve_, b.loss_curve_)
    assert not np.array_equal(a.components_, c.components_)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_of_outputs_follows_input(signals, dtype):
    X = signals[0].astype(dtype)
    sae = _small().fit(X)
    assert sae.components_.dtype == np.float32
    codes = sae.transform(X)
    assert codes.dtype == dtype
    assert sae.inverse_transform(codes).dtype == dtype
    assert sae.set_params(sparse_output=True).transform(X).dtype == dtype


def test_float64_input_trains_like_float32(signals):
    X, _ = signals
    a = _small().fit(X)
    b = _small().fit(X.astype(np.float64))
    # float64 rows are cast to float32 before training; only scale_ is computed
    # from the float64 values, so it may differ by ~eps32 relative, which 5 epochs
    # of Adam carry to the unit-norm weights as ~1e-6 at most (0 measured).
    np.testing.assert_allclose(a.components_, b.components_, atol=1e-5)


@pytest.mark.parametrize("activation", ["topk", "batchtopk", "jumprelu"])
def test_pickle_and_joblib_round_trip_give_identical_transforms(signals, tmp_path, activation):
    X, _ = signals
    sae = _small(activation=activation).fit(X)
    expected = sae.transform(X)
    restored = pickle.loads(pickle.dumps(sae))
    np.testing.assert_array_equal(restored.transform(X), expected)
    joblib.dump(sae, tmp_path / "sae.joblib")
    np.testing.assert_array_equal(joblib.load(tmp_path / "sae.joblib").transform(X), expected)
    assert "_trainer" not in restored.__dict__
    restored.partial_fit(X)  # rebuilds a trainer from the fitted weights
    assert restored.n_iter_ == sae.n_iter_ + 1


def test_pickling_leaves_the_fitted_estimator_untouched(signals):
    X, _ = signals
    pickled, kept = _small().fit(X), _small().fit(X)
    pickle.dumps(pickled)
    # Both continue from the same weights and the same Adam state: pickling one
    # of them must not drop its optimiser state.
    pickled.partial_fit(X)
    kept.partial_fit(X)
    np.testing.assert_array_equal(pickled.components_, kept.components_)


def test_sparse_output_is_csr_equal_to_dense(signals):
    X, _ = signals
    sae = _small().fit(X)
    dense = sae.transform(X)
    codes = sae.set_params(sparse_output=True).transform(X)
    assert sp.issparse(codes) and codes.format == "csr"
    np.testing.assert_array_equal(codes.toarray(), dense)
    assert codes.nnz == np.count_nonzero(dense)
    # sparse and dense products sum the same k non-zero terms in another order
    # (zeros add exactly): at most ~k * eps32 relative to sum |a_j d_j| ~ 1.
    np.testing.assert_allclose(sae.inverse_transform(codes), sae.inverse_transform(dense),
                               rtol=1e-5, atol=1e-5)


@pytest.fixture
def memmap_X(tmp_path):
    X, _, _ = make_sparse_signals(20_000, 128, 128, 4, nonnegative=True,
                                  dtype=np.float32, random_state=0)
    np.save(tmp_path / "X.npy", X)
    return np.load(tmp_path / "X.npy", mmap_mode="r")


def _peak_bytes(fn):
    tracemalloc.start()
    try:
        return fn(), tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memmap_fit_and_transform_stream_in_blocks(memmap_X, monkeypatch):
    monkeypatch.setattr(_sae_training, "_BLOCK_BYTES", 2**18)
    monkeypatch.setattr(_sae_training, "_N_STATISTIC_ROWS", 200)
    monkeypatch.setattr(sae_module, "_CHUNK_BYTES", 2**18)
    sae = SparseAutoencoder(128, k=4, max_iter=1, batch_size=500, sparse_output=True, **FAST)
    sae, fit_peak = _peak_bytes(lambda: sae.fit(memmap_X))
    codes, transform_peak = _peak_bytes(lambda: sae.transform(memmap_X))
    assert sp.issparse(codes) and codes.shape == (20_000, 128)
    # X and dense codes are 10 MB each: neither may be materialised
    assert fit_peak < memmap_X.nbytes / 4, fit_peak
    assert transform_peak < memmap_X.nbytes / 2, transform_peak
    in_memory = SparseAutoencoder(128, k=4, max_iter=1, batch_size=500, **FAST)
    in_memory.fit(np.array(memmap_X))
    np.testing.assert_array_equal(sae.components_, in_memory.components_)
    assert (codes != in_memory.set_params(sparse_output=True).transform(memmap_X)).nnz == 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_a_clear_error(signals):
    with pytest.raises(ValueError, match="no CUDA GPU"):
        SparseAutoencoder(device="cuda").fit(signals[0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_fit_matches_cpu_quality(signals):
    X, _ = signals
    params = dict(n_components=50, k=3, max_iter=10, batch_size=100, random_state=0,
                  early_stopping=False, learning_rate=3e-3)
    cpu = SparseAutoencoder(device="cpu", **params).fit(X)
    gpu = SparseAutoencoder(device="cuda", **params).fit(X)
    ev = [explained_variance(X, m.inverse_transform(m.transform(X))) for m in (cpu, gpu)]
    assert abs(ev[0] - ev[1]) < 0.05
    assert isinstance(gpu.components_, np.ndarray)


def test_early_stopping_stops_on_validation_plateau(signals):
    X, _ = signals
    sae = _small(max_iter=200, learning_rate=3e-3, n_iter_no_change=2, tol=1e-3).fit(X)
    assert sae.n_iter_ < 200
    assert sae.validation_scores_.shape == (sae.n_iter_,)
    best = np.argmax(sae.validation_scores_)
    # stopped after n_iter_no_change epochs without a tol improvement
    assert np.all(sae.validation_scores_[best + 1:] <= sae.validation_scores_[best] + 1e-3)
    assert sae.validation_scores_.max() > 0.5
    assert _small(early_stopping=False).fit(X).validation_scores_ is None


def test_callback_can_stop_training(signals):
    X, _ = signals
    seen = []
    sae = _small(max_iter=10, callback=lambda local: seen.append(local["epoch"]) or True)
    assert sae.fit(X).n_iter_ == 1 and seen == [0]


def test_partial_fit_keeps_improving(signals):
    X, _ = signals
    sae = _small(learning_rate=3e-3)
    for _ in range(8):
        sae.partial_fit(X)
    assert sae.n_iter_ == 8 and sae.validation_scores_ is None
    assert sae.loss_curve_[-1] < 0.7 * sae.loss_curve_[0]
    with pytest.raises(ValueError, match="features"):
        sae.partial_fit(X[:, :5])


def test_verbose_shows_progress(signals, capsys):
    _small(verbose=1, max_iter=2).fit(signals[0])
    err = capsys.readouterr().err
    assert "explained_variance" in err and "dead_fraction" in err


def test_torch_threads_are_restored(signals):
    before = torch.get_num_threads()
    seen = []
    _small(max_iter=1, callback=lambda local: seen.append(torch.get_num_threads())).fit(
        signals[0]
    )
    assert seen == [1]
    assert torch.get_num_threads() == before


# --- defaults that adapt to the data size -----------------------------------

def _auto_rule(n_train):
    """The documented rule: a power of two near n_train / 256 in [32, 4096]
    for the batch; enough epochs for 2,000 steps, in [20, 100]."""
    batch = min(max(2 ** int(np.log2(max(n_train // 256, 1))), 32), 4096)
    steps = -(-n_train // batch)
    return batch, min(max(-(-2000 // steps), 20), 100)


@pytest.mark.parametrize("n_rows", [20, 3000, 20_000])
def test_auto_batch_and_epochs_follow_the_stated_rule(n_rows):
    X = np.random.default_rng(0).random((n_rows, 2), dtype=np.float32)
    sae = SparseAutoencoder(4, k=1, early_stopping=False, **FAST).fit(X)
    batch, epochs = _auto_rule(n_rows)
    assert (sae.batch_size_, sae.n_iter_) == (batch, epochs)
    assert {20: (32, 100), 3000: (32, 22), 20_000: (64, 20)}[n_rows] == (batch, epochs)


def test_auto_batch_is_capped_and_partial_fit_uses_its_batch():
    X = np.zeros((1_100_000, 1), dtype=np.float32)
    X[::2] = 1.0
    assert SparseAutoencoder(2, k=1, max_iter=1, early_stopping=False,
                             **FAST).fit(X).batch_size_ == 4096
    assert SparseAutoencoder(2, k=1, **FAST).partial_fit(X[:10_000]).batch_size_ == 32
    assert SparseAutoencoder(2, k=1, batch_size=7, **FAST).partial_fit(X[:100]).batch_size_ == 7


def test_default_schedule_trains_small_data_with_many_steps(signals):
    """600 rows: a fixed batch of 4,096 for 20 epochs makes 20 Adam steps
    (measured EV 0.43); the defaults make ~750 (measured 0.75). 0.2 is far
    outside the spread of seeds and threads (a few hundredths)."""
    X, _ = signals
    defaults = SparseAutoencoder(50, k=3, **FAST).fit(X)
    fixed = SparseAutoencoder(50, k=3, batch_size=4096, max_iter=20, **FAST).fit(X)
    score = [explained_variance(X, m.inverse_transform(m.transform(X))) for m in (defaults, fixed)]
    assert score[0] > score[1] + 0.2


@pytest.mark.parametrize(
    "params, match",
    [
        (dict(k=60), "k=60 must be between 1"),
        (dict(activation="gelu"), "'activation' parameter"),
        (dict(l1_coef=-1.0), "'l1_coef' parameter"),
        (dict(batch_size=0), "'batch_size' parameter"),
        (dict(batch_size="big"), "'batch_size' parameter"),
        (dict(max_iter="auto!"), "'max_iter' parameter"),
        (dict(device="tpu:0:x"), "device must be"),
    ],
)
def test_bad_parameters_name_themselves(signals, params, match):
    with pytest.raises(ValueError, match=match):
        _small(**params).fit(signals[0])


def test_bad_input_errors(signals):
    X, _ = signals
    bad = X.copy()
    bad[1, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        _small().fit(bad)
    with pytest.raises(ValueError, match="2D array"):
        _small().fit(X[0])
    with pytest.raises(ValueError, match="non-numeric"):
        _small().fit(np.array([["a", "b"], ["c", "d"]], dtype=object))
    sae = _small(max_iter=1).fit(X)
    with pytest.raises(ValueError, match="X has 5 features"):
        sae.transform(X[:, :5])
    with pytest.raises(ValueError, match="codes has 7 columns"):
        sae.inverse_transform(np.zeros((2, 7)))


def test_without_torch_import_works_and_use_says_how_to_install():
    code = (
        "import sys\n"
        "class NoTorch:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'torch':\n"
        "            raise ImportError('no torch here')\n"
        "sys.meta_path.insert(0, NoTorch())\n"
        "import numpy as np\n"
        "import skdict\n"
        "assert 'torch' not in sys.modules\n"
        "sae = skdict.SparseAutoencoder()\n"  # __init__ only stores parameters
        "try:\n"
        "    sae.fit(np.ones((4, 2)))\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert "pip install 'skdict[torch]'" in out


def test_dask_transform_is_blockwise(signals):
    da = pytest.importorskip("dask.array")
    X, _ = signals
    sae = _small(sparse_output=True).fit(X)
    codes = sae.transform(da.from_array(X, chunks=(250, 20)))
    assert isinstance(codes, da.Array)
    assert (codes.compute(scheduler="synchronous") != sae.transform(X)).nnz == 0


def test_learning_rate_warms_up_then_decays_to_zero():
    factors = [_sae_training.lr_factor(s, 100, 10, 20) for s in range(100)]
    np.testing.assert_allclose(factors[:10], np.arange(1, 11) / 10)
    assert factors[10:80] == [1.0] * 70
    assert np.all(np.diff(factors[80:]) < 0) and factors[-1] == pytest.approx(0.05)
    assert _sae_training.lr_factor(10_000, None, 10, 20) == 1.0  # partial_fit


def test_fit_applies_the_schedule(signals):
    sae = _small(early_stopping=False).fit(signals[0])
    # 5 epochs of 6 batches: the last step ends the linear decay at zero
    assert sae._trainer.schedule.get_last_lr()[0] == pytest.approx(0.0, abs=1e-12)


@pytest.fixture(scope="module")
def fitted_topk(signals):
    return _small().fit(signals[0])


@settings(max_examples=25, deadline=None)
@given(X=arrays(np.float64, st.tuples(st.integers(1, 30), st.just(20)),
                elements=st.floats(-1e3, 1e3)))
def test_topk_codes_of_any_rows(fitted_topk, X):
    codes = fitted_topk.transform(X)
    assert codes.dtype == np.float64 and codes.shape == (X.shape[0], 50)
    assert codes.min() >= 0 and (codes > 0).sum(axis=1).max() <= 3
    sparse = fitted_topk.set_params(sparse_output=True).transform(X)
    fitted_topk.set_params(sparse_output=False)
    np.testing.assert_array_equal(sparse.toarray(), codes)
