import copy

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")

from _vits import (  # noqa: E402
    hidden_states, linear_readout, random_images, states_by_hand, tiny_vit, width_classes_vit,
)
from timm.models.vision_transformer import ResPostBlock  # noqa: E402

from skdict import ClassEmbeddingProjector  # noqa: E402
from skdict.datasets import load_digits_images, make_digits_vit  # noqa: E402
from skdict.inspection import (  # noqa: E402
    class_similarity_change, explain, linear_probe, perturbation_test, perturbed_identifiability,
    value_agreement,
)


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def test_branch_change_rates_are_shares_of_tokens(trained_vit, digits_test):
    images, y = digits_test
    rates = {}
    for name, model in (("trained", trained_vit), ("random", make_digits_vit(random_state=1))):
        proj = ClassEmbeddingProjector(model, device="cpu", batch_size=512).fit()
        rates[name] = class_similarity_change(proj, images, y)
        for branch in (rates[name].attn, rates[name].mlp):
            assert branch.shape == (4,) and np.all((branch >= 0) & (branch <= 1))
    # the class token enters block 0 knowing nothing of the image: after
    # training, attention brings it evidence for the true class almost always
    assert rates["trained"].attn[0] > 0.8
    assert rates["trained"].attn[0] - rates["random"].attn[0] > 0.3


@pytest.mark.parametrize("method, protocol", [("gradient", "authors"),
                                              ("evidence", "fractions")])
def test_perturbation_test_beats_random_order(trained_vit, digits_test, method, protocol):
    images, y = digits_test
    proj = ClassEmbeddingProjector(trained_vit, device="cpu", batch_size=512).fit()
    result = perturbation_test(proj, images[:200], y[:200], method=method, protocol=protocol,
                               n_seeds=3, random_state=0)
    assert result.auc_negative > result.auc_random > result.auc_positive
    assert (result.method, result.protocol) == (method, protocol)
    if protocol == "fractions":  # keeping every patch is the plain model
        assert result.negative[-1] == result.positive[-1] == result.random[-1]
    heatmaps = explain(proj, images[:5], y[:5], method=method)
    assert heatmaps.shape == (5, 8, 8)
    assert heatmaps.dtype == np.float32 and np.abs(heatmaps).max() > 0
    # the heatmap of the predicted class is the default
    with torch.no_grad():
        predicted = trained_vit(torch.from_numpy(images[:5])).argmax(1).numpy()
    np.testing.assert_allclose(explain(proj, images[:5], method=method),
                               explain(proj, images[:5], predicted, method=method))


@pytest.mark.parametrize("kwargs", [{}, {"reg_tokens": 2},
                                    {"global_pool": "avg", "class_token": False}])
def test_kept_patches_forward_is_the_model_on_those_patches_only(kwargs):
    from skdict._vit.perturbation import kept_logits

    # float64 throughout, so that sums taken in another order agree to ~1e-15
    model = tiny_vit(**kwargs).double()
    tokens = "cls" if model.cls_token is not None else "patches"
    proj = ClassEmbeddingProjector(model, tokens=tokens, device="cpu").fit()
    x = torch.from_numpy(random_images(n=4).astype(np.float64))
    with torch.no_grad():
        own = model(x).numpy()
    # every patch, in the model's order or shuffled: positions travel with the
    # patches, and attention and pooling do not depend on token order. Logits
    # are O(1); float64 sums of a few dozen terms in another order (or another
    # vectorisation of the same order) agree to ~1e-15, so 1e-10 is rounding
    every = np.tile(np.arange(16), (4, 1))
    shuffled = np.argsort(np.random.default_rng(0).random((4, 16)), axis=1)
    for keep in (every, shuffled):
        np.testing.assert_allclose(kept_logits(proj, x, keep), own, rtol=1e-10, atol=1e-10)
    # patches 0, 5, 10 kept: patch 15 (the bottom-right 4x4 pixels) never enters
    keep = np.tile([0, 5, 10], (4, 1))
    kept = kept_logits(proj, x, keep)
    changed = x.clone()
    changed[:, :, 12:, 12:] += 1.0
    np.testing.assert_array_equal(kept_logits(proj, changed, keep), kept)
    assert not np.allclose(kept, own)  # the removed patches did matter


def test_inspection_functions_need_a_fitted_projector(digits_test):
    images, y = digits_test
    unfitted = ClassEmbeddingProjector(make_digits_vit(), device="cpu")
    for function in (class_similarity_change, explain, linear_probe, perturbation_test,
                     perturbed_identifiability):
        with pytest.raises(NotFittedError):
            function(unfitted, images[:3], y[:3])
    with pytest.raises(NotFittedError):
        value_agreement(unfitted)


def test_attention_contributions_sum_to_the_class_token_output():
    from skdict._vit.attribution import attention_contributions

    attn = tiny_vit().blocks[1].attn
    attn.fused_attn = True
    z = torch.from_numpy(np.random.default_rng(0).standard_normal((2, 5, 16)).astype(np.float32))
    with torch.no_grad():
        contributions = attention_contributions(attn, z, slice(0, 1), torch)
        expected = attn(z)[:, 0] - attn.proj.bias
    np.testing.assert_allclose(contributions.sum(dim=1).numpy(), expected.numpy(), atol=1e-5)


def test_value_agreement_finds_a_planted_class_memory(digits_test):
    model = make_digits_vit()
    with torch.no_grad():
        model.blocks[2].mlp.fc2.weight[:, 7] = 5 * model.head.weight[3]
    proj = ClassEmbeddingProjector(model, layers=[1, 2], device="cpu").fit()
    images, y = digits_test
    result = value_agreement(proj, images[:50], y[:50])
    assert result.agreement.shape == (2, 10) and result.top_memories.shape == (2, 10, 5)
    assert result.agreement[1, 3] == pytest.approx(1.0, abs=1e-5)
    assert result.agreement[0, 3] < 0.9
    assert 7 in result.top_memories[1, 3]
    assert result.value_scores.shape == (2, 128, 10)
    assert np.all((result.key_value_agreement >= 0) & (result.key_value_agreement <= 1))
    assert value_agreement(proj).key_value_agreement is None


def test_key_value_agreement_is_higher_after_training(trained_vit, digits_test):
    images, y = digits_test
    rates = []
    for model in (trained_vit, make_digits_vit(random_state=1)):
        proj = ClassEmbeddingProjector(model, device="cpu", batch_size=512).fit()
        rates.append(value_agreement(proj, images, y).key_value_agreement)
    assert rates[0][-1] > rates[1][-1]


@pytest.mark.parametrize("init_values", [None, 0.5])
def test_class_similarity_change_is_the_share_of_raised_true_class_logits(init_values):
    model = width_classes_vit(init_values=init_values)
    x, y = random_images(n=6), np.array([0, 3, 3, 7, 9, 15])
    by_hand = states_by_hand(model, x)
    proj = ClassEmbeddingProjector(model, tokens="all", device="cpu").fit()

    def true_logit(name):  # identity readout: logits are the states
        states = np.stack([s[name] for s in by_hand], axis=1)  # (N, layers, T, 16)
        return np.take_along_axis(states, y[:, None, None, None], axis=-1)[..., 0]

    expected_attn = (true_logit("attn") > true_logit("input")).mean(axis=(0, 2))
    # the block-to-block change: the block output against the block input
    expected_block = (true_logit("out") > true_logit("input")).mean(axis=(0, 2))
    for reference, start in (("block_input", "input"), ("branch_input", "mid")):
        result = class_similarity_change(proj, x, y, reference=reference)
        np.testing.assert_allclose(result.attn, expected_attn)
        np.testing.assert_allclose(result.block, expected_block)
        expected_mlp = (true_logit("mlp") > true_logit(start)).mean(axis=(0, 2))
        np.testing.assert_allclose(result.mlp, expected_mlp)
        assert result.attn.shape == (3,)  # block 0 included
    assert not np.allclose(class_similarity_change(proj, x, y).mlp,
                           class_similarity_change(proj, x, y, reference="branch_input").mlp)
    with pytest.raises(ValueError, match="reference must be"):
        class_similarity_change(proj, x, y, reference="mlp_input")


def _top5(scores):
    """Top 5 of each row, ties to the lower index (numpy's stable sort)."""
    return np.argsort(-scores, axis=1, kind="stable")[:, :5]


@pytest.mark.parametrize("kind", ["mlp", "attn"])
def test_top_memories_are_ranked_by_the_raw_product_by_default(kind):
    model = tiny_vit(init_values=0.5)  # LayerScale: values are written scaled by gamma
    proj = ClassEmbeddingProjector(model, device="cpu").fit()
    E = model.head.weight.detach().numpy()
    for layer, block in enumerate(model.blocks):
        W = (block.mlp.fc2 if kind == "mlp" else block.attn.proj).weight.detach().numpy()
        gamma = (block.ls2 if kind == "mlp" else block.ls1).gamma.detach().numpy()
        after = value_agreement(proj, kind=kind)
        # float32 products of the same arrays, by numpy on both sides; the
        # tolerance only covers a different summation order
        np.testing.assert_allclose(after.value_scores[layer], (E @ (gamma[:, None] * W)).T,
                                   rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(after.top_memories[layer], _top5(E @ (gamma[:, None] * W)))
        before = value_agreement(clone(proj).set_params(layer_scale="before").fit(), kind=kind)
        np.testing.assert_array_equal(before.top_memories[layer], _top5(E @ W))
        # class-value agreement: the largest cosine between class and value
        unit_E = E / np.linalg.norm(E, axis=1, keepdims=True)
        unit_W = W / np.linalg.norm(W, axis=0, keepdims=True)
        np.testing.assert_allclose(before.agreement[layer], (unit_E @ unit_W).max(axis=1),
                                   atol=1e-6)


def test_normalized_ranking_applies_the_final_layernorm_and_drops_the_length():
    model = make_digits_vit(random_state=2)
    E = model.head.weight.detach().numpy()
    with torch.no_grad():
        # value 1: class 3's embedding, centred (the direction a LayerNorm readout
        # scores highest for class 3); value 0: 40 times longer, but half of it
        # along a centred direction n orthogonal to it, which class 3 ignores
        e = E[3] - E[3].mean()
        n = np.random.default_rng(0).standard_normal(64)
        n -= n.mean()
        n -= (n @ e) / (e @ e) * e
        n *= np.linalg.norm(e) / np.linalg.norm(n)
        model.blocks[0].mlp.fc2.weight[:, 0] = torch.from_numpy(20 * (e + n))
        model.blocks[0].mlp.fc2.weight[:, 1] = torch.from_numpy(0.5 * e)
    proj = ClassEmbeddingProjector(model, layers=[0], device="cpu").fit()
    values = model.blocks[0].mlp.fc2.weight.detach().numpy().T
    centred = values - values.mean(axis=1, keepdims=True)
    normed = centred / np.sqrt(centred.var(axis=1, keepdims=True) + model.norm.eps)
    expected = (normed * model.norm.weight.detach().numpy()) @ E.T
    normalized = value_agreement(proj, ranking="normalized")
    # float32 LayerNorm vs the float64 formula, scores of order 1
    np.testing.assert_allclose(normalized.value_scores[0], expected, rtol=1e-4, atol=1e-3)
    np.testing.assert_array_equal(normalized.top_memories[0], _top5(expected.T))
    raw = value_agreement(proj)
    assert raw.ranking == "raw" and raw.top_memories[0, 3, 0] == 0
    assert normalized.top_memories[0, 3, 0] == 1


@pytest.mark.parametrize("kind", ["mlp", "attn"])
def test_key_value_agreement_by_hand_with_both_averages(kind):
    model = tiny_vit()
    x, y = random_images(n=5), np.array([2, 2, 2, 2, 6])  # unequal class counts
    by_hand = states_by_hand(model, x)
    proj = ClassEmbeddingProjector(model, tokens="all", device="cpu").fit()
    per_class = value_agreement(proj, x, y, kind=kind)
    assert per_class.average == "class"
    hits = []
    for layer, sites in enumerate(by_hand):
        top_keys = np.argsort(-sites[f"{kind}_keys"], axis=-1, kind="stable")[..., :5]
        memories = per_class.top_memories[layer][y]  # (N, 5)
        hits.append([[np.isin(top_keys[i, t], memories[i]).any()
                      for t in range(top_keys.shape[1])] for i in range(len(y))])
    hits = np.array(hits).transpose(1, 0, 2)  # (N, layers, T)
    class_rates = np.stack([hits[y == c].mean(axis=(0, 2)) for c in (2, 6)])
    np.testing.assert_allclose(per_class.key_value_agreement, class_rates.mean(axis=0))
    np.testing.assert_allclose(per_class.key_value_agreement_per_class[:, [2, 6]], class_rates.T)
    assert np.isnan(per_class.key_value_agreement_per_class[:, 0]).all()
    pooled = value_agreement(proj, x, y, kind=kind, average="token")
    np.testing.assert_allclose(pooled.key_value_agreement, hits.mean(axis=(0, 2)))
    assert not np.allclose(pooled.key_value_agreement, per_class.key_value_agreement)


def test_baselines_give_wilcoxon_p_values_of_the_paired_measures():
    from scipy.stats import wilcoxon

    trained, random = width_classes_vit(seed=0), width_classes_vit(seed=1)
    x, y = random_images(n=8), np.arange(8) * 2
    proj = ClassEmbeddingProjector(trained, tokens="all", device="cpu").fit()
    baseline = ClassEmbeddingProjector(random, tokens="all", device="cpu")  # fitted for us

    ident = proj.identifiability(x, y, baseline=baseline)
    r = {}
    for name, model in (("trained", trained), ("random", random)):
        states = np.stack([s["input"] for s in states_by_hand(model, x)[1:]]
                          + [np.stack([h.numpy() for h in hidden_states(model, x)])[-1]],
                          axis=1)  # block outputs: inputs of blocks 1, 2, then the last output
        target = np.take_along_axis(states, y[:, None, None, None], axis=-1)
        r[name] = 1 - ((states >= target).sum(-1) - 1) / 16
    np.testing.assert_allclose(ident.baseline.cls, r["random"][:, :, 0].mean(0))
    for layer in range(3):
        patches = [r[name][:, layer, 1:].ravel() for name in ("trained", "random")]
        expected = wilcoxon(*patches, alternative="greater").pvalue
        assert ident.pvalue.image_tokens[layer] == pytest.approx(expected, rel=1e-9)

    memories = value_agreement(proj, baseline=baseline)
    expected = [wilcoxon(a, b, alternative="greater").pvalue
                for a, b in zip(memories.agreement, memories.baseline.agreement)]
    np.testing.assert_allclose(memories.pvalue.agreement, expected, rtol=1e-9)
    assert memories.pvalue.key_value_agreement is None

    change = class_similarity_change(proj, x, y, baseline=baseline)
    assert change.pvalue.attn.shape == change.pvalue.mlp.shape == change.pvalue.block.shape
    assert change.pvalue.block.shape == (3,)
    assert np.all((change.pvalue.mlp > 0) & (change.pvalue.mlp <= 1))
    with pytest.raises(ValueError, match="same classes"):
        proj.identifiability(x, y, baseline=ClassEmbeddingProjector(tiny_vit(), device="cpu"))
    with pytest.raises(ValueError, match="baseline reads tokens='cls'"):
        proj.identifiability(x, y, baseline=ClassEmbeddingProjector(random, device="cpu"))
    with pytest.raises(TypeError, match="baseline must be a ClassEmbeddingProjector"):
        proj.identifiability(x, y, baseline=random)


def test_paired_wilcoxon_without_differences_is_no_evidence():
    from skdict._vit.class_analyses import paired_wilcoxon

    assert paired_wilcoxon(np.ones(5), np.ones(5)) == 1.0
    # NaN pairs (classes absent from the images) are dropped
    assert paired_wilcoxon([1.0, np.nan, 2.0], [0.0, 1.0, 1.0]) == pytest.approx(0.25)


def test_linear_probe_sees_class_information_the_readout_ignores(trained_vit):
    images, y = load_digits_images(subset="all", return_X_y=True)
    images, y = images[:400], y[:400]
    blind = copy.deepcopy(trained_vit)
    with torch.no_grad():
        blind.head.weight.zero_()  # the model's own readout sees nothing
        blind.head.bias.zero_()
    proj = ClassEmbeddingProjector(blind, layers=[0, 3], device="cpu", batch_size=512).fit()
    result = linear_probe(proj, images, y, random_state=0)
    # every class ties at the bias 0: the true class ranks last, r = 1/10
    np.testing.assert_allclose(result.projection.cls, 0.1)
    np.testing.assert_allclose(result.projection.image_tokens, 0.1)
    assert np.all(result.probe.cls > 0.9) and np.all(result.probe.image_tokens > 0.6)

    # the logistic probe of the last block's class token is a plain sklearn fit
    # on its standardised states
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    result = linear_probe(proj, images, y, probe="logistic", random_state=0)
    assert result.probe_kind == "logistic"
    hidden = np.stack([h.numpy() for h in hidden_states(trained_vit, images)], axis=1)
    train, test = result.train_index, result.test_index
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=0))
    scores = probe.fit(hidden[train, 3, 0], y[train]).decision_function(hidden[test, 3, 0])
    target = scores[np.arange(len(test)), y[test]][:, None]
    expected_r = 1 - ((scores >= target).sum(1) - 1) / 10
    assert result.probe.cls[1] == pytest.approx(expected_r.mean())
    assert result.probe.cls_accuracy[1] == pytest.approx(np.mean(expected_r == 1))

    # with the real head, the projection part is identifiability on the test split
    real = ClassEmbeddingProjector(trained_vit, layers=[0, 3], device="cpu").fit()
    ident = real.identifiability(images[test], y[test])
    both = linear_probe(real, images, y, random_state=0)
    np.testing.assert_allclose(both.projection.cls, ident.cls)
    np.testing.assert_allclose(both.projection.image_tokens, ident.image_tokens)


def test_class_similarity_change_of_post_norm_blocks_from_the_sites():
    model = linear_readout(tiny_vit(block_fn=ResPostBlock, num_classes=16))
    x, y = random_images(n=4), np.array([1, 4, 9, 12])

    def site(name):  # identity readout: true-class logits are the states
        est = ClassEmbeddingProjector(model, site=name, tokens="all", device="cpu").fit()
        states = est.project(x)
        return np.take_along_axis(states, y[:, None, None, None], axis=-1)[..., 0]

    resid, attn, mlp = site("resid"), site("attn"), site("mlp")
    block_input = resid[:, :-1]  # the input of blocks 1 and 2
    proj = ClassEmbeddingProjector(model, layers=[1, 2], tokens="all", device="cpu").fit()
    result = class_similarity_change(proj, x, y, reference="branch_input")
    np.testing.assert_allclose(result.attn, (attn[:, 1:] > block_input).mean(axis=(0, 2)))
    # post-norm: the MLP reads the residual after the attention branch
    mlp_input = block_input + attn[:, 1:]
    np.testing.assert_allclose(result.mlp, (mlp[:, 1:] > mlp_input).mean(axis=(0, 2)))
