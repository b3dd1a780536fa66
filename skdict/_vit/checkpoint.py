"""Refuse weight files whose loading would run code, and report unreadable ones in one line.

A ``.pt``/``.pth``/``.bin`` checkpoint is a pickle: ``torch.load`` with
``weights_only=False`` runs whatever the file asks for. Before timm or open_clip
read a local checkpoint (each with its own conversions of third-party layouts,
and, depending on their version, their own default for ``weights_only``), the
file is opened once with ``torch.load(weights_only=True)``, which accepts
tensors and plain containers only. ``.safetensors`` and numpy ``.npz`` files
hold no code and are passed through.

A file that holds no code may still not be the weights of the model asked for
(another architecture, or not a checkpoint at all): :func:`reading_weights`
turns whatever the libraries' readers raise into one ValueError naming the
file and the model.
"""

import contextlib
import pickle
from pathlib import Path

_NO_CODE_SUFFIXES = {".safetensors", ".npz", ".npy"}

# A reason quoted from a library's message is cut here: state-dict errors list every key.
_REASON_CHARS = 200


def _reason(exc):
    """The gist of `exc` on one line: its first line, and the next when that one ends in ':'."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    text = f"{lines[0]} {lines[1]}" if lines[0].endswith(":") and len(lines) > 1 else lines[0]
    if len(text) > _REASON_CHARS:
        text = text[:_REASON_CHARS] + "..."
    return f"{type(exc).__name__}: {text}"


def check_weights_file(path, name, torch):
    """Raise ValueError unless `path` loads with ``torch.load(weights_only=True)``.

    Parameters
    ----------
    path : path-like
        An existing checkpoint file.
    name : str
        The parameter that named the file, for the message.
    torch : module
        The torch module.
    """
    path = Path(path)
    if path.suffix in _NO_CODE_SUFFIXES:
        return
    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ValueError(
            f"{name}={str(path)!r} is not a plain weights file: it stores Python objects "
            "that only a full unpickling (which runs code from the file) can rebuild. Save "
            "the weights alone (torch.save(model.state_dict(), path), or a .safetensors "
            "file) and pass that."
        ) from exc
    # Bytes that are not a checkpoint fail inside torch's zip or pickle reader in
    # whatever way they happen to (RuntimeError, EOFError, KeyError, ...).
    except Exception as exc:  # noqa: BLE001
        raise ValueError(
            f"{name}={str(path)!r} is not a torch checkpoint ({_reason(exc)})."
        ) from exc


def no_weights_error(model, choices):
    """The ValueError for a model name given no weights: random ones must be asked for.

    `choices` says which trained weights the caller accepts, e.g. ``"True (the
    hub weights) or a checkpoint path"``.
    """
    return ValueError(
        f"model={model!r} was given no weights: set pretrained to {choices}, or to "
        "'random' for random weights chosen on purpose (e.g. a baseline: the embeddings "
        "of an untrained network mean nothing)."
    )


@contextlib.contextmanager
def reading_weights(path, name, model):
    """Turn any failure of a library reading checkpoint `path` into one ValueError.

    Parameters
    ----------
    path : path-like
        The checkpoint file being loaded.
    name : str
        The parameter that named the file, for the message.
    model : str
        The architecture the weights are loaded into, for the message.
    """
    try:
        yield
    # timm and open_clip convert third-party layouts: a checkpoint of another
    # architecture, or a file that is no checkpoint, fails with whatever their
    # readers raise (load_state_dict's RuntimeError, KeyError, AttributeError,
    # AssertionError, safetensors' own error, ...).
    except Exception as exc:  # noqa: BLE001
        raise ValueError(
            f"{name}={str(path)!r} does not hold weights of model={model!r} "
            f"({_reason(exc)}); pass a checkpoint (a state dict or .safetensors) saved "
            "from that architecture."
        ) from exc
