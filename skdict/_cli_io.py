"""Files the ``skdict`` command reads and writes.

Every failure a user can cause by pointing the command at the wrong file (a
missing path, an array of the wrong shape, a file that is not a fitted model)
raises :class:`CLIError`, which the command prints as one line and turns into
exit code 2.
"""

import zipfile
from pathlib import Path

import joblib
import numpy as np
import scipy.sparse as sp


class CLIError(Exception):
    """A mistake in the command's input, reported as one line with exit code 2."""


def _existing(path, what):
    path = Path(path)
    if not path.exists():
        raise CLIError(f"{what} {str(path)!r} does not exist.")
    return path


def _check_matrix(X, source):
    if X.ndim != 2:
        raise CLIError(
            f"{source} holds an array of shape {X.shape}; expected a 2-D array "
            "(n_samples, n_features) of embeddings."
        )
    if not np.issubdtype(X.dtype, np.number) or np.issubdtype(X.dtype, np.complexfloating):
        raise CLIError(f"{source} holds {X.dtype} values; expected real numbers.")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise CLIError(f"{source} holds an empty array of shape {X.shape}.")
    return X


def _load_npy(path):
    """Memory-map a .npy file, so that only the rows in use are read."""
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise CLIError(f"cannot read {str(path)!r} as a .npy array: {exc}") from exc


def _load_npz(path):
    """The single array of an .npz archive, or the one named ``X`` or ``embeddings``."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            names = archive.files
            for key in ("X", "embeddings"):
                if key in names:
                    return archive[key]
            if len(names) == 1:
                return archive[names[0]]
    except (ValueError, OSError, zipfile.BadZipFile) as exc:
        raise CLIError(f"cannot read {str(path)!r} as an .npz archive: {exc}") from exc
    raise CLIError(
        f"{str(path)!r} holds the arrays {names}; save the embeddings as the only "
        "array or under the name 'X' or 'embeddings'."
    )


def _load_shards(path):
    """Stack the .npy files of a directory, in file-name order."""
    shards = sorted(path.glob("*.npy"))
    if not shards:
        raise CLIError(f"directory {str(path)!r} holds no .npy shards.")
    arrays = [_check_matrix(_load_npy(shard), repr(str(shard))) for shard in shards]
    widths = {X.shape[1] for X in arrays}
    if len(widths) > 1:
        raise CLIError(
            f"the shards in {str(path)!r} have different numbers of features "
            f"{sorted(widths)}; every shard must have the same number of columns."
        )
    if len(arrays) == 1:
        return arrays[0]
    return np.concatenate(arrays, axis=0)


def _load_array(path, what):
    path = _existing(path, what)
    if path.is_dir():
        return _load_shards(path)
    if path.suffix == ".npz":
        return _load_npz(path)
    return _load_npy(path)


def load_embeddings(path, n_features=None):
    """Load a 2-D array of embeddings from a .npy, .npz or a directory of .npy shards.

    A .npy file is memory-mapped (read lazily, row chunk by row chunk, by the
    estimators); the shards of a directory are concatenated in name order.

    Parameters
    ----------
    path : str or path-like
        The file or directory.
    n_features : int, default=None
        Number of columns the array must have (a fitted model's input width).

    Returns
    -------
    X : ndarray or numpy.memmap of shape (n_samples, n_features)
    """
    X = _check_matrix(_load_array(path, "embeddings file"), repr(str(path)))
    if n_features is not None and X.shape[1] != n_features:
        raise CLIError(
            f"{str(path)!r} has {X.shape[1]} features per row but the model was "
            f"fitted on {n_features}; pass embeddings from the same model and layer."
        )
    if not np.issubdtype(X.dtype, np.floating):
        X = X.astype(np.float32)
    return X


_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def load_images(path, n_samples):
    """Images, one per embedding row: image files of a directory (name order) or an array.

    An array (.npy/.npz) has shape (n_samples, H, W) or (n_samples, H, W, C).
    """
    path = _existing(path, "images")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
        if len(files) != n_samples:
            raise CLIError(
                f"directory {str(path)!r} holds {len(files)} images but the embeddings "
                f"have {n_samples} rows; give one image per row."
            )
        return [str(p) for p in files]
    images = _load_array(path, "images file")
    if images.ndim not in (3, 4) or images.shape[0] != n_samples:
        raise CLIError(
            f"{str(path)!r} holds an array of shape {images.shape}; expected "
            f"({n_samples}, H, W) or ({n_samples}, H, W, C), one image per embedding row."
        )
    return images


def load_model(path):
    """Load a fitted dictionary saved by ``skdict fit`` (joblib)."""
    path = _existing(path, "model file")
    try:
        model = joblib.load(path)
    # Unpickling a file that is not a model can fail in any way the bytes suggest.
    except Exception as exc:  # noqa: BLE001
        raise CLIError(
            f"cannot read model {str(path)!r}: not a joblib file saved by "
            f"'skdict fit' ({type(exc).__name__})."
        ) from exc
    if not hasattr(model, "components_") or not hasattr(model, "transform"):
        raise CLIError(
            f"{str(path)!r} holds a {type(model).__name__}, not a fitted skdict "
            "dictionary; create one with 'skdict fit'."
        )
    return model


def load_bank(path):
    """A ConceptBank saved with ``ConceptBank.save``."""
    from .concepts import ConceptBank

    path = _existing(path, "concept bank")
    try:
        return ConceptBank.load(path)
    except (ValueError, OSError, zipfile.BadZipFile) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CLIError(f"cannot read concept bank {str(path)!r}: {message}") from exc


def save_model(model, path):
    """Write a fitted model with joblib, creating the parent directory."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, path)


def save_codes(codes, path):
    """Write codes as a compressed CSR ``.npz`` (``scipy.sparse.load_npz`` reads it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sp.save_npz(path, sp.csr_matrix(codes), compressed=True)


def read_lines(path, what):
    """The non-empty, stripped lines of a text file."""
    path = _existing(path, what)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CLIError(f"cannot read {what} {str(path)!r}: {exc}") from exc
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise CLIError(f"{what} {str(path)!r} is empty.")
    return lines

