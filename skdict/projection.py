"""Read a vision transformer's hidden states in its own class-embedding space.

Implements Vilas, Schaumlöffel & Roig, "Analyzing Vision Transformers for Image
Classification in Class Embedding Space" (NeurIPS 2023): every token of every
block is sent through the model's final normalisation and classifier, which
shows how class evidence builds up over the layers.
"""

import os
from numbers import Integral

import numpy as np
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.base import _fit_context
from sklearn.utils import Bunch, check_random_state
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from ._attribution import attention_contributions, readout_gradient
from ._hooks import capture, check_sites
from ._images import images_to_tensor, timm_preprocess
from ._optional import import_optional, resolve_device
from ._timm import create_timm_model
from ._validation import check_samples

_FEATURE = "ClassEmbeddingProjector"
_TOP_MEMORIES = 5


def _check_vit(model):
    """Raise unless `model` is a timm ViT whose head can read single tokens."""
    for name in ("blocks", "patch_embed", "norm", "fc_norm", "head", "num_prefix_tokens"):
        if not hasattr(model, name):
            raise ValueError(
                f"{_FEATURE} needs a timm VisionTransformer (with blocks, norm, fc_norm "
                f"and head); got a {type(model).__name__} without {name!r}."
            )
    if getattr(model, "attn_pool", None) is not None:
        raise ValueError(
            f"{_FEATURE} cannot project single tokens through an attention-pooling "
            "head (global_pool='map'); use a model with a class token or average pooling."
        )
    if not hasattr(model.head, "weight"):
        raise ValueError(
            f"{_FEATURE} needs a linear classifier head; this model has "
            f"{type(model.head).__name__} (created with num_classes=0?)."
        )


def _resolve_layers(layers, n_blocks):
    """Selected block indices as a list of non-negative ints."""
    if layers is None:
        return list(range(n_blocks))
    raw = [layers] if isinstance(layers, Integral) else list(np.ravel(layers))
    if not raw:
        raise ValueError("layers is empty; pass None for all blocks, or block indices.")
    resolved = []
    for layer in raw:
        if not isinstance(layer, Integral) or not -n_blocks <= layer < n_blocks:
            raise ValueError(
                f"layers contains {layer}, but the model has {n_blocks} blocks: "
                f"use indices in [{-n_blocks}, {n_blocks - 1}] or None for all."
            )
        resolved.append(int(layer) % n_blocks)
    return resolved


def _check_labels(y, n_images, n_classes, name="y"):
    y = np.asarray(y)
    if y.shape != (n_images,) or y.dtype.kind not in "iu":
        raise ValueError(
            f"{name} must be an int array of shape ({n_images},) with one class index "
            f"per image, got dtype {y.dtype} and shape {y.shape}."
        )
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        raise ValueError(f"{name} must hold class indices in [0, {n_classes - 1}].")
    return y


def _ranks(logits, labels):
    """0-based rank of class ``labels`` in ``logits`` along the last axis (0 = top).

    labels broadcasts against ``logits.shape[:-1]``; ties count in the class's favour.
    """
    target = np.take_along_axis(logits, labels[..., None], axis=-1)
    return (logits > target).sum(axis=-1)


def _auc(fractions, curve):
    """Area under an accuracy curve, normalised by the range of fractions."""
    return float(np.trapezoid(curve, fractions) / (fractions[-1] - fractions[0]))


class ClassEmbeddingProjector(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Project the hidden states of a timm ViT onto its class embeddings.

    For each selected block, the hidden state of every token at `site` is
    mapped to class scores by the model's own final normalisation and
    classifier, ``head(fc_norm(norm(h)))`` (one of the two norms is the
    identity, depending on the model's pooling), token by token, with no
    pooling (Vilas, Schaumlöffel & Roig, NeurIPS 2023). At the last block, the
    CLS token's projection is exactly the model's output.

    Parameters
    ----------
    model : str, os.PathLike or torch.nn.Module, default="vit_base_patch16_224"
        A timm model name, the path of a model saved with ``torch.save(model)``,
        or a timm ``VisionTransformer`` instance.
    pretrained : bool, str or os.PathLike, default=False
        For a model name: False for random weights, True to download the hub
        weights (fails at once with advice when the hub is unreachable), or the
        path of a local checkpoint file.
    layers : int, array-like of int or None, default=None
        Blocks to read (negative indices count from the end); None for all.
    site : {"resid", "attn", "mlp"}, default="resid"
        ``"resid"``: block outputs. ``"attn"`` / ``"mlp"``: each branch's
        output as added to the residual (after LayerScale, or after
        ``norm1``/``norm2`` for post-norm blocks).
    tokens : {"cls", "prefix", "patches", "all"}, default="cls"
        Tokens returned by :meth:`project`: the class token, all prefix
        tokens (class and register tokens), the image patch tokens, or all,
        in the model's order (prefix first).
    output : {"logits", "probs", "rank"}, default="logits"
        Class logits, softmax probabilities, or the 0-based rank of the class
        ``y`` given to :meth:`project` (0 = top).
    batch_size : int, default=32
        Images per forward pass.
    device : str, default="auto"
        ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"`` (CUDA when present).

    Attributes
    ----------
    model_ : torch.nn.Module
        The model, in eval mode, on ``device_``.
    device_ : torch.device
        Where the model runs.
    classes_ : ndarray of shape (n_classes,)
        Class indices of the classifier head.
    n_layers_ : int
        Number of blocks of the model.
    layers_ : list of int
        The selected blocks, non-negative.
    num_prefix_tokens_ : int
        Class and register tokens before the patch tokens.
    grid_size_ : tuple of int
        Patch grid (rows, columns).
    input_size_ : tuple of int
        (C, H, W) the model takes.

    Examples
    --------
    >>> import numpy as np
    >>> from skdict import ClassEmbeddingProjector
    >>> from skdict.datasets import load_digits_images, make_digits_vit
    >>> images, y = load_digits_images(subset="test", return_X_y=True)
    >>> proj = ClassEmbeddingProjector(make_digits_vit(), device="cpu").fit()
    >>> proj.project(images[:3]).shape  # (images, layers, tokens, classes)
    (3, 4, 1, 10)
    >>> proj.transform(images[:3]).shape
    (3, 40)
    """

    _parameter_constraints: dict = {
        "model": [str, os.PathLike, HasMethods(["forward", "eval"])],
        "pretrained": ["boolean", str, os.PathLike],
        "layers": [Interval(Integral, None, None, closed="neither"), "array-like", None],
        "site": [StrOptions({"resid", "attn", "mlp"})],
        "tokens": [StrOptions({"cls", "prefix", "patches", "all"})],
        "output": [StrOptions({"logits", "probs", "rank"})],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "device": [str],
    }

    def __init__(
        self,
        model="vit_base_patch16_224",
        *,
        pretrained=False,
        layers=None,
        site="resid",
        tokens="cls",
        output="logits",
        batch_size=32,
        device="auto",
    ):
        self.model = model
        self.pretrained = pretrained
        self.layers = layers
        self.site = site
        self.tokens = tokens
        self.output = output
        self.batch_size = batch_size
        self.device = device

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X=None, y=None):
        """Load the model and check it can be read.

        Parameters
        ----------
        X, y : ignored
            Present for the scikit-learn API: nothing is learned.

        Returns
        -------
        self : ClassEmbeddingProjector
        """
        torch = import_optional("torch", "vision", _FEATURE)
        timm = import_optional("timm", "vision", _FEATURE)
        self.device_ = resolve_device(self.device, torch)
        model = create_timm_model(self.model, self.pretrained, _FEATURE)
        _check_vit(model)
        self.n_layers_ = len(model.blocks)
        self.layers_ = _resolve_layers(self.layers, self.n_layers_)
        check_sites(model.blocks[0], [self.site])
        if self.tokens == "cls" and getattr(model, "cls_token", None) is None:
            raise ValueError(
                "tokens='cls' but this model has no class token; use tokens='patches'."
            )
        self.model_ = model.to(self.device_)
        self.classes_ = np.arange(model.head.weight.shape[0])
        self.num_prefix_tokens_ = int(model.num_prefix_tokens)
        self.grid_size_ = tuple(int(g) for g in model.patch_embed.grid_size)
        self.input_size_ = tuple(timm_preprocess(model, timm)[1])
        return self

    # -- forward passes ---------------------------------------------------

    def _tensor(self, images):
        timm = import_optional("timm", "vision", _FEATURE)
        preprocess, input_size = timm_preprocess(self.model_, timm)
        return images_to_tensor(images, preprocess, input_size, _FEATURE)

    def _batches(self, x, sites, layers=None):
        """Yield (rows, {site: tensor (B, n_layers, n_tokens, width)}) for tensor x.

        The layers are `layers`, by default the selected ones.
        """
        torch = import_optional("torch", "vision", _FEATURE)
        layers = self.layers_ if layers is None else layers
        for start in range(0, len(x), self.batch_size):
            batch = x[start:start + self.batch_size].to(self.device_)
            with torch.no_grad(), capture(self.model_.blocks, layers, sites) as store:
                self.model_(batch)
                yield slice(start, start + len(batch)), {
                    site: torch.stack([per_layer[0] for per_layer in store[site]], dim=1)
                    for site in sites
                }

    def _to_classes(self, hidden):
        """head(fc_norm(norm(h))) on the last axis of `hidden`."""
        m = self.model_
        return m.head(m.fc_norm(m.norm(hidden)))

    def _token_slice(self, tokens):
        n_prefix = self.num_prefix_tokens_
        return {
            "cls": slice(0, 1),
            "prefix": slice(0, n_prefix),
            "patches": slice(n_prefix, None),
            "all": slice(None),
        }[tokens]

    def _logits(self, images, sites=("resid",)):
        """Class logits (N, n_selected_layers, n_tokens, n_classes) per site, numpy."""
        out = {site: [] for site in sites}
        for _, hidden in self._batches(self._tensor(images), sites):
            for site in sites:
                out[site].append(self._to_classes(hidden[site]).cpu().numpy())
        return {site: np.concatenate(parts) for site, parts in out.items()}

    # -- public API -------------------------------------------------------

    def project(self, images, y=None):
        """Class scores of every selected layer and token.

        Parameters
        ----------
        images : array-like or list
            Float arrays (N, C, H, W) already preprocessed for the model; uint8
            arrays (N, H, W, C); or a list of PIL images or file paths, which
            the model's timm data config preprocesses.
        y : array-like of shape (n_images,), default=None
            True classes; required when ``output="rank"``.

        Returns
        -------
        scores : ndarray of shape (n_images, n_selected_layers, n_tokens, n_classes)
            or (n_images, n_selected_layers, n_tokens) for ``output="rank"``
            Logits or probabilities (float32), or int ranks, with tokens
            restricted by ``tokens`` in the model's order.
        """
        check_is_fitted(self)
        logits = self._logits(images, (self.site,))[self.site][:, :, self._token_slice(self.tokens)]
        if self.output == "logits":
            return logits
        if self.output == "probs":
            shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
            return shifted / shifted.sum(axis=-1, keepdims=True)
        if y is None:
            raise ValueError("output='rank' needs the true classes: call project(images, y).")
        y = _check_labels(y, len(logits), len(self.classes_))
        return _ranks(logits, y[:, None, None])

    def transform(self, images):
        """:meth:`project` flattened to (n_images, n_features) for pipelines.

        Parameters
        ----------
        images : array-like or list
            As in :meth:`project`.

        Returns
        -------
        scores : ndarray of shape (n_images, n_selected_layers * n_tokens * n_classes)
        """
        check_is_fitted(self)
        if self.output == "rank":
            raise ValueError(
                "transform has no labels to rank; use output='logits' or 'probs', "
                "or call project(images, y)."
            )
        scores = self.project(images)
        return scores.reshape(len(scores), -1)

    @property
    def _n_features_out(self):
        n_tokens = len(range(self.num_prefix_tokens_ + np.prod(self.grid_size_))[
            self._token_slice(self.tokens)
        ])
        return len(self.layers_) * n_tokens * len(self.classes_)

    def identifiability(self, images, y):
        """How well each layer's tokens identify the true class.

        The identifiability of a token is ``r = 1 - rank / n_classes``, with
        ``rank`` the 0-based rank of the true class among its projected class
        scores (1 = the true class is on top), at ``site``.

        Parameters
        ----------
        images : array-like or list
            As in :meth:`project`.
        y : array-like of shape (n_images,)
            True class of each image.

        Returns
        -------
        result : :class:`~sklearn.utils.Bunch`
            ``cls``: (n_selected_layers,) mean r of the class token (NaN when the
            model has none); ``image_tokens``: (n_selected_layers,) mean r over
            the patch tokens of all images; ``top1_share``: (n_selected_layers,)
            share of patch tokens whose top-1 class is the true class;
            ``layers``: the block indices.
        """
        check_is_fitted(self)
        logits = self._logits(images, (self.site,))[self.site]
        y = _check_labels(y, len(logits), len(self.classes_))
        r = 1.0 - _ranks(logits, y[:, None, None]) / len(self.classes_)
        patches = r[:, :, self.num_prefix_tokens_:]
        has_cls = getattr(self.model_, "cls_token", None) is not None
        top1 = logits[:, :, self.num_prefix_tokens_:].argmax(axis=-1) == y[:, None, None]
        return Bunch(
            cls=r[:, :, 0].mean(axis=0) if has_cls else np.full(len(self.layers_), np.nan),
            image_tokens=patches.mean(axis=(0, 2)),
            top1_share=top1.mean(axis=(0, 2)),
            layers=np.array(self.layers_),
        )

    def score(self, images, y):
        """Mean class-token identifiability at the last selected layer.

        Models without a class token score the mean over patch tokens instead.

        Parameters
        ----------
        images : array-like or list
            As in :meth:`project`.
        y : array-like of shape (n_images,)
            True class of each image.

        Returns
        -------
        score : float
            In [1/n_classes, 1]; 1 when the true class is always on top.
        """
        result = self.identifiability(images, y)
        cls = result.cls[-1]
        return float(result.image_tokens[-1] if np.isnan(cls) else cls)

    def class_similarity_change(self, images, y):
        """Share of tokens whose true-class logit each branch raises.

        For the attention branch, a token counts when the true-class logit of
        the branch output (projected alone) exceeds that of the block input;
        for the MLP branch, when it exceeds that of the MLP's input (block input
        plus attention output). Tokens are restricted by ``tokens``.

        Parameters
        ----------
        images : array-like or list
            As in :meth:`project`.
        y : array-like of shape (n_images,)
            True class of each image.

        Returns
        -------
        result : :class:`~sklearn.utils.Bunch`
            ``attn`` and ``mlp``: (n_selected_layers,) change rates in [0, 1];
            ``layers``: the block indices.
        """
        check_is_fitted(self)
        check_sites(self.model_.blocks[0], ("attn", "mlp"))
        sites = ("input", "attn", "mlp")
        x = self._tensor(images)
        y = _check_labels(y, len(x), len(self.classes_))
        counts = {"attn": 0, "mlp": 0}
        tokens, n_tokens = self._token_slice(self.tokens), 0
        for rows, hidden in self._batches(x, sites):
            labels = y[rows][:, None, None]
            h_in = hidden["input"][:, :, tokens]
            h_attn = hidden["attn"][:, :, tokens]
            target = {
                name: np.take_along_axis(
                    self._to_classes(h).cpu().numpy(), labels[..., None], axis=-1
                )[..., 0]
                for name, h in (
                    ("input", h_in),
                    ("attn", h_attn),
                    ("mid", h_in + h_attn),
                    ("mlp", hidden["mlp"][:, :, tokens]),
                )
            }
            counts["attn"] = counts["attn"] + (target["attn"] > target["input"]).sum(axis=(0, 2))
            counts["mlp"] = counts["mlp"] + (target["mlp"] > target["mid"]).sum(axis=(0, 2))
            n_tokens += target["input"].shape[0] * target["input"].shape[2]
        return Bunch(
            attn=counts["attn"] / n_tokens,
            mlp=counts["mlp"] / n_tokens,
            layers=np.array(self.layers_),
        )

    def project_directions(self, V):
        """Class scores that residual-stream directions add, e.g. dictionary atoms.

        A direction v is scored by ``head(fc_norm(norm(v))) - head(fc_norm(norm(0)))``:
        the final norm and head applied to v, minus what they give for the zero
        vector (the norm's bias and the head's bias), so that only the part
        that depends on v is left. With a LayerNorm this is
        ``W (gamma * (v - mean(v)) / std(v))``, independent of the scale of v.

        Parameters
        ----------
        V : array-like of shape (n_directions, embed_dim)
            Directions in the residual stream, e.g. ``DoubleBatchKSVD.components_``.

        Returns
        -------
        scores : ndarray of shape (n_directions, n_classes)
            Class scores of each direction (float32).
        """
        check_is_fitted(self)
        torch = import_optional("torch", "vision", _FEATURE)
        width = self.model_.head.weight.shape[1]
        V = check_samples(V, "V", dtype=np.float32)
        if V.shape[1] != width:
            raise ValueError(
                f"V has {V.shape[1]} features but the model's residual stream has "
                f"{width}; pass directions of shape (n_directions, {width})."
            )
        weight = self.model_.head.weight
        V = torch.from_numpy(V).to(device=weight.device, dtype=weight.dtype)
        with torch.no_grad():
            scores = self._to_classes(V) - self._to_classes(torch.zeros_like(V[:1]))
        return scores.cpu().numpy()

    def value_agreement(self, images=None, y=None):
        """Read each MLP as a key-value memory in class space.

        The value vectors of a block's MLP are the columns of ``fc2.weight``
        (one per hidden unit); their class scores come from
        :meth:`project_directions`. A token's keys are the MLP's pre-activation
        ``fc1`` outputs.

        Parameters
        ----------
        images : array-like or list, default=None
            Images for the key-value agreement rate (as in :meth:`project`).
        y : array-like of shape (n_images,), default=None
            Their true classes.

        Returns
        -------
        result : :class:`~sklearn.utils.Bunch`
            ``value_scores``: (n_selected_layers, n_values, n_classes) class
            scores of the value vectors; ``agreement``: (n_selected_layers,
            n_classes) class-value agreement, the largest cosine between the
            class embedding (row of ``head.weight``) and any value vector;
            ``top_memories``: (n_selected_layers, n_classes, 5) the values that
            score each class highest; ``key_value_agreement``:
            (n_selected_layers,) share of tokens (restricted by ``tokens``)
            whose 5 most activated keys include one of the true class's top 5
            memories, or None without images; ``layers``: the block indices.
        """
        check_is_fitted(self)
        check_sites(self.model_.blocks[0], ("keys",))
        embedding = self.model_.head.weight.detach().cpu().numpy()
        embedding = embedding / np.linalg.norm(embedding, axis=1, keepdims=True)
        value_scores, agreement = [], []
        for layer in self.layers_:
            values = self.model_.blocks[layer].mlp.fc2.weight.detach().cpu().numpy().T
            value_scores.append(self.project_directions(values))
            unit = values / np.maximum(np.linalg.norm(values, axis=1, keepdims=True), 1e-12)
            agreement.append((embedding @ unit.T).max(axis=1))
        value_scores = np.stack(value_scores)
        top = np.argsort(-value_scores, axis=1)[:, :_TOP_MEMORIES].transpose(0, 2, 1)
        result = Bunch(
            value_scores=value_scores,
            agreement=np.stack(agreement),
            top_memories=top,
            key_value_agreement=None,
            layers=np.array(self.layers_),
        )
        if images is not None:
            result.key_value_agreement = self._key_value_agreement(images, y, top)
        return result

    def _key_value_agreement(self, images, y, top_memories):
        torch = import_optional("torch", "vision", _FEATURE)
        x = self._tensor(images)
        if y is None:
            raise ValueError("value_agreement needs y with images: the true classes.")
        y = _check_labels(y, len(x), len(self.classes_))
        tokens, hits, n_tokens = self._token_slice(self.tokens), 0, 0
        for rows, hidden in self._batches(x, ("keys",)):
            keys = hidden["keys"][:, :, tokens]
            top_keys = torch.topk(keys, _TOP_MEMORIES, dim=-1).indices.cpu().numpy()
            # memories of each image's true class: (B, layers, 5)
            memories = top_memories[:, y[rows]].transpose(1, 0, 2)
            match = top_keys[..., :, None] == memories[:, :, None, None, :]
            hits = hits + match.any(axis=(-1, -2)).sum(axis=(0, 2))
            n_tokens += keys.shape[0] * keys.shape[2]
        return hits / n_tokens

    def _importance(self, x, y):
        """Per-patch evidence (N, n_patches) for classes y (None: the prediction)."""
        torch = import_optional("torch", "vision", _FEATURE)
        m = self.model_
        if not hasattr(m.blocks[0], "ls1"):
            raise ValueError(
                "explain needs pre-norm timm Blocks (with ls1); this model uses "
                f"{type(m.blocks[0]).__name__}."
            )
        n_prefix = self.num_prefix_tokens_
        has_cls = getattr(m, "cls_token", None) is not None
        query = slice(0, 1) if has_cls else slice(n_prefix, None)
        maps = []
        for rows, hidden in self._batches(x, ("attn_in", "resid"), range(self.n_layers_)):
            final = hidden["resid"][:, -1]
            pooled = final[:, 0] if has_cls else final[:, n_prefix:].mean(dim=1)
            if y is None:
                target = m.head(m.fc_norm(m.norm(pooled))).argmax(dim=-1)
            else:
                target = torch.from_numpy(y[rows]).to(pooled.device)
            grad = readout_gradient(m, pooled, target, torch)
            evidence = 0
            for layer in self.layers_:
                contributions = m.blocks[layer].ls1(
                    attention_contributions(
                        m.blocks[layer].attn, hidden["attn_in"][:, layer], query, torch
                    )
                )
                evidence = evidence + contributions[:, n_prefix:] @ grad[:, :, None]
            maps.append(evidence[..., 0].cpu().numpy())
        return np.concatenate(maps)

    def explain(self, images, y=None):
        """Heatmaps of the patches that carry evidence for a class.

        Rule: the evidence of patch token j for class c is what j writes,
        through the attention layers of the selected blocks, into the pooled
        token (the class token, or the mean of the patch tokens for pooled
        models), read in class-embedding space. In each block, j's term of the
        attention output at the pooled query is ``ls1(proj(A[query, j] v_j))``
        (attention weights times value vectors, per head, without the bias);
        its class-c score is its dot product with the gradient of the class-c
        logit ``head(fc_norm(norm(.)))`` at the model's final pooled state,
        i.e. the classifier linearised where the model is. The evidence sums
        these scores over the selected blocks. The patch grid is upsampled
        bilinearly to the image size. Fused attention is unaffected: the
        attention weights are recomputed from the captured inputs.

        Parameters
        ----------
        images : array-like or list
            As in :meth:`project`.
        y : array-like of shape (n_images,), default=None
            Class to explain per image; None explains the model's prediction.

        Returns
        -------
        heatmaps : ndarray of shape (n_images, H, W)
            Evidence per pixel in class-logit units (float32); positive
            patches push the class up, negative ones down.
        """
        check_is_fitted(self)
        torch = import_optional("torch", "vision", _FEATURE)
        x = self._tensor(images)
        if y is not None:
            y = _check_labels(y, len(x), len(self.classes_))
        grid = self._importance(x, y).reshape(len(x), 1, *self.grid_size_)
        heatmaps = torch.nn.functional.interpolate(
            torch.from_numpy(grid), size=self.input_size_[1:], mode="bilinear",
            align_corners=False,
        )
        return heatmaps[:, 0].numpy().astype(np.float32)

    def perturbation_test(self, images, y, *, fractions=None, random_state=None):
        """Accuracy when keeping only the most, least or randomly chosen patches.

        Patches are ranked by the evidence of :meth:`explain` for the true
        class; for each fraction, the model sees the prefix tokens and only the
        kept patch tokens (the others are removed from the sequence, positions
        kept). A good explanation keeps the accuracy high with few top patches
        (high ``auc_top``) and low with few bottom ones.

        Parameters
        ----------
        images : array-like or list
            As in :meth:`project`.
        y : array-like of shape (n_images,)
            True class of each image.
        fractions : array-like of float in (0, 1], default=None
            Shares of patches to keep, increasing; None for 0.1, 0.2, ..., 1.
        random_state : int, RandomState instance or None, default=None
            Seed of the random-order baseline.

        Returns
        -------
        result : :class:`~sklearn.utils.Bunch`
            ``fractions``; ``top``, ``bottom``, ``random``: accuracy curves;
            ``auc_top``, ``auc_bottom``, ``auc_random``: their areas, divided by
            the range of fractions.
        """
        check_is_fitted(self)
        torch = import_optional("torch", "vision", _FEATURE)
        fractions = np.linspace(0.1, 1.0, 10) if fractions is None else np.asarray(fractions, float)
        if fractions.ndim != 1 or len(fractions) < 2 or np.any(np.diff(fractions) <= 0) or (
            fractions[0] <= 0 or fractions[-1] > 1
        ):
            raise ValueError("fractions must be at least 2 increasing values in (0, 1].")
        x = self._tensor(images)
        y = _check_labels(y, len(x), len(self.classes_))
        order = np.argsort(-self._importance(x, y), axis=1, kind="stable")
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
                curve.append(np.mean(self._predict_kept(x, keep) == y))
            result[name] = np.array(curve)
            result[f"auc_{name}"] = _auc(fractions, result[name])
        return result

    def _predict_kept(self, x, keep):
        """Predicted classes when only patches `keep` (N, n_keep) enter the blocks."""
        torch = import_optional("torch", "vision", _FEATURE)
        m = self.model_
        predictions = []
        for start in range(0, len(x), self.batch_size):
            batch = x[start:start + self.batch_size].to(self.device_)
            index = keep[start:start + self.batch_size].to(self.device_)
            with torch.no_grad():
                h = m._pos_embed(m.patch_embed(batch))
                prefix, patches = h[:, : self.num_prefix_tokens_], h[:, self.num_prefix_tokens_:]
                kept = torch.gather(
                    patches, 1, index[..., None].expand(-1, -1, patches.shape[-1])
                )
                h = m.norm(m.blocks(m.norm_pre(torch.cat([prefix, kept], dim=1))))
                predictions.append(m.forward_head(h).argmax(-1).cpu().numpy())
        return np.concatenate(predictions)
