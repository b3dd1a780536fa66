"""Reach the dictionary inside an estimator or a Pipeline, in the space it lives in.

Metrics and naming accept a dictionary learner (anything with ``components_``
and ``transform``, sklearn's ``SparseCoder`` included) or a Pipeline whose last
step is one; data are then carried through the earlier steps first, so atoms,
codes and reconstructions are all compared in the dictionary's own space.

Everything after a fit works from one encoding of the rows (:class:`Encoded`):
the codes are computed once, as CSR in row chunks of bounded memory (or given
by the caller, e.g. from ``skdict encode``), and every score, description,
null level and explorer page reads them.
"""

from functools import cached_property

import numpy as np
import scipy.sparse as sp
from sklearn.decomposition import SparseCoder
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted
from tqdm.auto import tqdm

from ._rows import relative_errors, rows_per_buffer
from ._sparse import stack_csr
from ._validation import check_dictionary, check_samples, validate_samples

_EXPECTED = (
    "a fitted dictionary learner (DoubleBatchKSVD, SparseAutoencoder, "
    "MiniBatchDictionaryLearning, SparseCoder, ...) or a Pipeline ending in one"
)
# Bytes of the dense row chunks that encoding and reconstruction hold at once.
_CHUNK_BYTES = 32 * 2**20


def is_estimator_like(obj):
    return hasattr(obj, "fit") or hasattr(obj, "transform")


def dictionary_step(estimator):
    """The dictionary learner: the last step of a Pipeline, or `estimator` itself."""
    step = estimator.steps[-1][1] if isinstance(estimator, Pipeline) else estimator
    if not is_estimator_like(step):
        raise TypeError(f"estimator must be {_EXPECTED}; got {step!r}.")
    return step


def components_of(estimator):
    """The atoms (n_components, n_features) of `estimator`'s dictionary, as an array."""
    step = dictionary_step(estimator)
    if isinstance(step, SparseCoder):
        components = step.dictionary
    else:
        check_is_fitted(step)
        components = getattr(step, "components_", None)
        if components is None:
            raise TypeError(
                f"estimator must be {_EXPECTED}; {type(step).__name__} has no "
                "components_ attribute."
            )
    return check_dictionary(np.asarray(components), name="components_")


def components_from(estimator_or_components):
    """Atoms of an estimator, or validated atoms passed as an array."""
    if is_estimator_like(estimator_or_components):
        return components_of(estimator_or_components)
    return check_dictionary(estimator_or_components, name="components")


def to_dictionary_space(estimator, X):
    """X after every Pipeline step before the dictionary, validated.

    A memory map given to a bare dictionary learner stays a memory map: the
    chunked readers below bring its rows in as they need them.
    """
    if isinstance(estimator, Pipeline) and len(estimator) > 1:
        X = estimator[:-1].transform(X)
    return check_samples(X, "X")


def _is_skdict(step):
    return callable(getattr(step, "_sparse_coder", None))


def sparse_codes(step, X, *, progress=False, chunk_rows=None):
    """CSR codes of X (rows in the dictionary's space), encoded in row chunks.

    skdict's estimators code straight into compact supports and prepare their
    per-dictionary work (the Gram matrix) once for all chunks; other estimators
    return dense chunks, so their chunks hold a bounded number of rows.
    `chunk_rows` overrides the chunk size.
    """
    n_atoms = components_of(step).shape[0]
    if _is_skdict(step):
        coder = step._sparse_coder(X.dtype)

        def code(rows):
            return coder(validate_samples(step, rows, reset=False))

        chunk = rows_per_buffer(X.shape[1], X.dtype.itemsize, 2 * _CHUNK_BYTES)
    else:
        def code(rows):
            return sp.csr_matrix(step.transform(rows))

        chunk = rows_per_buffer(n_atoms, 8, _CHUNK_BYTES)
    chunk = chunk_rows or chunk
    blocks = []
    for start in tqdm(range(0, X.shape[0], chunk), disable=not progress, desc="encode",
                      unit="chunk"):
        block = code(np.asarray(X[start:start + chunk]))
        block.eliminate_zeros()
        blocks.append(block)
    return stack_csr(blocks, n_atoms, X.dtype)


def check_codes(codes, n_samples, n_atoms):
    """Precomputed codes of X as CSR, refused when their shape does not fit X and the model."""
    if not (sp.issparse(codes) or isinstance(codes, np.ndarray)):
        codes = np.asarray(codes)
    shape = getattr(codes, "shape", ())
    if len(shape) != 2 or shape != (n_samples, n_atoms):
        raise ValueError(
            f"codes has shape {shape} but X has {n_samples} rows and the dictionary "
            f"{n_atoms} atoms; pass the codes of these rows by this model "
            "(estimator.transform(X), or the file written by 'skdict encode')."
        )
    codes = sp.csr_matrix(codes)
    codes = codes.astype(np.result_type(codes.dtype, np.float32), copy=False)
    if not np.all(np.isfinite(codes.data)):
        raise ValueError(
            "codes holds NaN or infinite values; pass the output of transform."
        )
    codes = codes.copy()
    codes.eliminate_zeros()
    return codes


def encoded(estimator, X, codes=None, *, progress=False):
    """The :class:`Encoded` rows of X: carried into the dictionary's space and coded once.

    `codes`, when given, are the estimator's codes of X and are checked against
    X and the dictionary instead of being computed again.
    """
    n_atoms = components_of(estimator).shape[0]
    step = dictionary_step(estimator)
    X_dict = to_dictionary_space(estimator, X)
    if codes is None:
        codes = sparse_codes(step, X_dict, progress=progress)
    else:
        codes = check_codes(codes, X_dict.shape[0], n_atoms)
    return Encoded(step, X_dict, codes)


class Encoded:
    """Rows of X in the dictionary's space and their codes, shared by every score.

    Parameters
    ----------
    step : estimator
        The dictionary learner.
    X : ndarray or numpy.memmap of shape (n_samples, n_features)
        Validated rows in the dictionary's space.
    codes : scipy.sparse.csr_matrix of shape (n_samples, n_components)
        Their codes, explicit zeros removed.
    """

    def __init__(self, step, X, codes):
        self.step, self.X, self.codes = step, X, codes
        self.components = components_of(step)

    @property
    def n_samples(self):
        return self.X.shape[0]

    @cached_property
    def by_atom(self):
        """The codes as CSC: each atom's rows and values are contiguous."""
        return self.codes.tocsc()

    @property
    def alive(self):
        """Whether some row uses each atom."""
        return self._usage[0]

    @property
    def signs(self):
        """Each atom's sign: -1 where its mean non-zero code is negative, else +1."""
        return self._usage[1]

    @cached_property
    def _usage(self):
        return atom_usage(self.by_atom)

    @cached_property
    def fires(self):
        """CSC pattern of the rows where each atom fires in its named direction
        (``sign * code > 0``)."""
        signed = self.by_atom @ sp.diags(self.signs.astype(self.by_atom.dtype))
        return (signed > 0).tocsc()

    def row_chunks(self, budget=_CHUNK_BYTES):
        """``(start, stop)`` row ranges whose dense (rows, n_features) chunks fit `budget`."""
        step = rows_per_buffer(self.X.shape[1], 8, budget)
        return [(s, min(s + step, self.n_samples)) for s in range(0, self.n_samples, step)]

    def reconstruct(self, start, stop):
        """Rows ``start:stop`` of X and their reconstruction, in X's dtype."""
        X = np.asarray(self.X[start:stop])
        return X, decode(self.step, self.codes[start:stop]).astype(X.dtype, copy=False)

    @cached_property
    def reconstruction(self):
        """``(signal recovered, explained variance)`` from one pass over the rows.

        Explained variance is NaN when every row is equal. The total variance
        is accumulated chunk by chunk with Chan's pairwise update, so it equals
        the two-pass sum to round-off.
        """
        n_features = self.X.shape[1]
        errors, residual_ss = 0.0, 0.0
        count, mean, spread = 0, np.zeros(n_features), 0.0
        for start, stop in self.row_chunks():
            X, X_hat = self.reconstruct(start, stop)
            residual = X - X_hat
            errors += relative_errors(X, residual).sum()
            residual_ss += np.sum(residual**2, dtype=np.float64)
            chunk_mean = X.mean(axis=0, dtype=np.float64)
            chunk_ss = np.sum((X - chunk_mean) ** 2, dtype=np.float64)
            n = stop - start
            delta = chunk_mean - mean
            spread += chunk_ss + delta @ delta * count * n / (count + n)
            mean += delta * n / (count + n)
            count += n
        recovered = 1.0 - errors / self.n_samples
        explained = 1.0 - residual_ss / spread if spread > 0 else np.nan
        return float(recovered), float(explained)


def atom_usage(by_atom):
    """Which atoms some row uses, and each atom's sign (-1 if its mean non-zero
    code is negative), from CSC codes without explicit zeros."""
    alive = np.diff(by_atom.indptr) > 0
    signs = np.where(np.asarray(by_atom.sum(axis=0)).ravel() < 0, -1, 1)
    return alive, signs


def decode(step, codes):
    """Reconstruction ``codes @ dictionary`` (plus any bias the estimator adds) of CSR codes.

    skdict's estimators and scikit-learn's sparse coders are linear in the
    codes and are decoded from CSR directly (scikit-learn's ``inverse_transform``
    refuses sparse codes); any other estimator gets a dense chunk.
    """
    if _is_skdict(step):
        return step.inverse_transform(codes)
    if isinstance(step, SparseCoder) or type(step).__module__.startswith("sklearn.decomposition"):
        return np.asarray(codes @ components_of(step))
    if hasattr(step, "inverse_transform"):
        return np.asarray(step.inverse_transform(codes.toarray()))
    return np.asarray(codes @ components_of(step))
