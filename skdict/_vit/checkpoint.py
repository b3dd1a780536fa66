"""Refuse weight files whose loading would run code.

A ``.pt``/``.pth``/``.bin`` checkpoint is a pickle: ``torch.load`` with
``weights_only=False`` runs whatever the file asks for. Before timm or open_clip
read a local checkpoint (each with its own conversions of third-party layouts,
and, depending on their version, their own default for ``weights_only``), the
file is opened once with ``torch.load(weights_only=True)``, which accepts
tensors and plain containers only. ``.safetensors`` and numpy ``.npz`` files
hold no code and are passed through.
"""

import pickle
from pathlib import Path

_NO_CODE_SUFFIXES = {".safetensors", ".npz", ".npy"}


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
    except (RuntimeError, EOFError) as exc:
        raise ValueError(f"{name}={str(path)!r} is not a torch checkpoint ({exc}).") from exc
