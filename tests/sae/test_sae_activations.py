"""SparseAutoencoder's activations as registered types (skdict/_sae/activations.py)."""

import re
import subprocess
import sys

import numpy as np
import pytest
from sklearn.base import clone

import skdict
from skdict import SparseAutoencoder
from skdict._sae import activations
from skdict._sae.activations import ACTIVATIONS, Activation, get_activation, register
from skdict.datasets import make_sparse_signals
from skdict.metrics import explained_variance

BUILT_IN = ["abstopk", "batchtopk", "jumprelu", "relu", "topk"]


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


@pytest.fixture
def pre(torch):
    return torch.randn(64, 50, generator=torch.Generator().manual_seed(0))


def test_constructing_cloning_and_validating_do_not_import_torch():
    code = (
        "import sys\n"
        "from sklearn.base import clone\n"
        "import skdict\n"
        "m = skdict.SparseAutoencoder(8)\n"
        "m.get_params()\n"
        "clone(m.set_params(activation='jumprelu', k=4))._validate_params()\n"
        "try:\n"
        "    m.set_params(activation='gelu')._validate_params()\n"
        "except ValueError as exc:\n"
        "    print(exc)\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert "'activation' parameter" in out


def test_unknown_activation_names_the_parameter_and_lists_the_registered_ones():
    assert sorted(ACTIVATIONS) == BUILT_IN
    with pytest.raises(ValueError, match="'activation' parameter") as info:
        get_activation("gelu")
    assert str(BUILT_IN) in str(info.value) and "'gelu'" in str(info.value)
    # parameter validation, before any data is read
    with pytest.raises(ValueError, match=re.escape(str(BUILT_IN))):
        SparseAutoencoder(activation="gelu").fit(np.ones((4, 2)))
    with pytest.raises(ValueError, match="'activation' parameter"):
        get_activation(["topk"])  # unhashable: the same message, not a TypeError


def test_topk_keeps_exactly_the_k_largest_of_each_row(torch, pre):
    pre = pre.abs() + 0.1  # all positive: the k kept are all non-zero
    codes = get_activation("topk")(k=5).forward(pre, {}, training=True)
    assert ((codes != 0).sum(1) == 5).all()
    assert torch.equal(codes.topk(5).values, pre.topk(5).values)


def test_batchtopk_keeps_k_per_row_over_the_batch_then_thresholds(torch, pre):
    activation = get_activation("batchtopk")(k=5)
    state = activation.init_state(50)
    positive = pre.abs() + 0.1
    codes = activation.forward(positive, state, training=True)
    per_row = (codes != 0).sum(1)
    assert per_row.sum() == 5 * 64 and per_row.unique().numel() > 1
    # the first batch sets the inference threshold to its smallest kept value
    assert state["batch_threshold"] == codes[codes > 0].min()
    codes = activation.forward(pre, state, training=False)
    above = pre > state["batch_threshold"]
    assert torch.equal(codes, pre * above) and (codes[~above] == 0).all()


def test_relu_is_non_negative_with_a_decoder_weighted_l1_penalty(torch, pre):
    activation = get_activation("relu")(k=1)
    codes = activation.forward(pre, {}, training=True)
    assert (codes >= 0).all() and torch.equal(codes, pre.clamp_min(0))
    decoder = 2 * torch.ones(50, 3)  # rows of norm 2 * sqrt(3)
    penalty = activation.sparsity_loss(pre, codes, decoder, {})
    # float32 sums of 50 and 64 terms: rounding ~ dot_rtol(float32, 64) < 1e-5 relative
    assert float(penalty) == pytest.approx(float(codes.sum()) * 2 * 3 ** 0.5 / 64, rel=1e-5)
    assert get_activation("topk")(k=1).sparsity_loss(pre, codes, decoder, {}) is None


def test_jumprelu_is_zero_below_its_threshold_and_learns_it(torch, pre):
    activation = get_activation("jumprelu")(k=1)
    state = activation.init_state(50)
    assert isinstance(state["threshold"], torch.nn.Parameter)
    with torch.no_grad():
        state["threshold"].copy_(torch.linspace(-1, 1, 50))
    # row 0 sits inside the estimator's kernel (width 1e-3) above every threshold
    pre = torch.cat([state["threshold"].detach()[None] + 1e-4, pre])
    codes = activation.forward(pre, state, training=True)
    above = pre > state["threshold"]
    assert (codes[~above] == 0).all() and torch.equal(codes[above], pre[above])
    # the L0 penalty reaches the threshold through the straight-through
    # estimator: raising a threshold lowers the count of firing latents
    activation.sparsity_loss(pre, codes, None, state).backward()
    assert (state["threshold"].grad < 0).all()
    with torch.no_grad():
        activation.constrain(state)
    assert (state["threshold"] >= 0).all()
    assert torch.equal(state["threshold"][25:], torch.linspace(-1, 1, 50)[25:])


@pytest.mark.parametrize("name", BUILT_IN)
def test_state_export_import_round_trip(torch, pre, name):
    activation = get_activation(name)(k=3)
    state = activation.init_state(50)
    activation.forward(pre.abs(), state, training=True)  # BatchTopK learns its threshold
    with torch.no_grad():
        for tensor in state.values():
            tensor.add_(torch.rand(tensor.shape, generator=torch.Generator().manual_seed(1)))
    threshold = activation.export_state(state)
    shape = activation.threshold_shape(50)
    assert (threshold is None) if shape is None else np.shape(threshold) == shape
    fresh = activation.init_state(50)
    with torch.no_grad():
        activation.import_state(threshold, fresh)
    assert fresh.keys() == state.keys()
    for key in state:
        assert torch.equal(fresh[key], state[key]), key
    np.testing.assert_array_equal(activation.export_state(fresh), threshold)


@pytest.fixture
def top1(monkeypatch):
    """A variant added the documented way: subclass Activation and register it."""
    monkeypatch.setattr(activations, "ACTIVATIONS", dict(ACTIVATIONS))

    @register("top1")
    class Top1(Activation):
        """Each row's largest pre-activation, if positive; nothing else to define."""

        def forward(self, pre, state, training):
            top, idx = pre.max(dim=1, keepdim=True)
            return pre.new_zeros(pre.shape).scatter(1, idx, top.relu())

    return Top1


def test_a_registered_activation_trains_end_to_end(torch, top1, tmp_path):
    X, _, _ = make_sparse_signals(600, 20, 20, 1, nonnegative=True, dtype=np.float32,
                                  random_state=0)
    sae = SparseAutoencoder(20, activation="top1", max_iter=10, batch_size=50,
                            learning_rate=3e-3, early_stopping=False, device="cpu",
                            n_jobs=1, random_state=0)
    sae = clone(sae).fit(X)
    codes = sae.transform(X)
    assert (np.count_nonzero(codes, axis=1) <= 1).all() and codes.min() >= 0
    assert sae.loss_curve_[-1] < 0.7 * sae.loss_curve_[0]
    assert explained_variance(X, sae.inverse_transform(codes)) > 0.5
    assert sae.threshold_ is None
    loaded = skdict.load(skdict.save(sae, tmp_path / "top1.skdict"))
    np.testing.assert_array_equal(loaded.transform(X), codes)
    with pytest.raises(ValueError, match="activation='top1' has no SAELens equivalent"):
        skdict.save(sae, tmp_path / "saelens", format="saelens")
