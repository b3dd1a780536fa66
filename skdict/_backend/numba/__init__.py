"""The numba backend: compiled kernels on the CPU, in host memory.

``pursuit``: the coder, batched OMP (``omp``) and MP (``mp``) on the Gram
matrix, over correlations held in ``tiles``; ``atom_update``: the batched
rank-1 K-SVD atom updates and the CSR helpers they share.
"""

from ..._rows import rows_per_buffer
from . import atom_update
from .nnomp import NNOMPCoder
from .pursuit import NumbaCoder

# Correlations of one chunk of rows with every atom are held at once; this caps
# that buffer. The kernels' other state is per thread, not per row, so the
# number of non-zeros does not enter.
_CHUNK_BYTES = 32 * 2**20


class NumbaBackend:
    """Pursuit and atom updates by the numba kernels (see :mod:`skdict._backend`)."""

    name = "numba"
    device = None
    uses_host_memory = True

    def coder(self, dictionary, gram):
        return NumbaCoder(dictionary, gram)

    def positive_coder(self, dictionary, gram):
        return NNOMPCoder(dictionary, gram)

    def chunk_rows(self, n_atoms, n_nonzero_coefs, itemsize):
        return rows_per_buffer(n_atoms, itemsize, _CHUNK_BYTES)

    def update_dictionary(self, X, D, codes, **options):
        return atom_update.update_dictionary(X, D, codes, **options)

    def __repr__(self):
        return "NumbaBackend()"
