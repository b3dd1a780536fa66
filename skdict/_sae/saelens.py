"""A SparseAutoencoder in SAELens' on-disk layout, and back.

SAELens keeps an SAE as a folder with ``cfg.json`` and
``sae_weights.safetensors`` holding ``W_enc`` (d_in, d_sae), ``W_dec``
(d_sae, d_in), ``b_enc`` (d_sae,), ``b_dec`` (d_in,) and, for JumpReLU,
``threshold`` (d_sae,), and encodes ``f((x - b_dec) @ W_enc + b_enc)``. A
SparseAutoencoder computes ``scale_ * f(((x - decoder_bias_) / scale_) @
encoder_weight_.T + encoder_bias_)``; for the positively homogeneous
activations used here, folding ``scale_`` into ``b_enc`` and the threshold gives
the same codes in the units of x, so the export needs no normalisation step.
BatchTopK's inference rule (a global threshold) is exported as a JumpReLU with
that threshold on every latent. safetensors holds tensors only: nothing in the
folder can run code.
"""

import json
from pathlib import Path

import numpy as np

from .._optional import import_optional
from .._persistence import ModelFileError
from .._staging import atomic_write

CONFIG = "cfg.json"
WEIGHTS = "sae_weights.safetensors"
# The activation each SAELens architecture is read as (exports go through
# Activation.saelens_architecture).
_IMPORTED_AS = {"standard": "relu", "topk": "topk", "jumprelu": "jumprelu"}


def is_saelens_folder(path):
    path = Path(path)
    return path.is_dir() and (path / CONFIG).is_file() and (path / WEIGHTS).is_file()


def save_saelens(sae, folder):
    """Write a fitted SparseAutoencoder as ``folder/cfg.json`` + ``sae_weights.safetensors``."""
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(sae, "components_")
    activation = sae._activation()
    if activation.saelens_architecture is None:
        raise ValueError(
            f"activation={sae.activation!r} has no SAELens equivalent; save it with "
            "format='skdict'."
        )
    numpy_st = import_optional("safetensors.numpy", "vision", "saving in SAELens' layout")
    scale = np.float32(sae.scale_)
    tensors = {
        "W_enc": np.ascontiguousarray(sae.encoder_weight_.T, dtype=np.float32),
        "W_dec": np.ascontiguousarray(sae.components_, dtype=np.float32),
        "b_enc": (sae.encoder_bias_ * scale).astype(np.float32),
        "b_dec": np.ascontiguousarray(sae.decoder_bias_, dtype=np.float32),
    }
    threshold = activation.saelens_threshold(sae.threshold_, sae.n_components)
    if threshold is not None:
        tensors["threshold"] = (threshold * scale).astype(np.float32)
    from .. import __version__

    config = {
        "architecture": activation.saelens_architecture,
        "d_in": int(sae.n_features_in_),
        "d_sae": int(sae.n_components),
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": {"exported_by": f"skdict {__version__}", "skdict_activation": sae.activation},
        **activation.saelens_config(),
    }
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_write(folder / WEIGHTS) as tmp:
        numpy_st.save_file(tensors, str(tmp))
    with atomic_write(folder / CONFIG) as tmp:
        tmp.write_text(json.dumps(config, indent=1))
    return folder


def _config(folder, where):
    try:
        config = json.loads((folder / CONFIG).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{where}: cannot read {CONFIG} ({exc}).") from exc
    architecture = config.get("architecture")
    if architecture not in _IMPORTED_AS:
        raise ModelFileError(
            f"{where}: SAELens architecture {architecture!r} is not supported; "
            "SparseAutoencoder reads 'standard', 'topk' and 'jumprelu'."
        )
    for key, expected in (("apply_b_dec_to_input", True), ("normalize_activations", "none"),
                          ("reshape_activations", "none")):
        if config.get(key, expected) != expected:
            raise ModelFileError(
                f"{where}: {key}={config[key]!r} is not supported (needs {expected!r}); "
                "fold it into the weights in SAELens first."
            )
    for key in ("d_in", "d_sae"):
        if not isinstance(config.get(key), int) or config[key] < 1:
            raise ModelFileError(f"{where}: {CONFIG} needs a positive int {key!r}.")
    return config


def load_saelens(folder):
    """A SparseAutoencoder from a SAELens folder (``cfg.json`` + ``sae_weights.safetensors``)."""
    from ..sae import SparseAutoencoder

    folder = Path(folder)
    where = repr(str(folder))
    config = _config(folder, where)
    numpy_st = import_optional("safetensors.numpy", "vision", "reading SAELens' layout")
    try:
        tensors = numpy_st.load_file(str(folder / WEIGHTS))
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
        raise ModelFileError(f"{where}: cannot read {WEIGHTS} ({exc}).") from exc
    d_in, d_sae = config["d_in"], config["d_sae"]
    shapes = {"W_enc": (d_in, d_sae), "W_dec": (d_sae, d_in), "b_enc": (d_sae,),
              "b_dec": (d_in,)}
    if config["architecture"] == "jumprelu":
        shapes["threshold"] = (d_sae,)
    for name, shape in shapes.items():
        array = tensors.get(name)
        if array is None or array.shape != shape:
            found = None if array is None else array.shape
            raise ModelFileError(f"{where}: {name} has shape {found}; expected {shape}.")
        if array.dtype.kind != "f" or not np.all(np.isfinite(array)):
            raise ModelFileError(f"{where}: {name} must hold finite floats.")
    k = config.get("k", 1) if config["architecture"] == "topk" else 1
    if not isinstance(k, int) or not 1 <= k <= d_sae:
        raise ModelFileError(f"{where}: k={k!r} must be an int in [1, {d_sae}].")
    sae = SparseAutoencoder(d_sae, activation=_IMPORTED_AS[config["architecture"]], k=k,
                            normalize=None, device="cpu")
    as32 = {name: np.ascontiguousarray(array, dtype=np.float32)
            for name, array in tensors.items()}
    sae.components_ = as32["W_dec"]
    sae.encoder_weight_ = np.ascontiguousarray(as32["W_enc"].T)
    sae.encoder_bias_ = as32["b_enc"]
    sae.decoder_bias_ = as32["b_dec"]
    sae.threshold_ = as32["threshold"] if "threshold" in shapes else None
    sae.scale_ = 1.0
    sae.n_features_in_ = d_in
    sae.n_iter_ = 0
    sae.loss_curve_ = np.empty(0)
    sae.validation_scores_ = None
    return sae
