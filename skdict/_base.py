"""Machinery shared by every dictionary learner: transform, inverse_transform, tags.

Like scikit-learn's ``_BaseSparseCoding``, the base class owns the public
transform/inverse_transform so that each estimator only says how it encodes a
validated chunk of rows (``_encode``) and, if it needs more than ``codes @
components_``, how it decodes (``_decode``).
"""

import numpy as np
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from ._dask import dask_transform, is_dask_array
from ._validation import check_codes, validate_samples


class _BaseDictionary(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Base class for estimators with a dictionary ``components_`` of atoms as rows."""

    def transform(self, X):
        """Encode X as sparse codes over the learned atoms.

        Parameters
        ----------
        X : array-like or dask array of shape (n_samples, n_features)
            Data to encode. A memory map is read chunk by chunk; a dask array is
            encoded block by block, lazily.

        Returns
        -------
        codes : ndarray, scipy.sparse.csr_matrix or dask array of shape \
                (n_samples, n_components)
            Codes in the dtype of X; CSR (or a dask array of CSR blocks) when
            ``sparse_output=True``.
        """
        check_is_fitted(self)
        if is_dask_array(X):
            return dask_transform(self, X)
        X = validate_samples(self, X, reset=False)
        return self._encode(X, sparse_output=self.sparse_output)

    def inverse_transform(self, X):
        """Reconstruct data from codes.

        Parameters
        ----------
        X : array-like or sparse matrix of shape (n_samples, n_components)
            Codes, as returned by :meth:`transform`.

        Returns
        -------
        X_original : ndarray of shape (n_samples, n_features)
            Reconstruction in the dtype of the codes.
        """
        check_is_fitted(self)
        codes = check_codes(X, self.components_.shape[0])
        return self._decode(codes)

    def _sparse_coder(self, dtype):
        """A function coding validated rows of `dtype` to CSR, for many chunks of one X.

        Estimators with per-dictionary work (DoubleBatchKSVD's Gram matrix)
        do it here, once, instead of once per chunk.
        """
        return lambda X: self._encode(X, sparse_output=True)

    def _decode(self, codes):
        return np.asarray(codes @ self.components_.astype(codes.dtype, copy=False))

    @property
    def _n_features_out(self):
        return self.components_.shape[0]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags
