"""Which patches carry a class: the explanations behind ``explain`` and the perturbation test.

Two definitions of the relevance of patch token j for class c (``method``):

- ``"gradient"``, the authors' (``ViTGradients._compute_cross_entropy`` in
  their ``src/gradients.py``, summed over blocks and heads as
  ``get_accumulated_grads`` does): in each selected block b, the attention
  branch's output at the class token, projected alone
  (``head(fc_norm(norm(.)))``), gives a cross-entropy loss L_b for class c;
  the relevance is ``-sum_b sum_h dL_b / dA_b[h, 0, j]``, the gradient with
  respect to the class token's attention weight on j. As in their code, the
  loss is torch's cross-entropy of the softmax *probabilities* (which takes a
  log-softmax of them once more), and each block's gradient is local: it
  reaches A_b only through block b's own attention output.
- ``"evidence"``, skdict's: what j writes, through the attention layers, into
  the pooled token, read by the classifier linearised at the model's final
  pooled state. The output of one attention layer at the pooled query (the
  class token, or the mean over patch queries for average-pooled models) is a
  sum over key tokens j of ``proj(A[query, j] * v_j)`` (per head, then
  merged), plus a bias; each term's dot product with the gradient of the
  class-c logit at the final pooled state is j's evidence.

Both recompute the attention weights from the captured inputs, so fused
attention is fine.
"""

import numpy as np

from .._optional import import_optional
from . import attention
from .hooks import OUTPUT, attention_branch

_FEATURE = "ClassEmbeddingProjector"
EXPLAIN_METHODS = ("gradient", "evidence")


def patch_relevance(proj, x, y, method):
    """Relevance (N, n_patches) of each patch for classes y (None: the prediction)."""
    if method not in EXPLAIN_METHODS:
        raise ValueError(
            "method must be 'gradient' (the authors' attention gradients) or 'evidence' "
            f"(skdict's attention evidence), got {method!r}."
        )
    if method == "gradient":
        return _gradient_relevance(proj, x, y)
    return _evidence(proj, x, y)


def _targets(y, rows, states, torch):
    if y is None:
        return states[OUTPUT].argmax(dim=-1)
    return torch.from_numpy(y[rows]).to(states[OUTPUT].device)


def _gradient_relevance(proj, x, y):
    torch = import_optional("torch", "vision", _FEATURE)
    m = proj.model_
    if getattr(m, "cls_token", None) is None:
        raise ValueError(
            "method='gradient' differentiates the class token's attention weights, as the "
            "authors' code does; this model has no class token: use method='evidence'."
        )
    for layer in proj.layers_:
        attention.check_attention(m.blocks[layer].attn, "explain(method='gradient')")
    maps = []
    for rows, states in proj._batches(x, ("attn_in", OUTPUT)):
        target = _targets(y, rows, states, torch)
        relevance = 0
        for i, layer in enumerate(proj.layers_):
            relevance = relevance + _cls_row_gradient(
                proj, m.blocks[layer], states["attn_in"][:, i], target, torch
            )
        maps.append(-relevance[:, proj.num_prefix_tokens_:].cpu().numpy())
    return np.concatenate(maps)


def _cls_row_gradient(proj, block, z, target, torch):
    """The gradient of `block`'s class-token loss w.r.t. A[h, 0, j], summed over heads: (B, T).

    The loss is the cross-entropy of the softmax of the attention branch's
    output at the class token, projected alone; `z` is the attention's input.
    """
    m = proj.model_
    with torch.enable_grad():
        weights, v = attention.weights(block.attn, z)
        row = weights[:, :, :1].detach().requires_grad_(True)
        branch = attention_branch(block, proj.layer_scale)(
            attention.output(block.attn, z, row, v, slice(0, 1))
        )
        logits = m.head(m.fc_norm(m.norm(branch[:, 0])))
        loss = torch.nn.functional.cross_entropy(logits.softmax(dim=-1), target,
                                                 reduction="sum")
        (grad,) = torch.autograd.grad(loss, row)
    return grad[:, :, 0].sum(dim=1)


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
    weights, v = attention.weights(attn, z)
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


def _evidence(proj, x, y):
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
    sites = ("attn_in", "resid", OUTPUT)
    for rows, hidden in proj._batches(x, sites, range(proj.n_layers_)):
        final = hidden["resid"][:, -1]
        pooled = final[:, 0] if has_cls else final[:, n_prefix:].mean(dim=1)
        grad = readout_gradient(m, pooled, _targets(y, rows, hidden, torch), torch)
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
