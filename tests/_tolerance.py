"""Tolerances for float32 results reached along different paths (see conftest.py)."""

import numpy as np


def dot_rtol(dtype, n_terms):
    """Relative rounding error of an `n_terms` dot product summed in another order.

    Each addition rounds by at most eps/2; summed in a different order (another
    BLAS kernel, batch size, thread count or SIMD width) the errors behave like
    a random walk, ``sqrt(n_terms) * eps`` with a wide margin over its standard
    deviation, plus 2 eps for the products and the final rounding.
    """
    return (np.sqrt(n_terms) + 2) * np.finfo(dtype).eps


def code_atol(dictionary, codes, dtype):
    """Per-row absolute tolerance for least-squares codes reached along two paths.

    Codes solve ``G_S c = D_S x`` on their support S. The correlations differ
    between paths by ``dot_rtol`` relative, and the solve amplifies a relative
    perturbation of its right-hand side by at most ``cond(G_S)``; so two paths'
    codes of a row differ by at most ``cond(G_S) * dot_rtol * ||c||``. The
    condition numbers are computed in float64 from the dictionary.
    """
    D = np.asarray(dictionary, dtype=np.float64)
    codes = np.asarray(codes, dtype=np.float64)
    rtol = dot_rtol(dtype, D.shape[1])
    atol = np.zeros(len(codes))
    for i, row in enumerate(codes):
        support = np.flatnonzero(row)
        if support.size:
            cond = np.linalg.cond(D[support] @ D[support].T)
            atol[i] = cond * rtol * np.linalg.norm(row)
    return atol[:, None]


def assert_same_codes(actual, expected, dictionary, dtype):
    """Same supports, and coefficients equal within `code_atol`."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    np.testing.assert_array_equal(actual != 0, expected != 0)
    excess = np.abs(actual - expected) - code_atol(dictionary, expected, dtype)
    assert np.all(excess <= 0), f"codes differ beyond the derived tolerance by {excess.max():.3g}"
