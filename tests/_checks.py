"""Test parameters shared across files: sklearn's estimator checks and the backends."""

import importlib.util

import pytest
from sklearn.utils.estimator_checks import estimator_checks_generator

# Every compute backend; torch is skipped where it is not installed. Tests of a
# behaviour all backends promise take the ``backend`` fixture (conftest.py), or
# these parameters where hypothesis rules out function-scoped fixtures.
BACKENDS = [
    pytest.param("numba", id="numba"),
    pytest.param(
        "torch", id="torch",
        marks=pytest.mark.skipif(
            importlib.util.find_spec("torch") is None, reason="torch is not installed"
        ),
    ),
]


def estimator_check_params(estimator):
    """One ``pytest.param(estimator, check)`` per sklearn check, named after the check.

    skdict does not claim array-API support; sklearn skips that check anyway unless
    SCIPY_ARRAY_API is set, so it is left out rather than reported as skipped.
    """
    params = []
    for est, check in estimator_checks_generator(estimator, mark="skip"):
        name = getattr(check, "func", check).__name__
        if name != "check_array_api_input":
            params.append(pytest.param(est, check, id=name))
    return params
