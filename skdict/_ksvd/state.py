"""What a :class:`~skdict.DoubleBatchKSVD` callback sees after each iteration."""

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp


@dataclass(frozen=True)
class FitState:
    """The state of a DoubleBatchKSVD fit after one iteration.

    Passed to ``callback(state)``; the fit stops when the callback returns True.
    The arrays are the fit's working buffers, not copies: read them, do not
    modify them (copy what you keep).

    Attributes
    ----------
    estimator : DoubleBatchKSVD
        The estimator being fitted; ``n_iter_`` already counts this iteration.
    iteration : int
        Iterations run by this call of fit or partial_fit, this one included.
    components : ndarray of shape (n_components, n_features)
        The atoms after this iteration's update and re-seeding (``components_``
        is set from them when the fit ends).
    batch : ndarray of shape (n_batch, n_features)
        The rows this iteration coded and updated on.
    codes : scipy.sparse.csr_matrix of shape (n_batch, n_components)
        Their codes, with the coefficients the atom update refitted.
    residual : ndarray of shape (n_batch, n_features)
        ``batch - codes @ atoms`` before re-seeding.
    atom_usage : ndarray of shape (n_components,)
        Rows of the batch whose code uses each atom.
    signal_recovered : float
        This iteration's entry of ``error_``.
    elapsed : float
        Seconds since this call of fit or partial_fit started.
    """

    estimator: object
    iteration: int
    components: np.ndarray
    batch: np.ndarray
    codes: sp.csr_matrix
    residual: np.ndarray
    atom_usage: np.ndarray
    signal_recovered: float
    elapsed: float
