"""Known-answer tests of the authors' protocols (issue 24), on hand-built tiny ViTs.

Each reference is computed here, by hand, from the module weights (in float64
where the comparison is of real numbers), never through skdict's hooks.
"""

import numpy as np
import pytest
from scipy.stats import wilcoxon

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")

from _tolerance import dot_rtol  # noqa: E402
from _vits import (  # noqa: E402
    hidden_states, random_images, states_by_hand, tiny_vit, width_classes_vit,
)

from skdict import ClassEmbeddingProjector  # noqa: E402
from skdict._vit.attribution import patch_relevance  # noqa: E402
from skdict.inspection import (  # noqa: E402
    explain, linear_probe, perturbation_test, perturbed_identifiability, value_agreement,
)

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _numpy(tensor):
    return tensor.detach().numpy().astype(np.float64)


def _softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _layer_norm(h, norm):
    """LayerNorm by hand: the output, the normalised input and the std."""
    mean = h.mean(axis=-1, keepdims=True)
    std = np.sqrt(h.var(axis=-1, keepdims=True) + norm.eps)
    normed = (h - mean) / std
    return normed * _numpy(norm.weight) + _numpy(norm.bias), normed, std


def _readout(model, h):
    """head(norm(h)) by hand."""
    return _layer_norm(h, model.norm)[0] @ _numpy(model.head.weight).T + _numpy(model.head.bias)


def _r(logits, y):
    """Identifiability 1 - rank / n_classes by hand; ties count against the class."""
    target = np.take_along_axis(logits, y.reshape(-1, *[1] * (logits.ndim - 1)), axis=-1)
    return 1 - ((logits >= target).sum(axis=-1) - 1) / logits.shape[-1]


def _target_gap(logits, y):
    """The smallest gap between the true class's score and another's, anywhere in `logits`."""
    y = y.reshape(-1, *[1] * (logits.ndim - 1))
    gaps = np.abs(logits - np.take_along_axis(logits, y, axis=-1))
    np.put_along_axis(gaps, y, np.inf, axis=-1)
    return gaps.min()


def _top_gap(logits):
    """The smallest gap between the top two classes anywhere in `logits`."""
    ordered = np.sort(logits, axis=-1)
    return (ordered[..., -1] - ordered[..., -2]).min()


# float32 results of these tiny models (<= 3 blocks of reductions over <= 17
# terms, LayerNorms, softmaxes) are within 20 rounding steps of dot_rtol each,
# relative to the largest value: a gap wider than this cannot be reordered
FLOAT32_STEPS = 20 * dot_rtol(np.float32, 17)


# -- item 1: the ridge probe --------------------------------------------------


def test_ridge_probe_is_the_authors_least_squares_fit_by_hand():
    model = tiny_vit()  # 7 classes, width 16, 16 patches, 3 blocks
    x, y = random_images(n=48, seed=1), np.arange(48) % 4
    proj = ClassEmbeddingProjector(model, device="cpu").fit()
    result = linear_probe(proj, x, y, random_state=0)
    assert result.probe_kind == "ridge"
    hidden = np.stack([_numpy(h) for h in hidden_states(model, x)], axis=1)
    train, test = result.train_index, result.test_index
    targets = -np.ones((len(train), 7))  # one-vs-rest, +1 / -1, one column per class
    targets[np.arange(len(train)), y[train]] = 1
    low, high = np.zeros((2, 3, 17, len(test)))
    for layer in range(3):
        for token in range(17):
            X, X_test = hidden[train, layer, token], hidden[test, layer, token]
            mean, t_mean = X.mean(axis=0), targets.mean(axis=0)
            A = (X - mean).T @ (X - mean) + np.eye(16)  # alpha = 1
            W = np.linalg.solve(A, (X - mean).T @ (targets - t_mean))
            ref = (X_test - mean) @ W + t_mean
            # lsqr stops once |A'r| <= tol |A| |r| (tol = 1e-4): its weights are
            # then within tol * s_max / s_min^2 * |t| of the solution (s: singular
            # values of [X - mean; I]), plus float32 rounding amplified by cond(A)
            s = np.linalg.svd(np.vstack([X - mean, np.eye(16)]), compute_uv=False)
            w_err = 1e-4 * s[0] / s[-1] ** 2 * np.linalg.norm(targets - t_mean, axis=0)
            bound = (np.linalg.norm(X_test - mean, axis=1)[:, None] * w_err
                     + np.linalg.cond(A) * dot_rtol(np.float32, len(train)) * np.abs(ref))
            rows = np.arange(len(test))
            target, slack = ref[rows, y[test]][:, None], bound[rows, y[test]][:, None]
            above = ref - bound > target + slack  # surely above the true class
            maybe = ref + bound >= target - slack  # possibly at least as high
            above[rows, y[test]] = maybe[rows, y[test]] = False
            low[layer, token], high[layer, token] = above.sum(axis=1), maybe.sum(axis=1)
    r_high, r_low = 1 - low / 7, 1 - high / 7
    assert (r_high - r_low).mean() < 0.01  # the bounds are tight: the test is sharp
    for name, tokens in (("cls", 0), ("image_tokens", slice(1, None))):
        r_min = r_low[:, tokens].reshape(3, -1).mean(axis=1)
        r_max = r_high[:, tokens].reshape(3, -1).mean(axis=1)
        probe = result.probe[name]
        assert np.all((r_min - 1e-12 <= probe) & (probe <= r_max + 1e-12))
    accuracy = result.probe.cls_accuracy
    assert np.all(((high[:, 0] == 0).mean(axis=1) <= accuracy)
                  & (accuracy <= (low[:, 0] == 0).mean(axis=1)))
    # the logistic probe stays available, and differs
    logistic = linear_probe(proj, x, y, probe="logistic", random_state=0)
    assert logistic.probe_kind == "logistic"
    assert not np.allclose(logistic.probe.cls, result.probe.cls)


# -- item 2: the authors' gradient explanation --------------------------------


def _gradient_relevance_by_hand(model, x, y, layer_scale):
    """-sum over blocks and heads of dCE(softmax(head(norm(attn branch at CLS))))/dA[h, 0, j]."""
    relevance = 0
    for block, sites in zip(model.blocks, states_by_hand(model, x)):
        attn, z = block.attn, sites["attn_in"].astype(np.float64)
        B, T, D = z.shape
        H, hd = attn.num_heads, attn.head_dim
        qkv = (z @ _numpy(attn.qkv.weight).T + _numpy(attn.qkv.bias)).reshape(B, T, 3, H, hd)
        q, k, v = (qkv[:, :, i].transpose(0, 2, 1, 3) for i in range(3))  # (B, H, T, hd)
        A0 = _softmax(np.einsum("bhd,bhjd->bhj", q[:, :, 0], k) * hd ** -0.5)
        W_proj = _numpy(attn.proj.weight)
        # u[b, h, j]: key j's value through head h's columns of proj
        u = np.stack([v[:, h] @ W_proj[:, h * hd:(h + 1) * hd].T for h in range(H)], axis=1)
        out = np.einsum("bhj,bhjd->bd", A0, u) + _numpy(attn.proj.bias)
        gamma = (_numpy(block.ls1.gamma) if layer_scale == "after" and hasattr(block.ls1, "gamma")
                 else np.ones(D))
        branch = gamma * out
        normed_out, normed, std = _layer_norm(branch, model.norm)
        E = _numpy(model.head.weight)
        p = _softmax(normed_out @ E.T + _numpy(model.head.bias))
        g_p = _softmax(p) - np.eye(E.shape[0])[y]  # CE of the probabilities p
        g_logits = p * (g_p - (p * g_p).sum(axis=1, keepdims=True))  # softmax Jacobian
        g_hat = (g_logits @ E) * _numpy(model.norm.weight)
        g_branch = (g_hat - g_hat.mean(axis=1, keepdims=True)
                    - normed * (g_hat * normed).mean(axis=1, keepdims=True)) / std
        relevance = relevance - np.einsum("bd,bhjd->bj", g_branch * gamma, u)
    return relevance[:, model.num_prefix_tokens:]


@pytest.mark.parametrize("init_values, layer_scale",
                         [(None, "after"), (0.5, "after"), (0.5, "before")])
def test_gradient_explanation_is_the_authors_attention_gradient_by_hand(init_values,
                                                                        layer_scale):
    # 1x1 patches of 4x4 images: the patch grid is the image, so explain's
    # upsampling is the identity
    model = tiny_vit(img_size=4, patch_size=1, depth=2, init_values=init_values).double()
    x, y = random_images(n=3, size=4).astype(np.float64), np.array([0, 3, 6])
    proj = ClassEmbeddingProjector(model, layer_scale=layer_scale, device="cpu").fit()
    expected = _gradient_relevance_by_hand(model, x, y, layer_scale)
    # float64 on both sides, relevances of order 0.01-1: rounding is ~1e-15
    got = patch_relevance(proj, torch.from_numpy(x), y, "gradient")
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)
    assert np.abs(expected).max() > 1e-3
    # the public function, in float32, on the same weights
    proj32 = ClassEmbeddingProjector(model.float(), layer_scale=layer_scale, device="cpu").fit()
    heatmaps = explain(proj32, x.astype(np.float32), y)
    tol = FLOAT32_STEPS * np.abs(expected).max()
    np.testing.assert_allclose(heatmaps.reshape(3, -1), expected, atol=tol)
    # the default class is the model's prediction
    with torch.no_grad():
        predicted = model(torch.from_numpy(x.astype(np.float32))).argmax(1).numpy()
    np.testing.assert_array_equal(explain(proj32, x.astype(np.float32)),
                                  explain(proj32, x.astype(np.float32), predicted))


# -- item 3: the authors' perturbation protocol -------------------------------


def _logits_keeping(model, x, keep):
    """Class logits (float64) when only the patches `keep` of the images x enter the model."""
    final = states_by_hand(model, x, keep=keep)[-1]["out"].astype(np.float64)
    return _readout(model, final[:, 0])


def _curve_by_hand(model, x, y, orders, n_kept):
    """Accuracy for each n when image i keeps the patches orders[i, :n]."""
    logits = np.array([[_logits_keeping(model, x[i:i + 1], orders[i, :n])[0]
                        for i in range(len(x))] for n in n_kept])
    return (logits.argmax(axis=-1) == y).mean(axis=1), _top_gap(logits) / np.abs(logits).max()


def test_perturbation_test_runs_the_authors_protocol_by_hand():
    model = tiny_vit(seed=3)
    x = random_images(n=8, seed=2)
    with torch.no_grad():
        y = model(torch.from_numpy(x)).argmax(1).numpy()  # all right with every patch
    proj = ClassEmbeddingProjector(model, device="cpu").fit()
    result = perturbation_test(proj, x, y, n_seeds=3, random_state=0)
    assert (result.method, result.protocol) == ("gradient", "authors")
    np.testing.assert_array_equal(result.n_kept, np.arange(1, 16))  # 1 ... all but one
    np.testing.assert_allclose(result.fractions, np.arange(1, 16) / 16)
    relevance = patch_relevance(proj, torch.from_numpy(x), y, "gradient")
    order = np.argsort(-relevance, axis=1, kind="stable")  # most relevant first
    # one random permutation per seed, shared by all images
    assert result.random_orders.shape == (3, 16)
    assert all(np.array_equal(np.sort(perm), np.arange(16)) for perm in result.random_orders)
    assert len({tuple(perm) for perm in result.random_orders}) == 3
    double, x64 = tiny_vit(seed=3).double(), x.astype(np.float64)
    n_kept = np.arange(1, 16)
    expected, margins = {}, []
    for name, orders in (("negative", order), ("positive", order[:, ::-1])):
        expected[name], margin = _curve_by_hand(double, x64, y, orders, n_kept)
        margins.append(margin)
    random_curves = []
    for perm in result.random_orders:
        curve, margin = _curve_by_hand(double, x64, y, np.tile(perm, (8, 1)), n_kept)
        random_curves.append(curve)
        margins.append(margin)
    expected["random"] = np.mean(random_curves, axis=0)
    # the float32 model predicts the same classes: no top two float64 logits
    # are within float32 rounding of each other
    assert min(margins) > FLOAT32_STEPS
    for name, curve in expected.items():
        np.testing.assert_allclose(result[name], curve)
        # the authors' area: sum / (max * n_patches)
        assert result[f"auc_{name}"] == pytest.approx(curve.sum() / (curve.max() * 16))
    assert not np.allclose(expected["negative"], expected["positive"])
    again = perturbation_test(proj, x, y, n_seeds=3, random_state=0)
    np.testing.assert_array_equal(again.random_orders, result.random_orders)


# -- item 4: identifiability, pooled p-value and images with a top-1 token ---


def _block_outputs(model, x):
    return np.stack([s["out"] for s in states_by_hand(model, x)], axis=1)


def test_identifiability_pools_all_tokens_for_the_authors_p_value():
    trained, random = width_classes_vit(seed=0), width_classes_vit(seed=1)
    x, y = random_images(n=8), np.arange(8) * 2
    proj = ClassEmbeddingProjector(trained, device="cpu").fit()
    ident = proj.identifiability(x, y, baseline=ClassEmbeddingProjector(random, device="cpu"))
    r = {name: _r(_block_outputs(model, x), y)  # identity readout: logits are the states
         for name, model in (("trained", trained), ("random", random))}
    # share of images with at least one patch token whose true class is strictly on top
    np.testing.assert_allclose(ident.top1_image_share,
                               (r["trained"][:, :, 1:] == 1).any(axis=2).mean(axis=0))
    for layer in range(3):
        # the authors' one test: every token of every image (class token and
        # patches) paired with the same token of the random model
        pooled = [r[name][:, layer].ravel() for name in ("trained", "random")]
        assert ident.pvalue.all_tokens[layer] == pytest.approx(
            wilcoxon(*pooled, alternative="greater").pvalue, rel=1e-9)
        cls = [r[name][:, layer, 0] for name in ("trained", "random")]
        assert ident.pvalue.cls[layer] == pytest.approx(
            wilcoxon(*cls, alternative="greater").pvalue, rel=1e-9)
    assert not np.allclose(ident.pvalue.all_tokens, ident.pvalue.image_tokens)


# -- item 5: perturbed forward passes -----------------------------------------


def _self_only(weights):
    edited = weights.clone()
    for t in range(1, weights.shape[-1]):  # every token but the class token
        edited[:, :, t, :] = 0
        edited[:, :, t, t] = 1
    return edited


def _no_cls(weights):
    edited = weights.clone()
    edited[:, :, 1:, 0] = 0  # not renormalised
    return edited


def _summary_by_hand(outputs, y):
    """Accuracy and per-image identifiability measures averaged over images.

    `outputs` (N, layers, tokens, classes): block outputs of an identity readout.
    """
    # no float32 rounding can move a class past the true one, or change the top
    assert min(_target_gap(outputs, y), _top_gap(outputs[:, -1, 0])) > (
        FLOAT32_STEPS * np.abs(outputs).max())
    r = _r(outputs, y)
    patches = r[:, :, 1:]
    return dict(accuracy=np.mean(outputs[:, -1, 0].argmax(-1) == y), cls=r[:, :, 0].mean(0),
                image_tokens=patches.mean(2).mean(0), top1_share=(patches == 1).mean(2).mean(0),
                top1_image_share=(patches == 1).any(2).mean(0))


@pytest.mark.parametrize("attention, edit", [("self_only", _self_only), ("no_cls", _no_cls)])
def test_attention_perturbations_by_hand(attention, edit):
    model = width_classes_vit(seed=4)
    x = random_images(n=6, seed=4)
    with torch.no_grad():
        y = model(torch.from_numpy(x)).argmax(1).numpy()
    proj = ClassEmbeddingProjector(model, device="cpu").fit()
    double = width_classes_vit(seed=4).double()
    x64 = x.astype(np.float64)
    outputs = np.stack([s["out"] for s in states_by_hand(double, x64, edit=edit)], axis=1)
    result = perturbed_identifiability(proj, x, y, attention=attention)
    for name, value in _summary_by_hand(outputs, y).items():
        np.testing.assert_allclose(result[name], value, err_msg=name)
    assert result.attention == attention and result.n_kept is None
    # the perturbation changes the model; without one, this is identifiability
    plain = perturbed_identifiability(proj, x, y)
    assert plain.accuracy == 1.0 and not np.allclose(plain.image_tokens, result.image_tokens)
    ident = proj.identifiability(x, y)
    for name in ("cls", "image_tokens", "top1_share", "top1_image_share"):
        np.testing.assert_allclose(plain[name], ident[name])


def test_token_removal_keeps_the_marked_patches_of_each_image_by_hand():
    model = width_classes_vit(seed=5)
    x, y = random_images(n=5, seed=4), np.array([1, 4, 4, 9, 15])
    keep = np.random.default_rng(0).random((5, 16)) < 0.5
    keep[:, 0] = True  # at least one patch each; images keep different numbers
    proj = ClassEmbeddingProjector(model, device="cpu").fit()
    result = perturbed_identifiability(proj, x, y, keep=keep)
    double = width_classes_vit(seed=5).double()
    per_image = [_summary_by_hand(
        np.stack([s["out"] for s in states_by_hand(
            double, x[i:i + 1].astype(np.float64), keep=np.flatnonzero(keep[i]))], axis=1),
        y[i:i + 1]) for i in range(5)]
    for name in per_image[0]:
        # per image over its remaining patches, then the mean over images
        np.testing.assert_allclose(result[name], np.mean([p[name] for p in per_image], axis=0),
                                   err_msg=name)
    np.testing.assert_array_equal(result.n_kept, keep.sum(1))
    assert len(set(keep.sum(1))) > 1
    # removing the context: keep the complement, the object's patches
    other = perturbed_identifiability(proj, x, y, keep=~keep)
    assert not np.allclose(other.image_tokens, result.image_tokens)


# -- item 5: key-value memories -----------------------------------------------


@pytest.mark.parametrize("kind", ["mlp", "attn"])
def test_key_value_controls_and_memory_composition_by_hand(kind):
    model = tiny_vit(seed=6)
    x = random_images(n=6, seed=5)
    with torch.no_grad():
        predicted = model(torch.from_numpy(x)).argmax(1).numpy()
    y = predicted.copy()
    y[::2] = (y[::2] + 1) % 7  # half right, half wrong
    proj = ClassEmbeddingProjector(model, tokens="all", device="cpu").fit()
    result = value_agreement(proj, x, y, kind=kind, average="token", random_state=3)
    # one random class per class, possibly itself, drawn from the seed
    np.testing.assert_array_equal(result.random_classes,
                                  np.random.RandomState(3).randint(7, size=7))
    E = _numpy(model.head.weight)
    correct = predicted == y
    for layer, (block, sites) in enumerate(zip(model.blocks, states_by_hand(model, x))):
        W = _numpy((block.mlp.fc2 if kind == "mlp" else block.attn.proj).weight)
        scores = E @ W  # (classes, values): the raw ranking
        top5 = np.argsort(-scores, axis=1, kind="stable")[:, :5]
        memory_class = scores.argmax(axis=0)
        top_keys = np.argsort(-sites[f"{kind}_keys"], axis=-1, kind="stable")[..., :5]
        hits = np.array([[np.isin(keys, top5[y[i]]).any() for keys in top_keys[i]]
                         for i in range(6)])
        random_hits = np.array([[np.isin(keys, top5[result.random_classes[y[i]]]).any()
                                 for keys in top_keys[i]] for i in range(6)])
        branch = _readout(model, sites[kind].astype(np.float64)).argmax(-1)  # (N, T)
        matching = (memory_class[top_keys] == branch[..., None]).sum(-1)
        assert result.key_value_agreement[layer] == pytest.approx(hits.mean())
        assert result.key_value_agreement_random[layer] == pytest.approx(random_hits.mean())
        assert result.key_value_agreement_correct[layer] == pytest.approx(
            hits[correct].mean())
        assert result.key_value_agreement_wrong[layer] == pytest.approx(hits[~correct].mean())
        assert result.memory_match[layer] == pytest.approx((matching > 0).mean())
        assert result.n_matching_memories[layer] == pytest.approx(matching.mean())
    assert value_agreement(proj).key_value_agreement_random is None


# -- bad input ----------------------------------------------------------------


def test_protocol_options_give_clear_errors():
    model = tiny_vit()
    x, y = random_images(n=4), np.array([0, 1, 2, 3])
    proj = ClassEmbeddingProjector(model, device="cpu").fit()
    with pytest.raises(ValueError, match="method must be 'gradient'"):
        explain(proj, x, y, method="grad")
    with pytest.raises(ValueError, match="protocol must be one of"):
        perturbation_test(proj, x, y, protocol="paper")
    with pytest.raises(ValueError, match="fractions applies to protocol='fractions'"):
        perturbation_test(proj, x, y, fractions=[0.5, 1.0])
    with pytest.raises(ValueError, match="n_seeds must be a positive int"):
        perturbation_test(proj, x, y, n_seeds=0)
    with pytest.raises(ValueError, match="probe must be one of"):
        linear_probe(proj, x, y, probe="lasso")
    with pytest.raises(ValueError, match="attention must be one of"):
        perturbed_identifiability(proj, x, y, attention="none")
    with pytest.raises(ValueError, match=r"keep must be a bool array of shape \(4, 16\)"):
        perturbed_identifiability(proj, x, y, keep=np.ones((4, 15), bool))
    with pytest.raises(ValueError, match="at least one patch of every image"):
        perturbed_identifiability(proj, x, y, keep=np.zeros((4, 16), bool))
    pooled = ClassEmbeddingProjector(tiny_vit(global_pool="avg", class_token=False),
                                     tokens="patches", device="cpu").fit()
    with pytest.raises(ValueError, match="no class token: use method='evidence'"):
        explain(pooled, x, y)
    with pytest.raises(ValueError, match="'no_cls' needs a model with a class token"):
        perturbed_identifiability(pooled, x, y, attention="no_cls")
