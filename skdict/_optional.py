"""Lazy imports of optional dependencies, and torch device selection.

torch, timm and open_clip are extras: importing skdict never imports them, and
using a feature that needs one without it installed raises an ImportError that
names the extra to install.
"""

import importlib


def import_optional(module, extra, feature):
    """Import `module`, or explain which skdict extra provides it.

    Parameters
    ----------
    module : str
        Module to import, e.g. ``"torch"``.
    extra : str
        The skdict extra that installs it, e.g. ``"torch"`` or ``"vision"``.
    feature : str
        What needs it, for the message, e.g. ``"SparseAutoencoder"``.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"{feature} needs the optional dependency {module!r}, which is not "
            f"installed. Install it with: pip install 'skdict[{extra}]'"
        ) from exc


def resolve_device(device, torch):
    """Turn ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` into a torch.device.

    ``"auto"`` picks CUDA when it is available. Asking for CUDA on a machine
    without it raises a ValueError instead of failing later inside torch.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(
            f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}."
        ) from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device={device!r} but torch finds no CUDA GPU on this machine; use "
            "device='cpu', or device='auto' to use a GPU only when there is one."
        )
    return resolved
