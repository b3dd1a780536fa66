"""A timm attention layer recomputed from its input, with its weights exposed.

timm's ``Attention`` never returns its attention weights (fused attention
never forms them), so the analyses that read or change them recompute the
layer from its input: ``weights`` gives the softmax weights and the values,
``output`` the layer's output for given weights, so that weights can be edited
(``interventions``) or differentiated (``attribution``) in between. For the
unedited weights, ``output`` equals the module's own output.
"""

from .._optional import import_optional

_FEATURE = "ClassEmbeddingProjector"


def check_attention(attn, analysis):
    """Raise unless `attn` is a timm ``Attention`` these functions can recompute."""
    names = ("qkv", "num_heads", "head_dim", "scale", "q_norm", "k_norm", "norm", "proj")
    missing = [name for name in names if not hasattr(attn, name)]
    if missing:
        raise ValueError(
            f"{analysis} recomputes timm's Attention from its input; this model's "
            f"{type(attn).__name__} has no {missing[0]!r}."
        )


def weights(attn, z):
    """Attention weights (B, heads, T, T) and values (B, heads, T, head_dim) for input z."""
    B, T, _ = z.shape
    qkv = attn.qkv(z).reshape(B, T, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    q, k = attn.q_norm(q), attn.k_norm(k)
    return ((q * attn.scale) @ k.transpose(-2, -1)).softmax(dim=-1), v


def output(attn, z, weights, v, rows=slice(None)):
    """The layer's output (B, Q, D) at the query `rows` of z, for `weights` (B, heads, Q, T)."""
    torch = import_optional("torch", "vision", _FEATURE)
    B, _, Q, _ = weights.shape
    merged = attn.norm((weights @ v).transpose(1, 2).reshape(B, Q, -1))
    gate = getattr(attn, "gate", None)
    if gate is not None:
        merged = merged * gate(z[:, rows]).sigmoid()
    # functional, not attn.proj(...): hooks on attn.proj read the model's own pass
    return torch.nn.functional.linear(merged, attn.proj.weight, attn.proj.bias)
