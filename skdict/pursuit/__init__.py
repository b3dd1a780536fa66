"""Batched sparse coding: many rows coded at once against one dictionary.

The public entry point is :func:`sparse_encode`. Estimators use :class:`GramEncoder`
directly so that the Gram matrix is computed once per dictionary, not once per call.
"""

from numbers import Real

import numpy as np

from .._backend import resolve_backend
from .._backend.numba import NumbaBackend
from .._parallel import thread_limits
from .._sparse import support_to_csr, support_to_dense
from .._validation import check_dictionary, check_n_nonzero_coefs, check_samples

__all__ = ["sparse_encode", "GramEncoder"]

_ALGORITHMS = ("mp", "omp")


class GramEncoder:
    """Sparse coder bound to one dictionary and its Gram matrix.

    Parameters
    ----------
    dictionary : ndarray of shape (n_atoms, n_features)
        Validated, C-contiguous, in the dtype the rows will be coded in.
    n_nonzero_coefs : int
        Maximum number of atoms per row.
    algorithm : {"omp", "mp"}
        Orthogonal matching pursuit, or matching pursuit followed by a
        least-squares refit of the chosen support.
    tol : float or None
        Stop a row once ``||x - x_hat|| / ||x|| <= tol``.
    gram : ndarray of shape (n_atoms, n_atoms) or None
        ``dictionary @ dictionary.T`` when already known.
    backend : NumbaBackend or TorchBackend, default=None
        Where the pursuit runs, as returned by ``resolve_backend(backend,
        device)``; None runs the numba kernels on the CPU.
    positive : bool, default=False
        Non-negative codes, by non-negative OMP (`algorithm` must be "omp").
    """

    def __init__(
        self, dictionary, n_nonzero_coefs, algorithm="omp", tol=None, gram=None, backend=None,
        positive=False,
    ):
        if algorithm not in _ALGORITHMS:
            raise ValueError(
                f"algorithm must be one of {list(_ALGORITHMS)}, got {algorithm!r}."
            )
        if positive and algorithm != "omp":
            raise ValueError(
                "Non-negative codes are computed by non-negative OMP; use "
                f"algorithm='omp' (pursuit='omp') with positive codes, not {algorithm!r}."
            )
        if tol is not None and (not isinstance(tol, Real) or not 0 <= tol < 1):
            raise ValueError(f"tol must be None or a float in [0, 1), got {tol!r}.")
        self.dictionary = dictionary
        self.n_atoms = dictionary.shape[0]
        self.n_nonzero_coefs = check_n_nonzero_coefs(n_nonzero_coefs, self.n_atoms)
        self.algorithm = algorithm
        self._thresh2 = -np.inf if tol is None else float(tol) ** 2
        # An atom whose squared distance to the span of the support is below this
        # share of its squared norm is treated as linearly dependent.
        self._dep_tol = 100 * float(np.finfo(dictionary.dtype).eps)
        self.backend = NumbaBackend() if backend is None else backend
        coder = self.backend.positive_coder if positive else self.backend.coder
        self._coder = coder(dictionary, self._check_gram(gram))

    def _check_gram(self, gram):
        if gram is None:
            return None
        D = self.dictionary
        gram = check_samples(gram, "gram", dtype=D.dtype)
        if gram.shape != (self.n_atoms, self.n_atoms):
            raise ValueError(
                f"gram has shape {gram.shape} but must be (n_atoms, n_atoms) = "
                f"({self.n_atoms}, {self.n_atoms}); pass dictionary @ dictionary.T."
            )
        return gram

    def support(self, X):
        """Code the rows of a chunk; return (indices, values, counts)."""
        if X.dtype != self.dictionary.dtype:
            # The kernels read the correlations X Dᵀ through an integer view sized
            # by X's dtype: a float64 dictionary would make them read garbage.
            raise ValueError(
                f"X is {X.dtype} but the dictionary is {self.dictionary.dtype}; cast "
                "one to the other (sparse_encode does this for you)."
            )
        return self._coder.support(
            X, self.algorithm, self.n_nonzero_coefs, self._thresh2, self._dep_tol
        )

    def encode(self, X, sparse_output=False):
        """Code all rows of X chunk by chunk; return dense codes or CSR."""
        n = X.shape[0]
        k = self.n_nonzero_coefs
        indices = np.empty((n, k), dtype=np.int32)
        values = np.empty((n, k), dtype=X.dtype)
        counts = np.empty(n, dtype=np.int64)
        step = self.backend.chunk_rows(self.n_atoms, k, X.dtype.itemsize)
        for start in range(0, n, step):
            rows = slice(start, min(n, start + step))
            indices[rows], values[rows], counts[rows] = self.support(X[rows])
        if sparse_output:
            return support_to_csr(indices, values, counts, self.n_atoms)
        return support_to_dense(indices, values, counts, self.n_atoms)


def sparse_encode(
    X,
    dictionary,
    *,
    n_nonzero_coefs,
    algorithm="omp",
    tol=None,
    gram=None,
    sparse_output=False,
    backend="auto",
    device="cpu",
    n_jobs=None,
    positive=False,
):
    """Sparse-code many rows at once by batched greedy pursuit.

    Solves, for every row ``x`` of `X`, ``min ||x - a D||`` subject to
    ``||a||_0 <= n_nonzero_coefs``, greedily. The Gram matrix ``G = D Dᵀ`` is
    computed once and the correlations ``D xᵀ`` by one matrix product per chunk of
    rows; numba kernels then code the rows of a chunk in parallel without any
    per-row Python or per-row copy of ``G``. The torch backend runs the same
    algorithms as batched tensor operations, on the CPU or a CUDA GPU.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        Rows to code. float32 input is coded in float32.
    dictionary : array-like of shape (n_atoms, n_features)
        Atoms as rows. Atoms need not have unit norm.
    n_nonzero_coefs : int
        Maximum number of non-zero coefficients per row, between 1 and n_atoms.
    algorithm : {"omp", "mp"}, default="omp"
        ``"omp"``: orthogonal matching pursuit; coefficients are exact least
        squares on the support, kept up to date by Cholesky updates.
        ``"mp"``: matching pursuit for `n_nonzero_coefs` steps (an atom may be
        chosen twice, so the support can be smaller), then a least-squares refit
        on the chosen support. Faster per step, slightly worse supports.
    tol : float, default=None
        Stop coding a row once ``||x - x_hat|| / ||x|| <= tol``.
    gram : array-like of shape (n_atoms, n_atoms), default=None
        Precomputed ``dictionary @ dictionary.T``.
    sparse_output : bool, default=False
        Return a ``scipy.sparse.csr_matrix`` instead of a dense array; memory is
        then O(n_samples x n_nonzero_coefs) instead of O(n_samples x n_atoms).
    backend : {"auto", "numba", "torch"}, default="auto"
        ``"numba"``: compiled kernels on the CPU. ``"torch"``: batched tensor
        kernels (needs the ``torch`` extra). ``"auto"``: numba on the CPU,
        torch when `device` is a CUDA GPU.
    device : {"cpu", "cuda", "auto"}, default="cpu"
        Where the torch backend runs; ``"auto"`` uses a CUDA GPU when there is
        one. ``"cuda"`` without a GPU raises a ValueError.
    n_jobs : int, default=None
        Threads for the numba kernels, BLAS and torch. ``None`` or ``-1`` use all
        threads numba may use.
    positive : bool, default=False
        Non-negative codes, by non-negative OMP (Bruckstein, Elad & Zibulevsky,
        2008): each step adds the atom of largest positive correlation with the
        residual and solves non-negative least squares on the support; a row
        stops early when no correlation is positive. Needs ``algorithm="omp"``.

    Returns
    -------
    codes : ndarray or csr_matrix of shape (n_samples, n_atoms)
        Codes in the dtype of `X`.

    Examples
    --------
    >>> import numpy as np
    >>> from skdict.pursuit import sparse_encode
    >>> D = np.eye(4)[:3]
    >>> sparse_encode([[3.0, 0.0, -2.0, 0.0]], D, n_nonzero_coefs=2)
    array([[ 3.,  0., -2.]])
    >>> sparse_encode([[3.0, 0.0, -2.0, 0.0]], D, n_nonzero_coefs=2, positive=True)
    array([[3., 0., 0.]])
    """
    X = check_samples(X, "X")
    D = check_dictionary(dictionary, X.shape[1], dtype=X.dtype)
    with thread_limits(n_jobs):
        encoder = GramEncoder(
            D, n_nonzero_coefs, algorithm=algorithm, tol=tol, gram=gram,
            backend=resolve_backend(backend, device), positive=positive,
        )
        return encoder.encode(X, sparse_output)
