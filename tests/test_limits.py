"""Inputs at the limits of floating point and of memory: clear errors, or right answers."""

import numpy as np
import pytest

from skdict import DoubleBatchKSVD, SparseAutoencoder
from skdict._validation import available_memory
from skdict.cli import main
from skdict.datasets import make_sparse_signals
from _tolerance import assert_same_codes

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def signals():
    return make_sparse_signals(n_samples=300, random_state=0)[0]


def _ksvd():
    return DoubleBatchKSVD(50, n_nonzero_coefs=3, max_iter=3, random_state=0, n_jobs=1)


def _sae():
    return SparseAutoencoder(50, activation="topk", k=3, max_iter=2, device="cpu",
                             random_state=0, n_jobs=1)


@pytest.mark.parametrize("make, dtype, scale, message", [
    # DoubleBatchKSVD squares X in its own dtype.
    (_ksvd, np.float32, 1e30, r"too large for float32 .* overflow .*or pass float64"),
    (_ksvd, np.float64, 1e155, r"too large for float64 .* overflow"),
    (_ksvd, np.float32, 1e-30, r"too small for float32 .* underflow"),
    (_ksvd, np.float64, 1e-160, r"too small for float64 .* underflow"),
    # SparseAutoencoder divides X by its scale and trains in float32.
    (_sae, np.float64, 1e39, r"too large for float32 arithmetic: its values overflow"),
    (_sae, np.float64, 1e155, r"too large for float32"),
    (_sae, np.float64, 1e-160, r"too small for float32 arithmetic: its values underflow"),
])
def test_magnitudes_beyond_the_working_dtype_are_refused(signals, make, dtype, scale, message):
    X = (signals * scale).astype(dtype)
    with pytest.raises(ValueError, match=message) as info:
        make().fit(X)
    assert "Rescale X by a constant" in str(info.value)
    assert f"{np.abs(X).max():.3g}" in str(info.value)


def test_transform_refuses_magnitudes_the_model_cannot_code(signals):
    ksvd = _ksvd().fit(signals.astype(np.float32))
    with pytest.raises(ValueError, match="too large for float32"):
        ksvd.transform((signals * 1e30).astype(np.float32))


@pytest.mark.parametrize("make, dtype, exponent", [
    (_ksvd, np.float64, 130),   # |X| ~ 1e39: squares ~ 1e78, fine in float64
    (_ksvd, np.float64, -100),  # |X| ~ 1e-30
    (_ksvd, np.float32, 55),    # |X| ~ 4e16: squares ~ 1e33 < 3.4e38
    (_ksvd, np.float32, -50),   # |X| ~ 1e-15: squares ~ 1e-30 > 1.2e-38
    (_sae, np.float32, 100),    # ~ 1e30: divided by its scale before training
    (_sae, np.float32, -100),   # ~ 1e-30
    (_sae, np.float64, 120),    # ~ 1e36, still a float32
])
def test_extreme_but_representable_magnitudes_fit_as_the_unscaled_data(
    signals, make, dtype, exponent
):
    # Multiplying by a power of two is exact in binary floating point, and every
    # step of both fits is homogeneous in X (or divides by X's scale), so while no
    # intermediate leaves the normal range the atoms are the same bits.
    X = signals.astype(dtype)
    reference = make().fit(X).components_
    scaled = make().fit(X * dtype(2.0) ** exponent)
    np.testing.assert_array_equal(scaled.components_, reference)


def test_a_gram_matrix_larger_than_memory_is_refused_before_allocating(signals):
    available = available_memory()
    if available is None:
        pytest.skip("this platform does not report available memory")
    # 10**6 atoms: two float32 Gram matrices of 4 TB each.
    ksvd = DoubleBatchKSVD(n_components=1_000_000, n_nonzero_coefs=3)
    with pytest.raises(ValueError, match=r"n_components=1000000 needs about \d+\.\d GiB") as info:
        ksvd.fit(signals.astype(np.float32))
    message = str(info.value)
    assert "GiB is available" in message
    fits = int(message.split("use at most about ")[1].split()[0])
    # The suggested atom count's two Gram matrices fit in what is available.
    assert 0 < 2 * fits**2 * 4 <= available
    assert not hasattr(ksvd, "components_")


def test_cli_fit_with_a_million_atoms_fails_with_one_line_naming_the_memory(
    signals, tmp_path, capsys
):
    if available_memory() is None:
        pytest.skip("this platform does not report available memory")
    np.save(tmp_path / "X.npy", signals.astype(np.float32))
    code = main(["fit", str(tmp_path / "X.npy"), "--n-components", "1000000",
                 "--n-nonzero", "3", "-o", str(tmp_path / "model")])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "n_components=1000000 needs about" in err and "GiB" in err
    assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == [tmp_path / "X.npy"]


def test_transform_codes_rows_of_any_small_magnitude(signals):
    # Only fitting refuses data too small to learn from; a fitted model codes
    # tiny rows (here ~1e-30, whose squares vanish in float32) like the others.
    X = signals[:5].astype(np.float32)
    ksvd = _ksvd().fit(signals.astype(np.float32))
    scale = np.float32(2.0**-100)  # a power of two: X * scale is exact
    assert_same_codes(ksvd.transform(X * scale) / scale, ksvd.transform(X),
                      ksvd.components_, np.float32)
