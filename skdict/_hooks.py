"""Forward hooks that capture the hidden states of timm ViT blocks.

Sites, for block l with input x:

- ``"input"``: x itself;
- ``"resid"``: the block output (the residual stream after the block);
- ``"attn"`` / ``"mlp"``: each branch's output exactly as it is added to the
  residual: after LayerScale (``ls1``/``ls2``) in pre-norm blocks, after
  ``norm1``/``norm2`` in post-norm blocks (``ResPostBlock``);
- ``"attn_in"``: the attention module's input (x after ``norm1`` in pre-norm
  blocks);
- ``"keys"``: the MLP's first linear layer output before the activation (the
  keys of the key-value memory view of an MLP).

The hooks sit on modules, not inside attention, so fused attention is fine.
"""

import contextlib


def _branch_module(block, branch):
    """The module whose output is what `branch` adds to the residual."""
    pre_norm = "ls1" if branch == "attn" else "ls2"
    post_norm = "norm1" if branch == "attn" else "norm2"
    if hasattr(block, pre_norm):
        return getattr(block, pre_norm)
    if type(block).__name__ == "ResPostBlock":
        return getattr(block, post_norm)
    raise ValueError(
        f"site={branch!r} needs pre-norm timm Blocks (with ls1/ls2) or ResPostBlocks; "
        f"this model uses {type(block).__name__}. Use site='resid'."
    )


def check_sites(block, sites):
    """Raise a clear error now if `block` lacks a module for one of `sites`."""
    for site in sites:
        if site in ("attn", "mlp"):
            _branch_module(block, site)
        elif site == "keys" and not hasattr(getattr(block, "mlp", None), "fc1"):
            raise ValueError(
                f"{type(block).__name__} has no mlp.fc1 layer, so its MLP keys cannot be read."
            )


def _register(block, site, sink):
    if site in ("input", "attn_in"):
        module = block if site == "input" else block.attn
        return module.register_forward_pre_hook(lambda mod, args: sink.append(args[0]))
    if site == "resid":
        module = block
    elif site == "keys":
        module = block.mlp.fc1
    else:
        module = _branch_module(block, site)
    return module.register_forward_hook(lambda mod, args, out: sink.append(out))


@contextlib.contextmanager
def capture(blocks, layers, sites):
    """Record `sites` of ``blocks[l]`` for each l in `layers` during forward passes.

    Yields a dict site -> list (one per layer, in the order of `layers`) of
    lists of tensors (one per forward pass). The hooks are removed on exit.
    """
    store = {site: [[] for _ in layers] for site in sites}
    handles = [
        _register(blocks[layer], site, store[site][i])
        for site in sites
        for i, layer in enumerate(layers)
    ]
    try:
        yield store
    finally:
        for handle in handles:
            handle.remove()
