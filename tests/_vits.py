"""Small timm ViTs and hand-computed states shared by the projector and inspection tests."""

import functools

import numpy as np
import torch
from timm.models.vision_transformer import VisionTransformer

from skdict.datasets import train_digits_vit


@functools.lru_cache(maxsize=None)
def trained_digits_vit():
    """The digits ViT trained once per test session (about 12 s on 2 cores).

    Tests only read it (the projector sets eval mode, which it already is);
    one that changes weights works on a copy.
    """
    return train_digits_vit(random_state=0)


def tiny_vit(seed=0, **kwargs):
    """A random 16x16 ViT with 4x4 patches whose every weight is non-trivial."""
    torch.manual_seed(seed)
    params = dict(img_size=16, patch_size=4, in_chans=3, num_classes=7, embed_dim=16,
                  depth=3, num_heads=2, mlp_ratio=2.0)
    params.update(kwargs)
    model = VisionTransformer(**params).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def random_images(n=3, seed=0, size=16, channels=3):
    return np.random.default_rng(seed).standard_normal((n, channels, size, size)).astype(
        np.float32
    )


def hidden_states(model, x):
    """Block outputs computed by hand, without hooks."""
    h = model.norm_pre(model._pos_embed(model.patch_embed(torch.from_numpy(x))))
    out = []
    with torch.no_grad():
        for block in model.blocks:
            h = block(h)
            out.append(h)
    return out


def linear_readout(model):
    """Make norm+head the identity so that projections are the hidden states."""
    width = model.embed_dim
    model.norm = torch.nn.Identity()
    model.fc_norm = torch.nn.Identity()
    model.head = torch.nn.Linear(width, width)
    with torch.no_grad():
        model.head.weight.copy_(torch.eye(width))
        model.head.bias.zero_()
    return model


def states_by_hand(model, x, edit=None, keep=None):
    """Every site of every block, computed by hand from the module weights.

    `edit`, if given, changes the attention weights (B, heads, T, T) after the
    softmax; `keep` (n_keep,), if given, are the patches that enter the blocks.
    """
    h = model._pos_embed(model.patch_embed(torch.from_numpy(x)))
    if keep is not None:
        n_prefix = model.num_prefix_tokens
        h = torch.cat([h[:, :n_prefix], h[:, n_prefix:][:, np.array(keep)]], dim=1)
    h = model.norm_pre(h)
    sites = []
    with torch.no_grad():
        for block in model.blocks:
            attn = block.attn
            z = block.norm1(h)
            B, T, _ = z.shape
            qkv = attn.qkv(z).reshape(B, T, 3, attn.num_heads, attn.head_dim)
            q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
            weights = ((q * attn.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
            if edit is not None:
                weights = edit(weights)
            attn_keys = (weights @ v).transpose(1, 2).reshape(B, T, -1)
            attn_raw = attn.proj(attn_keys)
            attn_out = block.ls1.gamma * attn_raw if hasattr(block.ls1, "gamma") else attn_raw
            mid = h + attn_out
            mlp_keys = block.mlp.fc1(block.norm2(mid))
            mlp_raw = block.mlp.fc2(block.mlp.act(mlp_keys))
            mlp_out = block.ls2.gamma * mlp_raw if hasattr(block.ls2, "gamma") else mlp_raw
            out = mid + mlp_out
            if edit is None:
                np.testing.assert_allclose(out.numpy(), block(h).numpy(), atol=1e-5)
            sites.append(dict(input=h, attn=attn_out, attn_raw=attn_raw, mid=mid, mlp=mlp_out,
                              mlp_raw=mlp_raw, attn_keys=attn_keys, mlp_keys=mlp_keys,
                              attn_in=z, out=out))
            h = out
    return [{name: t.detach().numpy() for name, t in s.items()} for s in sites]


def width_classes_vit(**kwargs):
    """A tiny ViT whose 16 classes equal its width, for the identity readout."""
    return linear_readout(tiny_vit(num_classes=16, **kwargs))
