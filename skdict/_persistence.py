"""Save and load dictionary learners without pickle.

A ``.skdict`` file is a zip archive holding ``model.json`` (format name and
version, class name, constructor parameters and every fitted attribute that is
plain data) and one ``.npy`` member per array, read back with
``allow_pickle=False``. Loading never imports a class named by the file: the
class must be in a fixed allow-list, the parameters must be the class's own
and pass its parameter validation, and the arrays must have the dtypes and
shapes the fitted model implies, with finite values. So a file from a
colleague or a website can be opened without running code from it, unlike a
pickle or joblib file.

The arrays use numpy's ``.npy`` format rather than safetensors so that saving
and loading need no dependency beyond numpy (safetensors comes only with the
``vision`` extra) and keep float64, int64 and bool arrays as they are.
"""

import contextlib
import io
import json
import os
import re
import tempfile
import zipfile
from numbers import Integral, Real
from pathlib import Path

import numpy as np

FORMAT = "skdict-model"
FORMAT_VERSION = 1
_METADATA = "model.json"

# Kinds of array numpy may hold in a model file: bool, ints and floats. No object arrays.
_ARRAY_KINDS = "biuf"
_NAME = re.compile(r"^_?[A-Za-z][A-Za-z0-9_]*$")


def resolve_class(name):
    """The class of an allow-listed name; nothing outside the list is ever imported."""
    if name == "SparseAutoencoder":
        from .sae import SparseAutoencoder  # needs torch: imported only when used

        return SparseAutoencoder
    from sklearn import decomposition

    from .ksvd import DoubleBatchKSVD

    return {"DoubleBatchKSVD": DoubleBatchKSVD,
            "MiniBatchDictionaryLearning": decomposition.MiniBatchDictionaryLearning,
            "DictionaryLearning": decomposition.DictionaryLearning,
            "SparseCoder": decomposition.SparseCoder}[name]


ACCEPTED = ("DoubleBatchKSVD", "SparseAutoencoder", "MiniBatchDictionaryLearning",
            "DictionaryLearning", "SparseCoder")
ACCEPTED_TEXT = ("DoubleBatchKSVD, SparseAutoencoder, or scikit-learn's "
                 "MiniBatchDictionaryLearning, DictionaryLearning or SparseCoder")


class ModelFileError(ValueError):
    """A model file that cannot be read or fails validation."""


# ---------------------------------------------------------------- writing


class _Encoder:
    """Turn attribute values into JSON, moving arrays to `arrays`."""

    def __init__(self):
        self.arrays = {}

    def _array(self, key, array):
        if array.dtype.kind not in _ARRAY_KINDS:
            raise TypeError(f"{key} is an array of {array.dtype}; only numbers can be saved.")
        # Memory order is kept (.npy records Fortran order): sklearn's solvers
        # pick BLAS paths by layout, and a loaded model must compute the same bits.
        self.arrays[key] = array
        return key

    def encode(self, value, key):
        if value is None or isinstance(value, (bool, str)):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, np.generic):
            if isinstance(value, float) and not np.isfinite(value):
                return {"float": repr(value)}
            return value
        if isinstance(value, np.generic):
            return {"scalar": self._array(key, np.asarray(value))}
        if isinstance(value, np.ndarray):
            if value.dtype == object and all(isinstance(v, str) for v in value.ravel()):
                return {"strings": value.tolist(), "shape": list(value.shape)}
            return {"array": self._array(key, value)}
        if isinstance(value, (list, tuple)):
            items = [self.encode(v, f"{key}.{i}") for i, v in enumerate(value)]
            return {"tuple": items} if isinstance(value, tuple) else {"list": items}
        if isinstance(value, np.random.RandomState):
            kind, keys, pos, has_gauss, gauss = value.get_state()
            return {"random_state": self._array(key, keys), "pos": int(pos),
                    "has_gauss": int(has_gauss), "cached_gaussian": float(gauss)}
        raise TypeError(f"{key} holds a {type(value).__name__}, which a model file cannot store.")


def _state(estimator):
    """The attributes pickle would save (``__getstate__``), less the parameters."""
    # __getstate__ drops caches (the SAE's trainer); a shallow twin keeps it
    # from dropping them from the live estimator.
    twin = object.__new__(type(estimator))
    twin.__dict__.update(vars(estimator))
    state = twin.__getstate__()
    params = estimator.get_params(deep=False)
    return {name: value for name, value in state.items()
            if name not in params and not name.startswith("__") and name != "_sklearn_version"}


def _params(estimator):
    """Constructor parameters; callables (``callback``) are hooks and are stored as None."""
    params = estimator.get_params(deep=False)
    for name, value in params.items():
        if callable(value):
            params[name] = None
        elif isinstance(value, np.random.RandomState):
            raise TypeError(
                f"{type(estimator).__name__}.random_state is a RandomState instance; a model "
                "file stores an int or None: set_params(random_state=0) before saving."
            )
    return params


@contextlib.contextmanager
def atomic_write(path, suffix=""):
    """Yield a temporary path next to `path`; move it onto `path` only on success.

    The temporary file lives in the target folder so that ``os.replace`` is an
    atomic rename: an interrupted write leaves the previous file untouched.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f"{suffix}.tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        # mkstemp creates the file private (0600); give it the mode a plain open() would.
        os.chmod(tmp, _default_mode())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _default_mode():
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def save(estimator, path, *, format="skdict"):
    """Write a dictionary learner to a file that loads without running code.

    The file is a zip archive with the class name, the constructor parameters
    and the fitted attributes as JSON, and the arrays in numpy's ``.npy``
    format. It is written to a temporary file in the same folder and then
    renamed, so an interrupted save never leaves a truncated model behind.
    ``callback`` parameters are fit-time hooks, not part of the model: they
    are stored as None.

    Parameters
    ----------
    estimator : estimator
        A :class:`~skdict.DoubleBatchKSVD`, :class:`~skdict.SparseAutoencoder`,
        or scikit-learn's ``MiniBatchDictionaryLearning``,
        ``DictionaryLearning`` or ``SparseCoder``, fitted or not.
    path : str or path-like
        Destination file, e.g. ``"model.skdict"`` (no suffix is added); a
        folder for ``format="saelens"``.
    format : {"skdict", "saelens"}, default="skdict"
        ``"saelens"`` writes a :class:`~skdict.SparseAutoencoder` in SAELens'
        layout (``cfg.json`` and ``sae_weights.safetensors`` with ``W_enc``,
        ``W_dec``, ``b_enc``, ``b_dec`` and, for JumpReLU and BatchTopK,
        ``threshold``; the input scaling is folded into the weights), which
        SAELens' ``SAE.load_from_disk`` reads. It needs safetensors (the
        ``vision`` extra).

    Returns
    -------
    path : pathlib.Path
        The file (or folder) written.

    See Also
    --------
    load : Read the file back.

    Examples
    --------
    >>> import os, tempfile
    >>> import skdict
    >>> from skdict.datasets import make_sparse_signals
    >>> X, _, _ = make_sparse_signals(200, 10, 12, 2, random_state=0)
    >>> model = skdict.DoubleBatchKSVD(12, n_nonzero_coefs=2, max_iter=5,
    ...                                random_state=0).fit(X)
    >>> path = skdict.save(model, os.path.join(tempfile.mkdtemp(), "model.skdict"))
    >>> (skdict.load(path).transform(X) == model.transform(X)).all()
    np.True_
    """
    name = type(estimator).__name__
    if name not in ACCEPTED or not isinstance(estimator, resolve_class(name)):
        raise TypeError(f"cannot save a {name}; skdict.save accepts {ACCEPTED_TEXT}.")
    if format == "saelens":
        if name != "SparseAutoencoder":
            raise TypeError(f"format='saelens' holds a SparseAutoencoder, not a {name}.")
        from ._sae.saelens import save_saelens

        return save_saelens(estimator, path)
    if format != "skdict":
        raise ValueError(f"format={format!r} is not known; use 'skdict' or 'saelens'.")
    encoder = _Encoder()
    params = {k: encoder.encode(v, f"param.{k}") for k, v in _params(estimator).items()}
    attributes = {k: encoder.encode(v, f"attr.{k}") for k, v in _state(estimator).items()}
    import sklearn

    from . import __version__

    metadata = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "class": name,
        "versions": {"skdict": __version__, "sklearn": sklearn.__version__,
                     "numpy": np.__version__},
        "params": params, "attributes": attributes,
    }
    path = Path(path)
    with atomic_write(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(_METADATA, json.dumps(metadata, indent=1, allow_nan=False))
        for key, array in encoder.arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, array, allow_pickle=False)
            archive.writestr(f"{key}.npy", buffer.getvalue())
    return path


# ---------------------------------------------------------------- reading


class _Decoder:
    """Rebuild values from JSON, reading arrays from the archive without pickle."""

    def __init__(self, archive, where):
        self.archive = archive
        self.where = where

    def _array(self, key):
        if not isinstance(key, str) or f"{key}.npy" not in self.archive.namelist():
            raise ModelFileError(f"{self.where}: the array {key!r} is missing.")
        try:
            with self.archive.open(f"{key}.npy") as member:
                array = np.lib.format.read_array(io.BytesIO(member.read()), allow_pickle=False)
            # read_array gives a read-only, possibly unaligned view of the bytes; a
            # copy (same memory order) is writable for partial_fit and aligned for BLAS.
            array = np.array(array, order="K")
        except ValueError as exc:
            raise ModelFileError(f"{self.where}: cannot read the array {key!r}: {exc}") from exc
        if array.dtype.kind not in _ARRAY_KINDS:
            raise ModelFileError(f"{self.where}: the array {key!r} holds {array.dtype} values.")
        if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
            raise ModelFileError(
                f"{self.where}: the array {key!r} holds NaN or infinite values."
            )
        return array

    def decode(self, value):
        if value is None or isinstance(value, (bool, str, Integral)):
            return value
        if isinstance(value, Real):
            return float(value)
        if isinstance(value, dict):
            return self._decode_tagged(value)
        raise ModelFileError(f"{self.where}: unexpected value {value!r}.")

    def _decode_tagged(self, value):
        if "array" in value:
            return self._array(value["array"])
        if "scalar" in value:
            return self._array(value["scalar"])[()]
        if "list" in value or "tuple" in value:
            items = [self.decode(v) for v in value.get("list", value.get("tuple"))]
            return items if "list" in value else tuple(items)
        if "strings" in value:
            strings = value["strings"]
            if not isinstance(strings, list) or not all(isinstance(s, str) for s in strings):
                raise ModelFileError(f"{self.where}: string arrays must hold strings only.")
            return np.asarray(strings, dtype=object)
        if "float" in value and value["float"] in ("inf", "-inf", "nan"):
            return float(value["float"])
        if "random_state" in value:
            keys = self._array(value["random_state"])
            try:
                state = np.random.RandomState()
                state.set_state(("MT19937", keys, value["pos"], value["has_gauss"],
                                 value["cached_gaussian"]))
            except (KeyError, TypeError, ValueError) as exc:
                raise ModelFileError(f"{self.where}: invalid random state ({exc}).") from exc
            return state
        raise ModelFileError(f"{self.where}: unexpected value {value!r}.")


def _read_metadata(archive, where):
    try:
        metadata = json.loads(archive.read(_METADATA).decode("utf-8"))
    except KeyError:
        raise ModelFileError(
            f"{where} is not a skdict model file (no {_METADATA}); write models with "
            "skdict.save or 'skdict fit'."
        ) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{where}: {_METADATA} is not valid JSON ({exc}).") from exc
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise ModelFileError(f"{where} is not a skdict model file (format is not {FORMAT!r}).")
    version = metadata.get("format_version")
    if version != FORMAT_VERSION:
        raise ModelFileError(
            f"{where} uses model format version {version!r}; this skdict reads version "
            f"{FORMAT_VERSION}. Upgrade skdict, or save the model again with this version."
        )
    name = metadata.get("class")
    if name not in ACCEPTED:
        raise ModelFileError(
            f"{where} holds a {name!r}; skdict model files hold {ACCEPTED_TEXT}."
        )
    for key in ("params", "attributes"):
        if not isinstance(metadata.get(key), dict):
            raise ModelFileError(f"{where}: {_METADATA} lacks its {key!r} mapping.")
    return metadata


def _build(cls, params, where):
    """The estimator with the file's parameters, checked by its own validation."""
    known = cls._get_param_names()
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ModelFileError(
            f"{where}: unknown parameter {unknown[0]!r} for {cls.__name__}; the file was "
            "written by another version of the library or has been altered."
        )
    try:
        estimator = cls(**params)
        estimator._validate_params()
    except (TypeError, ValueError) as exc:
        message = str(exc).strip().splitlines()[0]
        raise ModelFileError(f"{where}: invalid parameter for {cls.__name__}: {message}") from exc
    return estimator


def _check_attribute_name(cls, name, params, where):
    if not isinstance(name, str) or not _NAME.match(name) or name.startswith("__"):
        raise ModelFileError(f"{where}: {name!r} is not a valid attribute name.")
    if name in params or hasattr(cls, name):
        raise ModelFileError(
            f"{where}: the attribute {name!r} would replace a parameter or method of "
            f"{cls.__name__}."
        )


def _expect(where, name, value, shape):
    """`value` must be a float or int array of `shape` (None for a Python scalar)."""
    if shape is None:
        if not isinstance(value, Real) or isinstance(value, bool):
            raise ModelFileError(f"{where}: {name} must be a number, got {value!r}.")
        return
    if not isinstance(value, np.ndarray) or value.shape != shape:
        found = value.shape if isinstance(value, np.ndarray) else type(value).__name__
        raise ModelFileError(f"{where}: {name} has shape {found}; expected {shape}.")


def _check_fitted(estimator, where):
    """Shapes and dtypes implied by the dictionary's size (n_atoms, n_features)."""
    name = type(estimator).__name__
    if name == "SparseCoder":
        D = np.asarray(estimator.dictionary)
    elif hasattr(estimator, "components_"):
        D = estimator.components_
    else:
        return  # not fitted: only parameters were saved
    if not isinstance(D, np.ndarray) or D.ndim != 2 or D.dtype.kind != "f" or 0 in D.shape:
        raise ModelFileError(f"{where}: the dictionary must be a non-empty 2-D float array.")
    n_atoms, n_features = D.shape
    n_features_in = getattr(estimator, "n_features_in_", n_features)
    if not isinstance(n_features_in, Integral) or n_features_in != n_features:
        raise ModelFileError(
            f"{where}: n_features_in_={n_features_in!r} but the dictionary has "
            f"{n_features} features."
        )
    n_components = getattr(estimator, "n_components", None)
    if name != "SparseCoder" and n_components is not None and n_components != n_atoms:
        raise ModelFileError(
            f"{where}: components_ has shape {D.shape}; expected ({n_components}, "
            f"{n_features}) for n_components={n_components}."
        )
    names = getattr(estimator, "feature_names_in_", None)
    if names is not None and np.shape(names) != (n_features,):
        raise ModelFileError(f"{where}: feature_names_in_ must hold {n_features} names.")
    for attribute, shape in _SHAPES.get(name, {}).items():
        if hasattr(estimator, attribute):
            value = getattr(estimator, attribute)
            _expect(where, attribute, value, tuple(n_atoms if s == "k" else n_features
                                                   for s in shape))
            if attribute != "atom_usage_" and value.dtype.kind != "f":
                raise ModelFileError(f"{where}: {attribute} must hold floats, not {value.dtype}.")
    if name == "SparseAutoencoder" and hasattr(estimator, "scale_"):
        _expect(where, "scale_", estimator.scale_, None)
        if not estimator.scale_ > 0:
            raise ModelFileError(f"{where}: scale_ must be positive.")


# Fitted attributes whose shape follows from the dictionary: "k" atoms, "f" features.
_SHAPES = {
    "DoubleBatchKSVD": {"atom_usage_": ("k",)},
    "SparseAutoencoder": {
        "encoder_weight_": ("k", "f"),
        "encoder_bias_": ("k",),
        "decoder_bias_": ("f",),
    },
    "MiniBatchDictionaryLearning": {"_A": ("k", "k"), "_B": ("f", "k")},
}


def _check_sae_threshold(estimator, where):
    if type(estimator).__name__ != "SparseAutoencoder" or not hasattr(estimator, "threshold_"):
        return
    value = estimator.threshold_
    shape = estimator._activation().threshold_shape(estimator.components_.shape[0])
    if shape is not None:
        _expect(where, "threshold_", value, shape or None)  # _expect's None: a Python float
    elif value is not None:
        raise ModelFileError(
            f"{where}: threshold_ must be None for activation={estimator.activation!r}."
        )


def load(path):
    """Read a model written by :func:`skdict.save`, without running code from the file.

    The class must be one of those :func:`skdict.save` writes; its parameters
    must be the class's own and valid; the arrays must have the shapes and
    dtypes the dictionary implies and finite values. Anything else raises a
    ``ValueError`` with a one-line message.

    Parameters
    ----------
    path : str or path-like
        A file written by :func:`skdict.save` (or ``skdict fit``), or a
        SAELens folder (``cfg.json`` + ``sae_weights.safetensors``, a
        ``standard``, ``topk`` or ``jumprelu`` SAE), read as a
        :class:`~skdict.SparseAutoencoder`.

    Returns
    -------
    estimator : estimator
        The model, with the saved parameters (``callback=None``) and fitted
        attributes; its ``transform`` gives bit-identical codes.

    See Also
    --------
    save : Write the file.
    """
    from ._sae.saelens import is_saelens_folder, load_saelens

    if is_saelens_folder(path):
        return load_saelens(path)
    where = repr(str(path))
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, EOFError):
        raise ModelFileError(
            f"{where} is not a skdict model file (not a zip archive); write models with "
            "skdict.save or 'skdict fit'."
        ) from None
    with archive, _too_deep(where):
        metadata = _read_metadata(archive, where)
        decoder = _Decoder(archive, where)
        cls = resolve_class(metadata["class"])
        params = {k: decoder.decode(v) for k, v in metadata["params"].items()}
        estimator = _build(cls, params, where)
        for name, value in metadata["attributes"].items():
            _check_attribute_name(cls, name, params, where)
            setattr(estimator, name, decoder.decode(value))
    _check_fitted(estimator, where)
    _check_sae_threshold(estimator, where)
    return estimator


@contextlib.contextmanager
def _too_deep(where):
    """JSON nested deeper than Python's recursion limit is a tampered file, not a crash."""
    try:
        yield
    except RecursionError:
        raise ModelFileError(f"{where}: {_METADATA} is nested too deeply.") from None


def is_model_file(path):
    """Whether `path` is a zip archive holding a skdict ``model.json``."""
    try:
        with zipfile.ZipFile(path) as archive:
            return _METADATA in archive.namelist()
    except (zipfile.BadZipFile, OSError, EOFError):
        return False
