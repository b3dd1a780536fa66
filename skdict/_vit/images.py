"""Turn user images (arrays, PIL images or paths) into a model's input tensor."""

import os

import numpy as np

from .._optional import import_optional


def _to_pil(image, n_channels, Image):
    """One image as a PIL image with the model's number of channels."""
    if isinstance(image, (str, os.PathLike)):
        if not os.path.isfile(image):
            raise FileNotFoundError(f"images contains {str(image)!r}, which is not a file.")
        image = Image.open(image)
    elif isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim not in (2, 3):
            raise ValueError(
                "images given as arrays must be uint8 of shape (N, H, W, C) or (N, H, W), "
                f"or already preprocessed floats of shape (N, C, H, W); got an image of "
                f"dtype {image.dtype} and shape {image.shape}."
            )
        if image.ndim == 3 and image.shape[2] == 1:
            image = image[:, :, 0]
        image = Image.fromarray(image)
    elif not isinstance(image, Image.Image):
        raise TypeError(
            "images must be an array, or a list of PIL images or file paths; got an "
            f"element of type {type(image).__name__}."
        )
    return image.convert("L" if n_channels == 1 else "RGB")


def _check_float_batch(images, input_size):
    if images.ndim != 4 or tuple(images.shape[1:]) != tuple(input_size):
        c, h, w = input_size
        raise ValueError(
            f"images given as float arrays must be preprocessed batches of shape "
            f"(N, {c}, {h}, {w}) for this model, got shape {images.shape}. Pass uint8 "
            "images of shape (N, H, W, C), PIL images or paths to have them resized "
            "and normalised by the model's own preprocessing."
        )
    if not np.isfinite(images).all():
        raise ValueError("images contains NaN or infinite values.")


def images_to_tensor(images, preprocess, input_size, feature):
    """Stack `images` into a float32 tensor of shape (N, *input_size).

    Parameters
    ----------
    images : array-like or list
        Float arrays (N, C, H, W) are taken as already preprocessed and only
        checked; uint8 arrays (N, H, W[, C]), PIL images and file paths go
        through `preprocess`.
    preprocess : callable
        Maps a PIL image to a tensor (the model's eval transform).
    input_size : tuple of int
        (C, H, W) the model expects.
    feature : str
        Who asks, for the ImportError message.
    """
    torch = import_optional("torch", "vision", feature)
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().numpy()
    if isinstance(images, np.ndarray) and images.dtype.kind == "f":
        _check_float_batch(images, input_size)
        return torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    if isinstance(images, np.ndarray) and images.ndim not in (3, 4):
        raise ValueError(
            f"images as an array must have 3 or 4 dimensions, got shape {images.shape}."
        )
    if len(images) == 0:
        raise ValueError("images is empty; pass at least one image.")
    Image = import_optional("PIL.Image", "vision", feature)
    batch = torch.stack([preprocess(_to_pil(im, input_size[0], Image)) for im in images])
    if tuple(batch.shape[1:]) != tuple(input_size):
        raise ValueError(
            f"preprocessing produced images of shape {tuple(batch.shape[1:])} but the "
            f"model expects {tuple(input_size)}."
        )
    return batch.float()


def timm_preprocess(model, feature):
    """The eval transform and input size from a timm model's data config.

    `feature` names who asks, for the ImportError message.
    """
    timm = import_optional("timm", "vision", feature)
    config = timm.data.resolve_data_config({}, model=model)
    embed = getattr(model, "patch_embed", None)
    if getattr(embed, "img_size", None) is not None:
        # a model built directly (not by name) may lack a matching config
        config["input_size"] = (embed.proj.in_channels, *embed.img_size)
    return timm.data.create_transform(**config, is_training=False), config["input_size"]


def timm_images_to_tensor(images, model, feature):
    """`images` as the input tensor of timm `model`, through its own preprocessing."""
    preprocess, input_size = timm_preprocess(model, feature)
    return images_to_tensor(images, preprocess, input_size, feature)
