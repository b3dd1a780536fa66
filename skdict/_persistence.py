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
import math
import re
import tokenize
import zipfile
import zlib
from numbers import Integral, Real
from pathlib import Path

import numpy as np

from ._dictionary import components_of
from ._staging import atomic_write
from ._validation import available_memory, magnitude_problem

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

# model.json holds the parameters and the plain attributes, a few kilobytes; its
# largest legitimate part is feature_names_in_, one string per feature: 16 MiB
# leaves 1,000 characters to each of 16,384 features.
_MAX_METADATA_BYTES = 1 << 24
# What zipfile and zlib raise on a damaged archive or member (a bad CRC, a corrupt
# deflate stream, offsets pointing outside the file, a truncated member), and what
# numpy's parser of .npy headers (Python's tokenizer) raises on a damaged header.
_DAMAGED = (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, OSError,
            ValueError, NotImplementedError, SyntaxError, tokenize.TokenError)
# Members are read into their array this many bytes at a time.
_READ_CHUNK = 1 << 20


class _Decoder:
    """Rebuild values from JSON, reading arrays from the archive without pickle.

    An array is read only after its ``.npy`` header matched the shape the
    model implies and the member's size matched the header, so that a file
    cannot make loading allocate more than the model it claims to hold.
    """

    def __init__(self, archive, where):
        self.archive = archive
        self.where = where

    def _array(self, key, shape, kinds=_ARRAY_KINDS):
        """The array of member ``key.npy``; `shape` holds ints, or None for any length."""
        if not isinstance(key, str) or f"{key}.npy" not in self.archive.namelist():
            raise ModelFileError(f"{self.where}: the array {key!r} is missing.")
        if shape is None:
            raise ModelFileError(f"{self.where}: {_label(key)} is not expected to be an array.")
        info = self.archive.getinfo(f"{key}.npy")
        try:
            with self.archive.open(info) as member:
                found, fortran, dtype = _read_npy_header(member)
                self._check_header(key, found, dtype, shape, kinds)
                size = math.prod(found) * dtype.itemsize
                if info.file_size != member.tell() + size:
                    raise ModelFileError(
                        f"{self.where}: {_label(key)} inflates to {info.file_size} bytes; "
                        f"its shape {found} implies {member.tell() + size}."
                    )
                _check_memory(self.where, key, size)
                array = np.empty(found, dtype, order="F" if fortran else "C")
                _read_into(member, array)
        except ModelFileError:
            raise
        except _DAMAGED as exc:
            raise ModelFileError(f"{self.where}: cannot read the array {key!r}: {exc}") from exc
        if not dtype.isnative:
            array = array.astype(dtype.newbyteorder("="))
        if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
            raise ModelFileError(
                f"{self.where}: the array {key!r} holds NaN or infinite values."
            )
        return array

    def _check_header(self, key, found, dtype, shape, kinds):
        if dtype.kind not in kinds or dtype.hasobject or dtype.itemsize == 0:
            raise ModelFileError(f"{self.where}: {_label(key)} holds {dtype} values.")
        if len(found) != len(shape) or any(n is not None and n != m
                                            for n, m in zip(shape, found)):
            expected = str(tuple("any" if n is None else n for n in shape)).replace("'", "")
            raise ModelFileError(
                f"{self.where}: {_label(key)} has shape {found}; expected {expected}."
            )

    def decode(self, value, shape=None, kinds=_ARRAY_KINDS):
        """A JSON value; `shape` and `kinds` are those of the array it may name.

        `shape` None: the value may not be an array (scalars and random states
        have a fixed shape).
        """
        if value is None or isinstance(value, (bool, str, Integral)):
            return value
        if isinstance(value, Real):
            return float(value)
        if isinstance(value, dict):
            return self._decode_tagged(value, shape, kinds)
        raise ModelFileError(f"{self.where}: unexpected value {str(value)[:60]}.")

    def _decode_tagged(self, value, shape, kinds):
        if "array" in value:
            return self._array(value["array"], shape, kinds)
        if "scalar" in value:
            return self._array(value["scalar"], ())[()]
        if "list" in value or "tuple" in value:
            items = value.get("list", value.get("tuple"))
            if not isinstance(items, list):
                raise ModelFileError(f"{self.where}: unexpected value {value!r}.")
            items = [self.decode(v) for v in items]
            return items if "list" in value else tuple(items)
        if "strings" in value:
            strings = value["strings"]
            if not isinstance(strings, list) or not all(isinstance(s, str) for s in strings):
                raise ModelFileError(f"{self.where}: string arrays must hold strings only.")
            return np.asarray(strings, dtype=object)
        if "float" in value and value["float"] in ("inf", "-inf", "nan"):
            return float(value["float"])
        if "random_state" in value:
            # The Mersenne Twister state numpy's get_state gives: 624 32-bit words.
            keys = self._array(value["random_state"], (624,), kinds="u")
            try:
                state = np.random.RandomState()
                state.set_state(("MT19937", keys, value["pos"], value["has_gauss"],
                                 value["cached_gaussian"]))
            except (KeyError, TypeError, ValueError, OverflowError) as exc:
                raise ModelFileError(f"{self.where}: invalid random state ({exc}).") from exc
            return state
        raise ModelFileError(f"{self.where}: unexpected value {value!r}.")


def _label(key):
    """The attribute or parameter an array member holds: ``attr.error_`` -> ``error_``."""
    return str(key).partition(".")[2] or repr(key)


def _read_npy_header(member):
    """(shape, fortran_order, dtype) of an ``.npy`` stream, leaving it at the data."""
    version = np.lib.format.read_magic(member)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(member)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(member)
    raise ValueError(f".npy format version {version} is not one numpy writes for numbers")


def _read_into(member, array):
    """Fill `array` (contiguous) from `member`, a chunk at a time (no second copy)."""
    view = memoryview(array.reshape(-1, order="A").view(np.uint8))
    done = 0
    while done < len(view):
        chunk = member.read(min(_READ_CHUNK, len(view) - done))
        if not chunk:
            raise EOFError("the member ends before its data")
        view[done:done + len(chunk)] = chunk
        done += len(chunk)


def _check_memory(where, key, size):
    available = available_memory()
    if available is not None and size > available:
        raise ModelFileError(
            f"{where}: the array {key!r} needs {size / 2**30:.1f} GiB but "
            f"{available / 2**30:.1f} GiB of memory are available."
        )


def _refuse_constant(name):
    raise ValueError(f"{name} is not a number JSON allows")


def _read_metadata(archive, where):
    try:
        info = archive.getinfo(_METADATA)
    except KeyError:
        raise ModelFileError(
            f"{where} is not a skdict model file (no {_METADATA}); write models with "
            "skdict.save or 'skdict fit'."
        ) from None
    if info.file_size > _MAX_METADATA_BYTES:
        raise ModelFileError(
            f"{where}: {_METADATA} inflates to {info.file_size / 2**20:.0f} MiB; a model's "
            f"is a few KiB (at most {_MAX_METADATA_BYTES // 2**20} MiB)."
        )
    try:
        text = archive.read(_METADATA).decode("utf-8")
        # skdict writes non-finite floats as {"float": "nan"}; bare NaN is not JSON.
        metadata = json.loads(text, parse_constant=_refuse_constant)
    except _DAMAGED as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ModelFileError(f"{where}: cannot read {_METADATA} ({exc}).") from exc
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise ModelFileError(f"{where} is not a skdict model file (format is not {FORMAT!r}).")
    version = metadata.get("format_version")
    if version != FORMAT_VERSION:
        raise ModelFileError(
            f"{where} uses model format version {version!r}; this skdict reads version "
            f"{FORMAT_VERSION}. Upgrade skdict, or save the model again with this version."
        )
    name = metadata.get("class")
    if not isinstance(name, str) or name not in ACCEPTED:
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


# ---------------------------------------------------------------- what a model holds


class _Dims:
    """Sizes a model implies: atoms k, features f, iterations i (None: not fitted)."""

    def __init__(self, k, f, i):
        self.k, self.f, self.i = k, f, i

    def shape(self, symbols):
        """Sizes of `symbols` ("k", "f", "i" or None); an unknown size matches any."""
        return tuple(getattr(self, s) if isinstance(s, str) else s for s in symbols)


class _Spec:
    """What a fitted attribute holds.

    `kind` is one of ``"floats"`` / ``"ints"`` (an array of `shape`, written
    with "k", "f", "i" for atoms, features, iterations, or None for any
    length), ``"count"`` (an int >= `minimum`, equal to the dimension `equals`
    when given), ``"number"``, ``"numbers"`` (a list of `shape`), ``"names"``,
    ``"choice"`` (a str in `choices`), ``"rng"``, or ``"groups"`` and
    ``"threshold"``, which depend on the parameters and are read by
    ``_SPECIAL``.
    """

    def __init__(self, kind, shape=None, *, optional=False, required=False, minimum=0,
                 equals=None, choices=()):
        self.kind, self.shape = kind, shape
        self.optional, self.required = optional, required
        self.minimum, self.equals, self.choices = minimum, equals, choices

    def read(self, decoder, value, dims):
        if "i" in (self.shape or ()) and dims.i is None:
            raise _Wrong("is there, but n_iter_ (its length) is not an int")
        shape = dims.shape(self.shape) if self.kind in ("floats", "ints") else None
        value = decoder.decode(value, shape, {"floats": "f", "ints": "iu"}.get(self.kind, ""))
        if value is None and self.optional:
            return None
        return self._check(value, dims)

    def _check(self, value, dims):
        kind = self.kind
        if kind in ("floats", "ints"):
            expected = "f" if kind == "floats" else "iu"
            if not isinstance(value, np.ndarray) or value.dtype.kind not in expected:
                raise _wrong(value, f"an array of {kind}")
        elif kind == "count":
            if not isinstance(value, Integral) or isinstance(value, bool) \
                    or value < self.minimum:
                raise _wrong(value, f"an int >= {self.minimum}")
            value = int(value)
            if self.equals and value != getattr(dims, self.equals):
                raise _wrong(value, f"{getattr(dims, self.equals)}")
        elif kind == "number":
            if not isinstance(value, Real) or isinstance(value, bool) or not np.isfinite(value):
                raise _wrong(value, "a finite number")
        elif kind == "numbers":
            if not isinstance(value, list) or len(value) != dims.shape(self.shape)[0] \
                    or not all(isinstance(v, Real) and np.isfinite(v) for v in value):
                raise _wrong(value, f"a list of {dims.shape(self.shape)[0]} numbers")
        elif kind == "names":
            if not isinstance(value, np.ndarray) or value.shape != (dims.f,):
                raise _wrong(value, f"{dims.f} names")
        elif kind == "choice":
            if value not in self.choices:
                raise _wrong(value, f"one of {sorted(self.choices)}")
        elif kind == "rng" and not isinstance(value, np.random.RandomState):
            raise _wrong(value, "a random state")
        return value


class _Wrong(Exception):
    """An attribute value that is not what the model implies (named by the caller)."""


def _wrong(value, expected):
    shown = f"of shape {value.shape}" if isinstance(value, np.ndarray) else repr(value)[:60]
    return _Wrong(f"is {shown}; expected {expected}")


_FITTED = {"n_features_in_": _Spec("count", minimum=1, required=True),
           "feature_names_in_": _Spec("names")}
_COMPONENTS = _Spec("floats", ("k", "f"), required=True)
# Every fitted attribute each class may hold, with what it must be.
_ATTRIBUTES = {
    "DoubleBatchKSVD": {
        **_FITTED, "components_": _COMPONENTS, "_groups": _Spec("groups", required=True),
        "n_iter_": _Spec("count"), "error_": _Spec("floats", ("i",)),
        "atom_usage_": _Spec("ints", ("k",)), "_rng": _Spec("rng"),
    },
    "SparseAutoencoder": {
        **_FITTED, "components_": _COMPONENTS,
        "encoder_weight_": _Spec("floats", ("k", "f"), required=True),
        "encoder_bias_": _Spec("floats", ("k",), required=True),
        "decoder_bias_": _Spec("floats", ("f",), required=True),
        "threshold_": _Spec("threshold", required=True),
        "scale_": _Spec("number", required=True), "batch_size_": _Spec("count", minimum=1),
        "n_iter_": _Spec("count"), "loss_curve_": _Spec("floats", ("i",)),
        # Set by fit; partial_fit keeps it while n_iter_ grows.
        "validation_scores_": _Spec("floats", (None,), optional=True),
        "dead_fraction_": _Spec("number"), "_rng": _Spec("rng"),
    },
    "MiniBatchDictionaryLearning": {
        **_FITTED, "components_": _COMPONENTS,
        "_A": _Spec("floats", ("k", "k")), "_B": _Spec("floats", ("f", "k")),
        "_n_components": _Spec("count", minimum=1, equals="k"),
        "_fit_algorithm": _Spec("choice", choices={"lasso_lars", "lasso_cd"}),
        "_batch_size": _Spec("count", minimum=1), "_random_state": _Spec("rng"),
        "_ewa_cost": _Spec("number", optional=True),
        "_ewa_cost_min": _Spec("number", optional=True),
        "_no_improvement": _Spec("count"), "n_steps_": _Spec("count"),
        "n_iter_": _Spec("number"),
    },
    "DictionaryLearning": {
        **_FITTED, "components_": _COMPONENTS, "n_iter_": _Spec("count"),
        "error_": _Spec("numbers", ("i",)),
    },
    "SparseCoder": {**_FITTED, "n_components_": _Spec("count", minimum=1, equals="k")},
}
# Parameters that may hold arrays, with their shapes (None: any length).
_ARRAY_PARAMS = {"dict_init": ("k", "f"), "code_init": (None, "k"), "nested_groups": (None,)}


def _dims(cls_name, metadata, archive, where):
    """The sizes the file's plain JSON implies, before any array is read."""
    attributes, params = metadata["attributes"], metadata["params"]
    f = attributes.get("n_features_in_")
    if attributes and (not isinstance(f, int) or isinstance(f, bool) or f < 1):
        raise ModelFileError(f"{where}: n_features_in_ must be a positive int, got {f!r}.")
    i = attributes.get("n_iter_")
    i = i if isinstance(i, int) and not isinstance(i, bool) and i >= 0 else None
    if cls_name == "SparseCoder":
        k, f = _dictionary_shape(params, archive, where, f)
        return _Dims(k, f, i)
    k = params.get("n_components")
    if k is None and cls_name in ("MiniBatchDictionaryLearning", "DictionaryLearning"):
        k = f  # scikit-learn's default: as many atoms as features
    if k is not None and (not isinstance(k, int) or isinstance(k, bool) or k < 1):
        raise ModelFileError(f"{where}: n_components must be a positive int, got {k!r}.")
    return _Dims(k, f, i)


def _dictionary_shape(params, archive, where, f):
    """(n_atoms, n_features) of a SparseCoder's dictionary, from its ``.npy`` header."""
    value = params.get("dictionary")
    key = value.get("array") if isinstance(value, dict) else None
    try:
        with archive.open(f"{key}.npy") as member:
            shape, _, _ = _read_npy_header(member)
    except KeyError:
        raise ModelFileError(f"{where}: the SparseCoder's dictionary is missing.") from None
    except _DAMAGED as exc:
        raise ModelFileError(f"{where}: cannot read the dictionary: {exc}") from exc
    if len(shape) != 2 or 0 in shape or (f is not None and shape[1] != f):
        raise ModelFileError(
            f"{where}: the dictionary has shape {shape}; expected (n_atoms, "
            f"{'n_features' if f is None else f})."
        )
    return shape


def _read_params(metadata, decoder, dims):
    shapes = {**_ARRAY_PARAMS, "dictionary": ("k", "f")}
    return {name: decoder.decode(value, dims.shape(shapes[name]) if name in shapes else None)
            for name, value in metadata["params"].items()}


def _read_attributes(estimator, metadata, decoder, dims):
    cls = type(estimator)
    schema = _ATTRIBUTES[cls.__name__]
    params = estimator.get_params(deep=False)
    attributes = metadata["attributes"]
    for name, value in attributes.items():
        _check_attribute_name(cls, name, params, decoder.where)
        spec = schema.get(name)
        if spec is None:
            raise ModelFileError(
                f"{decoder.where}: unknown attribute {name!r} for {cls.__name__}; the file "
                "was written by another version of the library or has been altered."
            )
        if spec.kind in ("groups", "threshold"):
            value = _SPECIAL[spec.kind](estimator, decoder, value, dims)
        else:
            try:
                value = spec.read(decoder, value, dims)
            except _Wrong as exc:
                raise ModelFileError(f"{decoder.where}: {name} {exc}.") from None
        setattr(estimator, name, value)
    if attributes:
        missing = [name for name, spec in schema.items()
                   if spec.required and name not in attributes]
        if missing:
            raise ModelFileError(
                f"{decoder.where}: the fitted {cls.__name__} lacks {missing[0]!r}."
            )


def _read_groups(estimator, decoder, value, dims):
    """DoubleBatchKSVD's atom groups: exactly those its parameters imply."""
    from ._ksvd.start import group_bounds

    try:
        expected = [tuple(int(v) for v in group) for group in group_bounds(
            estimator.nested_groups, estimator.n_components, estimator.n_nonzero_coefs)]
    except ValueError as exc:
        raise ModelFileError(f"{decoder.where}: {exc}") from None
    groups = decoder.decode(value)
    if groups != expected:
        raise ModelFileError(
            f"{decoder.where}: _groups is {str(groups)[:60]}; the parameters imply {expected}."
        )
    return groups


def _read_threshold(estimator, decoder, value, dims):
    """A SparseAutoencoder's threshold_, of the shape its activation implies."""
    shape = estimator._activation().threshold_shape(dims.k)
    threshold = decoder.decode(value, shape if shape else None)
    if shape is None and threshold is not None:
        raise ModelFileError(
            f"{decoder.where}: threshold_ must be None for "
            f"activation={estimator.activation!r}."
        )
    if shape == () and (not isinstance(threshold, Real) or isinstance(threshold, bool)):
        raise ModelFileError(f"{decoder.where}: threshold_ must be a number, "
                             f"got {threshold!r}.")
    if shape and (not isinstance(threshold, np.ndarray) or threshold.dtype.kind != "f"):
        raise ModelFileError(f"{decoder.where}: threshold_ must be an array of floats.")
    return threshold


_SPECIAL = {"groups": _read_groups, "threshold": _read_threshold}


def check_magnitudes(estimator, where):
    """Refuse weights whose magnitudes break the arithmetic the model codes with.

    Finite values are not enough: a dictionary whose squared atom norms
    overflow codes every row as NaN, and an SAE whose ``scale_`` is 1e300
    (computed in float32) codes every row as zero.
    """
    matrices = {"components_": components_of(estimator)}
    if type(estimator).__name__ == "SparseAutoencoder":
        matrices["encoder_weight_"] = estimator.encoder_weight_
        scale = estimator.scale_
        float32 = np.finfo(np.float32)
        if not float(float32.tiny) <= scale <= float(float32.max):
            raise ModelFileError(
                f"{where}: scale_={scale!r} is not a normal float32 number; the model "
                "divides its input by scale_ in float32."
            )
        vectors = {"encoder_bias_": estimator.encoder_bias_,
                   "decoder_bias_ / scale_": estimator.decoder_bias_ / scale}
        if isinstance(estimator.threshold_, np.ndarray):
            vectors["threshold_"] = estimator.threshold_
        for name, vector in vectors.items():
            problem = magnitude_problem(np.atleast_2d(vector), np.float32, name,
                                        underflow=False)
            if problem:
                raise ModelFileError(f"{where}: {name} is {problem}.")
    for name, matrix in matrices.items():
        problem = magnitude_problem(matrix, None, name)
        if problem:
            raise ModelFileError(f"{where}: {name} is {problem}.")


def load(path):
    """Read a model written by :func:`skdict.save`, without running code from the file.

    The class must be one of those :func:`skdict.save` writes; its parameters
    must be the class's own and valid; every fitted attribute must be one the
    class has, with the shape and dtype the model implies (checked on each
    array's header before the array is read, so that loading never allocates
    more than the model needs), and finite values of magnitudes its
    arithmetic can use. Anything else, a damaged archive included, raises a
    ``ValueError`` with a one-line message.

    Parameters
    ----------
    path : str or path-like
        A file written by :func:`skdict.save` (or ``skdict fit``), or a
        SAELens folder (``cfg.json`` + ``sae_weights.safetensors``, a
        ``standard``, ``topk``, ``jumprelu`` or ``batchtopk`` SAE), read as a
        :class:`~skdict.SparseAutoencoder` that computes in float32.

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
    if not Path(path).is_file():
        # A device or a pipe (/dev/zero) would be read without end.
        raise ModelFileError(f"{where} is not a regular file (nor a SAELens folder).")
    try:
        archive = zipfile.ZipFile(path)
    except _DAMAGED:
        raise ModelFileError(
            f"{where} is not a skdict model file (not a zip archive); write models with "
            "skdict.save or 'skdict fit'."
        ) from None
    with archive, _too_deep(where):
        metadata = _read_metadata(archive, where)
        decoder = _Decoder(archive, where)
        cls = resolve_class(metadata["class"])
        dims = _dims(cls.__name__, metadata, archive, where)
        estimator = _build(cls, _read_params(metadata, decoder, dims), where)
        _read_attributes(estimator, metadata, decoder, dims)
    if cls.__name__ == "SparseCoder" or hasattr(estimator, "components_"):
        check_magnitudes(estimator, where)
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
    if not Path(path).is_file():
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            return _METADATA in archive.namelist()
    except _DAMAGED:
        return False
