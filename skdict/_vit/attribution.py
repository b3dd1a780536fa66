"""Direct contributions of image tokens to a ViT's class logits through attention.

The computations behind :func:`skdict.inspection.explain` and
:func:`skdict.inspection.perturbation_test`. The output of one attention
layer at the pooled query (the class token, or the mean over patch queries for
average-pooled models) is a sum over key tokens j of
``proj(A[query, j] * v_j)`` (per head, then merged), plus a bias. Each term is
token j's contribution to the residual stream; read through the classifier
linearised at the model's final pooled state, it gives the class evidence that
j sends to the output.
"""

import numpy as np

from .._optional import import_optional

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


def upsample(grid, size):
    """Patch maps (N, rows, cols) bilinearly resized to the image `size` (H, W), float32."""
    torch = import_optional("torch", "vision", _FEATURE)
    heatmaps = torch.nn.functional.interpolate(
        torch.from_numpy(grid[:, None]), size=size, mode="bilinear", align_corners=False
    )
    return heatmaps[:, 0].numpy().astype(np.float32)


def kept_logits(proj, x, keep):
    """Class logits (N, n_classes) when only the patches `keep` (N, n_keep) enter the blocks.

    timm's forward takes no list of tokens to keep, but it has a slot for
    removing patch tokens: ``patch_drop`` (PatchDropout, the identity in eval
    mode), after the position embedding and before ``norm_pre``. A forward
    hook there replaces its output by the prefix tokens and the kept patches
    (each with its own position embedding), so that the rest is the model's
    own forward: ``norm_pre``, the blocks, ``norm`` and the head, pooling over
    the kept tokens only. An attention mask (``forward_features(attn_mask=)``,
    recent timm only) would give the class token the same result but still
    run the removed tokens, and average pooling would include them.
    """
    torch = import_optional("torch", "vision", _FEATURE)
    m, n_prefix = proj.model_, proj.num_prefix_tokens_
    if not hasattr(m, "patch_drop"):
        raise ValueError(
            f"perturbation_test needs a timm VisionTransformer with a patch_drop slot "
            f"(timm >= 1.0); this {type(m).__name__} has none."
        )
    logits = []
    for start in range(0, len(x), proj.batch_size):
        batch = x[start:start + proj.batch_size].to(proj.device_)
        index = torch.from_numpy(np.ascontiguousarray(keep[start:start + proj.batch_size]))
        index = index.to(proj.device_)

        def select(module, args, tokens):
            patches = tokens[:, n_prefix:]
            kept = torch.gather(patches, 1, index[..., None].expand(-1, -1, patches.shape[-1]))
            return torch.cat([tokens[:, :n_prefix], kept], dim=1)

        handle = m.patch_drop.register_forward_hook(select)
        try:
            with torch.no_grad():
                logits.append(m(batch).cpu().numpy())
        finally:
            handle.remove()
    return np.concatenate(logits)
