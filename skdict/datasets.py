"""Data that ships with skdict: synthetic sparse signals with a known dictionary."""

from numbers import Integral, Real

import numpy as np
import scipy.sparse as sp
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions, validate_params

from ._validation import check_dictionary


@validate_params(
    {
        "n_samples": [Interval(Integral, 1, None, closed="left")],
        "n_features": [Interval(Integral, 1, None, closed="left")],
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "n_nonzero_coefs": [Interval(Integral, 1, None, closed="left")],
        "snr": [Real, None],
        "dictionary": [StrOptions({"uniform", "gaussian"}), "array-like"],
        "nonnegative": ["boolean"],
        "dtype": [type, np.dtype, str],
        "random_state": ["random_state"],
    },
    prefer_skip_nested_validation=True,
)
def make_sparse_signals(
    n_samples=1500,
    n_features=20,
    n_components=50,
    n_nonzero_coefs=3,
    *,
    snr=20.0,
    dictionary="uniform",
    nonnegative=False,
    dtype=np.float64,
    random_state=None,
):
    """Signals that are sparse combinations of a random dictionary, plus noise.

    The defaults are the synthetic experiment of Aharon, Elad & Bruckstein (2006,
    K-SVD): a 20 x 50 dictionary with i.i.d. uniform entries (here on [-1, 1]) and
    unit-norm atoms, 1500 signals of 3 atoms each at random positions with
    standard normal coefficients, and white Gaussian noise at 20 dB SNR.

    Parameters
    ----------
    n_samples : int, default=1500
        Number of signals.
    n_features : int, default=20
        Dimension of each signal.
    n_components : int, default=50
        Number of atoms of the generating dictionary.
    n_nonzero_coefs : int, default=3
        Atoms per signal, at distinct random positions.
    snr : float or None, default=20.0
        Signal-to-noise ratio in dB (noise power relative to the mean signal
        power); None for noiseless signals.
    dictionary : {"uniform", "gaussian"} or array-like of shape \
            (n_components, n_features), default="uniform"
        Distribution of the dictionary entries before normalisation, or the
        atoms themselves (normalised), e.g. to draw more signals from the
        dictionary of an earlier call, chunk by chunk.
    nonnegative : bool, default=False
        Draw coefficients as absolute values of normals (the codes of ReLU and
        TopK sparse autoencoders are non-negative).
    dtype : dtype, default=np.float64
        dtype of X and of the dictionary.
    random_state : int, RandomState instance or None, default=None
        Seed.

    Returns
    -------
    X : ndarray of shape (n_samples, n_features)
        Signals.
    components : ndarray of shape (n_components, n_features)
        Generating atoms as unit-norm rows.
    codes : scipy.sparse.csr_matrix of shape (n_samples, n_components)
        True codes: ``X ≈ codes @ components``.

    Examples
    --------
    >>> from skdict.datasets import make_sparse_signals
    >>> X, D, A = make_sparse_signals(random_state=0)
    >>> X.shape, D.shape, A.nnz
    ((1500, 20), (50, 20), 4500)
    """
    if n_nonzero_coefs > n_components:
        raise ValueError(
            f"n_nonzero_coefs={n_nonzero_coefs} must be <= n_components={n_components}."
        )
    rng = check_random_state(random_state)
    if not isinstance(dictionary, str):
        D = check_dictionary(dictionary, n_features, name="dictionary").astype(np.float64)
        if D.shape[0] != n_components:
            raise ValueError(
                f"dictionary has {D.shape[0]} atoms but n_components={n_components}."
            )
    elif dictionary == "uniform":
        D = rng.uniform(-1.0, 1.0, size=(n_components, n_features))
    else:
        D = rng.standard_normal((n_components, n_features))
    D = D / np.linalg.norm(D, axis=1, keepdims=True)
    support = _random_supports(rng, n_samples, n_components, n_nonzero_coefs)
    values = rng.standard_normal((n_samples, n_nonzero_coefs))
    if nonnegative:
        values = np.abs(values)
    indptr = np.arange(0, n_samples * n_nonzero_coefs + 1, n_nonzero_coefs)
    codes = sp.csr_matrix(
        (values.ravel(), support.ravel(), indptr), shape=(n_samples, n_components)
    )
    X = np.asarray(codes @ D)
    if snr is not None:
        power = np.mean(X**2)
        X += rng.standard_normal(X.shape) * np.sqrt(power / 10 ** (snr / 10))
    return X.astype(dtype), D.astype(dtype), codes.astype(dtype)


def _random_supports(rng, n_rows, n_atoms, k, chunk=4096):
    """k distinct sorted atom indices per row, uniformly at random.

    Draws with replacement and redraws the rare rows with a repeat; rows still
    repeating after that (k close to n_atoms) take the first k of a random
    permutation, chunk by chunk so that memory stays O(chunk x n_atoms).
    """
    support = np.sort(rng.randint(0, n_atoms, size=(n_rows, k)), axis=1)
    for _ in range(3):
        bad = np.flatnonzero((support[:, 1:] == support[:, :-1]).any(axis=1))
        if bad.size == 0:
            return support
        support[bad] = np.sort(rng.randint(0, n_atoms, size=(bad.size, k)), axis=1)
    bad = np.flatnonzero((support[:, 1:] == support[:, :-1]).any(axis=1))
    for start in range(0, bad.size, chunk):
        rows = bad[start:start + chunk]
        perm = np.argsort(rng.random_sample((rows.size, n_atoms)), axis=1)[:, :k]
        support[rows] = np.sort(perm, axis=1)
    return support

from ._vit.digits_vit import load_digits_images, make_digits_vit, train_digits_vit  # noqa: E402
