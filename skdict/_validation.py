"""Input checks shared by every skdict estimator and function.

Error messages name the offending parameter and say how to fix it, so that users
never meet a numba or torch traceback for a mistake in their input.
"""

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
    """Validate X for `estimator` (2-D, finite, float32 or float64).

    Wraps :func:`sklearn.utils.validation.validate_data` so that feature counts and
    names are recorded (``reset=True``) or checked (``reset=False``), and adds a
    message naming X for object arrays holding non-numbers.
    """
    try:
        return validate_data(
            estimator,
            X,
            dtype=FLOAT_DTYPES,
            reset=reset,
            ensure_min_samples=min_samples,
            order="C",
        )
    except ValueError as exc:
        _reraise_non_numeric(exc, "X")


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
