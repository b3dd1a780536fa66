"""Files the ``skdict`` command reads and writes.

Every failure a user can cause by pointing the command at the wrong file (a
missing path, an array of the wrong shape, a file that is not a fitted model)
raises :class:`CLIError`, which the command prints as one line and turns into
exit code 2. Models are read and written in the ``.skdict`` format of
:func:`skdict.save`, which loads without running code; a pickle or joblib file
is read only with ``trust_pickle=True`` (``--trust-pickle``), as unpickling
runs whatever code the file holds.
"""

import os
import zipfile
import zlib
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from .._persistence import (
    ACCEPTED,
    ACCEPTED_TEXT,
    ModelFileError,
    is_model_file,
    load,
    resolve_class,
    save,
)
from .._sae.saelens import is_saelens_folder
from .._staging import atomic_write
from .._validation import magnitude_problem

# Text read from something other than a regular file (a pipe, a device such as
# /dev/zero) is read up to this size: labels or concept names, not gigabytes.
_MAX_STREAM_BYTES = 1 << 26


class CLIError(Exception):
    """A mistake in the command's input, reported as one line with exit code 2."""


def first_line(exc):
    """The first line of an exception's message (its type's name if it has none)."""
    message = str(exc).strip()
    return message.splitlines()[0] if message else type(exc).__name__


def _existing(path, what):
    """`path`, a non-empty regular file or a folder (a device or a pipe is read forever)."""
    path = _found(path, what)
    if not (path.is_file() or path.is_dir()):
        raise CLIError(
            f"{what} {str(path)!r} is not a regular file or folder (a device, pipe or "
            "socket); give a file."
        )
    if path.is_file() and path.stat().st_size == 0:
        raise CLIError(f"{what} {str(path)!r} is empty (0 bytes).")
    return path


def _found(path, what):
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
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise CLIError(f"cannot read {str(path)!r} as a .npy array: {exc}") from exc
    if not isinstance(array, np.ndarray):  # np.load opens any zip archive as an .npz
        array.close()
        raise CLIError(
            f"{str(path)!r} is a zip archive (an .npz file or a model), not a .npy array; "
            "give embeddings as .npy, .npz (named so) or a folder of .npy shards."
        )
    return array


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
    # zlib.error: a corrupt member; MemoryError: a member whose header claims a huge shape.
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error, MemoryError) as exc:
        raise CLIError(
            f"cannot read {str(path)!r} as an .npz archive: {first_line(exc)}"
        ) from exc
    raise CLIError(
        f"{str(path)!r} holds the arrays {names}; save the embeddings as the only "
        "array or under the name 'X' or 'embeddings'."
    )


def _load_shards(path):
    """Stack the .npy files of a directory, in file-name order."""
    shards = sorted(path.glob("*.npy"))
    if not shards:
        raise CLIError(f"directory {str(path)!r} holds no .npy shards.")
    arrays = [_check_matrix(_load_npy(_existing(shard, "shard")), repr(str(shard)))
              for shard in shards]
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
    if is_model_file(path):
        raise CLIError(
            f"{what} {str(path)!r} is a skdict model file; give embeddings as .npy, .npz "
            "or a folder of .npy shards."
        )
    if path.suffix == ".npz":
        return _load_npz(path)
    return _load_npy(path)


def load_embeddings(path, n_features=None, *, working_dtype=None):
    """Load a 2-D array of embeddings from a .npy, .npz or a directory of .npy shards.

    A .npy file is memory-mapped (read lazily, row chunk by row chunk, by the
    estimators); the shards of a directory are concatenated in name order.
    Embeddings so small that no model can code them (the largest squared row
    norm underflows, as ``fit`` refuses) are refused for every command:
    encoding them would give all-zero codes.

    Parameters
    ----------
    path : str or path-like
        The file or directory.
    n_features : int, default=None
        Number of columns the array must have (a fitted model's input width).
    working_dtype : dtype, default=None
        The dtype a model computes in after scaling X (a SparseAutoencoder's
        ``_working_dtype``); None: X's own dtype.

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
    # Overflow is left to the estimators, which know whether they rescale X first.
    problem = magnitude_problem(X, working_dtype, "X", overflow=False)
    if problem:
        raise CLIError(
            f"{str(path)!r} is {problem}; rescale the embeddings by a constant, e.g. "
            "X / np.abs(X).max()."
        )
    return X


_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def load_images(path, n_samples):
    """Images, one per embedding row: image files of a directory (name order) or an array.

    An array (.npy/.npz) has shape (n_samples, H, W) or (n_samples, H, W, C).
    """
    path = _existing(path, "images")
    if path.is_dir():
        files = image_files(path)
        if len(files) != n_samples:
            raise CLIError(
                f"directory {str(path)!r} holds {len(files)} images but the embeddings "
                f"have {n_samples} rows; give one image per row."
            )
        check_image_files(files)
        return [str(p) for p in files]
    images = _load_array(path, "images file")
    if images.ndim not in (3, 4) or images.shape[0] != n_samples:
        raise CLIError(
            f"{str(path)!r} holds an array of shape {images.shape}; expected "
            f"({n_samples}, H, W) or ({n_samples}, H, W, C), one image per embedding row."
        )
    return images


def is_image_file(path):
    """Whether `path` has one of the image suffixes (any case) that image folders list."""
    return Path(path).suffix.lower() in _IMAGE_SUFFIXES


def image_files(folder):
    """The image files of `folder`, in name order: one per embedding row."""
    return sorted(p for p in Path(folder).iterdir() if is_image_file(p))


def check_image_files(files):
    """Open every image once, raising CLIError that names the first unreadable one."""
    from .._optional import import_optional

    Image = import_optional("PIL.Image", "vision", "explore --images")
    for file in files:
        try:
            with Image.open(file) as image:
                image.load()
        # pillow reports bad files as OSError (UnidentifiedImageError), SyntaxError
        # or ValueError, depending on the decoder.
        except (OSError, SyntaxError, ValueError) as exc:
            raise CLIError(f"cannot read image {str(file)!r}: {first_line(exc)}") from exc


def load_model(path, *, trust_pickle=False):
    """Load a dictionary saved by ``skdict fit`` (or :func:`skdict.save`), or a SAELens folder.

    A pickle or joblib file is read only with ``trust_pickle=True``: unpickling
    runs any code the file holds. Whatever the format, the model must be one of
    the dictionary learners the commands accept.
    """
    path = _existing(path, "model file")
    if path.is_dir() and not is_saelens_folder(path):
        raise CLIError(
            f"model file {str(path)!r} is a directory (and not a SAELens folder with "
            "cfg.json and sae_weights.safetensors)."
        )
    # A damaged .skdict file (not a zip any more) gets load's precise message.
    if path.is_dir() or is_model_file(path) or path.suffix == ".skdict":
        try:
            model = load(path)
        except ModelFileError as exc:
            raise CLIError(f"cannot read model: {exc}") from exc
    elif trust_pickle:
        model = _load_pickle(path)
    else:
        raise CLIError(
            f"{str(path)!r} is not a .skdict model file. If it is a pickle or joblib "
            "file you trust, pass --trust-pickle (loading a pickle runs any code in it); "
            "skdict.save writes files that load safely."
        )
    return check_dictionary_model(model, path)


def _load_pickle(path):
    import joblib

    try:
        return joblib.load(path)
    # Unpickling a file that is not a model can fail in any way the bytes suggest.
    except Exception as exc:  # noqa: BLE001
        raise CLIError(
            f"cannot read model {str(path)!r}: not a joblib or pickle file "
            f"({type(exc).__name__})."
        ) from exc


def check_dictionary_model(model, path):
    """`model` if it is a dictionary learner the commands accept (fitted); else CLIError."""
    name = type(model).__name__
    if name not in ACCEPTED or not isinstance(model, resolve_class(name)):
        raise CLIError(
            f"{str(path)!r} holds a {type(model).__name__}, not a dictionary learner; "
            f"skdict commands accept {ACCEPTED_TEXT} (create one with 'skdict fit')."
        )
    if name != "SparseCoder":  # a SparseCoder needs no fit
        try:
            check_is_fitted(model, "components_")
        except NotFittedError as exc:
            raise CLIError(f"{str(path)!r} holds an unfitted {name}.") from exc
    return model


def load_bank(path):
    """A ConceptBank saved with ``ConceptBank.save``."""
    from ..concepts import ConceptBank

    path = _existing(path, "concept bank")
    try:
        return ConceptBank.load(path)
    except (ValueError, OSError, zipfile.BadZipFile, zlib.error) as exc:
        raise CLIError(f"cannot read concept bank {str(path)!r}: {first_line(exc)}") from exc


_PICKLE_SUFFIXES = {".joblib", ".pkl", ".pickle"}


def codes_path(path):
    """The file ``save_codes`` writes: `path`, with ``.npz`` appended if missing."""
    path = Path(path)
    return path if path.suffix == ".npz" else path.with_name(path.name + ".npz")


def check_output_file(path, inputs=(), option="-o"):
    """Refuse an output file that cannot be written, before any work is done.

    Catches a folder given as a file, a file given as a folder (a parent that
    is a file), an unwritable folder, and an output that is one of the inputs
    (which the write would destroy).
    """
    path = Path(path)
    if path.is_dir():
        raise CLIError(f"{option} {str(path)!r} is a directory; give a file name.")
    _check_writable_parent(path.parent, option, path)
    for source in inputs:
        if source is not None and _same_file(path, source):
            raise CLIError(
                f"{option} {str(path)!r} is also an input; writing it would destroy "
                "the input. Choose another output path."
            )
    return path


def check_output_dir(path, inputs=(), option="--out"):
    """Refuse an output folder that cannot be written or that holds an input."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise CLIError(f"{option} {str(path)!r} is a file; give a folder.")
    _check_writable_parent(path.parent, option, path)
    if path.is_dir() and not os.access(path, os.W_OK | os.X_OK):
        raise CLIError(f"{option} {str(path)!r} is not writable.")
    for source in inputs:
        if source is not None and _same_file(path, source):
            raise CLIError(f"{option} {str(path)!r} is also an input; choose another folder.")
    return path


def _check_writable_parent(parent, option, path):
    """The nearest existing ancestor must be a writable folder (the rest is created)."""
    existing = parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise CLIError(
            f"{option} {str(path)!r}: {str(existing)!r} is a file, not a folder."
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise CLIError(f"{option} {str(path)!r}: cannot write in {str(existing)!r}.")


def _same_file(a, b):
    a, b = Path(a), Path(b)
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


def check_model_output(path, inputs=()):
    """As :func:`check_output_file`, refusing pickle suffixes: models are .skdict files."""
    path = check_output_file(path, inputs)
    if path.suffix.lower() in _PICKLE_SUFFIXES:
        raise CLIError(
            f"-o {str(path)!r}: skdict writes models in the .skdict format, which loads "
            "without running code; name the file e.g. model.skdict."
        )
    return path


def save_model(model, path):
    """Write a fitted model with :func:`skdict.save` (atomically), creating the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return save(model, path)


def save_codes(codes, path):
    """Write codes as a compressed CSR ``.npz`` (``scipy.sparse.load_npz`` reads it).

    Returns the path written (``.npz`` is appended when missing); the file is
    replaced atomically, so an interrupted run leaves any previous file intact.
    """
    path = codes_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp, open(tmp, "wb") as file:
        sp.save_npz(file, sp.csr_matrix(codes), compressed=True)
    return path


def load_codes(path, n_samples, n_atoms):
    """Codes written by ``skdict encode``, checked against the embeddings and the model.

    `n_samples` (None when no embeddings are given) and `n_atoms` are what the
    codes must fit: one row per embedding, one column per atom.
    """
    path = _existing(path, "codes file")
    try:
        codes = sp.load_npz(path).tocsr()
    except (ValueError, KeyError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise CLIError(
            f"cannot read --codes {str(path)!r} as codes written by 'skdict encode': {exc}"
        ) from exc
    expected_rows = codes.shape[0] if n_samples is None else n_samples
    if codes.shape != (expected_rows, n_atoms):
        rows = "" if n_samples is None else f"{n_samples} rows (the embeddings) and "
        raise CLIError(
            f"--codes {str(path)!r} has shape {codes.shape} but must have {rows}{n_atoms} "
            "columns (the model's atoms); encode these embeddings with this model: "
            "skdict encode MODEL EMBEDDINGS -o CODES.npz."
        )
    if not np.issubdtype(codes.dtype, np.floating) or not np.all(np.isfinite(codes.data)):
        raise CLIError(f"--codes {str(path)!r} holds non-finite or non-float values.")
    return codes


def read_lines(path, what, *, allow_blank):
    """The lines of a UTF-8 text file, split on ``\n`` only.

    A trailing ``\r`` (Windows line ends) and surrounding spaces are removed;
    other characters (U+2028, form feeds...) stay inside their line, so line
    ``i`` is always entry ``i``. A final newline does not add an entry. Blank
    lines are entries when `allow_blank` (an empty label keeps the rows
    aligned), otherwise an error naming the line.
    """
    try:
        # utf-8-sig: a byte-order mark (as Windows editors write) is not part of line 1.
        text = _read_bytes(path, what).decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise CLIError(f"cannot read {what} {str(path)!r}: {exc}") from exc
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    lines = [line.removesuffix("\r").strip(" \t") for line in lines]
    if not lines:
        raise CLIError(f"{what} {str(path)!r} is empty.")
    if not allow_blank:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                raise CLIError(
                    f"{what} {str(path)!r}: line {number} is blank; give every line a name "
                    "or remove it."
                )
    return lines


def _read_bytes(path, what):
    """The bytes of a file; a pipe or a device is read up to a bound (/dev/zero has none)."""
    path = _found(path, what)
    if path.is_dir():
        raise CLIError(f"{what} {str(path)!r} is a folder; give a text file.")
    if path.is_file():
        return path.read_bytes()
    with open(path, "rb") as stream:
        data = stream.read(_MAX_STREAM_BYTES + 1)
    if len(data) > _MAX_STREAM_BYTES:
        raise CLIError(
            f"{what} {str(path)!r} is not a regular file and gives more than "
            f"{_MAX_STREAM_BYTES >> 20} MiB; save the text to a file."
        )
    return data


def check_line_count(lines, n_rows, path, what):
    """One line per row, or a message saying where the file and the rows part ways."""
    if len(lines) == n_rows:
        return
    where = (f"line {n_rows + 1} is the first without an embedding row"
             if len(lines) > n_rows else f"rows {len(lines) + 1} to {n_rows} have no line")
    raise CLIError(
        f"{what} {str(path)!r} has {len(lines)} lines but the embeddings have {n_rows} "
        f"rows: {where}; give one line per row."
    )
