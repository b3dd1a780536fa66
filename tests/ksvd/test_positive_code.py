"""DoubleBatchKSVD(positive_code=True): non-negative codes from the pursuit and the atom updates."""

import numpy as np
import pytest

from skdict import DoubleBatchKSVD
from skdict._backend import resolve_backend
from skdict._rows import _row_norms, relative_errors
from skdict.datasets import make_sparse_signals
from skdict.metrics import atom_recovery_rate
from skdict.pursuit import GramEncoder
from _checks import estimator_check_params
from _tolerance import dot_rtol


@pytest.mark.parametrize(
    "estimator, check",
    estimator_check_params(DoubleBatchKSVD(n_components=8, n_nonzero_coefs=1, max_iter=5,
                                           positive_code=True, random_state=0)),
)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def nonnegative_signals():
    """The K-SVD paper's signals with the absolute values of their codes."""
    X, D, A = make_sparse_signals(random_state=0)
    return np.abs(A) @ D, D


def test_fit_codes_are_non_negative_and_recover_the_atoms(nonnegative_signals, backend):
    X, D_true = nonnegative_signals
    model = DoubleBatchKSVD(50, n_nonzero_coefs=3, max_iter=60, positive_code=True,
                            backend=backend, random_state=0).fit(X)
    codes = model.transform(X)
    assert codes.min() >= 0 and (codes > 0).sum(axis=1).max() <= 3
    assert model.error_[-1] > model.error_[0]
    assert atom_recovery_rate(D_true, model.components_) >= 0.9


def test_signed_data_gets_non_negative_codes(backend):
    X, _, _ = make_sparse_signals(300, 10, 20, 3, random_state=1)
    model = DoubleBatchKSVD(20, n_nonzero_coefs=3, max_iter=10, positive_code=True,
                            backend=backend, random_state=0).fit(X)
    assert model.transform(X).min() >= 0


def _losses(X, residual):
    return relative_errors(X, residual).sum(), np.sum(residual**2)


@pytest.mark.parametrize("weighted", [True, False])
def test_atom_update_keeps_codes_non_negative_and_never_raises_the_loss(weighted, backend):
    """Updated one atom at a time (each update a minimisation from the current,
    feasible atom and codes), the loss the update minimises cannot rise: the
    mean relative error (weighted, by majorise-minimise) or the squared error."""
    rng = np.random.default_rng(0)
    X = np.abs(rng.standard_normal((400, 12))) @ rng.standard_normal((12, 12))
    D = X[rng.choice(400, 30, replace=False)]
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    engine = resolve_backend(backend, "cpu")
    codes = GramEncoder(D, 4, backend=engine, positive=True).encode(X, sparse_output=True)
    before = _losses(X, X - codes @ D)
    residual = engine.update_dictionary(
        X, D, codes, groups=[(0, 30, np.arange(30))], atom_batch_size=1,
        x_norms=_row_norms(X), weight_floor=0.05, weighted=weighted, n_power_iter=2,
        positive=True,
    )
    assert codes.data.min() >= 0
    np.testing.assert_allclose(residual, X - codes @ D, atol=1e-10 * np.abs(X).max())
    after = _losses(X, residual)
    loss = 0 if weighted else 1
    assert after[loss] <= before[loss] * (1 + dot_rtol(np.float64, X.size))
    assert after[loss] < before[loss]


def test_positive_code_needs_omp():
    with pytest.raises(ValueError, match="pursuit='omp'"):
        DoubleBatchKSVD(4, n_nonzero_coefs=1, pursuit="mp", positive_code=True).fit(
            np.random.default_rng(0).standard_normal((10, 3)))
