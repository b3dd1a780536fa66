"""Direct contributions of image tokens to a ViT's class logits through attention.

Used by :meth:`ClassEmbeddingProjector.explain`. The output of one attention
layer at the pooled query (the class token, or the mean over patch queries for
average-pooled models) is a sum over key tokens j of
``proj(A[query, j] * v_j)`` (per head, then merged), plus a bias. Each term is
token j's contribution to the residual stream; read through the classifier
linearised at the model's final pooled state, it gives the class evidence that
j sends to the output.
"""


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
