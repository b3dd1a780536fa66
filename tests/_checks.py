"""scikit-learn's estimator checks as pytest parameters, shared by the estimator tests."""

import pytest
from sklearn.utils.estimator_checks import estimator_checks_generator


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
