"""Reach the dictionary inside an estimator or a Pipeline, in the space it lives in.

Metrics and naming accept a dictionary learner (anything with ``components_``
and ``transform``, sklearn's ``SparseCoder`` included) or a Pipeline whose last
step is one; data are then carried through the earlier steps first, so atoms,
codes and reconstructions are all compared in the dictionary's own space.
"""

import numpy as np
from sklearn.decomposition import SparseCoder
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted

from ._validation import check_dictionary, check_samples

_EXPECTED = (
    "a fitted dictionary learner (DoubleBatchKSVD, SparseAutoencoder, "
    "MiniBatchDictionaryLearning, SparseCoder, ...) or a Pipeline ending in one"
)


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


def encode(estimator, X):
    """Carry X into the dictionary's space and code it there.

    Returns
    -------
    step : estimator
        The dictionary learner.
    X_dict : ndarray of shape (n_samples, n_features)
        X after every Pipeline step before the dictionary.
    codes : ndarray or scipy.sparse matrix of shape (n_samples, n_components)
        Codes of X_dict, as the dictionary's ``transform`` returns them.
    """
    components_of(estimator)
    step = dictionary_step(estimator)
    if isinstance(estimator, Pipeline) and len(estimator) > 1:
        X = estimator[:-1].transform(X)
    X_dict = check_samples(X, "X")
    return step, X_dict, step.transform(X_dict)


def reconstruct(estimator, X):
    """X in the dictionary's space and its reconstruction ``inverse_transform(transform(X))``."""
    step, X_dict, codes = encode(estimator, X)
    if hasattr(step, "inverse_transform"):
        X_hat = step.inverse_transform(codes)
    else:
        X_hat = codes @ components_of(step)
    return X_dict, np.asarray(X_hat, dtype=X_dict.dtype)
