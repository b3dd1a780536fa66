"""k-sparse probing, reseed stability and ground-truth recovery: known answers and nulls.

Each metric scores 1 for a dictionary equal to the truth and sits at its null
level for a random dictionary drawn as the null draws them (shaped like X, or
uniform on the sphere without X). A single random dictionary's score varies
from draw to draw; the tests compare means over five random dictionaries with
the null (itself a mean over five draws), and each tolerance is four standard
deviations of that difference (``sqrt(2 / 5)`` times the spread of one draw,
measured over ten random dictionaries and quoted at each test).
"""

import tracemalloc

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.decomposition import SparseCoder
from sklearn.model_selection import cross_validate
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skdict import DoubleBatchKSVD
from skdict._null_dictionary import gaussian_sampler
from skdict.datasets import make_sparse_signals
from skdict.metrics import (
    ground_truth_recovery,
    make_sparse_probing_scorer,
    reseed_stability,
    sparse_probing,
)

N_ATOMS, N_FEATURES, N_NONZERO = 100, 64, 3


@pytest.fixture(scope="module")
def truth():
    return _truth()


def _truth():
    """100 unit atoms in 64 dimensions, and 2000 noiseless signals of 3 atoms each with
    coefficients in [1, 2]: OMP with the true atoms finds every support exactly,
    and an atom's code separates the rows that use it from the others."""
    _, D, _ = make_sparse_signals(1, N_FEATURES, N_ATOMS, 1, random_state=0)
    rng = np.random.default_rng(0)
    n = 2000
    atoms = np.array([rng.choice(N_ATOMS, N_NONZERO, replace=False) for _ in range(n)])
    values = rng.uniform(1.0, 2.0, atoms.shape)
    A = sp.csr_matrix((values.ravel(), atoms.ravel(), np.arange(0, atoms.size + 1, N_NONZERO)),
                      shape=(n, N_ATOMS))
    X = A @ D
    y = (A[:, 0].toarray().ravel() != 0).astype(int)
    return X, D, A, y


def _coder(D):
    return SparseCoder(D, transform_algorithm="omp", transform_n_nonzero_coefs=N_NONZERO)


def _assert_at_null(runs, tolerances):
    """The mean score of the random dictionaries' `runs` is within tolerance of the null's."""
    for key, tolerance in tolerances.items():
        score = np.mean([run[key] for run in runs])
        null = np.mean([run[f"{key}_null"] for run in runs])
        assert abs(score - null) < tolerance, (key, score, null)


def _random_atoms(rng, X=None):
    """Unit atoms drawn as the null draws them: like the rows of X, or uniformly."""
    R = rng.standard_normal((N_ATOMS, N_FEATURES)) if X is None else gaussian_sampler(X)(
        rng, N_ATOMS)
    return R / np.linalg.norm(R, axis=1, keepdims=True)


# ---------------------------------------------------------------- k-sparse probing


def test_probing_the_true_dictionary_scores_one(truth):
    X, D, A, y = truth
    scores = sparse_probing(_coder(D), X, y, k=[1, 5], baseline=True)
    assert scores["k1"] == 1.0 and scores["k5"] == 1.0
    # the null (random atoms, OMP at the same L0) is far below: 0.61 and 0.78 here
    assert scores["k1_null"] < 0.8 and scores["k5_null"] < 0.9
    assert 0.5 <= scores["dense"] <= 1.0


def test_probing_a_random_dictionary_sits_at_its_null(truth):
    X, _, _, y = truth
    rng = np.random.default_rng(1)
    runs = [sparse_probing(_coder(_random_atoms(rng, X)), X, y, k=[1, 5], baseline=True)
            for _ in range(5)]
    # one random dictionary: k=1 std 0.065 around 0.62, k=5 std 0.041 around 0.75
    _assert_at_null(runs, {"k1": 0.17, "k5": 0.11})


def test_probing_averages_one_task_per_class_and_reads_precomputed_codes(truth):
    X, D, A, _ = truth
    # three classes: rows using atom 0, rows using atom 1 but not 0, the rest;
    # the true codes separate each from the others through one latent
    first, second = (A[:, :2].toarray() != 0).T
    y = np.where(first, 0, np.where(second, 1, 2))
    scores = sparse_probing(_coder(D), X, y, k=2, codes=A)
    assert scores["k2"] == 1.0
    # "the rest" needs two latents (neither atom 0 nor 1): k=1 misses some of it
    assert sparse_probing(_coder(D), X, y, k=1, codes=A)["k1"] < 1.0


def test_probing_works_through_a_pipeline(truth):
    X, _, _, y = truth
    pipe = make_pipeline(StandardScaler(), DoubleBatchKSVD(32, n_nonzero_coefs=3, max_iter=3,
                                                           random_state=0)).fit(X)
    scores = sparse_probing(pipe, X, y, k=1)
    assert 0.5 <= scores["k1"] <= 1.0 and 0.5 <= scores["dense"] <= 1.0


def test_probing_scorer_in_cross_validation(truth):
    X, D, _, y = truth
    result = cross_validate(_coder(D), X, y, cv=2,
                            scoring=make_sparse_probing_scorer(k=(1, 5), test_size=0.5))
    np.testing.assert_array_equal(result["test_k1"], [1.0, 1.0])
    assert set(result) >= {"test_k1", "test_k5", "test_dense"}
    with pytest.raises(ValueError, match="needs the class of each row: pass y"):
        make_sparse_probing_scorer()(_coder(D), X)
    with pytest.raises(TypeError, match=r"unexpected parameters \['codes'\]"):
        make_sparse_probing_scorer(codes=None)


@pytest.mark.parametrize("k, y, message", [
    (0, None, r"k must be an int or a non-empty list of ints in \[1, 100\]"),
    ([1, 101], None, r"in \[1, 100\]"),
    ([], None, "non-empty list"),
    (1, np.zeros(2000), "at least two classes with two rows each"),
    (1, np.ones(5), "y has 5 labels but X has 2000 rows"),
])
def test_probing_refuses_bad_parameters(truth, k, y, message):
    X, D, _, labels = truth
    with pytest.raises(ValueError, match=message):
        sparse_probing(_coder(D), X, labels if y is None else y, k=k)


def test_probing_never_holds_dense_codes():
    # 2000 rows x 100,000 atoms would be 1.6 GB dense; probing slices k columns
    rng = np.random.default_rng(0)
    n, n_atoms = 2000, 100_000
    y = rng.integers(0, 2, n)
    cols = rng.integers(0, n_atoms, (n, 4))
    cols[:, 0] = np.where(y == 1, 7, cols[:, 0])
    codes = sp.csr_matrix((np.ones(4 * n), cols.ravel(), np.arange(0, 4 * n + 1, 4)),
                          shape=(n, n_atoms))
    coder = SparseCoder(rng.standard_normal((n_atoms, 4)), transform_algorithm="omp")
    X = rng.standard_normal((n, 4))
    tracemalloc.start()
    try:
        scores = sparse_probing(coder, X, y, k=[1, 3], codes=codes)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert scores["k1"] == 1.0
    assert peak < 100 * 2**20, f"peak {peak / 2**20:.0f} MiB"


# ---------------------------------------------------------------- reseed stability


def test_stability_of_a_dictionary_with_itself_is_one(truth):
    _, D, _, _ = truth
    order = np.random.default_rng(0).permutation(N_ATOMS)
    flipped = D[order] * np.where(np.arange(N_ATOMS) % 2, -2.0, 0.5)[:, None]
    scores = reseed_stability(D, flipped, baseline=True)
    assert scores["matched"] == scores["assigned"] == 1.0
    assert scores["mcc"] == pytest.approx(1.0, abs=1e-12)
    assert scores["matched_null"] == 0.0 and scores["mcc_null"] < 0.5  # 0.32


def test_stability_of_two_random_dictionaries_sits_at_its_null():
    rng = np.random.default_rng(2)
    runs = [reseed_stability(_random_atoms(rng), _random_atoms(rng), baseline=True)
            for _ in range(5)]
    for key in ("matched", "assigned"):
        assert all(run[key] == run[f"{key}_null"] == 0.0 for run in runs)
    # one pair of uniform random dictionaries: MCC std 0.0025 around 0.318
    _assert_at_null(runs, {"mcc": 0.0065})


def test_stability_counts_one_to_one_and_best_matches_differently():
    D = np.eye(3)
    # both atoms of B sit on atom 0 of A: best match finds one A atom, the
    # assignment gives atom 0 one partner and the other at |cos| 0
    B = [[1.0, 0.0, 0.0], [0.99, 0.1, 0.0]]
    scores = reseed_stability(B, D, threshold=0.9)
    assert scores["matched"] == 1.0 and scores["assigned"] == 0.5
    with pytest.raises(ValueError, match=r"threshold must be a \|cos\| in \(0, 1\]"):
        reseed_stability(D, D, threshold=0)
    with pytest.raises(ValueError, match="3 features but estimator_b of 2"):
        reseed_stability(D, np.eye(2))


# ---------------------------------------------------------------- ground-truth recovery


def test_ground_truth_of_the_true_dictionary_is_one(truth):
    X, D, A, _ = truth
    scores = ground_truth_recovery(_coder(D), D, X, A, baseline=True)
    assert scores == pytest.approx({"mcc": 1.0, "f1": 1.0, "mcc_null": scores["mcc_null"],
                                    "f1_null": scores["f1_null"]}, abs=1e-12)
    assert scores["mcc_null"] < 0.5 and scores["f1_null"] < 0.3  # 0.40 and 0.18


def test_ground_truth_of_a_random_dictionary_sits_at_its_null(truth):
    X, D, A, _ = truth
    rng = np.random.default_rng(3)
    runs = [ground_truth_recovery(_coder(_random_atoms(rng, X)), D, X, A, baseline=True)
            for _ in range(5)]
    # one random dictionary: MCC std 0.0043 around 0.396, F1 std 0.0062 around 0.179
    _assert_at_null(runs, {"mcc": 0.011, "f1": 0.016})


def test_ground_truth_f1_scores_each_learned_atom_as_a_detector(truth):
    X, D, A, _ = truth
    # half the atoms, coded by OMP: each still detects its own true atom on
    # some rows, and every learned atom has a partner, so F1 sits between
    half = D[: N_ATOMS // 2]
    scores = ground_truth_recovery(_coder(half), D, X, A)
    assert scores["mcc"] == pytest.approx(1.0)  # every learned atom is a true one
    assert 0.3 < scores["f1"] < 1.0
    with pytest.raises(ValueError, match="needs both X and true_codes"):
        ground_truth_recovery(_coder(D), D, X)
    with pytest.raises(ValueError, match=r"true_codes has shape \(2000, 99\)"):
        ground_truth_recovery(_coder(D), D, X, A[:, :99])
