"""SparseAutoencoder: the sparse-autoencoder baseline behind the sklearn API."""

from numbers import Integral, Real

import numpy as np
import scipy.sparse as sp
from sklearn.base import _fit_context
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from tqdm.auto import tqdm

from ._base import _BaseDictionary
from ._optional import import_optional, resolve_device
from ._parallel import N_JOBS_CONSTRAINT, thread_limits
from ._rows import rows_per_buffer
from ._sae.activations import get_activation
from ._sparse import stack_csr
from ._validation import validate_samples

# Codes of one chunk of rows are held dense while they are computed; this caps
# that (rows, n_components) buffer, so transform's memory is bounded for any X.
_CHUNK_BYTES = 32 * 2**20

# dead_after=None counts one epoch of training rows as dead, but never more than
# the ten million rows OpenAI's and SAELens' defaults use.
_MAX_DEAD_AFTER = 10_000_000
# batch_size="auto": about this many Adam steps per epoch, with a power-of-two
# batch in [_MIN_AUTO_BATCH, _MAX_AUTO_BATCH] (SAELens' batch is 4096 rows).
_AUTO_STEPS_PER_EPOCH = 256
_MIN_AUTO_BATCH, _MAX_AUTO_BATCH = 32, 4096
# max_iter="auto": enough epochs for this many Adam steps, between the bounds.
# Measured (docs: sae_defaults): TopK SAEs on 14k synthetic rows and on 1.3k
# ViT embeddings need ~1-5k steps for 95% of their tuned explained variance.
_AUTO_STEPS = 2000
_MIN_AUTO_EPOCHS, _MAX_AUTO_EPOCHS = 20, 100


def _import_torch():
    return import_optional("torch", "torch", "SparseAutoencoder")


def _auto_batch_size(batch_size, n_rows):
    """`batch_size`, or for "auto" the power of two near ``n_rows / 256`` (see the docstring)."""
    if batch_size != "auto":
        return batch_size
    target = max(n_rows // _AUTO_STEPS_PER_EPOCH, 1)
    return int(np.clip(2 ** int(np.log2(target)), _MIN_AUTO_BATCH, _MAX_AUTO_BATCH))


class SparseAutoencoder(_BaseDictionary):
    """Sparse autoencoder (SAE) with the training practice of current SAE libraries.

    Codes are ``a = scale_ * f(W_enc (x - b) / scale_ + b_enc)`` and the
    reconstruction is ``x_hat = a D + b``, with ``D`` = `components_` (unit-norm
    decoder rows), ``b`` = `decoder_bias_`, ``W_enc`` = `encoder_weight_`,
    ``b_enc`` = `encoder_bias_` and ``f`` the sparsifying activation. So
    :meth:`inverse_transform` is ``codes @ components_ + decoder_bias_``, in the
    units of X, and the estimator is scored like any other skdict dictionary.

    Training (in float32, with torch, on the GPU when there is one):

    - inputs are divided by ``scale_``, the root mean squared row norm, so that
      hyper-parameters do not depend on the data's units;
    - decoder rows stay at unit norm: the gradient's component along each row is
      removed before every Adam step and the rows are renormalised after it;
    - the encoder starts tied to the decoder (``W_enc = D``), the decoder bias at
      the geometric median (Weiszfeld) or the mean of the data;
    - Adam with a linear learning-rate warmup and a linear decay to zero,
      gradient clipping at norm 1;
    - the AuxK loss (Gao et al., 2024): latents that have not fired for
      `dead_after` rows reconstruct the residual with their top
      ``n_features // 2`` pre-activations, which revives them;
    - rows are read from X in blocks of about 64 MiB, so a memory map is never
      loaded whole, neither in host memory nor on the device.

    SAE codes are non-negative for every activation but ``"abstopk"`` (the
    others end in a ReLU): data whose sparse structure has signed coefficients
    then needs two latents per direction (``d`` and ``-d``). On 10,000 signals
    in 64 dimensions drawn from 256 atoms, 5 per signal at 20 dB, a TopK SAE
    with 256 latents and k=5 (25 epochs) recovers 89% of the atoms
    (``1 - |cos| < 0.05``) at explained variance 0.89 when the codes are
    non-negative, but only 34% at 0.68 when they are signed: half of its
    latents are spent on the negative halves. :class:`~skdict.DoubleBatchKSVD`
    and ``activation="abstopk"`` have signed codes: on the signed signals an
    AbsTopK SAE of the same size recovers 84% of the atoms at explained
    variance 0.84.

    Parameters
    ----------
    n_components : int, default=256
        Number of latents (dictionary atoms).
    activation : {"topk", "abstopk", "batchtopk", "relu", "jumprelu"}, default="topk"
        ``"topk"`` keeps the `k` largest pre-activations of each row;
        ``"abstopk"`` the `k` largest in magnitude, with their sign (signed
        codes, Zhu, Khalili & Zhu, 2025);
        ``"batchtopk"`` keeps the ``k * batch_size`` largest of a training batch
        (on average `k` per row) and, at inference, every pre-activation above a
        threshold learned during training; ``"relu"`` is a ReLU with an L1
        penalty on ``codes * ||decoder row||``; ``"jumprelu"`` is a ReLU with a
        learned threshold per latent, trained with straight-through estimators
        and an L0 penalty (Rajamanoharan et al., 2024).
    k : int, default=32
        Latents per row for ``"topk"``, ``"abstopk"`` and ``"batchtopk"``, at most
        `n_components`.
    l1_coef : float, default=1e-3
        Weight of the L1 penalty (``"relu"``) or of the L0 penalty
        (``"jumprelu"``). Ignored by the TopK activations.
    l1_warmup_fraction : float, default=0.0
        Share of the training steps over which the penalty weight grows linearly
        from 0 to `l1_coef` (helps ReLU SAEs avoid dead latents).
    max_iter : int or "auto", default="auto"
        Maximum number of epochs. ``"auto"``: enough epochs for 2,000 Adam
        steps, at least 20 and at most 100 (early stopping may end sooner).
    batch_size : int or "auto", default="auto"
        Rows per Adam step. ``"auto"``: about 256 steps per epoch, i.e. the
        largest power of two at most ``n_train / 256``, between 32 and 4,096
        (``n_train``: the training rows, after the validation split). The
        budget is in optimizer steps, as SAELens schedules by training tokens:
        with both defaults, 20,000 rows train in batches of 64 for 20 epochs
        (5,600 steps), a million rows in batches of 2,048 for 20 epochs, 1,300
        training rows in batches of 32 for up to 49 epochs. A fixed batch of
        4,096 makes only 100 steps in 20 epochs of 20,000 rows, far from
        converged. See the user guide (sparse autoencoder defaults) for the
        measurements.
    learning_rate : float, default=1e-3
        Peak Adam learning rate.
    warmup_fraction : float, default=0.05
        Share of the training steps of linear learning-rate warmup.
    decay_fraction : float, default=0.2
        Share of the training steps, at the end, of linear decay to zero.
    auxk_coef : float, default=1/32
        Weight of the AuxK loss; 0 disables it.
    dead_after : int, default=None
        Training rows after which a latent that has not fired is dead. None: one
        epoch of training rows (for :meth:`partial_fit`, the rows of the batch
        that starts, or after unpickling resumes, training), at most 10,000,000.
    normalize : {"mean_norm"} or None, default="mean_norm"
        ``"mean_norm"`` divides inputs by their root mean squared row norm
        during training (folded back into codes and reconstructions).
    decoder_bias_init : {"geometric_median", "mean", "zeros"}, \
            default="geometric_median"
        Initial decoder bias, computed on up to 16,384 training rows (as is
        ``scale_``).
    validation_fraction : float, default=0.1
        Share of rows held out to score each epoch when `early_stopping`.
    early_stopping : bool, default=True
        Stop when the held-out explained variance has not improved by `tol` for
        `n_iter_no_change` epochs.
    tol : float, default=1e-4
        Improvement of the validation explained variance that counts.
    n_iter_no_change : int, default=3
        Epochs without improvement before early stopping.
    device : str, default="auto"
        ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    n_jobs : int, default=None
        torch (and BLAS) threads on the CPU during fit and transform; the
        previous thread counts are restored afterwards. None or -1: all threads
        numba may use. Small models train fastest with few threads, so at most
        one thread per 4M multiply-adds of a step (batch x latents x features)
        is used.
    sparse_output : bool, default=False
        Whether :meth:`transform` returns a ``scipy.sparse.csr_matrix``.
    random_state : int, RandomState instance or None, default=None
        Seeds the initial weights, the validation split and the batch order.
        On the CPU, the same seed gives identical results.
    verbose : int, default=0
        Show a progress bar with the loss, explained variance and dead fraction
        when > 0.
    callback : callable, default=None
        Called as ``callback(locals())`` after each epoch; training stops if it
        returns True.

    Attributes
    ----------
    components_ : ndarray of shape (n_components, n_features)
        Unit-norm decoder rows, float32.
    encoder_weight_ : ndarray of shape (n_components, n_features)
        Encoder weights (acting on scaled inputs).
    encoder_bias_ : ndarray of shape (n_components,)
        Encoder bias (on the scaled pre-activations).
    decoder_bias_ : ndarray of shape (n_features,)
        Decoder bias, in the units of X.
    threshold_ : ndarray of shape (n_components,), float or None
        JumpReLU thresholds per latent, BatchTopK's inference threshold, or None,
        on the scaled pre-activations.
    scale_ : float
        Root mean squared row norm of the training data (1 with
        ``normalize=None``).
    loss_curve_ : ndarray of shape (`n_iter_`,)
        Mean training loss of each epoch (scaled inputs).
    validation_scores_ : ndarray of shape (`n_iter_`,) or None
        Held-out explained variance after each epoch of :meth:`fit`; None
        without early stopping and after :meth:`partial_fit`.
    dead_fraction_ : float
        Share of latents dead at the end of training.
    batch_size_ : int
        Rows per Adam step used (`batch_size`, or what ``"auto"`` chose).
    n_iter_ : int
        Epochs run (accumulated over :meth:`partial_fit` calls).
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Feature names, when X has string column names.

    See Also
    --------
    skdict.DoubleBatchKSVD : Sparse dictionary learning by K-SVD (signed codes).

    References
    ----------
    L. Gao et al., "Scaling and evaluating sparse autoencoders", 2024 (TopK, AuxK).

    B. Bussmann, P. Leask and N. Nanda, "BatchTopK Sparse Autoencoders", 2024.

    S. Rajamanoharan et al., "Jumping Ahead: Improving Reconstruction Fidelity
    with JumpReLU Sparse Autoencoders", 2024.

    X. Zhu, A. Khalili and Z. Zhu, "AbsTopK: Rethinking Sparse Autoencoders For
    Bidirectional Features", 2025 (arXiv:2510.00404).

    Examples
    --------
    >>> from skdict import SparseAutoencoder
    >>> from skdict.datasets import make_sparse_signals
    >>> X, _, _ = make_sparse_signals(500, nonnegative=True, random_state=0)
    >>> sae = SparseAutoencoder(50, k=3, max_iter=5, batch_size=100,
    ...                         device="cpu", random_state=0).fit(X)
    >>> codes = sae.transform(X[:4])
    >>> codes.shape, int((codes > 0).sum(axis=1).max())
    ((4, 50), 3)
    >>> sae.inverse_transform(codes).shape
    (4, 20)
    """

    # X is divided by scale_ and then trained on in float32 (see _validation.check_magnitude).
    _working_dtype = np.float32

    _parameter_constraints: dict = {
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "activation": [str],  # a registered name: see _validate_params
        "k": [Interval(Integral, 1, None, closed="left")],
        "l1_coef": [Interval(Real, 0, None, closed="left")],
        "l1_warmup_fraction": [Interval(Real, 0, 1, closed="both")],
        "max_iter": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "batch_size": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "warmup_fraction": [Interval(Real, 0, 1, closed="both")],
        "decay_fraction": [Interval(Real, 0, 1, closed="both")],
        "auxk_coef": [Interval(Real, 0, None, closed="left")],
        "dead_after": [Interval(Integral, 1, None, closed="left"), None],
        "normalize": [StrOptions({"mean_norm"}), None],
        "decoder_bias_init": [StrOptions({"geometric_median", "mean", "zeros"})],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "early_stopping": ["boolean"],
        "tol": [Interval(Real, 0, None, closed="left")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "device": [str],
        "n_jobs": N_JOBS_CONSTRAINT,
        "sparse_output": ["boolean"],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
        "callback": [callable, None],
    }

    def __init__(
        self,
        n_components=256,
        *,
        activation="topk",
        k=32,
        l1_coef=1e-3,
        l1_warmup_fraction=0.0,
        max_iter="auto",
        batch_size="auto",
        learning_rate=1e-3,
        warmup_fraction=0.05,
        decay_fraction=0.2,
        auxk_coef=1 / 32,
        dead_after=None,
        normalize="mean_norm",
        decoder_bias_init="geometric_median",
        validation_fraction=0.1,
        early_stopping=True,
        tol=1e-4,
        n_iter_no_change=3,
        device="auto",
        n_jobs=None,
        sparse_output=False,
        random_state=None,
        verbose=0,
        callback=None,
    ):
        self.n_components = n_components
        self.activation = activation
        self.k = k
        self.l1_coef = l1_coef
        self.l1_warmup_fraction = l1_warmup_fraction
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.warmup_fraction = warmup_fraction
        self.decay_fraction = decay_fraction
        self.auxk_coef = auxk_coef
        self.dead_after = dead_after
        self.normalize = normalize
        self.decoder_bias_init = decoder_bias_init
        self.validation_fraction = validation_fraction
        self.early_stopping = early_stopping
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.device = device
        self.n_jobs = n_jobs
        self.sparse_output = sparse_output
        self.random_state = random_state
        self.verbose = verbose
        self.callback = callback

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Train the autoencoder on X.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data. A memory map (``np.load(path, mmap_mode="r")``) is
            read block by block, never whole.
        y : Ignored
            Not used, present for API consistency.

        Returns
        -------
        self : SparseAutoencoder
            Fitted estimator.
        """
        X = validate_samples(self, X, reset=True, min_samples=2)
        rng = check_random_state(self.random_state)
        train_rows, val_rows = self._split(X.shape[0], rng)
        self.batch_size_ = _auto_batch_size(self.batch_size, train_rows.size)
        steps_per_epoch = -(-train_rows.size // self.batch_size_)
        epochs = self.max_iter
        if epochs == "auto":
            epochs = int(np.clip(-(-_AUTO_STEPS // steps_per_epoch),
                                 _MIN_AUTO_EPOCHS, _MAX_AUTO_EPOCHS))
        self._start(X, train_rows, rng, total_steps=epochs * steps_per_epoch)
        self._train(X, train_rows, val_rows, epochs, rng)
        return self

    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y=None):
        """Train for one epoch on the batch X, at the constant learning rate.

        The first call initialises the model (scale, decoder bias) from X. The
        Adam state carries over between calls, but not through pickling.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            One batch of training data.
        y : Ignored
            Not used, present for API consistency.

        Returns
        -------
        self : SparseAutoencoder
            Updated estimator.
        """
        first = not hasattr(self, "components_")
        X = validate_samples(self, X, reset=first)
        rng = check_random_state(self.random_state) if first else self._rng
        rows = np.arange(X.shape[0])
        if first:
            self.batch_size_ = _auto_batch_size(self.batch_size, X.shape[0])
            self._start(X, rows, rng, total_steps=None)
        elif getattr(self, "_trainer", None) is None:
            self._trainer = self._make_trainer(self._module(), None, X.shape[0])
        self._train(X, rows, None, 1, rng)
        return self

    def _validate_params(self):
        # `activation` must name a registered class; StrOptions would freeze
        # the names at import time, before any variant registered later.
        super()._validate_params()
        get_activation(self.activation)

    def _activation(self):
        """A fresh instance of the activation named by `activation`."""
        return get_activation(self.activation)(k=self.k)

    def _split(self, n_samples, rng):
        """Training and validation rows (sorted, so a memory map is read in order)."""
        rows = rng.permutation(n_samples)
        if not self.early_stopping:
            return np.sort(rows), None
        n_val = int(np.clip(round(self.validation_fraction * n_samples), 1, n_samples - 1))
        return np.sort(rows[n_val:]), np.sort(rows[:n_val])

    def _start(self, X, rows, rng, total_steps):
        """Check parameters against X and initialise model, trainer and histories."""
        activation = self._activation()
        activation.check_params(self.n_components)
        torch = _import_torch()
        from ._sae.training import build_module, geometric_median, statistic_rows

        device = resolve_device(self.device, torch)
        sample = statistic_rows(X, rows, rng)
        scale = 1.0
        if self.normalize == "mean_norm":
            scale = float(np.sqrt(np.mean(np.einsum("ij,ij->i", sample, sample))))
            scale = scale if scale > 0 else 1.0
        self.scale_ = scale
        module = build_module(X.shape[1], self.n_components, activation,
                              rng.randint(np.iinfo(np.int32).max))
        if self.decoder_bias_init == "geometric_median":
            bias = geometric_median(sample / scale)
        elif self.decoder_bias_init == "mean":
            bias = sample.mean(axis=0) / scale
        else:
            bias = np.zeros(X.shape[1])
        with torch.no_grad():
            module.decoder_bias.copy_(torch.from_numpy(bias))
        self._rng = rng
        self._trainer = self._make_trainer(module.to(device), total_steps, rows.size)
        self.n_iter_ = 0
        self.loss_curve_ = np.empty(0)
        self.validation_scores_ = None

    def _make_trainer(self, module, total_steps, n_rows):
        from ._sae.training import Trainer

        steps = total_steps or 0
        dead_after = self.dead_after
        if dead_after is None:
            dead_after = min(n_rows, _MAX_DEAD_AFTER)
        return Trainer(
            module,
            learning_rate=self.learning_rate,
            total_steps=total_steps,
            warmup_steps=int(self.warmup_fraction * steps),
            decay_steps=int(self.decay_fraction * steps),
            sparsity_coef=self.l1_coef,
            sparsity_warmup_steps=int(self.l1_warmup_fraction * steps),
            auxk_coef=self.auxk_coef,
            dead_after=dead_after,
        )

    def _train(self, X, train_rows, val_rows, n_epochs, rng):
        from ._sae.training import block_rows, evaluate

        trainer = self._trainer
        block = block_rows(X.shape[1], self.batch_size_)
        losses, scores = [], []
        best, stale = -np.inf, 0
        work = min(self.batch_size_, X.shape[0]) * X.shape[1] * self.n_components
        with thread_limits(self.n_jobs, work), tqdm(
            total=n_epochs, disable=not self.verbose, desc=type(self).__name__, unit="epoch"
        ) as bar:
            for epoch in range(n_epochs):
                totals = trainer.train_epoch(
                    X, train_rows, self.batch_size_, block, self.scale_, rng
                )
                losses.append(totals.mean_loss())
                self.n_iter_ += 1
                self.dead_fraction_ = trainer.dead_fraction()
                bar.set_postfix(loss=f"{losses[-1]:.4g}",
                                explained_variance=f"{totals.explained_variance():.4f}",
                                dead_fraction=f"{self.dead_fraction_:.3f}")
                bar.update()
                if val_rows is not None:
                    scores.append(evaluate(trainer.module, X, val_rows, block, self.scale_))
                    if scores[-1] > best + self.tol:
                        best, stale = scores[-1], 0
                    else:
                        stale += 1
                if self.callback is not None and self.callback(locals()):
                    break
                if stale >= self.n_iter_no_change:
                    break
        self.loss_curve_ = np.concatenate([self.loss_curve_, losses])
        if val_rows is not None:
            self.validation_scores_ = np.asarray(scores)
        self._export(trainer.module)

    def _export(self, module):
        """Copy the module's weights to the numpy attributes (units of X where stated)."""
        state = {name: t.detach().cpu().numpy() for name, t in module.state_dict().items()}
        self.components_ = state["decoder_weight"].copy()
        self.encoder_weight_ = state["encoder_weight"].copy()
        self.encoder_bias_ = state["encoder_bias"].copy()
        self.decoder_bias_ = (state["decoder_bias"] * np.float32(self.scale_)).astype(np.float32)
        self.threshold_ = module.export_threshold()

    def _module(self, device=None):
        """A module on `device` rebuilt from the fitted numpy attributes."""
        torch = _import_torch()
        from ._sae.training import build_module

        module = build_module(self.n_features_in_, self.n_components, self._activation(),
                              seed=0)
        with torch.no_grad():
            module.decoder_weight.copy_(torch.from_numpy(self.components_))
            module.encoder_weight.copy_(torch.from_numpy(self.encoder_weight_))
            module.encoder_bias.copy_(torch.from_numpy(self.encoder_bias_))
            module.decoder_bias.copy_(torch.from_numpy(self.decoder_bias_ / self.scale_))
        module.import_threshold(self.threshold_)
        return module.to(resolve_device(self.device, torch) if device is None else device)

    def _encode(self, X, sparse_output):
        torch = _import_torch()
        from ._sae.training import to_device

        module = self._module()
        device = module.decoder_weight.device
        n, n_components = X.shape[0], self.n_components
        step = rows_per_buffer(n_components, 4, _CHUNK_BYTES)
        dense = None if sparse_output else np.empty((n, n_components), dtype=X.dtype)
        blocks = []
        with thread_limits(self.n_jobs, min(n, step) * X.shape[1] * n_components), \
                torch.no_grad():
            for start in range(0, n, step):
                x = to_device(X[start:start + step], device, self.scale_)
                codes = (module.encode(x) * self.scale_).cpu().numpy()
                if sparse_output:
                    blocks.append(sp.csr_matrix(codes, dtype=X.dtype))
                else:
                    dense[start:start + step] = codes
        return stack_csr(blocks, n_components, X.dtype) if sparse_output else dense

    def _decode(self, codes):
        return super()._decode(codes) + self.decoder_bias_.astype(codes.dtype, copy=False)

    def __getstate__(self):
        # The trainer holds device tensors and Adam's state; the numpy
        # attributes are the model.
        state = dict(super().__getstate__())  # object.__getstate__ returns __dict__ itself
        state.pop("_trainer", None)
        return state
