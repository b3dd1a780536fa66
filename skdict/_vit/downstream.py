"""Downstream recovered: a dictionary's reconstruction spliced back into a ViT.

SAEBench's "loss recovered" (Karvonen et al., 2025, core metrics; its
``ce_loss_score``, computed by SAELens' ``sae_lens.evals``
``get_downstream_reconstruction_metrics``) for a vision transformer: the hidden
state of a block is replaced by its reconstruction and the model runs on; the
cross-entropy of its predictions is compared with those of the original forward
pass and of one where the same state is replaced by its mean (mean ablation,
where SAEBench ablates to zero: a ViT's residual stream is far from zero). The
state is replaced by a forward hook on the block, so the rest is the model's
own forward pass.
"""

import contextlib

import numpy as np
from sklearn.pipeline import Pipeline
from sklearn.utils import Bunch
from sklearn.utils.validation import check_is_fitted

from .._dictionary import components_of, encoded
from .._optional import import_optional
from .class_analyses import check_labels
from .images import timm_images_to_tensor

_FEATURE = "downstream_recovered"
TOKENS = ("cls", "all")


def downstream_recovered(projector, estimator, images, y, *, layer=-1, tokens="cls"):
    """Cross-entropy and accuracy recovered when a block's output is replaced by its
    reconstruction by a dictionary.

    The ViT of a fitted projector classifies `images` three times: as it is
    (``original``), with the output of block `layer` replaced, at the token(s)
    `tokens`, by the dictionary's reconstruction ``inverse_transform(transform(h))``
    (``spliced``), and replaced by its mean over the images (``ablated``).
    Then ``recovered = (CE_ablated - CE_spliced) / (CE_ablated - CE_original)``,
    and the same with accuracy in place of the cross-entropy ``CE``. 1 means
    the reconstruction loses nothing the model uses, 0 that it does no
    better than the mean; it can exceed 1 or fall below 0.

    Parameters
    ----------
    projector : ClassEmbeddingProjector
        A fitted projector; its ``model_`` (a timm ViT with a class head),
        ``device_`` and ``batch_size`` are used.
    estimator : estimator
        A dictionary fitted on that block's output at those tokens (for
        example on :class:`~skdict.TimmEmbedder` embeddings with the same
        ``layer`` and ``token``), or a Pipeline ending in one, whose earlier
        steps have an ``inverse_transform``.
    images : array-like or list
        Images in any form :class:`~skdict.TimmEmbedder` takes; preferably
        not the ones the dictionary was fit on.
    y : array-like of int of shape (n_images,)
        True class index of each image.
    layer : int, default=-1
        The block whose output is replaced (negative counts from the end).
    tokens : {"cls", "all"}, default="cls"
        Replace the class token only, or every token (each token position is
        then ablated to its own mean).

    Returns
    -------
    result : :class:`~sklearn.utils.Bunch`
        ``cross_entropy`` and ``accuracy``: Bunches with ``original``,
        ``spliced`` and ``ablated``; ``cross_entropy_recovered`` and
        ``accuracy_recovered`` (NaN when the ablation changes nothing, as the
        ratio is then undefined); ``layer`` (the block index) and ``tokens``.

    Notes
    -----
    SAEBench reports the cross-entropy ratio ("CE loss score") for language
    models with zero ablation; skdict ablates to the mean, the usual choice
    when zero is not a typical state, and adds the accuracy ratio, which is
    what a classifier's user sees. The mean is taken over the given images,
    so pass enough of them. Each image is run three times.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.decomposition import SparseCoder
    >>> from skdict import ClassEmbeddingProjector
    >>> from skdict.datasets import load_digits_images, make_digits_vit
    >>> from skdict.inspection import downstream_recovered
    >>> images, y = load_digits_images(subset="test", return_X_y=True)
    >>> projector = ClassEmbeddingProjector(make_digits_vit(), device="cpu").fit()
    >>> identity = SparseCoder(np.eye(64, dtype=np.float32),
    ...                        transform_algorithm="threshold", transform_alpha=0.0)
    >>> result = downstream_recovered(projector, identity, images[:100], y[:100])
    >>> float(result.cross_entropy_recovered)
    1.0
    """
    torch = import_optional("torch", "vision", _FEATURE)
    check_is_fitted(projector)
    model = projector.model_
    n_blocks = len(model.blocks)
    if not -n_blocks <= layer < n_blocks:
        raise ValueError(
            f"layer={layer} but the model has {n_blocks} blocks; use an index in "
            f"[{-n_blocks}, {n_blocks - 1}]."
        )
    if tokens not in TOKENS:
        raise ValueError(f"tokens must be one of {list(TOKENS)}, got {tokens!r}.")
    if tokens == "cls" and getattr(model, "cls_token", None) is None:
        raise ValueError("tokens='cls' but this model has no class token; use tokens='all'.")
    width = components_of(estimator).shape[1]
    if width != model.embed_dim:
        raise ValueError(
            f"estimator has atoms of {width} features but the model's blocks output "
            f"{model.embed_dim}; fit the dictionary on this model's hidden states."
        )
    x = timm_images_to_tensor(images, model, _FEATURE)
    n_classes = model.head.weight.shape[0]
    y = check_labels(y, len(x), n_classes)
    block = model.blocks[layer]
    run = _Runs(model, x, projector.batch_size, projector.device_, torch)
    capture = _Capture(tokens)
    logits = {"original": run.logits(capture, block)}
    mean = capture.sum / len(x)
    logits["spliced"] = run.logits(_Replace(tokens, lambda h: _reconstruct(estimator, h)),
                                   block)
    logits["ablated"] = run.logits(_Replace(tokens, lambda h: mean.to(h.dtype).expand_as(h)),
                                   block)
    cross_entropy = Bunch(**{name: _cross_entropy(z, y) for name, z in logits.items()})
    accuracy = Bunch(**{name: float(np.mean(z.argmax(axis=1) == y))
                        for name, z in logits.items()})
    return Bunch(
        cross_entropy=cross_entropy,
        accuracy=accuracy,
        cross_entropy_recovered=_recovered(cross_entropy),
        accuracy_recovered=_recovered(accuracy),
        layer=layer % n_blocks,
        tokens=tokens,
    )


class _Runs:
    """Forward passes of `model` over `x` in batches, with a hook on one block."""

    def __init__(self, model, x, batch_size, device, torch):
        self.model, self.x, self.batch_size, self.device, self.torch = (
            model, x, batch_size, device, torch)

    def logits(self, hook, block):
        """Logits (float64 numpy) of every image, `hook` on `block`'s output."""
        out = []
        with self.torch.no_grad(), _hooked(block, hook):
            for start in range(0, len(self.x), self.batch_size):
                batch = self.x[start:start + self.batch_size].to(self.device)
                out.append(self.model(batch).double().cpu().numpy())
        return np.concatenate(out)


class _Capture:
    """Sums the block's output at the tokens over the images (for their mean)."""

    def __init__(self, tokens):
        self.tokens, self.sum = tokens, None

    def __call__(self, module, args, out):
        states = out[:, 0] if self.tokens == "cls" else out
        batch_sum = states.double().sum(0)
        self.sum = batch_sum if self.sum is None else self.sum + batch_sum
        return out


class _Replace:
    """Replaces the block's output at the tokens by `replacement(states)`."""

    def __init__(self, tokens, replacement):
        self.tokens, self.replacement = tokens, replacement

    def __call__(self, module, args, out):
        out = out.clone()
        if self.tokens == "cls":
            out[:, 0] = self.replacement(out[:, 0])
        else:
            out[:] = self.replacement(out)
        return out


@contextlib.contextmanager
def _hooked(block, hook):
    handle = block.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def _reconstruct(estimator, states):
    """The estimator's reconstruction of hidden states (any leading shape), as a tensor."""
    torch = import_optional("torch", "vision", _FEATURE)
    rows = states.reshape(-1, states.shape[-1]).float().cpu().numpy()
    run = encoded(estimator, rows)
    _, rebuilt = run.reconstruct(0, run.n_samples)
    if isinstance(estimator, Pipeline) and len(estimator) > 1:
        rebuilt = estimator[:-1].inverse_transform(rebuilt)
    rebuilt = torch.from_numpy(np.ascontiguousarray(rebuilt, dtype=np.float32))
    return rebuilt.reshape(states.shape).to(device=states.device, dtype=states.dtype)


def _cross_entropy(logits, y):
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-log_probs[np.arange(len(y)), y].mean())


def _recovered(scores):
    """``(ablated - spliced) / (ablated - original)``, NaN when the ablation changes nothing."""
    gap = scores.ablated - scores.original
    return float((scores.ablated - scores.spliced) / gap) if gap != 0 else float("nan")
