"""SparseAutoencoder's activations: one class per variant, registered by name.

An activation turns pre-activations into codes and owns everything that
differs between variants: its own tensors (JumpReLU's thresholds, BatchTopK's
inference threshold), its sparsity penalty, the constraint applied after each
optimiser step, and the fitted ``threshold_`` it exports to the estimator,
model files and SAELens folders. The estimator, the module, the trainer and
the file formats ask the activation object; none of them compares names.

This module does not import torch, so that constructing and validating a
SparseAutoencoder works without it: the methods that run on tensors use tensor
methods, or import torch when they are called.

Examples
--------
A new variant is an :class:`Activation` subclass registered under the name
that ``SparseAutoencoder(activation=...)`` accepts:

>>> from skdict._sae.activations import ACTIVATIONS, Activation, register
>>> @register("shifted_relu")
... class ShiftedReLU(Activation):
...     '''ReLU of the pre-activations minus 0.1 (no penalty, no state).'''
...
...     def forward(self, pre, state, training):
...         return (pre - 0.1).relu()
>>> sorted(ACTIVATIONS)
['abstopk', 'batchtopk', 'jumprelu', 'relu', 'shifted_relu', 'topk']
>>> del ACTIVATIONS["shifted_relu"]
"""

import numpy as np

from .._validation import check_n_nonzero_coefs

#: Activation classes by the name ``SparseAutoencoder(activation=...)`` takes.
ACTIVATIONS = {}

# Initial JumpReLU threshold, small enough that every latent can fire at first.
_JUMPRELU_INIT_THRESHOLD = 1e-3
# Weight of each new batch in BatchTopK's running inference threshold.
_THRESHOLD_MOMENTUM = 0.01


def register(name):
    """Class decorator registering an :class:`Activation` subclass as `name`.

    Parameters
    ----------
    name : str
        The value of SparseAutoencoder's ``activation`` parameter that selects
        the class; also stored as the class's ``name``.

    Returns
    -------
    decorator : callable
        Registers and returns the class unchanged.
    """

    def decorator(cls):
        cls.name = name
        ACTIVATIONS[name] = cls
        return cls

    return decorator


def get_activation(name):
    """The activation class registered as `name`.

    Parameters
    ----------
    name : str
        Value of SparseAutoencoder's ``activation`` parameter.

    Returns
    -------
    cls : type
        A subclass of :class:`Activation`.

    Raises
    ------
    ValueError
        When no activation is registered as `name`; the message lists those
        that are.
    """
    try:
        return ACTIVATIONS[name]
    except (KeyError, TypeError):  # TypeError: an unhashable value
        raise ValueError(
            f"The 'activation' parameter of SparseAutoencoder must be one of "
            f"{sorted(ACTIVATIONS)}; got {name!r}. A new variant is an Activation "
            "subclass registered with skdict._sae.activations.register."
        ) from None


class Activation:
    """Interface of an SAE activation ``f``: codes ``= f(pre-activations)``.

    Subclasses implement :meth:`forward`; the other methods default to an
    activation without tensors of its own, without a sparsity penalty (the
    sparsity then comes from `forward` itself, as in TopK) and without a
    fitted threshold. Tensors are passed in scaled input space (see
    ``skdict._sae.model``): rows of X divided by the estimator's ``scale_``.

    Parameters
    ----------
    k : int
        SparseAutoencoder's ``k``: latents per row, for the variants that use
        it.

    Attributes
    ----------
    name : str
        The registered name (set by :func:`register`).
    saelens_architecture : str or None
        SAELens' ``architecture`` whose encoder gives the same codes after the
        export (``"standard"``, ``"topk"`` or ``"jumprelu"``), or None when
        SAELens has no equivalent.
    """

    name = None
    saelens_architecture = None

    def __init__(self, k):
        self.k = k

    def keep_largest(self, pre, k):
        """Codes that keep the `k` largest pre-activations of each row, the rest zero.

        The AuxK loss asks for it on the dead latents' pre-activations. By
        default the largest values, then ReLU (codes are non-negative); a
        signed variant keeps the largest magnitudes with their sign.

        Parameters
        ----------
        pre : torch.Tensor of shape (n_rows, n_latents)
            Pre-activations.
        k : int
            Latents kept per row, at most ``n_latents``.

        Returns
        -------
        codes : torch.Tensor of shape (n_rows, n_latents)
        """
        return _keep_topk(pre, k, dim=1)

    def check_params(self, n_components):
        """Raise a ValueError naming the parameter when one does not fit the model.

        Parameters
        ----------
        n_components : int
            Number of latents.
        """

    def init_state(self, n_components):
        """Fresh tensors the activation keeps on the module, by name.

        Parameters
        ----------
        n_components : int
            Number of latents.

        Returns
        -------
        state : dict of str to torch.Tensor
            A ``torch.nn.Parameter`` is trained with the weights; any other
            tensor is a buffer (moved and saved with the module, not trained).
        """
        return {}

    def forward(self, pre, state, training):
        """Codes from pre-activations.

        Parameters
        ----------
        pre : torch.Tensor of shape (n_rows, n_components)
            Pre-activations.
        state : dict of str to torch.Tensor
            The module's tensors made by :meth:`init_state`.
        training : bool
            Whether this is a training step (a variant may then update its
            state, or code differently than at inference).

        Returns
        -------
        codes : torch.Tensor of shape (n_rows, n_components)
        """
        raise NotImplementedError

    def sparsity_loss(self, pre, codes, decoder_weight, state):
        """Unweighted sparsity penalty of a batch, or None when there is none.

        The trainer multiplies it by ``l1_coef`` (with its warmup).

        Parameters
        ----------
        pre, codes : torch.Tensor of shape (n_rows, n_components)
            The batch's pre-activations and codes.
        decoder_weight : torch.Tensor of shape (n_components, n_features)
            Decoder rows.
        state : dict of str to torch.Tensor
            The module's tensors made by :meth:`init_state`.

        Returns
        -------
        loss : torch.Tensor (scalar) or None
        """
        return None

    def constrain(self, state):
        """Project the state back onto its constraints after an optimiser step.

        Called without gradient tracking.

        Parameters
        ----------
        state : dict of str to torch.Tensor
            The module's tensors made by :meth:`init_state`.
        """

    def threshold_shape(self, n_components):
        """Shape of the fitted ``threshold_``.

        Parameters
        ----------
        n_components : int
            Number of latents.

        Returns
        -------
        shape : tuple or None
            ``()`` for a Python float, None when ``threshold_`` is None.
        """
        return None

    def export_state(self, state):
        """The fitted ``threshold_`` (numpy or float) from the module's state.

        Parameters
        ----------
        state : dict of str to torch.Tensor
            The module's tensors made by :meth:`init_state`.

        Returns
        -------
        threshold : ndarray, float or None
            Of :meth:`threshold_shape`.
        """
        return None

    def import_state(self, threshold, state):
        """Copy a fitted ``threshold_`` into the module's state (inverse of :meth:`export_state`).

        Called without gradient tracking.

        Parameters
        ----------
        threshold : ndarray, float or None
            As returned by :meth:`export_state`.
        state : dict of str to torch.Tensor
            The module's tensors made by :meth:`init_state`, overwritten.
        """

    def saelens_threshold(self, threshold, n_components):
        """Per-latent threshold of the equivalent SAELens JumpReLU, or None.

        Parameters
        ----------
        threshold : ndarray, float or None
            The fitted ``threshold_``.
        n_components : int
            Number of latents.

        Returns
        -------
        threshold : ndarray of shape (n_components,) or None
        """
        return None

    def saelens_config(self):
        """Keys this variant adds to SAELens' ``cfg.json``.

        Returns
        -------
        config : dict
        """
        return {}


def _keep_topk(values, k, dim):
    """Zero all but the `k` largest entries along `dim`, then apply ReLU."""
    top, idx = values.topk(k, dim=dim, sorted=False)
    return values.new_zeros(values.shape).scatter(dim, idx, top.clamp_min(0))


class _KPerRow(Activation):
    """An activation that keeps `k` latents per row (on average, for BatchTopK)."""

    def check_params(self, n_components):
        check_n_nonzero_coefs(self.k, n_components, name="k")


@register("topk")
class TopK(_KPerRow):
    """The `k` largest pre-activations of each row, then ReLU (Gao et al., 2024)."""

    saelens_architecture = "topk"

    def forward(self, pre, state, training):
        return _keep_topk(pre, self.k, dim=1)

    def saelens_config(self):
        # skdict's decoder rows are unit vectors: SAELens need not rescale by their norms.
        return {"k": int(self.k), "rescale_acts_by_decoder_norm": False}


@register("batchtopk")
class BatchTopK(_KPerRow):
    """The ``k * n_rows`` largest pre-activations of a training batch, then ReLU.

    At inference, a pre-activation above the threshold learned in training (a
    running average of the smallest kept value per batch) is kept, so rows use
    `k` latents on average (Bussmann et al., 2024). SAELens reads that rule as
    a JumpReLU with the same threshold on every latent.
    """

    saelens_architecture = "jumprelu"

    def init_state(self, n_components):
        import torch

        # NaN until the first training batch sets it.
        return {"batch_threshold": torch.tensor(float("nan"))}

    def forward(self, pre, state, training):
        threshold = state["batch_threshold"]
        if not training:
            return pre * (pre > threshold)
        n_keep = min(self.k * pre.shape[0], pre.numel())
        codes = _keep_topk(pre.reshape(-1), n_keep, dim=0).reshape(pre.shape)
        _track_smallest(codes.detach(), threshold)
        return codes

    def threshold_shape(self, n_components):
        return ()

    def export_state(self, state):
        return float(state["batch_threshold"])

    def import_state(self, threshold, state):
        state["batch_threshold"].fill_(threshold)

    def saelens_threshold(self, threshold, n_components):
        return np.full(n_components, threshold, np.float32)


def _track_smallest(codes, threshold):
    """Move `threshold` towards the smallest non-zero code of the batch."""
    fired = codes[codes > 0]
    if fired.numel() == 0:
        return
    smallest = fired.min()
    if threshold.isnan():
        threshold.copy_(smallest)
    else:
        threshold.lerp_(smallest, _THRESHOLD_MOMENTUM)


@register("relu")
class ReLU(Activation):
    """ReLU with an L1 penalty on ``codes * ||decoder row||``."""

    saelens_architecture = "standard"

    def forward(self, pre, state, training):
        return pre.relu()

    def sparsity_loss(self, pre, codes, decoder_weight, state):
        return (codes * decoder_weight.norm(dim=1)).sum(1).mean()


@register("jumprelu")
class JumpReLU(Activation):
    """ReLU with a learned threshold per latent and an L0 penalty.

    Trained with straight-through estimators of the threshold's gradient
    (Rajamanoharan et al., 2024); see ``skdict._sae.straight_through``.
    """

    saelens_architecture = "jumprelu"

    def init_state(self, n_components):
        import torch

        # The threshold itself, not its log as in SAELens: Adam then moves it by
        # about the learning rate per step, so that it reaches the scale of the
        # pre-activations within an epoch or two of small data instead of
        # thousands of steps.
        return {"threshold": torch.nn.Parameter(
            torch.full((n_components,), _JUMPRELU_INIT_THRESHOLD))}

    def forward(self, pre, state, training):
        from .straight_through import JumpReLUFunction

        return JumpReLUFunction.apply(pre, state["threshold"])

    def sparsity_loss(self, pre, codes, decoder_weight, state):
        from .straight_through import StepFunction

        return StepFunction.apply(pre, state["threshold"]).sum(1).mean()

    def constrain(self, state):
        state["threshold"].clamp_(min=0)

    def threshold_shape(self, n_components):
        return (n_components,)

    def export_state(self, state):
        return state["threshold"].detach().cpu().numpy().copy()

    def import_state(self, threshold, state):
        state["threshold"].copy_(state["threshold"].new_tensor(threshold))

    def saelens_threshold(self, threshold, n_components):
        return threshold


@register("abstopk")
class AbsTopK(_KPerRow):
    """The `k` pre-activations of each row largest in magnitude, with their sign.

    No ReLU: a latent fires in either direction, so one latent carries a
    feature whose coefficient takes both signs, where TopK spends one latent
    on each sign (Zhu, Khalili & Zhu, 2025, "AbsTopK: Rethinking Sparse
    Autoencoders For Bidirectional Features"). SAELens (6.x) has the same rule
    as its ``"abstopk"`` architecture.
    """

    saelens_architecture = "abstopk"

    def forward(self, pre, state, training):
        return self.keep_largest(pre, self.k)

    def keep_largest(self, pre, k):
        index = pre.abs().topk(k, dim=1, sorted=False).indices
        return pre.new_zeros(pre.shape).scatter(1, index, pre.gather(1, index))

    def saelens_config(self):
        return {"k": int(self.k), "rescale_acts_by_decoder_norm": False}
