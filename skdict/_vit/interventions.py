"""Changes to a timm ViT's forward pass, as context managers for ``block_states``.

- ``kept_patches``: only some patch tokens enter the blocks (the perturbation
  test and the context-token removal).
- ``edited_attention``: every block's attention weights are edited after the
  softmax, as the authors' attention perturbations do (``"self_only"``: tokens
  other than the class token attend only to themselves; ``"no_cls"``: no
  other token attends to the class token, the weights left unnormalised).
"""

import contextlib

import numpy as np

from .._optional import import_optional
from . import attention

_FEATURE = "ClassEmbeddingProjector"
ATTENTION_EDITS = ("self_only", "no_cls")


@contextlib.contextmanager
def kept_patches(model, n_prefix, keep):
    """Only the patches `keep` (B, n_keep) of each image of the batch enter the blocks.

    timm's forward takes no list of tokens to keep, but it has a slot for
    removing patch tokens: ``patch_drop`` (PatchDropout, the identity in eval
    mode), after the position embedding and before ``norm_pre``. A forward
    hook there replaces its output by the prefix tokens and the kept patches
    (each with its own position embedding), so that the rest is the model's
    own forward: ``norm_pre``, the blocks, ``norm`` and the head, pooling over
    the kept tokens only. An attention mask would give the class token the
    same result but still run the removed tokens, and average pooling would
    include them.
    """
    torch = import_optional("torch", "vision", _FEATURE)
    if not hasattr(model, "patch_drop"):
        raise ValueError(
            f"removing patches needs a timm VisionTransformer with a patch_drop slot "
            f"(timm >= 1.0); this {type(model).__name__} has none."
        )

    def select(module, args, tokens):
        index = torch.from_numpy(np.ascontiguousarray(keep)).to(tokens.device)
        patches = tokens[:, n_prefix:]
        kept = torch.gather(patches, 1, index[..., None].expand(-1, -1, patches.shape[-1]))
        return torch.cat([tokens[:, :n_prefix], kept], dim=1)

    handle = model.patch_drop.register_forward_hook(select)
    try:
        yield
    finally:
        handle.remove()


def edit_weights(weights, edit, first):
    """`weights` (B, heads, T, T) edited for the query rows from `first` on."""
    torch = import_optional("torch", "vision", _FEATURE)
    edited = weights.clone()
    if edit == "self_only":
        eye = torch.eye(weights.shape[-1], dtype=weights.dtype, device=weights.device)
        edited[:, :, first:] = eye[first:]
    else:  # no_cls: the class token is key 0
        edited[:, :, first:, 0] = 0
    return edited


@contextlib.contextmanager
def edited_attention(model, edit, has_cls):
    """Every block's attention output recomputed with the weights edited by `edit`.

    The class token's own row is left as it is (the rows edited start after
    it; without a class token, ``"self_only"`` edits every row).
    """
    if edit == "no_cls" and not has_cls:
        raise ValueError("attention='no_cls' needs a model with a class token.")
    for block in model.blocks:
        attention.check_attention(block.attn, f"attention={edit!r}")

    def recompute(attn, args, out):
        weights, v = attention.weights(attn, args[0])
        return attention.output(attn, args[0], edit_weights(weights, edit, int(has_cls)), v)

    handles = [block.attn.register_forward_hook(recompute) for block in model.blocks]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
