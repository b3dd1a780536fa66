"""Forward hooks that capture the hidden states of timm ViT blocks.

Sites, for block l with input x:

- ``"input"``: x itself (for block 0, the embedded tokens after ``norm_pre``);
- ``"resid"``: the block output (the residual stream after the block);
- ``"attn"`` / ``"mlp"``: each branch's output. With ``layer_scale="after"``
  exactly as it is added to the residual: after LayerScale (``ls1``/``ls2``)
  in pre-norm blocks, after ``norm1``/``norm2`` in post-norm blocks
  (``ResPostBlock``). With ``layer_scale="before"``, pre-norm blocks are read
  at the ``attn`` / ``mlp`` module outputs (``attn.proj`` / ``mlp.fc2``, as
  the paper's code reads them); post-norm blocks have no LayerScale, so both
  settings read the same place;
- ``"attn_in"``: the attention module's input (x after ``norm1`` in pre-norm
  blocks);
- ``"mlp_in"``: the residual stream the MLP branch starts from (x plus the
  attention branch);
- ``"mlp_keys"``: the MLP's first linear layer output before the activation
  (the keys of the key-value memory view of an MLP);
- ``"attn_keys"``: the input of the attention's output projection, i.e. the
  attention-weighted values of all heads, concatenated: the coefficients of
  the columns of ``attn.proj.weight`` (the keys of the key-value memory view
  of an attention layer);
- ``"output"``: not a block site but the model's own output (the class
  logits), one per image; its layers are ignored.

The hooks sit on modules, not inside attention, so fused attention is fine.
"""

import contextlib

from .._optional import import_optional

LAYER_SCALE = ("after", "before")
OUTPUT = "output"


def _is_pre_norm(block):
    return hasattr(block, "ls1") and hasattr(block, "ls2")


def _is_post_norm(block):
    return type(block).__name__ == "ResPostBlock"


def _branch_module(block, branch, layer_scale="after"):
    """The module whose output is the `branch` site."""
    if _is_pre_norm(block):
        if layer_scale == "before":
            return getattr(block, branch)
        return getattr(block, "ls1" if branch == "attn" else "ls2")
    if _is_post_norm(block):
        return getattr(block, "norm1" if branch == "attn" else "norm2")
    raise ValueError(
        f"site={branch!r} needs pre-norm timm Blocks (with ls1/ls2) or ResPostBlocks; "
        f"this model uses {type(block).__name__}. Use site='resid'."
    )


def attention_branch(block, layer_scale):
    """The map from the output of ``block.attn`` to the block's ``"attn"`` site."""
    module = _branch_module(block, "attn", layer_scale)
    return (lambda out: out) if module is block.attn else module


def check_sites(block, sites):
    """Raise a clear error now if `block` lacks a module for one of `sites`."""
    for site in sites:
        if site == OUTPUT:
            continue
        if site in ("attn", "mlp", "mlp_in"):
            _branch_module(block, "mlp" if site == "mlp_in" else site)
        elif site == "mlp_keys" and not hasattr(getattr(block, "mlp", None), "fc1"):
            raise ValueError(
                f"{type(block).__name__} has no mlp.fc1 layer, so its MLP keys cannot be read."
            )
        elif site == "attn_keys" and not hasattr(getattr(block, "attn", None), "proj"):
            raise ValueError(
                f"{type(block).__name__} has no attn.proj layer, so its attention keys "
                "cannot be read."
            )


def _pre_hook(module, sink):
    return module.register_forward_pre_hook(lambda mod, args: sink.append(args[0]))


def _register(block, site, sink, layer_scale):
    if site == "input":
        return _pre_hook(block, sink)
    if site == "attn_in":
        return _pre_hook(block.attn, sink)
    if site == "attn_keys":
        return _pre_hook(block.attn.proj, sink)
    if site == "mlp_in":
        # pre-norm: norm2 reads the residual; post-norm: the MLP reads it directly
        return _pre_hook(block.norm2 if _is_pre_norm(block) else block.mlp, sink)
    if site == "resid":
        module = block
    elif site == "mlp_keys":
        module = block.mlp.fc1
    else:
        module = _branch_module(block, site, layer_scale)
        if layer_scale == "before":
            # an in-place LayerScale (inplace=True) would rescale the captured tensor
            return module.register_forward_hook(lambda mod, args, out: sink.append(out.clone()))
    return module.register_forward_hook(lambda mod, args, out: sink.append(out))


@contextlib.contextmanager
def capture(blocks, layers, sites, layer_scale="after"):
    """Record `sites` of ``blocks[l]`` for each l in `layers` during forward passes.

    Yields a dict site -> list (one per layer, in the order of `layers`) of
    lists of tensors (one per forward pass). The hooks are removed on exit.
    """
    sites = [site for site in sites if site != OUTPUT]
    store = {site: [[] for _ in layers] for site in sites}
    handles = [
        _register(blocks[layer], site, store[site][i], layer_scale)
        for site in sites
        for i, layer in enumerate(layers)
    ]
    try:
        yield store
    finally:
        for handle in handles:
            handle.remove()


def block_states(model, x, layers, sites, layer_scale, batch_size, device, feature,
                 intervene=None):
    """Yield (rows, {site: tensor (B, n_layers, n_tokens, width)}) batch by batch.

    Runs `model` on the input tensor `x` in batches of `batch_size` on
    `device`, without gradients, capturing `sites` of the blocks `layers`
    (``"output"``: the model's output, (B, n_classes)). `intervene`, if
    given, maps the batch's rows (a slice) to a context manager that changes
    the forward pass of that batch (see ``interventions``). `feature` names
    who asks, for the ImportError message.
    """
    torch = import_optional("torch", "vision", feature)
    for start in range(0, len(x), batch_size):
        batch = x[start:start + batch_size].to(device)
        rows = slice(start, start + len(batch))
        change = contextlib.nullcontext() if intervene is None else intervene(rows)
        with torch.no_grad(), change, capture(model.blocks, layers, sites, layer_scale) as store:
            output = model(batch)
            states = {site: torch.stack([per_layer[0] for per_layer in store[site]], dim=1)
                      for site in store}
            if OUTPUT in sites:
                states[OUTPUT] = output
            yield rows, states
