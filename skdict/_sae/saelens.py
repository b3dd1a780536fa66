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

Reading follows what SAELens 6 itself computes, folding every per-latent or
constant option into the weights: ``rescale_acts_by_decoder_norm`` (TopK and
BatchTopK scale the pre-activations by the decoder norms and divide the codes
by them when decoding: the norms go into the encoder, and the decoder rows
become unit vectors), ``apply_b_dec_to_input: false`` (folded into the encoder
bias), JumpReLU thresholds below zero (SAELens applies a ReLU first: the
threshold is raised to zero), and configs written before SAELens 6.0
(``activation_fn_str: "topk"`` with ``activation_fn_kwargs: {"k": ...}`` is a
TopK SAE). What it cannot represent is refused with one line: the per-row
``normalize_activations`` options, tensors it does not know, architectures
other than standard, topk, jumprelu, batchtopk and abstopk. Weights stored as bfloat16,
float16 or float64 are read and computed in float32: the config's ``dtype``
does not change how skdict computes.
"""

import json
from pathlib import Path

import numpy as np

from .._optional import import_optional
from .._persistence import ModelFileError, check_magnitudes
from .._staging import atomic_write

CONFIG = "cfg.json"
WEIGHTS = "sae_weights.safetensors"
# The activation each SAELens architecture is read as (exports go through
# Activation.saelens_architecture).
_IMPORTED_AS = {"standard": "relu", "topk": "topk", "jumprelu": "jumprelu",
                "batchtopk": "batchtopk", "abstopk": "abstopk"}
# The config layout the export writes: SAELens reads a config without
# metadata.sae_lens_version (or an older one) as pre-6.0 and drops its metadata.
LAYOUT_VERSION = "6.0.0"
# A cfg.json is a few hundred bytes; a training run's config, a few KiB.
_MAX_CONFIG_BYTES = 1 << 20
# The architectures that keep k latents per row, with SAELens' own defaults where
# a config leaves rescale_acts_by_decoder_norm out (TopKSAEConfig and
# AbsTopKSAEConfig for inference; BatchTopK exists only as a training config).
_RESCALE_DEFAULT = {"topk": False, "batchtopk": True, "abstopk": False}
# normalize_activations options that compute a statistic of each row at run time,
# which no fixed weights reproduce; the others are constants SAELens can fold.
_PER_ROW = ("constant_norm_rescale", "layer_norm")
_FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")


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
        "metadata": {"sae_lens_version": LAYOUT_VERSION,
                     "exported_by": f"skdict {__version__}",
                     "skdict_activation": sae.activation},
        **activation.saelens_config(),
    }
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_write(folder / WEIGHTS) as tmp:
        numpy_st.save_file(tensors, str(tmp))
    with atomic_write(folder / CONFIG) as tmp:
        tmp.write_text(json.dumps(config, indent=1))
    return folder


def _read_config(folder, where):
    path = folder / CONFIG
    try:
        if path.stat().st_size > _MAX_CONFIG_BYTES:
            raise ModelFileError(f"{where}: {CONFIG} is larger than a SAELens config.")
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ModelFileError(f"{where}: cannot read {CONFIG} ({exc}).") from exc
    if not isinstance(config, dict):
        raise ModelFileError(
            f"{where}: {CONFIG} holds a JSON {type(config).__name__}; SAELens writes an object."
        )
    if _major_version(config, where) < 6:
        config = _from_pre_6(config, where)
    return _check_config(config, where)


def _major_version(config, where):
    """SAELens' major version that wrote `config` (0 when it says none, as SAELens reads it)."""
    metadata = config.get("metadata", {})
    if not isinstance(metadata, dict):
        raise ModelFileError(f"{where}: {CONFIG}'s metadata is not a JSON object.")
    version = config.get("sae_lens_version") or metadata.get("sae_lens_version")
    if not version:
        return 0
    major = str(version).split(".")[0]
    if not major.isdigit():
        raise ModelFileError(f"{where}: sae_lens_version={version!r} is not a version.")
    return int(major)


def _from_pre_6(config, where):
    """A config written before SAELens 6.0, in the current keys (as SAELens converts it)."""
    config = dict(config)
    activation = config.pop("activation_fn_str", config.pop("activation_fn", "relu"))
    if config.get("architecture", "standard") == "standard":
        if activation == "topk":
            kwargs = config.get("activation_fn_kwargs")
            if not isinstance(kwargs, dict) or "k" not in kwargs:
                raise ModelFileError(
                    f"{where}: a pre-6.0 config with activation_fn 'topk' needs "
                    "activation_fn_kwargs.k, the number of latents per row."
                )
            config.update(architecture="topk", k=kwargs["k"])
        elif activation not in ("relu", None):
            raise ModelFileError(
                f"{where}: activation_fn={activation!r} of a pre-6.0 config is not "
                "supported; skdict reads 'relu' and 'topk'."
            )
    normalize = config.get("normalize_activations")
    if isinstance(normalize, bool) or normalize is None:
        config["normalize_activations"] = "expected_average_only_in" if normalize else "none"
    return config


def _check_config(config, where):
    architecture = config.get("architecture")
    if not isinstance(architecture, str) or architecture not in _IMPORTED_AS:
        raise ModelFileError(
            f"{where}: SAELens architecture {architecture!r} is not supported; "
            f"SparseAutoencoder reads {', '.join(map(repr, _IMPORTED_AS))}."
        )
    for key in ("d_in", "d_sae"):
        if not _is_int(config.get(key)) or config[key] < 1:
            raise ModelFileError(f"{where}: {CONFIG} needs a positive int {key!r}.")
    if architecture in _RESCALE_DEFAULT:
        k = config.get("k")
        if not _is_int(k) or not 1 <= k <= config["d_sae"]:
            raise ModelFileError(
                f"{where}: k={k!r} must be an int in [1, {config['d_sae']}] for a "
                f"{architecture} SAE (the latents kept per row)."
            )
        rescale = config.setdefault("rescale_acts_by_decoder_norm",
                                    _RESCALE_DEFAULT[architecture])
        if not isinstance(rescale, bool):
            raise ModelFileError(f"{where}: rescale_acts_by_decoder_norm must be true or false.")
    if not isinstance(config.setdefault("apply_b_dec_to_input", True), bool):
        raise ModelFileError(f"{where}: apply_b_dec_to_input must be true or false.")
    normalize = config.get("normalize_activations", "none")
    if normalize != "none":
        how = ("normalises each row at run time, which no fixed weights reproduce"
               if normalize in _PER_ROW else
               "leaves a constant scaling out of the weights: fold it in SAELens "
               "(fold_activation_norm_scaling_factor or fold_activation_whitening) and "
               "save again")
        raise ModelFileError(f"{where}: normalize_activations={normalize!r} {how}.")
    reshape = config.get("reshape_activations", "none")
    if reshape != "none":
        raise ModelFileError(
            f"{where}: reshape_activations={reshape!r} is not supported; skdict reads "
            "SAEs of flat rows ('none')."
        )
    return config


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _read_tensors(folder, config, where):
    """The folder's tensors as float32 numpy arrays, each checked before it is read."""
    import_optional("torch", "torch", "reading SAELens' layout")
    safetensors = import_optional("safetensors", "vision", "reading SAELens' layout")
    d_in, d_sae = config["d_in"], config["d_sae"]
    shapes = {"W_enc": (d_in, d_sae), "W_dec": (d_sae, d_in), "b_enc": (d_sae,),
              "b_dec": (d_in,)}
    extra = {"jumprelu": {"threshold": (d_sae,)},
             "batchtopk": {"topk_threshold": ()}}.get(config["architecture"], {})
    known = {**shapes, **extra, "scaling_factor": (d_sae,)}
    try:
        with safetensors.safe_open(str(folder / WEIGHTS), framework="pt") as file:
            names = set(file.keys())
            unknown = sorted(names - set(known))
            if unknown:
                raise ModelFileError(
                    f"{where}: {WEIGHTS} holds {unknown[0]!r}, which a "
                    f"{config['architecture']} SAE does not have; skdict reads "
                    f"{', '.join(known)} and would ignore it."
                )
            for name in {**shapes, **extra}:
                if name not in names:
                    raise ModelFileError(f"{where}: {WEIGHTS} lacks {name!r}.")
            tensors = {}
            for name in sorted(names):
                part = file.get_slice(name)
                shape, dtype = tuple(part.get_shape()), part.get_dtype()
                if shape != known[name] or dtype not in _FLOAT_DTYPES:
                    raise ModelFileError(
                        f"{where}: {name} is a {dtype} tensor of shape {shape}; expected "
                        f"floats of shape {known[name]}."
                    )
                tensors[name] = file.get_tensor(name).float().numpy()
    except ModelFileError:
        raise
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
        raise ModelFileError(f"{where}: cannot read {WEIGHTS} ({exc}).") from exc
    for name, array in tensors.items():
        if not np.all(np.isfinite(array)):
            raise ModelFileError(f"{where}: {name} holds NaN or infinite values (in float32).")
    scaling = tensors.pop("scaling_factor", None)
    if scaling is not None and not np.all(scaling == 1):
        # SAELens drops an all-ones scaling_factor and refuses any other.
        raise ModelFileError(
            f"{where}: scaling_factor is not all ones (a fine-tuning scale SAELens 6 does "
            "not apply either)."
        )
    return tensors


def load_saelens(folder):
    """A SparseAutoencoder from a SAELens folder (``cfg.json`` + ``sae_weights.safetensors``)."""
    from ..sae import SparseAutoencoder

    folder = Path(folder)
    where = repr(str(folder))
    config = _read_config(folder, where)
    w = _read_tensors(folder, config, where)
    architecture = config["architecture"]
    W_enc, W_dec = w["W_enc"].astype(np.float64), w["W_dec"].astype(np.float64)
    b_enc = w["b_enc"].astype(np.float64)
    if not config["apply_b_dec_to_input"]:
        b_enc = b_enc + w["b_dec"].astype(np.float64) @ W_enc  # x @ W = (x - b) @ W + b @ W
    threshold = None
    if architecture == "jumprelu":
        threshold = np.maximum(w["threshold"], 0)  # SAELens' JumpReLU is ReLU, then the mask
    elif architecture == "batchtopk":
        threshold = max(float(w["topk_threshold"]), 0.0)
    if architecture in _RESCALE_DEFAULT and config["rescale_acts_by_decoder_norm"]:
        # Pre-activations times the decoder norms, codes divided by them to decode:
        # a per-latent scale of the encoder, and unit-norm decoder rows.
        norms = np.linalg.norm(W_dec, axis=1)
        if not np.all(norms > 0):
            raise ModelFileError(f"{where}: W_dec has a zero row, which cannot be rescaled.")
        W_enc, b_enc, W_dec = W_enc * norms, b_enc * norms, W_dec / norms[:, None]
    sae = SparseAutoencoder(config["d_sae"], activation=_IMPORTED_AS[architecture],
                            k=config.get("k", 1), normalize=None, device="cpu")
    sae.components_ = np.ascontiguousarray(W_dec, dtype=np.float32)
    sae.encoder_weight_ = np.ascontiguousarray(W_enc.T, dtype=np.float32)
    sae.encoder_bias_ = b_enc.astype(np.float32)
    sae.decoder_bias_ = w["b_dec"]
    sae.threshold_ = threshold
    sae.scale_ = 1.0
    sae.n_features_in_ = config["d_in"]
    sae.n_iter_ = 0
    sae.loss_curve_ = np.empty(0)
    sae.validation_scores_ = None
    check_magnitudes(sae, where)
    return sae
