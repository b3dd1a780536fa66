"""Build a timm model from a name, an instance or a saved file."""

import os
from pathlib import Path

from .._optional import import_optional
from .checkpoint import check_weights_file, no_weights_error, reading_weights
from .hub import hub_download


def _is_path(value):
    return isinstance(value, os.PathLike) or (
        isinstance(value, str) and (os.sep in value or Path(value).suffix in {".pt", ".pth"})
    )


def _check_file(path, name):
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{name}={str(path)!r} is not an existing file; pass the path of a saved "
            "checkpoint (state dict or .safetensors) as pretrained, with the timm model "
            "name as model."
        )
    return path


def _refuse_saved_model(path):
    """A file as `model` would be a whole pickled module: loading it runs its code."""
    raise ValueError(
        f"model={str(path)!r} is a file, and a model saved whole with torch.save(model) "
        "can only be loaded by unpickling it, which runs code from the file. Pass the timm "
        "model name as model and the weights (torch.save(model.state_dict(), path) or a "
        ".safetensors file) as pretrained; or, for a file you trust, load the module "
        "yourself with torch.load(path, weights_only=False) and pass it."
    )


def check_timm_weights(model, pretrained, torch):
    """Refuse weights that would be ignored (a module keeps its own) or never chosen.

    ``pretrained=False`` is refused for a model name: it used to be the default,
    so it cannot tell a deliberate choice of random weights from an old call;
    ``"random"`` is the deliberate one.
    """
    if isinstance(model, torch.nn.Module):
        if pretrained is not None:
            raise ValueError(
                f"pretrained={pretrained!r} but model is a module, which keeps its own "
                "weights; pretrained applies to a timm model name: leave it None."
            )
    elif pretrained is False:
        raise ValueError(
            f"model={model!r} with pretrained=False: pass pretrained='random' to use "
            "random weights on purpose, or True (hub) or a checkpoint path for trained ones."
        )


def create_timm_model(model, pretrained, feature, **kwargs):
    """Return a timm model in eval mode, on the CPU.

    Parameters
    ----------
    model : str, os.PathLike or torch.nn.Module
        A timm model name or a model instance (used as is). A file path is
        refused: a module saved whole is a pickle, and loading it runs code.
    pretrained : bool, str, os.PathLike or None
        False or ``"random"`` for random weights, True for the hub weights of
        the name, or the path of a local checkpoint (a state dict or
        ``.safetensors``) loaded through timm's
        ``pretrained_cfg_overlay=dict(file=...)`` after checking that it opens
        with ``torch.load(weights_only=True)``; a checkpoint that does not fit
        the architecture raises one ValueError. None (no choice made) is
        refused for a model name, so that random weights are never used by
        default.
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
        _refuse_saved_model(_check_file(model, "model"))
    if not isinstance(model, str):
        raise TypeError(
            f"model must be a timm model name or a torch module, got "
            f"{type(model).__name__}."
        )
    if not timm.is_model(model):
        close = timm.list_models(f"*{model.split('.')[0][:12]}*")[:5]
        raise ValueError(
            f"model={model!r} is not a timm model name. "
            + (f"Similar names: {', '.join(close)}. " if close else "")
            + "List them with timm.list_models('*vit*')."
        )
    if pretrained is None:
        raise no_weights_error(model, "True (the hub weights) or a checkpoint path")
    if pretrained is False or pretrained == "random":
        return timm.create_model(model, pretrained=False, **kwargs).eval()
    if pretrained is True:
        with hub_download(f"timm model {model!r}", "pretrained='/path/to/checkpoint'"):
            return timm.create_model(model, pretrained=True, **kwargs).eval()
    path = _check_file(pretrained, "pretrained")
    check_weights_file(path, "pretrained", torch)
    overlay = {"file": str(path)}
    if path.suffix == ".safetensors":
        overlay["custom_load"] = False
    with reading_weights(path, "pretrained", model):
        return timm.create_model(
            model, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs
        ).eval()
