"""Build a timm model from a name, an instance or a saved file."""

import os
from pathlib import Path

from ._hub import hub_download
from ._optional import import_optional


def _is_path(value):
    return isinstance(value, os.PathLike) or (
        isinstance(value, str) and (os.sep in value or Path(value).suffix in {".pt", ".pth"})
    )


def _check_file(path, name):
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{name}={str(path)!r} is not an existing file; pass the path of a saved "
            "checkpoint (state dict) or of a model saved with torch.save(model)."
        )
    return path


def _load_saved_model(path, torch, nn):
    """A model pickled whole with ``torch.save(model)``."""
    model = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(model, nn.Module):
        raise ValueError(
            f"model={str(path)!r} holds a {type(model).__name__}, not a torch module; "
            "to load a state dict, pass the timm model name as model and the file as "
            "pretrained."
        )
    return model


def create_timm_model(model, pretrained, feature, **kwargs):
    """Return a timm model in eval mode, on the CPU.

    Parameters
    ----------
    model : str, os.PathLike or torch.nn.Module
        A timm model name, the path of a model saved with ``torch.save(model)``,
        or a model instance (used as is).
    pretrained : bool, str or os.PathLike
        False for random weights, True for the hub weights of the name, or the
        path of a local checkpoint loaded through timm's
        ``pretrained_cfg_overlay=dict(file=...)``.
    feature : str
        The skdict class asking, for error messages.
    **kwargs
        Passed to :func:`timm.create_model` (e.g. ``num_classes``).
    """
    torch = import_optional("torch", "vision", feature)
    timm = import_optional("timm", "vision", feature)
    if isinstance(model, torch.nn.Module):
        return model.eval()
    if _is_path(model):
        return _load_saved_model(_check_file(model, "model"), torch, torch.nn).eval()
    if not isinstance(model, str):
        raise TypeError(
            f"model must be a timm model name, a file path or a torch module, got "
            f"{type(model).__name__}."
        )
    if not timm.is_model(model):
        close = timm.list_models(f"*{model.split('.')[0][:12]}*")[:5]
        raise ValueError(
            f"model={model!r} is not a timm model name. "
            + (f"Similar names: {', '.join(close)}. " if close else "")
            + "List them with timm.list_models('*vit*')."
        )
    if pretrained is False:
        return timm.create_model(model, pretrained=False, **kwargs).eval()
    if pretrained is True:
        with hub_download(f"timm model {model!r}", "pretrained='/path/to/checkpoint'"):
            return timm.create_model(model, pretrained=True, **kwargs).eval()
    path = _check_file(pretrained, "pretrained")
    overlay = {"file": str(path)}
    if path.suffix == ".safetensors":
        overlay["custom_load"] = False
    return timm.create_model(
        model, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs
    ).eval()
