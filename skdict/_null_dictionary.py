"""Random dictionaries: the null level of the metrics that need no concept bank
(k-sparse probing, reseed stability, ground-truth recovery).

A null draw keeps the number of atoms and nothing learned. Its atoms are drawn
from the normal distribution with the mean and covariance of the rows the
dictionary codes (X in the dictionary's space), so that on anisotropic
embeddings they point where the data lie, as the atoms of any dictionary fit
to them do; without rows they are uniform on the unit sphere. Where a metric
reads codes, the random atoms code the rows by OMP with the estimator's own
mean number of non-zeros. The score of such draws is the level a learned
dictionary must clear.
"""

import numpy as np
from sklearn.utils import check_random_state

from ._rows import _unit_rows, rows_per_buffer
from ._sparse import stack_csr
from .pursuit import GramEncoder

# Bytes of the rows of X read at once when coding them with a random dictionary.
_CHUNK_BYTES = 64 * 2**20
# Rows of X (evenly spaced) whose mean and covariance shape the random atoms.
_MAX_STATISTIC_ROWS = 2**16


def gaussian_sampler(rows):
    """``draw(rng, n)``: n rows from the normal distribution with the mean and
    covariance of `rows`.

    ``N(mean, C)`` with ``C = Rc.T Rc / (n - 1)`` (``Rc`` the centred rows) is
    sampled through the thin SVD of ``Rc``, computed once: cheap for any
    number of rows, and exact when ``C`` is singular (fewer rows than
    dimensions).
    """
    R = np.asarray(rows, dtype=np.float64)
    mean = R.mean(axis=0)
    _, s, Vt = np.linalg.svd(R - mean, full_matrices=False)
    scaled = (s / np.sqrt(max(R.shape[0] - 1, 1)))[:, None] * Vt

    def draw(rng, n_draws):
        return mean + rng.standard_normal((n_draws, s.size)) @ scaled

    return draw


def random_dictionaries(n_atoms, n_features, n_draws, random_state, X=None):
    """`n_draws` unit-norm dictionaries of `n_atoms` atoms: shaped like the rows of X
    (at most ``_MAX_STATISTIC_ROWS`` of them, evenly spaced), or uniform on the
    sphere when X is None."""
    rng = check_random_state(random_state)
    if X is None:
        return [_unit_rows(rng.standard_normal((n_atoms, n_features)))
                for _ in range(n_draws)]
    draw = gaussian_sampler(X[::max(1, -(-X.shape[0] // _MAX_STATISTIC_ROWS))])
    return [_unit_rows(draw(rng, n_atoms)) for _ in range(n_draws)]


def mean_nonzeros(codes):
    """The codes' mean number of non-zeros per row, rounded, at least 1."""
    return max(1, int(round(codes.nnz / max(codes.shape[0], 1))))


def omp_codes(X, dictionary, n_nonzero_coefs):
    """CSR codes of the rows of X by OMP with `dictionary`, X read in row chunks."""
    n_atoms = dictionary.shape[0]
    dictionary = np.ascontiguousarray(dictionary, dtype=X.dtype)
    encoder = GramEncoder(dictionary, min(n_nonzero_coefs, n_atoms))
    step = rows_per_buffer(X.shape[1], X.dtype.itemsize, _CHUNK_BYTES)
    blocks = [encoder.encode(np.ascontiguousarray(X[start:start + step]), sparse_output=True)
              for start in range(0, X.shape[0], step)]
    return stack_csr(blocks, n_atoms, X.dtype)
