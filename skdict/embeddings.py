"""Embed images (and texts) with vision transformers for dictionary learning.

:class:`TimmEmbedder` reads the residual stream of any block of a timm ViT;
:class:`CLIPEmbedder` gives the joint image-text embeddings of an open_clip
model, whose text side names dictionary atoms through
:class:`~skdict.ConceptBank`. Neither uses random weights unless asked to with
``pretrained="random"``: embeddings of an untrained network look like any
others but mean nothing.
"""

import os
from numbers import Integral
from pathlib import Path

from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.base import _fit_context
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from ._optional import import_optional, resolve_device
from ._vit.checkpoint import check_weights_file, no_weights_error, reading_weights
from ._vit.hooks import capture
from ._vit.hub import hub_download
from ._vit.images import images_to_tensor, timm_images_to_tensor
from ._vit.timm_models import check_timm_weights, create_timm_model


class _BaseEmbedder(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Batching and image conversion shared by the embedders."""

    _feature = "embedder"

    def _embed_batches(self, x, embed):
        torch = import_optional("torch", "vision", self._feature)
        parts = []
        with torch.no_grad():
            for start in range(0, len(x), self.batch_size):
                parts.append(embed(x[start:start + self.batch_size].to(self.device_)))
        return torch.cat(parts).float().cpu().numpy()

    @property
    def _n_features_out(self):
        return self.n_features_out_

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.requires_fit = True
        return tags


class TimmEmbedder(_BaseEmbedder):
    """Residual-stream embeddings of images from one block of a timm ViT.

    Parameters
    ----------
    model : str or torch.nn.Module, default="vit_base_patch16_224"
        A timm model name or a timm ViT instance. (A file holding a whole
        pickled model is refused, as loading it would run code from the file;
        pass its weights as `pretrained`.)
    layer : int, default=-1
        Block whose output is read (negative counts from the end).
    token : {"cls", "mean", "all"}, default="cls"
        The class token, the mean over patch tokens, or every token as its
        own row (n_images * n_tokens rows, image by image, prefix tokens
        first).
    pretrained : bool, str, os.PathLike or None, default=None
        The weights of a model name: True for the hub weights, the path of a
        local checkpoint file (a state dict or ``.safetensors``; checked to
        load with ``torch.load(weights_only=True)``, and to fit the
        architecture), or ``"random"`` for random weights chosen on purpose
        (e.g. as a baseline; a file named ``random`` is ``"./random"``). With
        a model name, None and False are refused by `fit`, so that an
        untrained network is never used by default. Leave it None when
        `model` is a module, which keeps its own weights.
    batch_size : int, default=32
        Images per forward pass.
    device : str, default="auto"
        ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``.

    Attributes
    ----------
    model_ : torch.nn.Module
        The model in eval mode on ``device_``.
    device_ : torch.device
        Where it runs.
    layer_ : int
        The block read, non-negative.
    n_features_out_ : int
        Embedding width.

    Examples
    --------
    >>> from skdict import TimmEmbedder
    >>> from skdict.datasets import load_digits_images, make_digits_vit
    >>> images, _ = load_digits_images(subset="test", return_X_y=True)
    >>> embedder = TimmEmbedder(make_digits_vit(), layer=2, device="cpu")
    >>> embedder.fit_transform(images[:5]).shape
    (5, 64)
    """

    _feature = "TimmEmbedder"

    _parameter_constraints: dict = {
        "model": [str, os.PathLike, HasMethods(["forward", "eval"])],
        "layer": [Integral],
        "token": [StrOptions({"cls", "mean", "all"})],
        "pretrained": ["boolean", str, os.PathLike, None],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "device": [str],
    }

    def __init__(
        self,
        model="vit_base_patch16_224",
        *,
        layer=-1,
        token="cls",
        pretrained=None,
        batch_size=32,
        device="auto",
    ):
        self.model = model
        self.layer = layer
        self.token = token
        self.pretrained = pretrained
        self.batch_size = batch_size
        self.device = device

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X=None, y=None):
        """Load the model.

        Parameters
        ----------
        X, y : ignored
            Present for the scikit-learn API.

        Returns
        -------
        self : TimmEmbedder
        """
        torch = import_optional("torch", "vision", self._feature)
        self.device_ = resolve_device(self.device, torch)
        check_timm_weights(self.model, self.pretrained, torch)
        model = create_timm_model(self.model, self.pretrained, self._feature)
        blocks = getattr(model, "blocks", None)
        if blocks is None:
            raise ValueError(
                f"TimmEmbedder needs a timm ViT with .blocks; got {type(model).__name__}."
            )
        if not -len(blocks) <= self.layer < len(blocks):
            raise ValueError(
                f"layer={self.layer} but the model has {len(blocks)} blocks; use an "
                f"index in [{-len(blocks)}, {len(blocks) - 1}]."
            )
        if self.token == "cls" and getattr(model, "cls_token", None) is None:
            raise ValueError("token='cls' but this model has no class token; use token='mean'.")
        self.layer_ = self.layer % len(blocks)
        self.model_ = model.to(self.device_)
        self.n_features_out_ = int(model.embed_dim)
        return self

    def transform(self, images):
        """Embed images.

        Parameters
        ----------
        images : array-like or list
            Float arrays (N, C, H, W) already preprocessed; uint8 arrays
            (N, H, W, C); or a list of PIL images or file paths, preprocessed
            with the model's timm data config.

        Returns
        -------
        embeddings : ndarray of shape (n_images, width), or (n_images * n_tokens, width)
            for ``token="all"``; float32.
        """
        check_is_fitted(self)
        x = timm_images_to_tensor(images, self.model_, self._feature)
        n_prefix = self.model_.num_prefix_tokens

        def embed(batch):
            with capture(self.model_.blocks, [self.layer_], ("resid",)) as store:
                self.model_(batch)
            hidden = store["resid"][0][0]
            if self.token == "cls":
                return hidden[:, 0]
            if self.token == "mean":
                return hidden[:, n_prefix:].mean(dim=1)
            return hidden.reshape(-1, hidden.shape[-1])

        return self._embed_batches(x, embed)


def _open_clip_source(model, pretrained, open_clip):
    """Check the open_clip name and weights; return 'random', 'file' or 'tag'."""
    if model not in open_clip.list_models():
        raise ValueError(
            f"model={model!r} is not an open_clip model name; see "
            "open_clip.list_models() (e.g. 'ViT-B-32')."
        )
    if pretrained is None:
        raise no_weights_error(model, "an open_clip tag or a checkpoint path")
    if pretrained == "random":
        return "random"
    path = Path(pretrained)
    if path.is_file():
        return "file"
    tags = open_clip.list_pretrained_tags_by_model(model)
    if str(pretrained) in tags:
        return "tag"
    raise FileNotFoundError(
        f"pretrained={str(pretrained)!r} is neither an existing checkpoint file nor a "
        f"tag of {model!r} (tags: {', '.join(tags) or 'none'})."
    )


class CLIPEmbedder(_BaseEmbedder):
    """Image and text embeddings of an open_clip CLIP model.

    Parameters
    ----------
    model : str, default="ViT-B-32"
        An open_clip model name (``open_clip.list_models()``).
    pretrained : str, os.PathLike or None, default=None
        An open_clip tag such as ``"laion2b_s34b_b79k"`` (downloaded from the
        hub; fails at once with advice when it is unreachable); the path of a
        local checkpoint (a state dict or ``.safetensors``), loaded strictly
        (a pickle that needs more than ``torch.load(weights_only=True)`` is
        refused, as it could run code; a file of another architecture, or no
        checkpoint at all, raises one ValueError); or ``"random"`` for random
        weights chosen on purpose (a file named ``random`` is ``"./random"``).
        None, the default, is refused by `fit`: a random CLIP's embeddings,
        and the atom names drawn from them, mean nothing. With a file, the
        tag's preprocessing and QuickGELU settings are not applied: use the
        ``-quickgelu`` model names for OpenAI weights.
    normalize : bool, default=True
        Return unit-norm embeddings, as CLIP compares them by cosine.
    batch_size : int, default=32
        Images or texts per forward pass.
    device : str, default="auto"
        ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``.

    Attributes
    ----------
    model_ : open_clip.CLIP
        The model in eval mode on ``device_``.
    preprocess_ : callable
        The model's eval transform for PIL images.
    tokenizer_ : callable
        open_clip's tokenizer for the model (works offline).
    device_ : torch.device
        Where it runs.
    n_features_out_ : int
        Width of the joint embedding space.

    Examples
    --------
    Weights are always chosen: a checkpoint file, a tag, or ``"random"``.

    >>> from skdict import CLIPEmbedder
    >>> CLIPEmbedder("ViT-B-32").fit()
    Traceback (most recent call last):
    ...
    ValueError: model='ViT-B-32' was given no weights: set pretrained to an open_clip tag ...
    >>> clip = CLIPEmbedder("ViT-B-32", pretrained="/path/to/open_clip_model.safetensors")
    """

    _feature = "CLIPEmbedder"

    _parameter_constraints: dict = {
        "model": [str],
        "pretrained": [str, os.PathLike, None],
        "normalize": ["boolean"],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "device": [str],
    }

    def __init__(
        self, model="ViT-B-32", *, pretrained=None, normalize=True, batch_size=32, device="auto"
    ):
        self.model = model
        self.pretrained = pretrained
        self.normalize = normalize
        self.batch_size = batch_size
        self.device = device

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X=None, y=None):
        """Load the model, its preprocessing and its tokenizer.

        Parameters
        ----------
        X, y : ignored
            Present for the scikit-learn API.

        Returns
        -------
        self : CLIPEmbedder
        """
        torch = import_optional("torch", "vision", self._feature)
        open_clip = import_optional("open_clip", "vision", self._feature)
        self.device_ = resolve_device(self.device, torch)
        source = _open_clip_source(self.model, self.pretrained, open_clip)
        if source == "tag":
            with hub_download(
                f"open_clip model {self.model!r} ({self.pretrained})",
                "pretrained='/path/to/open_clip_model.safetensors'",
            ):
                model, _, preprocess = open_clip.create_model_and_transforms(
                    self.model, pretrained=self.pretrained
                )
        elif source == "file":
            check_weights_file(self.pretrained, "pretrained", torch)
            with reading_weights(self.pretrained, "pretrained", self.model):
                model, _, preprocess = open_clip.create_model_and_transforms(
                    self.model, pretrained=str(self.pretrained)
                )
        else:
            model, _, preprocess = open_clip.create_model_and_transforms(
                self.model, pretrained=None
            )
        self.model_ = model.eval().to(self.device_)
        self.preprocess_ = preprocess
        self.tokenizer_ = open_clip.get_tokenizer(self.model)
        self.n_features_out_ = int(model.text_projection.shape[1])
        return self

    def _finish(self, embeddings):
        if self.normalize:
            embeddings = embeddings / embeddings.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return embeddings

    def transform(self, images):
        """Embed images.

        Parameters
        ----------
        images : array-like or list
            Float arrays (N, 3, H, W) already preprocessed; uint8 arrays
            (N, H, W, C); or a list of PIL images or file paths, preprocessed
            with the model's own transform.

        Returns
        -------
        embeddings : ndarray of shape (n_images, n_features_out_)
            float32, unit-norm rows when ``normalize=True``.
        """
        check_is_fitted(self)
        size = self.model_.visual.image_size
        size = (size, size) if isinstance(size, Integral) else tuple(size)
        x = images_to_tensor(images, self.preprocess_, (3, *size), self._feature)
        return self._embed_batches(x, lambda b: self._finish(self.model_.encode_image(b)))

    def encode_text(self, texts):
        """Embed texts, e.g. concept names or prompts.

        Parameters
        ----------
        texts : str or list of str
            The texts.

        Returns
        -------
        embeddings : ndarray of shape (n_texts, n_features_out_)
            float32, unit-norm rows when ``normalize=True``.
        """
        check_is_fitted(self)
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts or not all(isinstance(t, str) for t in texts):
            raise ValueError("texts must be a non-empty list of strings.")
        tokens = self.tokenizer_(texts)
        return self._embed_batches(tokens, lambda b: self._finish(self.model_.encode_text(b)))
