"""DoubleBatchKSVD: K-SVD with batched pursuit and batched parallel atom updates."""

import time
from numbers import Integral, Real

import numpy as np
import scipy.sparse as sp
from sklearn.base import _fit_context
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from tqdm.auto import tqdm

from ._atom_update import atom_positions, find_duplicates, subtract_codes, update_atoms
from ._base import _BaseDictionary
from ._dask import check_dask_array, dask_relative_error_sum, is_dask_array
from ._optional import resolve_backend
from ._parallel import thread_limits
from ._sparse import stack_csr
from ._validation import (
    available_memory,
    check_dictionary,
    check_n_nonzero_coefs,
    check_samples,
    validate_samples,
)
from .metrics import _relative_errors, _row_norms
from .pursuit import GramEncoder, chunk_rows

# Atoms closer than this (|cos|) to a more-used atom are re-seeded.
_DUPLICATE_COS = 0.99
# Power iterations for each atom's rank-1 update. They start from the current
# atom, which is already close to the leading singular vector after the first
# few K-SVD iterations.
_N_POWER_ITER = 2
# Relative residual below which a row's weight in the atom update stops growing
# (see _atom_update._rank1_atom). Without it, an atom initialised from a data row
# fits that row exactly, gets an unbounded weight on it and stays pinned there.
_WEIGHT_FLOOR = 0.05


class DoubleBatchKSVD(_BaseDictionary):
    """Sparse dictionary learning by K-SVD, batched over samples and over atoms.

    Learns a dictionary ``D`` (``components_``, unit-norm rows) such that
    ``X ≈ A D`` with at most `n_nonzero_coefs` non-zeros in each row of ``A``.
    Each iteration

    1. codes a batch of rows by batched (orthogonal) matching pursuit on the
       Gram matrix ``D Dᵀ`` (:func:`skdict.pursuit.sparse_encode`);
    2. updates the atoms in batches of `atom_batch_size`: every atom of a batch
       takes, from the same residual and in parallel, the leading singular pair
       of the residual restricted to the rows that use it (power iteration, no
       full SVD), as K-SVD does one atom at a time;
    3. re-seeds atoms that are unused, rarely used, or near-duplicates of a
       more used atom (``|cos| > 0.99``) with the directions of the
       worst-reconstructed rows' residuals, as Aharon et al. (2006) do.

    This is the DB-KSVD scheme: batches of samples (`batch_size`) and batches of
    atoms (`atom_batch_size`) make K-SVD scale to millions of rows and tens of
    thousands of atoms.

    The loss is the one skdict reports, ``mean_i ||x_i - a_i D|| / ||x_i||`` (one
    minus the signal recovered), rather than K-SVD's squared Frobenius error:
    each atom's singular pair is taken on rows weighted by
    ``1 / (||x_i|| max(||e_i||, 0.05 ||x_i||))``, ``e_i`` the current residual, a
    majorise-minimise step for that loss (Huber-smoothed below 5% relative
    error). Every iteration re-codes the rows from scratch, as K-SVD does:
    keeping a row's old code when the greedy pursuit finds a worse one makes
    ``error_`` monotone but freezes the supports, and the fit stalls (on
    sentence embeddings at 0.536 train / 0.465 held-out signal recovered
    after 14 iterations, against 0.591 / 0.518 after 50 when re-coding).
    On the K-SVD paper's synthetic experiment (80 iterations, mean of seeds
    0-4) this recovers 87% / 99% / 99% of the atoms at 10 dB / 20 dB / no
    noise, where the classic Frobenius update (``atom_update="frobenius"``)
    recovers 88% / 95% / 97% and a textbook K-SVD (exact SVDs, scikit-learn's
    OMP) 89% at 10 dB on the same signals.

    Parameters
    ----------
    n_components : int, default=256
        Number of atoms.
    n_nonzero_coefs : int, default=10
        Maximum number of atoms per row, at most `n_components`.
    pursuit : {"omp", "mp"}, default="omp"
        Sparse coder: orthogonal matching pursuit, or matching pursuit with a
        least-squares refit of its support (faster, slightly worse supports).
    pursuit_tol : float, default=None
        Stop coding a row once ``||x - x_hat|| / ||x|| <= pursuit_tol``.
    max_iter : int, default=50
        Number of iterations (coding + dictionary update), each on one batch.
    tol : float, default=1e-6
        Stop when the relative change of the signal recovered (``error_``)
        between consecutive iterations (with `batch_size`: between consecutive
        epochs' means) falls below `tol`. 0 disables the check. The loss
        flattens long before the atoms stop turning, so the default is small:
        at 1e-4 the 10 dB paper experiment stopped after 30-50 of its 80
        iterations and recovered 86% of the atoms instead of 89%.
    batch_size : int, default=None
        Rows per iteration, drawn without replacement epoch by epoch. None uses
        every row in every iteration (classic K-SVD).
    atom_batch_size : int or "auto", default="auto"
        Atoms updated together from the same residual. 1 is sequential K-SVD.
        "auto" uses ``clip(n_components // 32, 1, 256)``.
    nested_groups : array-like of int, default=None
        Increasing sizes of dictionary prefixes, ending at `n_components`, for
        Matryoshka-style nesting: group ``g`` (atoms between consecutive sizes)
        codes the residual left by the groups before it with its share of
        `n_nonzero_coefs` (split as evenly as possible, earlier groups first),
        and is updated on that residual, so that every prefix is a good
        dictionary on its own. E.g. ``(32, 128, 256)``.
    atom_update : {"relative", "frobenius"}, default="relative"
        Loss of the atom update. "relative": the mean relative error
        ``mean_i ||x_i - x_hat_i|| / ||x_i||`` (one minus the signal
        recovered), by majorise-minimise row weights (see above).
        "frobenius": the classic K-SVD update (Aharon et al., 2006; KSVD.jl),
        the leading singular pair of each atom's restricted residual, which
        minimises the squared error ``||X - A D||_F²``.
    init : {"data", "random"} or array-like of shape (n_components, n_features), \
            default="data"
        Initial atoms: random distinct non-zero rows of X (padded with random
        directions if X has fewer rows than atoms), random Gaussian directions,
        or the given array. Atoms are normalised.
    sparse_output : bool, default=False
        Whether :meth:`transform` returns a ``scipy.sparse.csr_matrix``.
    backend : {"auto", "numba", "torch"}, default="auto"
        Compute backend of the sparse coding and the atom updates. "numba":
        compiled kernels on the CPU. "torch": batched tensor kernels (needs the
        ``torch`` extra), on `device`. "auto": numba on the CPU, torch when
        `device` is a CUDA GPU. Both run the same algorithms; the bookkeeping
        around them (re-seeding, keeping the better code) stays on the CPU, as
        does coding the blocks of a dask array.
    device : {"cpu", "cuda", "auto"}, default="cpu"
        Device of the torch backend. "auto" uses a CUDA GPU when torch finds
        one, else the CPU. "cuda" without a GPU raises a ValueError.
    n_jobs : int, default=None
        Most threads for numba kernels, BLAS and torch on the CPU. None or -1: all threads
        numba may use (joblib workers lower that to avoid oversubscription). Small problems
        use fewer: about one thread per 4M multiply-adds of an iteration
        (rows x atoms x features).
    max_time : float, default=None
        Stop after the iteration that exceeds this many seconds of fitting.
    random_state : int, RandomState instance or None, default=None
        Seeds the initialisation, the sample minibatches and the atom order.
    verbose : int, default=0
        Show a progress bar with the signal recovered when > 0.
    callback : callable, default=None
        Called as ``callback(locals())`` after each iteration; fitting stops if
        it returns True.

    Attributes
    ----------
    components_ : ndarray of shape (n_components, n_features)
        Unit-norm atoms, in the dtype of the training data.
    n_iter_ : int
        Iterations run (accumulated over :meth:`partial_fit` calls).
    error_ : ndarray of shape (`n_iter_`,)
        Signal recovered, ``1 - mean ||x - x_hat|| / ||x||``, on each
        iteration's batch after its dictionary update.
    atom_usage_ : ndarray of shape (n_components,)
        Number of rows of the last iteration's batch whose code uses each atom.
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Feature names, when X has string column names.

    See Also
    --------
    sklearn.decomposition.MiniBatchDictionaryLearning : Online l1 dictionary learning.
    skdict.pursuit.sparse_encode : The batched sparse coder used here.

    References
    ----------
    M. Aharon, M. Elad and A. Bruckstein, "K-SVD: An Algorithm for Designing
    Overcomplete Dictionaries for Sparse Representation", IEEE TSP, 2006.

    R. Rubinstein, M. Zibulevsky and M. Elad, "Efficient Implementation of the
    K-SVD Algorithm using Batch Orthogonal Matching Pursuit", 2008.

    Examples
    --------
    >>> from skdict import DoubleBatchKSVD
    >>> from skdict.datasets import make_sparse_signals
    >>> from skdict.metrics import atom_recovery_rate
    >>> X, D_true, _ = make_sparse_signals(random_state=0)
    >>> ksvd = DoubleBatchKSVD(n_components=50, n_nonzero_coefs=3, max_iter=80,
    ...                        random_state=0).fit(X)
    >>> ksvd.transform(X[:2]).shape
    (2, 50)
    >>> atom_recovery_rate(D_true, ksvd.components_) > 0.9
    True
    """

    _parameter_constraints: dict = {
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "n_nonzero_coefs": [Interval(Integral, 1, None, closed="left")],
        "pursuit": [StrOptions({"omp", "mp"})],
        "pursuit_tol": [Interval(Real, 0, 1, closed="left"), None],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left"), None],
        "atom_batch_size": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "nested_groups": ["array-like", None],
        "atom_update": [StrOptions({"relative", "frobenius"})],
        "init": [StrOptions({"data", "random"}), "array-like"],
        "sparse_output": ["boolean"],
        "backend": [StrOptions({"auto", "numba", "torch"})],
        "device": [StrOptions({"cpu", "cuda", "auto"})],
        "n_jobs": [Integral, None],
        "max_time": [Interval(Real, 0, None, closed="neither"), None],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
        "callback": [callable, None],
    }

    def __init__(
        self,
        n_components=256,
        *,
        n_nonzero_coefs=10,
        pursuit="omp",
        pursuit_tol=None,
        max_iter=50,
        tol=1e-6,
        batch_size=None,
        atom_batch_size="auto",
        nested_groups=None,
        atom_update="relative",
        init="data",
        sparse_output=False,
        backend="auto",
        device="cpu",
        n_jobs=None,
        max_time=None,
        random_state=None,
        verbose=0,
        callback=None,
    ):
        self.n_components = n_components
        self.n_nonzero_coefs = n_nonzero_coefs
        self.pursuit = pursuit
        self.pursuit_tol = pursuit_tol
        self.max_iter = max_iter
        self.tol = tol
        self.batch_size = batch_size
        self.atom_batch_size = atom_batch_size
        self.nested_groups = nested_groups
        self.atom_update = atom_update
        self.init = init
        self.sparse_output = sparse_output
        self.backend = backend
        self.device = device
        self.n_jobs = n_jobs
        self.max_time = max_time
        self.random_state = random_state
        self.verbose = verbose
        self.callback = callback

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Learn the dictionary from X.

        Parameters
        ----------
        X : array-like or dask array of shape (n_samples, n_features)
            Training data; float32 is kept as float32. With `batch_size`, only
            one minibatch of rows is in memory at a time, so X may be a memory
            map (``np.load(path, mmap_mode="r")``). A dask array needs
            `batch_size`: each iteration gathers one minibatch to this process
            for the dictionary update, and ``error_`` is then the signal
            recovered on all rows, computed block by block on the cluster.
        y : Ignored
            Not used, present for API consistency.

        Returns
        -------
        self : DoubleBatchKSVD
            Fitted estimator.
        """
        if is_dask_array(X):
            X = check_dask_array(self, X, reset=True)
            if self.batch_size is None:
                raise ValueError(
                    "Fitting a dask array needs batch_size: each iteration gathers "
                    "one minibatch of rows to this process; e.g. batch_size=100_000."
                )
        else:
            X = validate_samples(self, X, reset=True, min_samples=2)
        device = self._torch_device()
        self._start(X)
        self._train(X, self.max_iter, reseed_last=False, device=device)
        return self

    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y=None):
        """Run one iteration (coding + dictionary update) on the batch X.

        The first call initialises the dictionary from X.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            One batch of training data.
        y : Ignored
            Not used, present for API consistency.

        Returns
        -------
        self : DoubleBatchKSVD
            Updated estimator.
        """
        first = not hasattr(self, "components_")
        if is_dask_array(X):
            X = X.compute()
        X = validate_samples(self, X, reset=first)
        device = self._torch_device()
        if first:
            self._start(X)
        self._train(X, 1, reseed_last=True, device=device)
        return self

    def _start(self, X):
        """Check parameters against X and set the initial state."""
        check_n_nonzero_coefs(self.n_nonzero_coefs, self.n_components)
        self._groups = _group_bounds(self.nested_groups, self.n_components, self.n_nonzero_coefs)
        _check_working_memory(self._groups, X, self.batch_size, self._torch_device())
        self._rng = check_random_state(self.random_state)
        self.components_ = _initial_components(self.init, X, self.n_components, self._rng)
        self.n_iter_ = 0
        self.error_ = np.empty(0)
        self.atom_usage_ = np.zeros(self.n_components, dtype=np.int64)

    def _atom_batch_size(self):
        if self.atom_batch_size == "auto":
            return int(np.clip(self.n_components // 32, 1, 256))
        return min(self.atom_batch_size, self.n_components)

    def _torch_device(self):
        """The torch device to run on, or None for the numba backend."""
        return resolve_backend(self.backend, self.device)[1]

    def _encoder(self, D, gram=None, device=None):
        return _GroupedEncoder(D, self._groups, self.pursuit, self.pursuit_tol, gram, device)

    def _encode(self, X, sparse_output):
        device = self._torch_device()
        with thread_limits(self.n_jobs, work=X.size * self.n_components):
            D = self.components_.astype(X.dtype, copy=False)
            return self._encoder(D, device=device).encode(X, sparse_output)

    def _train(self, X, n_iter, reseed_last, device):
        D = self.components_.astype(X.dtype, copy=False)
        history = []
        start = time.perf_counter()
        window = _tol_window(X.shape[0], self.batch_size)
        batches = _minibatches(X.shape[0], self.batch_size, self._rng)
        batch_rows = X.shape[0] if self.batch_size is None else min(self.batch_size, X.shape[0])
        work = batch_rows * X.shape[1] * D.shape[0]
        with thread_limits(self.n_jobs, work), tqdm(
            total=n_iter, disable=not self.verbose, desc=type(self).__name__, unit="it"
        ) as bar:
            gram = D @ D.T
            for iteration in range(n_iter):
                rows = next(batches)
                X_batch = _take(X, rows)
                codes = self._encoder(D, gram, device).encode(X_batch, sparse_output=True)
                residual, usage = self._update_dictionary(X_batch, D, codes, device)
                signal = 1.0 - (
                    self._dask_error(X, D) if is_dask_array(X)
                    else _relative_errors(X_batch, residual).mean()
                )
                history.append(signal)
                gram = D @ D.T
                if reseed_last or iteration < n_iter - 1:
                    _reseed(D, residual, usage, gram)
                self.n_iter_ += 1
                self.atom_usage_ = usage
                bar.set_postfix(signal_recovered=f"{signal:.4f}")
                bar.update()
                if self.callback is not None and self.callback(locals()):
                    break
                if _converged(history, window, self.tol):
                    break
                if self.max_time is not None and time.perf_counter() - start > self.max_time:
                    break
        self.components_ = D
        self.error_ = np.concatenate([self.error_, history])

    def _dask_error(self, X, D):
        """Mean relative residual over all rows of a dask array, on the cluster."""
        total = dask_relative_error_sum(
            X, _block_errors, D, self._groups, self.pursuit, self.pursuit_tol
        )
        return total / X.shape[0]

    def _update_dictionary(self, X, D, codes, device):
        """K-SVD update of every group's atoms, in place; return (residual, usage)."""
        indptr, indices, data = codes.indptr, codes.indices, codes.data
        usage = np.bincount(indices, minlength=D.shape[0]).astype(np.int64)
        x_norms = _row_norms(X)
        atom_batch = self._atom_batch_size()
        weighted = self.atom_update == "relative"
        groups = [(lo, hi, lo + self._rng.permutation(hi - lo)) for lo, hi, _ in self._groups]
        if device is not None:
            from ._atom_update_torch import update_dictionary

            residual = update_dictionary(
                X, D, codes, groups, atom_batch, x_norms, _WEIGHT_FLOOR, weighted,
                _N_POWER_ITER, device,
            )
            return residual, usage
        atom_ptr, atom_rows, atom_pos = atom_positions(indptr, indices, D.shape[0])
        residual = np.array(X, dtype=D.dtype, order="C", copy=True)
        for lo, hi, order in groups:
            subtract_codes(residual, indptr, indices, data, D, lo, hi)
            update_atoms(
                residual, D, indptr, indices, data, atom_ptr, atom_rows, atom_pos,
                order, atom_batch, x_norms, _WEIGHT_FLOOR, weighted, _N_POWER_ITER,
            )
        return residual, usage


class _GroupedEncoder:
    """Codes rows group by group, each group on the residual of the ones before.

    With a single group this is plain :class:`~skdict.pursuit.GramEncoder`.
    """

    def __init__(self, D, groups, pursuit, tol, gram=None, device=None):
        self.D = D
        self.groups = groups
        self.encoders = [
            GramEncoder(
                D[lo:hi], k, pursuit, tol,
                None if gram is None else np.ascontiguousarray(gram[lo:hi, lo:hi]),
                device,
            )
            for lo, hi, k in groups
        ]

    def encode(self, X, sparse_output):
        if len(self.encoders) == 1:
            return self.encoders[0].encode(X, sparse_output)
        step = chunk_rows(self.D.shape[0], X.dtype.itemsize)
        blocks = [self._encode_chunk(X[s:s + step]) for s in range(0, X.shape[0], step)]
        codes = stack_csr(blocks, self.D.shape[0], X.dtype)
        return codes if sparse_output else codes.toarray()

    def _encode_chunk(self, X):
        residual = np.array(X, order="C", copy=True)
        parts = []
        for encoder in self.encoders:
            codes = encoder.encode(residual, sparse_output=True)
            subtract_codes(
                residual, codes.indptr, codes.indices, codes.data, encoder.dictionary,
                0, encoder.n_atoms,
            )
            parts.append(codes)
        return sp.hstack(parts, format="csr")


def _take(X, rows):
    """Rows of X (all for None) in memory; gathered and validated for dask."""
    if is_dask_array(X):
        return check_samples((X if rows is None else X[rows]).compute())
    return X if rows is None else X[rows]


def _block_errors(block, D, groups, pursuit, tol):
    """Relative residual of each row of one block coded with D."""
    block = check_samples(block)
    D = D.astype(block.dtype, copy=False)
    codes = _GroupedEncoder(D, groups, pursuit, tol).encode(block, sparse_output=True)
    return _relative_errors(block, _residual(block, D, codes))


def _working_bytes(groups, n_features, n_rows, itemsize):
    """Bytes a fit holds at its peak: the Gram matrices, the atoms and one batch's buffers.

    The Gram matrix is held twice while ``D @ D.T`` is recomputed after each update;
    with nested groups each group also gets its own contiguous block. The atoms are
    held as ``components_`` and as the working copy; a batch's rows are copied
    for the residual; the correlations of one chunk of rows take ~32 MiB.
    """
    n_atoms = groups[-1][1]
    gram = 2 * n_atoms**2
    if len(groups) > 1:
        gram += sum((hi - lo) ** 2 for lo, hi, _ in groups)
    return (gram + 2 * n_atoms * n_features + 2 * n_rows * n_features) * itemsize + 2**25


def _check_working_memory(groups, X, batch_size, device):
    """Refuse, before allocating, a fit that needs more memory than the machine has.

    Without this, a million atoms meet a MemoryError (or the swap) only after
    the slow initialisation. Fits on a CUDA device keep the Gram matrix there,
    so they are not checked against host memory.
    """
    available = available_memory()
    if available is None or (device is not None and device.type != "cpu"):
        return
    n_rows = X.shape[0] if batch_size is None else min(batch_size, X.shape[0])
    needed = _working_bytes(groups, X.shape[1], n_rows, X.dtype.itemsize)
    if needed <= available:
        return
    n_atoms = groups[-1][1]
    rows_part = 2 * n_rows * X.shape[1] * X.dtype.itemsize
    # Largest atom count whose two Gram matrices fit in what the rows leave free.
    room = max(available - rows_part - 2**25, 0) / (2 * X.dtype.itemsize)
    fits = int(np.sqrt(room))
    fixes = [f"use at most about {fits} atoms (the Gram matrix grows as n_components**2)"]
    if rows_part > available / 2:
        fixes.append("set a smaller batch_size (rows held at once)")
    if X.dtype == np.float64:
        fixes.append("pass float32 data (half the memory)")
    raise ValueError(
        f"n_components={n_atoms} needs about {needed / 2**30:.1f} GiB of memory (the "
        f"{n_atoms} x {n_atoms} Gram matrix, held twice while it is updated, and working "
        f"buffers) but {available / 2**30:.1f} GiB is available; " + ", or ".join(fixes) + "."
    )


def _group_bounds(nested_groups, n_components, n_nonzero_coefs):
    """(start, stop, n_nonzero_coefs) of each atom group."""
    if nested_groups is None:
        return [(0, n_components, n_nonzero_coefs)]
    sizes = np.asarray(nested_groups)
    if (
        sizes.ndim != 1
        or sizes.size == 0
        or not np.issubdtype(sizes.dtype, np.integer)
        or sizes[0] < 1
        or np.any(np.diff(sizes) <= 0)
        or sizes[-1] != n_components
    ):
        raise ValueError(
            "nested_groups must be increasing positive ints ending at n_components="
            f"{n_components}, e.g. ({n_components // 4}, {n_components}); got "
            f"{nested_groups!r}."
        )
    n_groups = sizes.size
    if n_nonzero_coefs < n_groups:
        raise ValueError(
            f"n_nonzero_coefs={n_nonzero_coefs} is smaller than the {n_groups} "
            "nested_groups; each group needs at least one non-zero coefficient."
        )
    shares = np.full(n_groups, n_nonzero_coefs // n_groups)
    shares[: n_nonzero_coefs % n_groups] += 1
    starts = np.concatenate([[0], sizes[:-1]])
    bounds = []
    for lo, hi, k in zip(starts, sizes, shares):
        if k > hi - lo:
            raise ValueError(
                f"nested group of atoms {lo}..{hi} has {hi - lo} atoms but gets {k} "
                "non-zero coefficients; use larger groups or fewer n_nonzero_coefs."
            )
        bounds.append((int(lo), int(hi), int(k)))
    return bounds


def _initial_components(init, X, n_components, rng):
    n_features = X.shape[1]
    if isinstance(init, str) and init == "data":
        norms = _any_row_norms(X)
        chosen = rng.permutation(np.flatnonzero(norms > 0))[:n_components]
        D = np.empty((n_components, n_features), dtype=np.float64)
        D[: chosen.size] = _take(X, chosen) / norms[chosen, None]
        D[chosen.size :] = rng.standard_normal((n_components - chosen.size, n_features))
    elif isinstance(init, str):
        D = rng.standard_normal((n_components, n_features))
    else:
        D = check_dictionary(init, n_features, name="init").astype(np.float64)
        if D.shape[0] != n_components:
            raise ValueError(
                f"init has {D.shape[0]} atoms but n_components={n_components}; pass "
                f"an array of shape ({n_components}, {n_features})."
            )
    norms = np.linalg.norm(D, axis=1)
    if np.any(norms == 0):
        raise ValueError("init contains an all-zero atom; every atom needs a direction.")
    return np.ascontiguousarray(D / norms[:, None], dtype=X.dtype)


def _any_row_norms(X):
    if is_dask_array(X):
        # Block by block with the same function, so that a dask fit starts from
        # bit-identical atoms to the in-memory fit of the same data.
        return X.map_blocks(
            _row_norms, dtype=np.float64, drop_axis=1, meta=np.empty(0, dtype=np.float64)
        ).compute()
    return _row_norms(X)


def _minibatches(n_samples, batch_size, rng):
    """Yield row indices of each iteration's batch; None means all rows."""
    if batch_size is None or batch_size >= n_samples:
        while True:
            yield None
    while True:
        perm = rng.permutation(n_samples)
        for start in range(0, n_samples - batch_size + 1, batch_size):
            yield np.sort(perm[start : start + batch_size])


def _tol_window(n_samples, batch_size):
    """Iterations per epoch: the window over which convergence is judged."""
    if batch_size is None or batch_size >= n_samples:
        return 1
    return n_samples // batch_size


def _converged(history, window, tol):
    if tol == 0 or len(history) < 2 * window:
        return False
    current = np.mean(history[-window:])
    previous = np.mean(history[-2 * window : -window])
    return abs(current - previous) <= tol * max(abs(previous), 1e-12)


def _reseed(D, residual, usage, gram):
    """Replace unused, rarely used and duplicated atoms, in place.

    An atom is rarely used when fewer rows than a quarter of the mean usage use
    it; only the least used one percent of atoms (at least one) are replaced per
    call, so that dictionaries with a long tail of legitimately rare atoms do not
    churn. New atoms are the residual directions of the worst-reconstructed
    rows, one row per atom. Updates ``gram`` in place.
    """
    n_atoms = D.shape[0]
    rare = np.flatnonzero((usage > 0) & (usage < usage.mean() / 4))
    rare = rare[np.argsort(usage[rare], kind="stable")][: max(1, n_atoms // 100)]
    dead = find_duplicates(gram, usage, _DUPLICATE_COS) | (usage == 0)
    dead[rare] = True
    dead = np.flatnonzero(dead)
    errors = np.einsum("ij,ij->i", residual, residual, dtype=np.float64)
    worst = np.argsort(-errors, kind="stable")[: dead.size]
    worst = worst[errors[worst] > 0]
    dead = dead[: worst.size]
    if dead.size == 0:
        return
    D[dead] = residual[worst] / np.sqrt(errors[worst])[:, None]
    _refresh_gram(gram, D, dead)


def _refresh_gram(gram, D, atoms):
    rows = D[atoms] @ D.T
    gram[atoms, :] = rows
    gram[:, atoms] = rows.T


def _residual(X, D, codes):
    residual = np.array(X, dtype=D.dtype, order="C", copy=True)
    subtract_codes(residual, codes.indptr, codes.indices, codes.data, D, 0, D.shape[0])
    return residual
