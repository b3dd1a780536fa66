"""DoubleBatchKSVD: K-SVD with batched pursuit and batched parallel atom updates."""

import time
from numbers import Integral, Real

import numpy as np
from sklearn.base import _fit_context
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from tqdm.auto import tqdm

from ._backend import resolve_backend
from ._base import _BaseDictionary
from ._dask import check_dask_array, dask_relative_error_sum, is_dask_array
from ._ksvd.encoder import GroupedEncoder, block_errors
from ._ksvd.reseed import reseed
from ._ksvd.schedule import converged, minibatches, take_rows, tol_window
from ._ksvd.start import check_working_memory, group_bounds, initial_components
from ._ksvd.state import FitState
from ._parallel import N_JOBS_CONSTRAINT, thread_limits
from ._rows import _row_norms, relative_errors
from ._validation import check_n_nonzero_coefs, validate_samples

__all__ = ["DoubleBatchKSVD", "FitState"]

# Power iterations for each atom's rank-1 update. They start from the current
# atom, which is already close to the leading singular vector after the first
# few K-SVD iterations.
_N_POWER_ITER = 2
# Relative residual below which a row's weight in the atom update stops growing
# (see _backend.numba.atom_update._rank1_atom). Without it, an atom initialised from a data row
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
        Called as ``callback(state)`` after each iteration, with a
        :class:`~skdict.ksvd.FitState` (the atoms, the batch, its codes and
        residual, the signal recovered, the elapsed time); fitting stops if it
        returns True.

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
        "n_jobs": N_JOBS_CONSTRAINT,
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
        backend = self._backend()
        self._start(X, backend)
        self._train(X, self.max_iter, reseed_last=False, backend=backend)
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
        backend = self._backend()
        if first:
            self._start(X, backend)
        self._train(X, 1, reseed_last=True, backend=backend)
        return self

    def _start(self, X, backend):
        """Check parameters against X and set the initial state."""
        check_n_nonzero_coefs(self.n_nonzero_coefs, self.n_components)
        self._groups = group_bounds(self.nested_groups, self.n_components, self.n_nonzero_coefs)
        check_working_memory(self._groups, X, self.batch_size, backend)
        self._rng = check_random_state(self.random_state)
        self.components_ = initial_components(self.init, X, self.n_components, self._rng)
        self.n_iter_ = 0
        self.error_ = np.empty(0)
        self.atom_usage_ = np.zeros(self.n_components, dtype=np.int64)

    def _atom_batch_size(self):
        if self.atom_batch_size == "auto":
            return int(np.clip(self.n_components // 32, 1, 256))
        return min(self.atom_batch_size, self.n_components)

    def _backend(self):
        return resolve_backend(self.backend, self.device)

    def _encoder(self, D, gram=None, backend=None):
        return GroupedEncoder(
            D, self._groups, pursuit=self.pursuit, tol=self.pursuit_tol, gram=gram,
            backend=backend,
        )

    def _encode(self, X, sparse_output):
        with thread_limits(self.n_jobs, work=X.size * self.n_components):
            D = self.components_.astype(X.dtype, copy=False)
            return self._encoder(D, backend=self._backend()).encode(X, sparse_output)

    def _sparse_coder(self, dtype):
        encoder = self._encoder(self.components_.astype(dtype, copy=False),
                                backend=self._backend())

        def code(X):
            with thread_limits(self.n_jobs, work=X.size * self.n_components):
                return encoder.encode(X, sparse_output=True)

        return code

    def _train(self, X, n_iter, reseed_last, backend):
        """Run up to `n_iter` iterations: code a batch, update the atoms, score,
        re-seed, then ask the stop rules."""
        D = self.components_.astype(X.dtype, copy=False)
        history, start = [], time.perf_counter()
        batches = minibatches(X.shape[0], self.batch_size, self._rng)
        window = tol_window(X.shape[0], self.batch_size)
        batch_rows = X.shape[0] if self.batch_size is None else min(self.batch_size, X.shape[0])
        work = batch_rows * X.shape[1] * D.shape[0]
        with thread_limits(self.n_jobs, work), tqdm(
            total=n_iter, disable=not self.verbose, desc=type(self).__name__, unit="it"
        ) as bar:
            gram = D @ D.T
            for iteration in range(n_iter):
                X_batch = take_rows(X, next(batches))
                codes, residual, usage = self._minibatch_step(X_batch, D, gram, backend)
                signal = self._signal_recovered(X, X_batch, D, residual)
                gram = D @ D.T
                if reseed_last or iteration < n_iter - 1:
                    reseed(D, residual, usage, gram)
                history.append(signal)
                self.n_iter_ += 1
                self.atom_usage_ = usage
                bar.set_postfix(signal_recovered=f"{signal:.4f}")
                bar.update()
                state = FitState(
                    estimator=self, iteration=iteration + 1, components=D, batch=X_batch,
                    codes=codes, residual=residual, atom_usage=usage,
                    signal_recovered=signal, elapsed=time.perf_counter() - start,
                )
                if self._check_convergence(state, history, window):
                    break
        self.components_ = D
        self.error_ = np.concatenate([self.error_, history])

    def _minibatch_step(self, X_batch, D, gram, backend):
        """Code the batch with D, then update D in place; return (codes, residual, usage)."""
        codes = self._encoder(D, gram, backend).encode(X_batch, sparse_output=True)
        usage = np.bincount(codes.indices, minlength=D.shape[0]).astype(np.int64)
        residual = self._update_dictionary(X_batch, D, codes, backend)
        return codes, residual, usage

    def _update_dictionary(self, X, D, codes, backend):
        """K-SVD update of every group's atoms, in place; return the residual."""
        groups = [(lo, hi, lo + self._rng.permutation(hi - lo)) for lo, hi, _ in self._groups]
        return backend.update_dictionary(
            X, D, codes, groups=groups, atom_batch_size=self._atom_batch_size(),
            x_norms=_row_norms(X), weight_floor=_WEIGHT_FLOOR,
            weighted=self.atom_update == "relative", n_power_iter=_N_POWER_ITER,
        )

    def _signal_recovered(self, X, X_batch, D, residual):
        """The iteration's ``error_`` entry: on the batch, or on every row of a dask X."""
        if not is_dask_array(X):
            return 1.0 - relative_errors(X_batch, residual).mean()
        total = dask_relative_error_sum(
            X, block_errors, D, self._groups, self.pursuit, self.pursuit_tol
        )
        return 1.0 - total / X.shape[0]

    def _check_convergence(self, state, history, window):
        """Whether to stop: the callback asks to, ``tol`` is met, or time is up."""
        if self.callback is not None and self.callback(state):
            return True
        if converged(history, window, self.tol):
            return True
        return self.max_time is not None and state.elapsed > self.max_time
