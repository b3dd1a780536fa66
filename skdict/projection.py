"""Read a vision transformer's hidden states in its own class-embedding space.

Implements Vilas, Schaumlöffel & Roig, "Analyzing Vision Transformers for Image
Classification in Class Embedding Space" (NeurIPS 2023): every token of every
block is sent through the model's final normalisation and classifier, which
shows how class evidence builds up over the layers.

The paper's analyses (identifiability, class-similarity change, key-value
memories, linear probes, with random-weights baselines) are functions of a
fitted projector in ``_class_analyses``; the methods here wrap them.
"""

import os
from numbers import Integral

import numpy as np
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.base import _fit_context
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from . import _class_analyses as analyses
from . import _attribution
from ._class_analyses import check_labels as _check_labels
from ._hooks import LAYER_SCALE, capture, check_sites
from ._images import images_to_tensor, timm_preprocess
from ._optional import import_optional, resolve_device
from ._timm import create_timm_model
from ._validation import check_samples

_FEATURE = "ClassEmbeddingProjector"


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
    layer_scale : {"after", "before"}, default="after"
        Where the ``"attn"`` / ``"mlp"`` sites are read in blocks with
        LayerScale (``init_values`` models): ``"after"``, as the branch is
        added to the residual; ``"before"``, at the ``attn.proj`` /
        ``mlp.fc2`` outputs, where the paper's code reads them. Also decides
        whether :meth:`value_agreement` scales value vectors by LayerScale.
        Identical for models without LayerScale.
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
        "layer_scale": [StrOptions(set(LAYER_SCALE))],
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
            with torch.no_grad(), capture(
                self.model_.blocks, layers, sites, self.layer_scale
            ) as store:
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
            ``layers``: the block indices. With ``baseline``: ``baseline``
            (the same curves for the baseline) and ``pvalue`` (``cls`` and
            ``image_tokens``, one p-value per layer).
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

    def class_similarity_change(self, images, y, *, reference="block_input", baseline=None):
        """Share of tokens whose true-class logit each branch raises.

        A token counts for a branch of block l when the true-class logit of the
        branch output, projected alone (read at ``site="attn"`` / ``"mlp"``, so
        before or after LayerScale as ``layer_scale`` says), exceeds that of a
        reference state of the same token:

        - attention branch: the block input;
        - MLP branch: the block input (``reference="block_input"``, as the
          paper's code computes the figure) or the MLP's own input, the block
          input plus the attention output (``reference="branch_input"``, as the
          paper's text describes it).

        Block 0 is included: its input is the embedded tokens (patch embedding,
        position embedding and ``norm_pre``), which is what both branches of
        block 0 read. The paper's figure starts at the second block because its
        code stores no embedding layer; drop ``layers=0`` to match it. Tokens are
        restricted by ``tokens``.

        Parameters
        ----------
        images : array-like or list
            As in :meth:`project`.
        y : array-like of shape (n_images,)
            True class of each image.
        reference : {"block_input", "branch_input"}, default="block_input"
            What the MLP output is compared with (see above).
        baseline : ClassEmbeddingProjector, default=None
            The same architecture with random weights. When given, its rates and
            one-sided Wilcoxon p-values (trained > baseline, paired by image on
            the per-image rates, per layer) are returned too.

        Returns
        -------
        result : :class:`~sklearn.utils.Bunch`
            ``attn`` and ``mlp``: (n_selected_layers,) change rates in [0, 1];
            ``layers``: the block indices; ``reference``. With ``baseline``:
            ``baseline`` (its ``attn`` and ``mlp``) and ``pvalue`` (``attn``
            and ``mlp``, one p-value per layer).
        """
        check_is_fitted(self)
        return analyses.class_similarity_change(
            self, images, y, reference=reference, baseline=baseline
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

    def value_agreement(self, images=None, y=None, *, kind="mlp", ranking="raw",
                        average="class", baseline=None):
        """Read the MLP or attention layers as key-value memories.

        A layer's output is a sum of value vectors weighted by keys. For the
        MLP (``kind="mlp"``) the values are the columns of ``mlp.fc2.weight``
        and a token's keys are the ``fc1`` outputs (before the activation);
        for attention (``kind="attn"``) the values are the columns of
        ``attn.proj.weight`` and the keys are the attention-weighted values of
        all heads, concatenated (the input of ``attn.proj``). With
        ``layer_scale="after"`` and a LayerScale in the block, the values are
        scaled by its gamma, as they are written to the residual.

        Each class's top-5 memories are the values that score it highest. With
        ``ranking="raw"`` (the paper's definition) the scores are the raw
        product ``head.weight @ values.T`` (E W_out), so a value's length
        counts; ``ranking="normalized"`` uses :meth:`project_directions`, which
        applies the final norm and discards the value's length. Ties go to the
        lower value index.

        The key-value agreement of a token is whether its 5 largest keys include
        one of its true class's top-5 memories. ``average="class"`` (the
        paper's) averages the tokens of each class's images, then the classes
        present in ``y``; ``average="token"`` pools all tokens (equal when the
        classes have equal counts).

        Parameters
        ----------
        images : array-like or list, default=None
            Images for the key-value agreement rate (as in :meth:`project`).
        y : array-like of shape (n_images,), default=None
            Their true classes.
        kind : {"mlp", "attn"}, default="mlp"
            Which layers to read as memories.
        ranking : {"raw", "normalized"}, default="raw"
            How values are scored for each class (see above).
        average : {"class", "token"}, default="class"
            How the key-value agreement rate averages tokens (see above).
        baseline : ClassEmbeddingProjector, default=None
            The same architecture with random weights. When given, its
            agreements and one-sided Wilcoxon p-values (trained > baseline,
            paired by class, per layer) are returned too.

        Returns
        -------
        result : :class:`~sklearn.utils.Bunch`
            ``value_scores``: (n_selected_layers, n_values, n_classes) class
            scores of the value vectors (per ``ranking``); ``agreement``:
            (n_selected_layers, n_classes) class-value agreement, the largest
            cosine between the class embedding (row of ``head.weight``) and any
            value vector; ``top_memories``: (n_selected_layers, n_classes, 5)
            the values that score each class highest, best first;
            ``key_value_agreement``: (n_selected_layers,) the agreement rate
            (tokens restricted by ``tokens``), or None without images;
            ``key_value_agreement_per_class``: (n_selected_layers, n_classes),
            NaN for classes absent from ``y``, or None; ``layers``; ``kind``,
            ``ranking``, ``average``. With ``baseline``: ``baseline``
            (``agreement`` and ``key_value_agreement``) and ``pvalue`` (the
            same two keys, one p-value per layer; None without images).
        """
        check_is_fitted(self)
        return analyses.value_agreement(
            self, images, y, kind=kind, ranking=ranking, average=average, baseline=baseline
        )

    def linear_probe(self, images, y, *, test_size=0.25, C=1.0, random_state=0):
        """Per-layer linear probes next to the model's own class readout.

        The paper argues that projecting onto the class embeddings shows what
        the model itself uses, where a probe may find class information that
        the model never reads out. This fits, for each selected layer, a
        logistic regression (standardised inputs, ``C``) on the hidden states
        at ``site`` of the training images: one probe for the class token and
        one per image-token position, as in the paper's code (which uses ridge
        regression). On the held-out images, the probe's class scores and the
        class-embedding projection of the same states are turned into the same
        measures.

        Parameters
        ----------
        images : array-like or list
            As in :meth:`project`.
        y : array-like of shape (n_images,)
            True class of each image.
        test_size : float, default=0.25
            Share of images held out (stratified by class).
        C : float, default=1.0
            Inverse regularisation strength of the probes.
        random_state : int, default=0
            Seed of the split and the probes.

        Returns
        -------
        result : :class:`~sklearn.utils.Bunch`
            ``probe`` and ``projection``, each with ``cls`` and
            ``image_tokens`` (mean identifiability, as in
            :meth:`identifiability`, per layer) and ``cls_accuracy`` and
            ``image_tokens_accuracy`` (share of tokens with the true class
            strictly on top); ``layers``; ``train_index`` and ``test_index``.
        """
        check_is_fitted(self)
        return analyses.linear_probe(
            self, images, y, test_size=test_size, C=C, random_state=random_state
        )

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
        return _attribution.explain(self, images, y)

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
        return _attribution.perturbation_test(
            self, images, y, fractions=fractions, random_state=random_state
        )
