"""Read a vision transformer's hidden states in its own class-embedding space.

Implements Vilas, Schaumlöffel & Roig, "Analyzing Vision Transformers for Image
Classification in Class Embedding Space" (NeurIPS 2023): every token of every
block is sent through the model's final normalisation and classifier, which
shows how class evidence builds up over the layers.

Identifiability, the paper's main measure, is a method (it is also the
:meth:`~ClassEmbeddingProjector.score`); the paper's other analyses are
functions of a fitted projector in :mod:`skdict.inspection`.
"""

import os
from numbers import Integral

import numpy as np
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.base import _fit_context
from sklearn.utils import deprecated
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from . import inspection
from ._optional import import_optional, resolve_device
from ._validation import check_samples
from ._vit import class_analyses as analyses
from ._vit.class_analyses import check_labels as _check_labels
from ._vit.hooks import LAYER_SCALE, block_states, check_sites
from ._vit.images import timm_images_to_tensor, timm_preprocess
from ._vit.timm_models import check_timm_weights, create_timm_model

_FEATURE = "ClassEmbeddingProjector"


def _moved(name):
    """The FutureWarning text of a method that moved to skdict.inspection."""
    return (
        f"ClassEmbeddingProjector.{name} is deprecated in 0.1 and will be removed in 0.2; "
        f"use skdict.inspection.{name}(projector, ...) instead."
    )


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
        A timm model name or a timm ``VisionTransformer`` instance. Weights
        from a file go in `pretrained`; a whole model pickled with
        ``torch.save(model)`` is refused, as unpickling it could run code.
    pretrained : bool, str, os.PathLike or None, default=None
        The weights of a model name: True to download the hub weights (fails
        at once with advice when the hub is unreachable), the path of a local
        checkpoint file, or ``"random"`` for random weights chosen on purpose
        (a baseline). None and False are refused by `fit` for a model name, so
        that an untrained network is never projected by default. Leave it None
        when `model` is a module, which keeps its own weights.
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
    layer_scale : {"after", "before"}, default="after"
        Where the ``"attn"`` / ``"mlp"`` sites are read in blocks with
        LayerScale (``init_values`` models): ``"after"``, as the branch is
        added to the residual; ``"before"``, at the ``attn.proj`` /
        ``mlp.fc2`` outputs, where the paper's code reads them. Also decides
        whether :func:`skdict.inspection.value_agreement` scales value
        vectors by LayerScale. Identical for models without LayerScale.
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
        "pretrained": ["boolean", str, os.PathLike, None],
        "layers": [Interval(Integral, None, None, closed="neither"), "array-like", None],
        "site": [StrOptions({"resid", "attn", "mlp"})],
        "tokens": [StrOptions({"cls", "prefix", "patches", "all"})],
        "layer_scale": [StrOptions(set(LAYER_SCALE))],
        "output": [StrOptions({"logits", "probs", "rank"})],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "device": [str],
    }

    def __init__(
        self,
        model="vit_base_patch16_224",
        *,
        pretrained=None,
        layers=None,
        site="resid",
        tokens="cls",
        layer_scale="after",
        output="logits",
        batch_size=32,
        device="auto",
    ):
        self.model = model
        self.pretrained = pretrained
        self.layers = layers
        self.site = site
        self.tokens = tokens
        self.layer_scale = layer_scale
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
        self.device_ = resolve_device(self.device, torch)
        check_timm_weights(self.model, self.pretrained, torch)
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
        self.input_size_ = tuple(timm_preprocess(model, _FEATURE)[1])
        return self

    # -- forward passes ---------------------------------------------------

    def _tensor(self, images):
        return timm_images_to_tensor(images, self.model_, _FEATURE)

    def _batches(self, x, sites, layers=None, intervene=None):
        """Yield (rows, {site: tensor (B, n_layers, n_tokens, width)}) for tensor x.

        The layers are `layers`, by default the selected ones; `intervene`
        changes the forward pass of each batch (see ``hooks.block_states``).
        """
        layers = self.layers_ if layers is None else layers
        return block_states(self.model_, x, layers, sites, self.layer_scale,
                            self.batch_size, self.device_, _FEATURE, intervene)

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
        logits = self._logits(images, (self.site,))[self.site]
        logits = logits[:, :, self._token_slice(self.tokens)]
        if self.output == "logits":
            return logits
        if self.output == "probs":
            shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
            return shifted / shifted.sum(axis=-1, keepdims=True)
        if y is None:
            raise ValueError("output='rank' needs the true classes: call project(images, y).")
        y = _check_labels(y, len(logits), len(self.classes_))
        return analyses.ranks(logits, y[:, None, None])

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

    def identifiability(self, images, y, *, baseline=None):
        """How well each layer's tokens identify the true class.

        The identifiability of a token is ``r = 1 - rank / n_classes``, with
        ``rank`` the 0-based rank of the true class among its projected class
        scores at ``site`` (1 = the true class is on top). Ties count against
        the true class: ``rank`` is the number of other classes scoring at
        least as high, so a class must win strictly to be on top.

        Parameters
        ----------
        images : array-like or list
            As in :meth:`project`.
        y : array-like of shape (n_images,)
            True class of each image.
        baseline : ClassEmbeddingProjector, default=None
            The same architecture with random weights (e.g.
            ``ClassEmbeddingProjector(make_digits_vit())``), fitted or not. When
            given, its curves and one-sided Wilcoxon signed-rank p-values
            (trained > baseline, paired by token, per layer) are returned too.

        Returns
        -------
        result : :class:`~sklearn.utils.Bunch`
            ``cls``: (n_selected_layers,) mean r of the class token (NaN when the
            model has none); ``image_tokens``: (n_selected_layers,) mean r over
            the patch tokens of all images; ``top1_share``: (n_selected_layers,)
            share of patch tokens whose true class is strictly on top;
            ``top1_image_share``: (n_selected_layers,) share of images with at
            least one such patch token (the authors' ``print_identifiability``);
            ``layers``: the block indices. With ``baseline``: ``baseline``
            (the same curves for the baseline) and ``pvalue``, one p-value per
            layer for each group of tokens: ``cls``, ``image_tokens``, and
            ``all_tokens``, the class token and the patch tokens pooled (the
            authors' one test per block, in ``plot_identifiability_evolution``).
        """
        check_is_fitted(self)
        return analyses.identifiability(self, images, y, baseline=baseline)

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

    # The analyses below moved to skdict.inspection (functions taking a fitted
    # projector, as sklearn.inspection does); the methods stay for one release.

    @deprecated(_moved("class_similarity_change"))
    def class_similarity_change(self, images, y, *, reference="block_input", baseline=None):
        """Deprecated: use :func:`skdict.inspection.class_similarity_change`."""
        return inspection.class_similarity_change(
            self, images, y, reference=reference, baseline=baseline
        )

    @deprecated(_moved("value_agreement"))
    def value_agreement(self, images=None, y=None, *, kind="mlp", ranking="raw",
                        average="class", baseline=None):
        """Deprecated: use :func:`skdict.inspection.value_agreement`."""
        return inspection.value_agreement(
            self, images, y, kind=kind, ranking=ranking, average=average, baseline=baseline
        )

    @deprecated(_moved("linear_probe"))
    def linear_probe(self, images, y, *, test_size=0.25, C=1.0, random_state=0):
        """Deprecated: use :func:`skdict.inspection.linear_probe`."""
        return inspection.linear_probe(
            self, images, y, test_size=test_size, C=C, random_state=random_state
        )

    @deprecated(_moved("explain"))
    def explain(self, images, y=None):
        """Deprecated: use :func:`skdict.inspection.explain`."""
        return inspection.explain(self, images, y)

    @deprecated(_moved("perturbation_test"))
    def perturbation_test(self, images, y, *, fractions=None, random_state=None):
        """Deprecated: use :func:`skdict.inspection.perturbation_test`."""
        return inspection.perturbation_test(
            self, images, y, fractions=fractions, random_state=random_state
        )
