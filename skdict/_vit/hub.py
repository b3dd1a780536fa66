"""Offline-safe access to the Hugging Face hub for pretrained weights.

timm and open_clip download weights through ``huggingface_hub``, which retries
for a long time when the hub is unreachable. When a quick probe finds no route
to the hub, downloads are switched to offline mode so that weights already in
the local cache still load and anything else fails at once with a message that
says how to pass a local file instead.
"""

import contextlib
import socket
from unittest import mock
from urllib.parse import urlparse

from .._optional import import_optional


def hub_reachable(timeout=2.0):
    """Whether a TCP connection to the hub (or its HF_ENDPOINT mirror) opens in time."""
    constants = import_optional("huggingface_hub.constants", "vision", "pretrained weights")
    endpoint = urlparse(constants.ENDPOINT)
    port = endpoint.port or (80 if endpoint.scheme == "http" else 443)
    try:
        with socket.create_connection((endpoint.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def hub_download(what, local_hint):
    """Run a weight download, failing fast with advice when the hub is offline.

    Parameters
    ----------
    what : str
        The weights being fetched, for the message, e.g. ``"timm model 'vit_tiny'"``.
    local_hint : str
        How to pass a local checkpoint instead, e.g. ``"pretrained='/path/to/file'"``.
    """
    constants = import_optional("huggingface_hub.constants", "vision", "pretrained weights")
    online = hub_reachable()
    patch = contextlib.nullcontext() if online else mock.patch.object(
        constants, "HF_HUB_OFFLINE", True
    )
    try:
        with patch:
            yield
    except (OSError, RuntimeError) as exc:
        reason = "the hub is unreachable from this machine" if not online else str(exc)
        raise RuntimeError(
            f"Could not load the pretrained weights of {what}: {reason} and they are "
            f"not in the local cache. Download the checkpoint file elsewhere and pass "
            f"it as {local_hint}."
        ) from exc
