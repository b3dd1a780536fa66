"""Batched greedy pursuits on the Gram matrix: the numba coder.

:class:`NumbaCoder` computes a chunk's correlations ``alpha0 = X Dᵀ`` with one
matrix product and hands them to the compiled kernels, which code the rows in
parallel without any per-row Python: exact OMP in :mod:`.omp`, matching
pursuit with a least-squares refit in :mod:`.mp`.
"""

import numpy as np
from scipy.special import ndtri

from .mp import mp_chunk
from .omp import omp_chunk

# Integer type of the same width as each float dtype, and the mask that clears
# the sign bit: the kernels find max |c| through this view (see .tiles).
_SIGN_BITS = {
    np.dtype(np.float32): (np.int32, np.int32(0x7FFFFFFF)),
    np.dtype(np.float64): (np.int64, np.int64(0x7FFFFFFFFFFFFFFF)),
}

# Candidate atoms on which OMP predicts its next steps (see .omp). Fewer make
# the prediction cheaper and wrong more often: 128 were wrong 0.02 times per row
# at 16,384 atoms and k = 32 (0.17 at 4096 atoms, k = 16), 256 0.01 times
# (0.11) for 4% more time.
N_CANDIDATES = 128
# Size of U (``n_nonzero_coefs x n_atoms`` floats per row, see .omp) above which
# OMP computes blocks of predicted steps: while U fits the L2 cache (1 MiB per
# core here), reading it at every step is cheap and predictions only add work
# (at 4096 atoms and k = 16, 256 KiB: 0.78x the time of blocks).
_BLOCKS_ABOVE_BYTES = 2**19


class NumbaCoder:
    """Runs the numba pursuits for a dictionary held in host memory.

    Parameters
    ----------
    dictionary : ndarray of shape (n_atoms, n_features)
    gram : ndarray of shape (n_atoms, n_atoms) or None
        Computed here when None.
    n_candidates : int, default=N_CANDIDATES
        Candidate atoms OMP predicts its steps on; the codes do not depend on it.
    blocks : bool, default=None
        Whether OMP computes blocks of predicted steps; None decides by the
        size of its working rows. The codes do not depend on it.

    Attributes
    ----------
    mispredictions : ndarray of shape (n_rows,)
        For the last chunk coded by OMP, the wrong predictions in each row.
    """

    def __init__(self, dictionary, gram, n_candidates=N_CANDIDATES, blocks=None):
        self.dictionary = dictionary
        self.gram = dictionary @ dictionary.T if gram is None else gram
        self.n_candidates = n_candidates
        self.blocks = blocks
        self.mispredictions = np.zeros(0, dtype=np.int64)

    def start(self, X, kmax):
        """What every kernel starts a chunk from: the correlations ``X Dᵀ``, the
        squared row norms and empty (indices, values, counts) for the codes."""
        n = X.shape[0]
        alpha0 = X @ self.dictionary.T
        x2 = np.einsum("ij,ij->i", X, X, dtype=np.float64)
        indices = np.zeros((n, kmax), dtype=np.int32)
        values = np.zeros((n, kmax), dtype=X.dtype)
        counts = np.zeros(n, dtype=np.int64)
        return alpha0, x2, indices, values, counts

    def support(self, X, algorithm, kmax, thresh2, dep_tol):
        """Code the rows of a chunk; return numpy (indices, values, counts)."""
        n = X.shape[0]
        alpha0, x2, indices, values, counts = self.start(X, kmax)
        bits_type, mask = _SIGN_BITS[X.dtype]
        args = (alpha0, self.gram, x2, kmax, thresh2, dep_tol, bits_type, mask)
        if algorithm == "mp":
            mp_chunk(*args, indices, values, counts)
        else:
            self.mispredictions = np.zeros(n, dtype=np.int64)
            omp_chunk(*args, self.n_candidates, self._tau_factor(),
                      self.uses_blocks(kmax, X.dtype), indices, values, counts,
                      self.mispredictions)
        return indices, values, counts

    def uses_blocks(self, kmax, dtype):
        """Whether OMP with `kmax` atoms per row computes blocks of predicted steps."""
        if self.blocks is not None:
            return self.blocks
        return kmax * self.gram.shape[0] * dtype.itemsize > _BLOCKS_ABOVE_BYTES

    def _tau_factor(self):
        """Threshold, in root mean squares of ``c``, that `n_candidates` Gaussian
        correlations pass (floored at half an RMS where they are most atoms)."""
        share = self.n_candidates / (2 * self.gram.shape[0])
        return float(max(ndtri(1 - min(share, 0.5)), 0.5))
