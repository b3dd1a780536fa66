import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.base import clone

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")

from _vits import (  # noqa: E402
    hidden_states, linear_readout, random_images, states_by_hand, tiny_vit,
)
from timm.models.vision_transformer import ResPostBlock  # noqa: E402

import skdict.inspection  # noqa: E402
from skdict import ClassEmbeddingProjector  # noqa: E402
from skdict._vit.hub import hub_reachable  # noqa: E402
from skdict.datasets import make_digits_vit, train_digits_vit  # noqa: E402


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.mark.parametrize("reg_tokens", [0, 2])
def test_cls_projection_at_last_block_is_the_model_output(reg_tokens):
    model = tiny_vit(reg_tokens=reg_tokens)
    x = random_images()
    proj = ClassEmbeddingProjector(model, device="cpu").fit()
    assert proj.num_prefix_tokens_ == 1 + reg_tokens
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(proj.project(x)[:, -1, 0], expected, atol=1e-5)


def test_pooled_model_projects_each_token_through_fc_norm():
    model = tiny_vit(global_pool="avg", class_token=False)
    assert isinstance(model.norm, torch.nn.Identity)
    x = random_images()
    proj = ClassEmbeddingProjector(model, tokens="patches", device="cpu").fit()
    hidden = hidden_states(model, x)
    with torch.no_grad():
        expected = np.stack([model.head(model.fc_norm(h)).numpy() for h in hidden], axis=1)
        # the captured block output, pooled, gives the model's own output
        pooled = model.head(model.fc_norm(hidden[-1].mean(dim=1))).numpy()
        np.testing.assert_allclose(pooled, model(torch.from_numpy(x)).numpy(), atol=1e-5)
    np.testing.assert_allclose(proj.project(x), expected, atol=1e-5)


def test_identity_readout_gives_hidden_states_probs_and_ranks():
    model = linear_readout(tiny_vit(reg_tokens=1))
    x = random_images()
    hidden = np.stack([h.numpy() for h in hidden_states(model, x)], axis=1)
    logits = ClassEmbeddingProjector(model, tokens="all", device="cpu").fit().project(x)
    np.testing.assert_allclose(logits, hidden, atol=1e-5)

    prefix = ClassEmbeddingProjector(model, tokens="prefix", layers=[0, -1], device="cpu")
    np.testing.assert_allclose(prefix.fit().project(x), hidden[:, [0, 2], :2], atol=1e-5)

    probs = ClassEmbeddingProjector(model, tokens="patches", output="probs", device="cpu")
    expected = np.exp(hidden[:, :, 2:]) / np.exp(hidden[:, :, 2:]).sum(-1, keepdims=True)
    np.testing.assert_allclose(probs.fit().project(x), expected, rtol=1e-4)

    y = np.array([0, 5, 15])
    ranks = ClassEmbeddingProjector(model, output="rank", device="cpu").fit().project(x, y)
    cls = hidden[:, :, 0]
    manual = (cls > cls[np.arange(3), :, y][:, :, None]).sum(-1)
    np.testing.assert_array_equal(ranks[:, :, 0], manual)
    assert ranks.min() >= 0 and ranks.max() < 16


@pytest.mark.parametrize("block_fn", [None, ResPostBlock])
def test_branches_add_up_to_the_residual(block_fn):
    kwargs = {"init_values": 0.5} if block_fn is None else {"block_fn": block_fn}
    model = linear_readout(tiny_vit(**kwargs))
    x = random_images()

    def site(name):
        est = ClassEmbeddingProjector(model, site=name, tokens="all", device="cpu")
        return est.fit().project(x)

    resid, attn, mlp = site("resid"), site("attn"), site("mlp")
    np.testing.assert_allclose(resid[:, 1:], resid[:, :-1] + attn[:, 1:] + mlp[:, 1:], atol=1e-5)
    # the branches are not trivially zero or the whole residual
    assert np.abs(attn).mean() > 1e-3 and np.abs(mlp).mean() > 1e-3
    assert not np.allclose(attn[:, 1:], resid[:, 1:] - resid[:, :-1], atol=1e-3)


def test_fused_attention_does_not_change_projections():
    model = tiny_vit()
    x = random_images()
    results = []
    for fused in (True, False):
        for block in model.blocks:
            block.attn.fused_attn = fused
        results.append(ClassEmbeddingProjector(model, device="cpu").fit().project(x))
    np.testing.assert_allclose(results[0], results[1], atol=1e-5)


def test_image_formats_give_the_same_projection(tmp_path, digits_test):
    PIL = pytest.importorskip("PIL.Image")
    images = digits_test[0][:4]
    as_uint8 = np.round(images[:, 0] * 255).astype(np.uint8)
    proj = ClassEmbeddingProjector(make_digits_vit(), tokens="all", device="cpu").fit()
    expected = proj.project(as_uint8[:, None].astype(np.float32) / 255)
    np.testing.assert_allclose(proj.project(as_uint8[..., None]), expected, atol=1e-5)
    pil = [PIL.fromarray(im) for im in as_uint8]
    np.testing.assert_allclose(proj.project(pil), expected, atol=1e-5)
    paths = []
    for i, im in enumerate(pil):
        paths.append(tmp_path / f"{i}.png")
        im.save(paths[-1])
    np.testing.assert_allclose(proj.project([str(p) for p in paths]), expected, atol=1e-5)


def test_transform_shape_feature_names_clone_and_pickle(digits_test):
    images = digits_test[0][:3]
    proj = ClassEmbeddingProjector(make_digits_vit(), layers=[1, 3], device="cpu").fit()
    Z = proj.transform(images)
    assert Z.shape == (3, 2 * 10) and Z.dtype == np.float32
    assert len(proj.get_feature_names_out()) == Z.shape[1]
    assert clone(proj).get_params()["layers"] == [1, 3]
    restored = pickle.loads(pickle.dumps(proj))
    np.testing.assert_allclose(restored.transform(images), Z)
    frame = clone(proj).set_output(transform="pandas").fit().transform(images)
    assert list(frame.columns) == list(proj.get_feature_names_out())
    np.testing.assert_allclose(frame.to_numpy(), Z)


def test_whole_pickled_model_refused_and_local_checkpoint_loads(tmp_path):
    model = tiny_vit()
    path = tmp_path / "model.pt"
    torch.save(model, path)
    # A whole pickled module could run code when loaded: it is refused.
    with pytest.raises(ValueError, match="saved whole with torch.save"):
        ClassEmbeddingProjector(str(path), device="cpu").fit()

    reference = timm.create_model("vit_tiny_patch16_224")
    checkpoint = tmp_path / "weights.pth"
    torch.save(reference.state_dict(), checkpoint)
    proj = ClassEmbeddingProjector(
        "vit_tiny_patch16_224", pretrained=checkpoint, layers=[-1], device="cpu"
    ).fit()
    np.testing.assert_array_equal(
        proj.model_.blocks[3].mlp.fc1.weight.detach().numpy(),
        reference.blocks[3].mlp.fc1.weight.detach().numpy(),
    )


def test_trained_digits_vit_becomes_identifiable_over_blocks(trained_vit, digits_test):
    images, y = digits_test
    with torch.no_grad():
        accuracy = np.mean(trained_vit(torch.from_numpy(images)).argmax(1).numpy() == y)
    assert accuracy >= 0.9
    trained = ClassEmbeddingProjector(trained_vit, device="cpu", batch_size=512).fit()
    result = trained.identifiability(images, y)
    random = ClassEmbeddingProjector(make_digits_vit(random_state=1), device="cpu").fit()
    baseline = random.identifiability(images, y)
    assert result.cls[-1] > result.cls[0]
    assert result.image_tokens[-1] > result.image_tokens[0]
    assert result.top1_share[-1] > result.top1_share[0]
    assert result.cls[-1] - baseline.cls[-1] >= 0.3
    assert trained.score(images, y) == pytest.approx(result.cls[-1])
    # r = 1 at the last block exactly when the model's prediction is right
    ranks = ClassEmbeddingProjector(trained_vit, layers=-1, output="rank", device="cpu")
    assert np.mean(ranks.fit().project(images, y) == 0) == pytest.approx(accuracy)


def test_deprecated_analysis_methods_warn_and_return_the_functions_results(digits_test):
    images, y = digits_test
    images, y = images[:80], y[:80]
    proj = ClassEmbeddingProjector(make_digits_vit(), layers=-1, device="cpu").fit()
    calls = {
        "class_similarity_change": (images, y),
        "value_agreement": (images, y),
        "linear_probe": (images, y),
        "explain": (images[:3], y[:3]),
        "perturbation_test": (images, y),
    }
    kwargs = {"perturbation_test": {"random_state": 0}}
    for name, args in calls.items():
        function = getattr(skdict.inspection, name)
        with pytest.warns(FutureWarning, match=f"use skdict.inspection.{name}"):
            old = getattr(proj, name)(*args, **kwargs.get(name, {}))
        _assert_same_result(old, function(proj, *args, **kwargs.get(name, {})))


def _assert_same_result(actual, expected):
    """Equal arrays, or Bunches of them, key by key (the same computation twice)."""
    if isinstance(expected, dict):
        assert actual.keys() == expected.keys()
        for key in expected:
            _assert_same_result(actual[key], expected[key])
    elif isinstance(expected, np.ndarray):
        np.testing.assert_array_equal(actual, expected)
    else:
        assert actual == expected


def test_project_directions_ranks_the_head_rows_first(trained_vit):
    proj = ClassEmbeddingProjector(trained_vit, device="cpu").fit()
    rows = trained_vit.head.weight.detach().numpy()
    scores = proj.project_directions(rows)
    assert scores.shape == (10, 10)
    np.testing.assert_array_equal(scores.argmax(axis=1), np.arange(10))
    # a LayerNorm readout ignores the scale of a direction
    np.testing.assert_allclose(proj.project_directions(3 * rows), scores, rtol=1e-3, atol=1e-4)


def test_project_directions_is_the_linear_readout_without_biases():
    model = linear_readout(tiny_vit())
    with torch.no_grad():
        model.head.bias.fill_(2.0)
    V = np.random.default_rng(0).standard_normal((5, 16)).astype(np.float32)
    proj = ClassEmbeddingProjector(model, device="cpu").fit()
    np.testing.assert_allclose(proj.project_directions(V), V, atol=1e-5)


def test_bad_input_gives_clear_errors(tmp_path, digits_test):
    images, y = digits_test
    with pytest.raises(ValueError, match="not a timm model name"):
        ClassEmbeddingProjector("vit_does_not_exist").fit()
    with pytest.raises(FileNotFoundError, match="pretrained="):
        ClassEmbeddingProjector("vit_tiny_patch16_224", pretrained=tmp_path / "nope.pth").fit()
    with pytest.raises(FileNotFoundError, match="model="):
        ClassEmbeddingProjector(str(tmp_path / "missing.pt")).fit()
    with pytest.raises(ValueError, match="layers contains 4"):
        ClassEmbeddingProjector(make_digits_vit(), layers=[0, 4], device="cpu").fit()
    with pytest.raises(ValueError, match="site"):
        ClassEmbeddingProjector(make_digits_vit(), site="qkv").fit()
    with pytest.raises(ValueError, match="tokens"):
        ClassEmbeddingProjector(make_digits_vit(), tokens="every").fit()
    with pytest.raises(ValueError, match="no class token"):
        ClassEmbeddingProjector(tiny_vit(global_pool="avg", class_token=False)).fit()
    proj = ClassEmbeddingProjector(make_digits_vit(), device="cpu").fit()
    with pytest.raises(ValueError, match=r"\(N, 1, 8, 8\)"):
        proj.project(np.zeros((2, 3, 8, 8), np.float32))
    with pytest.raises(ValueError, match=r"\(N, 1, 8, 8\)"):
        proj.project(np.zeros((2, 1, 16, 16), np.float32))
    with pytest.raises(ValueError, match="y must be an int array"):
        proj.identifiability(images[:3], y[:2])
    with pytest.raises(ValueError, match="V has 5 features"):
        proj.project_directions(np.ones((2, 5)))
    rank = ClassEmbeddingProjector(make_digits_vit(), output="rank", device="cpu").fit()
    with pytest.raises(ValueError, match="project\\(images, y\\)"):
        rank.project(images[:2])


def test_random_weights_only_when_asked_for():
    """A model name without weights is refused (projecting an untrained network by
    accident is a silent wrong answer); 'random' is the deliberate choice."""
    for pretrained in (None, False):
        with pytest.raises(ValueError, match="random"):
            ClassEmbeddingProjector("test_vit", pretrained=pretrained).fit()
    random = ClassEmbeddingProjector("test_vit", pretrained="random", device="cpu").fit()
    assert random.get_params()["pretrained"] == "random" and random.n_layers_ >= 1
    with pytest.raises(ValueError, match="keeps its own weights"):
        ClassEmbeddingProjector(make_digits_vit(), pretrained=True).fit()


@pytest.mark.skipif(hub_reachable(), reason="the hub is reachable from this machine")
def test_hub_weights_without_network_fail_fast_with_advice():
    with pytest.raises(RuntimeError, match="pretrained='/path/to/checkpoint'"):
        ClassEmbeddingProjector("vit_tiny_patch16_224", pretrained=True).fit()


def test_train_digits_vit_is_deterministic():
    first, second, other = (
        train_digits_vit(max_epochs=1, random_state=seed) for seed in (3, 3, 4)
    )
    for a, b, c in zip(first.parameters(), second.parameters(), other.parameters()):
        np.testing.assert_array_equal(a.detach().numpy(), b.detach().numpy())
    assert not np.allclose(first.head.weight.detach().numpy(), other.head.weight.detach().numpy())


@pytest.fixture(scope="module")
def random_projector():
    return ClassEmbeddingProjector(make_digits_vit(random_state=5), device="cpu").fit()


@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    scale=st.floats(0.05, 50.0),
    shift=st.floats(-3.0, 3.0),
)
def test_project_directions_ignores_scale_and_constant_offsets(
    random_projector, seed, scale, shift
):
    # a LayerNorm readout removes each direction's mean and scale
    V = np.random.default_rng(seed).standard_normal((3, 64)).astype(np.float32)
    scores = random_projector.project_directions(V)
    moved = random_projector.project_directions(scale * V + shift)
    np.testing.assert_allclose(moved, scores, rtol=1e-3, atol=1e-3)


# -- known-answer tests of the paper's analyses -------------------------------


def test_ties_count_against_the_true_class():
    model = linear_readout(tiny_vit(num_classes=16))
    with torch.no_grad():
        model.head.weight.zero_()  # every class scores the bias: all tie
        model.head.bias.zero_()
        model.head.bias[:2] = 1.0  # ... except classes 0 and 1, tied on top
    x, y = random_images(), np.array([0, 1, 5])
    ranks = ClassEmbeddingProjector(model, output="rank", device="cpu").fit().project(x, y)
    # classes 0 and 1 each have one other class at least as high; class 5 has
    # the 15 other classes at least as high (14 tied, 2 above)
    np.testing.assert_array_equal(ranks[:, :, 0], np.array([[1] * 3, [1] * 3, [15] * 3]))
    result = ClassEmbeddingProjector(model, device="cpu").fit().identifiability(x, y)
    np.testing.assert_allclose(result.cls, (1 - np.array([1, 1, 15]) / 16).mean())
    assert np.all(result.top1_share == 0)  # a tie on top is not identified


def test_layer_scale_reads_branches_before_or_after_it():
    model = linear_readout(tiny_vit(init_values=0.5, num_classes=16))
    x = random_images()
    by_hand = states_by_hand(model, x)
    for layer_scale, suffix in (("after", ""), ("before", "_raw")):
        for branch in ("attn", "mlp"):
            est = ClassEmbeddingProjector(model, site=branch, tokens="all",
                                          layer_scale=layer_scale, device="cpu")
            expected = np.stack([s[branch + suffix] for s in by_hand], axis=1)
            # the same float32 modules on the same batch; 1e-5 leaves room for
            # BLAS kernels chosen per tensor shape (values are of order 1)
            np.testing.assert_allclose(est.fit().project(x), expected, atol=1e-5)
    gamma = model.blocks[0].ls1.gamma.detach().numpy()
    assert np.ptp(gamma) > 0.05  # a non-trivial LayerScale, so the two readings differ


