"""Input checks shared by every skdict estimator and function.

Error messages name the offending parameter and say how to fix it, so that users
never meet a numba or torch traceback for a mistake in their input.
"""

import os
from numbers import Integral

import numpy as np
from sklearn.utils import check_array
from sklearn.utils.validation import validate_data

FLOAT_DTYPES = (np.float64, np.float32)


def _reraise_non_numeric(exc, name):
    """Turn numpy's conversion error on object arrays into one that names `name`."""
    if "could not convert" in str(exc) or "invalid literal" in str(exc):
        raise ValueError(
            f"{name} must contain numbers only, but it holds non-numeric entries "
            f"({exc}). Convert {name} to a float array first."
        ) from exc
    raise exc


def validate_samples(estimator, X, *, reset, min_samples=1):
    """Validate X for `estimator` (2-D, finite, float32 or float64, usable magnitudes).

    Wraps :func:`sklearn.utils.validation.validate_data` so that feature counts and
    names are recorded (``reset=True``) or checked (``reset=False``), and adds a
    message naming X for object arrays holding non-numbers. The estimator's
    ``_working_dtype`` (None: X's dtype) selects the magnitude check, see
    :func:`check_magnitude`.
    """
    try:
        X = validate_data(
            estimator,
            X,
            dtype=FLOAT_DTYPES,
            reset=reset,
            ensure_min_samples=min_samples,
            order="C",
        )
    except ValueError as exc:
        _reraise_non_numeric(exc, "X")
    # Rows too small to register code as zero rows, which is right for transform;
    # data that is too small throughout is refused only where it would be learned from.
    check_magnitude(X, getattr(estimator, "_working_dtype", None), underflow=reset)
    return X


def check_magnitude(X, working_dtype=None, name="X", *, underflow=True):
    """Refuse finite X whose magnitudes overflow or vanish in the working arithmetic.

    With `working_dtype` None, X is used as it is, in its own dtype, and the
    pursuits and error measures square it: every row's squared norm must be
    finite, and the largest must be a normal number (below
    ``finfo.tiny`` squares lose their precision or flush to zero). Otherwise
    (an estimator that divides X by its scale and then computes in
    `working_dtype`) the values themselves must be finite and normal in
    `working_dtype`. Either way the fix is to rescale X by a constant.
    ``underflow=False`` checks only for overflow.
    """
    problem = magnitude_problem(X, working_dtype, name, underflow=underflow)
    if problem is None:
        return
    widen = problem.startswith("too large") and working_dtype is None and X.dtype == np.float32
    wider = " or pass float64" if widen else ""
    raise ValueError(
        f"{name} is {problem}. Rescale {name} by a constant first, e.g. "
        f"{name} / np.abs({name}).max(){wider}."
    )


def magnitude_problem(X, working_dtype=None, name="X", *, underflow=True, overflow=True):
    """The magnitude problem :func:`check_magnitude` finds in a 2-D array, or None.

    Returns a phrase such as ``"too large for float32 arithmetic: its squared
    row norms overflow (largest |X| = 1e+30)"``, for messages that need
    another fix than rescaling (a model file, a file of embeddings).
    ``overflow=False`` checks only for underflow.
    """
    if X.size == 0:
        return None
    peak = float(max(X.max(), -X.min()))
    if peak == 0.0:
        return None
    if working_dtype is None:
        dtype = X.dtype
        info = np.finfo(dtype)
        # peak**2 <= max squared row norm <= n_features * peak**2: only when these
        # bounds leave the answer open is X read once more for the row norms
        # (a memory map of millions of rows is not read twice for nothing).
        too_large = X.shape[1] * peak * peak > float(info.max)
        too_small = peak * peak < float(info.tiny)
        if too_large or too_small:
            # errstate: the overflow is the finding, reported below, not a warning.
            with np.errstate(over="ignore", under="ignore"):
                largest = np.einsum("ij,ij->i", X, X).max()
            too_large = not np.isfinite(largest)
            too_small = largest < info.tiny
        what = "its squared row norms"
    else:
        dtype = np.dtype(working_dtype)
        too_large = peak > float(np.finfo(dtype).max)
        too_small = peak < float(np.finfo(dtype).tiny)
        what = "its values"
    too_small = too_small and underflow
    too_large = too_large and overflow
    if not (too_large or too_small):
        return None
    direction = "overflow" if too_large else "underflow"
    return (
        f"too {'large' if too_large else 'small'} for {np.dtype(dtype).name} arithmetic: "
        f"{what} {direction} (largest |{name}| = {peak:.3g})"
    )


def check_samples(X, name="X", *, min_samples=1, dtype=FLOAT_DTYPES, order="C"):
    """Validate a 2-D finite float array outside an estimator."""
    try:
        return check_array(
            X,
            dtype=dtype,
            order=order,
            ensure_min_samples=min_samples,
            input_name=name,
        )
    except ValueError as exc:
        _reraise_non_numeric(exc, name)


def check_dictionary(dictionary, n_features=None, *, dtype=None, name="dictionary"):
    """Validate a dictionary of shape (n_atoms, n_features)."""
    D = check_samples(dictionary, name, dtype=FLOAT_DTYPES if dtype is None else dtype)
    if n_features is not None and D.shape[1] != n_features:
        raise ValueError(
            f"{name} has {D.shape[1]} features per atom but X has {n_features}; "
            f"pass a {name} of shape (n_atoms, {n_features})."
        )
    return D


def check_n_nonzero_coefs(n_nonzero_coefs, n_components, name="n_nonzero_coefs"):
    """Check 1 <= n_nonzero_coefs <= n_components and return it as int."""
    if not isinstance(n_nonzero_coefs, Integral) or isinstance(n_nonzero_coefs, bool):
        raise ValueError(f"{name} must be an int, got {n_nonzero_coefs!r}.")
    if not 1 <= n_nonzero_coefs <= n_components:
        raise ValueError(
            f"{name}={n_nonzero_coefs} must be between 1 and the number of atoms "
            f"({n_components}); lower {name} or use more atoms."
        )
    return int(n_nonzero_coefs)


def check_codes(codes, n_components, *, name="codes"):
    """Validate codes for inverse_transform: dense or scipy.sparse, finite."""
    A = check_array(
        codes, accept_sparse=("csr", "csc", "coo"), dtype=FLOAT_DTYPES, input_name=name
    )
    if A.shape[1] != n_components:
        raise ValueError(
            f"{name} has {A.shape[1]} columns but the dictionary has {n_components} "
            "atoms; pass the output of transform."
        )
    return A


def available_memory():
    """Bytes that a new allocation can get without swapping, or None when unknown.

    Linux's ``MemAvailable`` (free memory plus caches the kernel can drop);
    elsewhere the free physical pages that ``os.sysconf`` reports.
    """
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
