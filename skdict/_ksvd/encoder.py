"""Coding for K-SVD: nested atom groups coded one after the other, and scoring."""

import numpy as np
import scipy.sparse as sp

from .._rows import relative_errors
from .._sparse import stack_csr
from .._validation import check_samples
from ..pursuit import GramEncoder
from .._backend.numba.atom_update import subtract_codes


class GroupedEncoder:
    """Codes rows group by group, each group on the residual of the ones before.

    With a single group this is plain :class:`~skdict.pursuit.GramEncoder`.
    """

    def __init__(self, D, groups, pursuit, tol, gram=None, backend=None, positive=False):
        self.D = D
        self.groups = groups
        self.encoders = [
            GramEncoder(
                D[lo:hi], k, algorithm=pursuit, tol=tol,
                gram=None if gram is None else np.ascontiguousarray(gram[lo:hi, lo:hi]),
                backend=backend, positive=positive,
            )
            for lo, hi, k in groups
        ]

    def encode(self, X, sparse_output):
        if len(self.encoders) == 1:
            return self.encoders[0].encode(X, sparse_output)
        encoder = self.encoders[0]
        step = encoder.backend.chunk_rows(self.D.shape[0], encoder.n_nonzero_coefs,
                                          X.dtype.itemsize)
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


def block_errors(block, D, groups, pursuit, tol, positive=False):
    """Relative residual of each row of one block coded with D."""
    block = check_samples(block)
    D = D.astype(block.dtype, copy=False)
    codes = GroupedEncoder(D, groups, pursuit=pursuit, tol=tol, positive=positive).encode(
        block, sparse_output=True)
    return relative_errors(block, residual_of(block, D, codes))


def residual_of(X, D, codes):
    residual = np.array(X, dtype=D.dtype, order="C", copy=True)
    subtract_codes(residual, codes.indptr, codes.indices, codes.data, D, 0, D.shape[0])
    return residual
