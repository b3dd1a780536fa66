"""Direct contributions of image tokens to a ViT's class logits through attention.

:func:`explain` and :func:`perturbation_test` are the functions behind
:meth:`ClassEmbeddingProjector.explain` and
:meth:`ClassEmbeddingProjector.perturbation_test`, over a fitted projector. The output of one attention
layer at the pooled query (the class token, or the mean over patch queries for
average-pooled models) is a sum over key tokens j of
``proj(A[query, j] * v_j)`` (per head, then merged), plus a bias. Each term is
token j's contribution to the residual stream; read through the classifier
linearised at the model's final pooled state, it gives the class evidence that
j sends to the output.
"""

import numpy as np
from sklearn.utils import Bunch, check_random_state

from ._class_analyses import check_labels
from ._optional import import_optional

_FEATURE = "ClassEmbeddingProjector"


def attention_contributions(attn, z, query_rows, torch):
    """Per-key-token contributions (B, T, D) to the mean output of `query_rows`.

    Parameters
    ----------
    attn : timm.layers.Attention
        The block's attention module.
    z : tensor of shape (B, T, D)
        Its input (the block input after ``norm1``).
    query_rows : slice
        The query tokens whose outputs are averaged (the pooled tokens).
    """
    if not isinstance(attn.norm, torch.nn.Identity):
        raise ValueError(
            "explain needs attention without output normalisation (scale_norm=False)."
        )
    B, T, _ = z.shape
    qkv = attn.qkv(z).reshape(B, T, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    q, k = attn.q_norm(q), attn.k_norm(k)
    weights = ((q * attn.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
    pooled = weights[:, :, query_rows].mean(dim=2)
    merged = (pooled[..., None] * v).transpose(1, 2).reshape(B, T, attn.attn_dim)
    if attn.gate is not None:
        merged = merged * attn.gate(z[:, query_rows]).sigmoid().mean(dim=1, keepdim=True)
    return merged @ attn.proj.weight.T


def readout_gradient(model, pooled, target, torch):
    """Gradient (B, D) of the target-class logit w.r.t. the final pooled state.

    This linearises the final norm and head where the model actually is, so
    that any norm (LayerNorm, RMSNorm, identity) is handled alike.
    """
    with torch.enable_grad():
        pooled = pooled.detach().requires_grad_(True)
        logits = model.head(model.fc_norm(model.norm(pooled)))
        chosen = logits.gather(1, target[:, None]).sum()
        (grad,) = torch.autograd.grad(chosen, pooled)
    return grad


def patch_evidence(proj, x, y):
    """Per-patch evidence (N, n_patches) for classes y (None: the prediction)."""
    torch = import_optional("torch", "vision", _FEATURE)
    m = proj.model_
    if not hasattr(m.blocks[0], "ls1"):
        raise ValueError(
            "explain needs pre-norm timm Blocks (with ls1); this model uses "
            f"{type(m.blocks[0]).__name__}."
        )
    n_prefix = proj.num_prefix_tokens_
    has_cls = getattr(m, "cls_token", None) is not None
    query = slice(0, 1) if has_cls else slice(n_prefix, None)
    maps = []
    for rows, hidden in proj._batches(x, ("attn_in", "resid"), range(proj.n_layers_)):
        final = hidden["resid"][:, -1]
        pooled = final[:, 0] if has_cls else final[:, n_prefix:].mean(dim=1)
        if y is None:
            target = m.head(m.fc_norm(m.norm(pooled))).argmax(dim=-1)
        else:
            target = torch.from_numpy(y[rows]).to(pooled.device)
        grad = readout_gradient(m, pooled, target, torch)
        evidence = 0
        for layer in proj.layers_:
            contributions = m.blocks[layer].ls1(
                attention_contributions(
                    m.blocks[layer].attn, hidden["attn_in"][:, layer], query, torch
                )
            )
            evidence = evidence + contributions[:, n_prefix:] @ grad[:, :, None]
        maps.append(evidence[..., 0].cpu().numpy())
    return np.concatenate(maps)


def explain(proj, images, y=None):
    """Heatmaps (N, H, W); see :meth:`ClassEmbeddingProjector.explain`."""
    torch = import_optional("torch", "vision", _FEATURE)
    x = proj._tensor(images)
    if y is not None:
        y = check_labels(y, len(x), len(proj.classes_))
    grid = patch_evidence(proj, x, y).reshape(len(x), 1, *proj.grid_size_)
    heatmaps = torch.nn.functional.interpolate(
        torch.from_numpy(grid), size=proj.input_size_[1:], mode="bilinear",
        align_corners=False,
    )
    return heatmaps[:, 0].numpy().astype(np.float32)


def _auc(fractions, curve):
    """Area under an accuracy curve, normalised by the range of fractions."""
    return float(np.trapezoid(curve, fractions) / (fractions[-1] - fractions[0]))


def perturbation_test(proj, images, y, *, fractions=None, random_state=None):
    """Accuracy curves; see :meth:`ClassEmbeddingProjector.perturbation_test`."""
    torch = import_optional("torch", "vision", _FEATURE)
    fractions = np.linspace(0.1, 1.0, 10) if fractions is None else np.asarray(fractions, float)
    if fractions.ndim != 1 or len(fractions) < 2 or np.any(np.diff(fractions) <= 0) or (
        fractions[0] <= 0 or fractions[-1] > 1
    ):
        raise ValueError("fractions must be at least 2 increasing values in (0, 1].")
    x = proj._tensor(images)
    y = check_labels(y, len(x), len(proj.classes_))
    order = np.argsort(-patch_evidence(proj, x, y), axis=1, kind="stable")
    rng = check_random_state(random_state)
    orders = {
        "top": order,
        "bottom": order[:, ::-1],
        "random": np.argsort(rng.random_sample(order.shape), axis=1),
    }
    n_patches = order.shape[1]
    result = Bunch(fractions=fractions)
    for name, ranked in orders.items():
        curve = []
        for fraction in fractions:
            keep = torch.from_numpy(
                np.ascontiguousarray(ranked[:, : max(1, round(fraction * n_patches))])
            )
            curve.append(np.mean(_predict_kept(proj, x, keep) == y))
        result[name] = np.array(curve)
        result[f"auc_{name}"] = _auc(fractions, result[name])
    return result


def _predict_kept(proj, x, keep):
    """Predicted classes when only patches `keep` (N, n_keep) enter the blocks."""
    torch = import_optional("torch", "vision", _FEATURE)
    m, n_prefix = proj.model_, proj.num_prefix_tokens_
    predictions = []
    for start in range(0, len(x), proj.batch_size):
        batch = x[start:start + proj.batch_size].to(proj.device_)
        index = keep[start:start + proj.batch_size].to(proj.device_)
        with torch.no_grad():
            h = m._pos_embed(m.patch_embed(batch))
            prefix, patches = h[:, :n_prefix], h[:, n_prefix:]
            kept = torch.gather(patches, 1, index[..., None].expand(-1, -1, patches.shape[-1]))
            h = m.norm(m.blocks(m.norm_pre(torch.cat([prefix, kept], dim=1))))
            predictions.append(m.forward_head(h).argmax(-1).cpu().numpy())
    return np.concatenate(predictions)
