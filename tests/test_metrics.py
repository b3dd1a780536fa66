import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.decomposition import MiniBatchDictionaryLearning
from sklearn.exceptions import NotFittedError
from sklearn.metrics import explained_variance_score, r2_score, roc_auc_score
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import Normalizer

from skdict import ConceptBank, DoubleBatchKSVD
from skdict.concepts import random_bank
from skdict._auroc import auroc_of_positive_sets
from skdict._description import _N_BASELINE_DRAWS, Described, faithfulness_per_atom
from skdict._dictionary import encoded
from skdict.metrics import (
    coherence,
    dead_fraction,
    explained_variance,
    faithfulness,
    l0,
    make_faithfulness_scorer,
    make_reconstruction_scorer,
    make_specificity_scorer,
    reconstruction_scorer,
    refit_sparsest,
    signal_recovered,
    specificity,
    unique_name_ratio,
)

from _concept_data import make_concept_data, oracle_coder

finite = st.floats(-100, 100, allow_nan=False).filter(lambda v: abs(v) > 1e-3)


@pytest.fixture(scope="module")
def concept_data():
    X, bank, codes = make_concept_data(600)
    return X, bank, codes, oracle_coder(bank)


# --- reconstruction ---------------------------------------------------------

@given(arrays(np.float64, (6, 4), elements=finite))
def test_signal_recovered_exact_is_one_and_zero_is_zero(X):
    assert signal_recovered(X, X) == 1.0
    assert signal_recovered(X, np.zeros_like(X)) == 0.0


@settings(max_examples=50)
@given(arrays(np.float64, (8, 3), elements=finite), arrays(np.float64, (8, 3), elements=finite))
def test_explained_variance_is_variance_weighted_r2(X, X_hat):
    """It is 1 - FVU, i.e. r2_score(variance_weighted), not explained_variance_score."""
    assert explained_variance(X, X_hat) == pytest.approx(
        r2_score(X, X_hat, multioutput="variance_weighted"), rel=1e-9, abs=1e-9
    )


def test_explained_variance_differs_from_sklearn_on_biased_reconstruction():
    """sklearn's explained_variance_score forgives a constant offset; FVU does not."""
    X = np.array([[1.0, 0.0], [-1.0, 2.0], [0.0, -2.0]])
    X_hat = X + 1.0
    assert explained_variance_score(X, X_hat, multioutput="variance_weighted") == 1.0
    assert explained_variance(X, X_hat) == pytest.approx(1 - 6 / 10)


# --- AUROC helper -----------------------------------------------------------

# The rank sums are sums of half-integers, exact in float64; the AUROC is one
# division away, so it matches sklearn's trapezoid sum to a few ulps.
AUROC_RTOL = 1e-12


@settings(max_examples=50)
@given(
    arrays(np.int8, 30, elements=st.integers(-3, 3)),
    arrays(np.bool_, (4, 30)),
)
def test_auroc_of_positive_sets_matches_roc_auc_score(scores, labels):
    """Integer scores make ties common: they must be counted as half, as sklearn does."""
    scores = scores.astype(np.float64)
    rows = [np.flatnonzero(row) for row in labels]
    bounds = np.concatenate([[0], np.cumsum([r.size for r in rows])])
    got = auroc_of_positive_sets(scores.copy(), np.concatenate(rows), bounds)
    for j in range(4):
        if 0 < labels[j].sum() < 30:
            assert got[j] == pytest.approx(roc_auc_score(labels[j], scores), rel=AUROC_RTOL)
        else:
            assert np.isnan(got[j])


def test_faithfulness_equals_a_direct_per_atom_auroc(rng):
    """The per-concept ranking gives each atom exactly its own AUROC (float64 data)."""
    X, bank, _ = make_concept_data(300, random_state=4)
    model = DoubleBatchKSVD(30, n_nonzero_coefs=3, max_iter=3, random_state=0).fit(X)
    got = faithfulness(model, X, bank, per_atom=True)
    codes = model.transform(X)
    signs = np.where(codes.sum(axis=0) < 0, -1, 1)
    Xc = X - X.mean(axis=0)
    Xc /= np.linalg.norm(Xc, axis=1, keepdims=True)
    T = bank.embeddings.astype(np.float64) - bank.embeddings.mean(axis=0, dtype=np.float64)
    T /= np.linalg.norm(T, axis=1, keepdims=True)
    atoms = model.components_ * signs[:, None]
    names = np.argmax(atoms @ T.T, axis=1)
    for k in range(30):
        fires = signs[k] * codes[:, k] > 0
        if 0 < fires.sum() < len(X):
            assert got[k] == pytest.approx(roc_auc_score(fires, Xc @ T[names[k]]),
                                           rel=AUROC_RTOL)
        else:
            assert np.isnan(got[k])


def test_faithfulness_blocks_of_concepts_give_the_same_scores(concept_data):
    """A cosine buffer of a few concepts (many passes over the rows) changes nothing."""
    X, bank, _, coder = concept_data
    described = Described(encoded(coder, X), bank, True)
    draws = described.draws(None, "gaussian", 0)
    whole = faithfulness_per_atom(described, draws)
    blocks = faithfulness_per_atom(described, draws, score_bytes=3 * 8 * len(X))
    np.testing.assert_array_equal(blocks, whole)


# --- description scores: known answers --------------------------------------

def test_true_bank_describes_true_atoms(concept_data):
    X, bank, _, coder = concept_data
    assert faithfulness(coder, X, bank) > 0.95
    assert specificity(coder, X, bank) == 1.0
    assert unique_name_ratio(coder, X, bank) == 1.0


def test_random_assignment_is_at_chance(concept_data):
    X, bank, _, coder = concept_data
    perm = np.random.default_rng(1).permutation(len(bank))
    assert abs(faithfulness(coder, X, bank, names=perm) - 0.5) < 0.1
    assert specificity(coder, X, bank, names=perm) == np.mean(perm == np.arange(len(bank)))


def test_chance_level_is_below_true_bank(concept_data):
    X, bank, _, coder = concept_data
    small = ConceptBank(bank.names[:8], bank.embeddings[:8])
    for score in (faithfulness, specificity):
        chance = score(coder, X, small, baseline=True)
        assert 0 < chance < score(coder, X, bank) - 0.1
    assert faithfulness(coder, X, bank, baseline=True) < faithfulness(coder, X, bank) - 0.1


def test_chance_level_is_reproducible_and_names_apply_to_random_banks(concept_data):
    X, bank, _, coder = concept_data
    a = faithfulness(coder, X, bank, baseline=True, random_state=3)
    assert a == faithfulness(coder, X, bank, baseline=True, random_state=3)
    names = np.arange(len(bank))
    assert abs(faithfulness(coder, X, bank, names=names, baseline=True) - 0.5) < 0.1


def test_shared_name_costs_one_atom(concept_data):
    X, bank, _, coder = concept_data
    names = np.arange(len(bank))
    names[1] = 0
    n = len(bank)
    assert specificity(coder, X, bank, names=names) == pytest.approx(1 - 1 / n)
    assert unique_name_ratio(coder, X, bank, names=names) == pytest.approx(1 - 1 / n)
    per_atom = specificity(coder, X, bank, names=names, per_atom=True)
    np.testing.assert_array_equal(np.flatnonzero(per_atom == 0), [1])


def test_center_false_uses_raw_cosines(concept_data):
    X, bank, _, coder = concept_data
    raw = ConceptBank(bank.names, bank.embeddings, center=False)
    assert faithfulness(coder, X, bank, center=False) == faithfulness(coder, X + 0.0, raw, center=False)
    assert faithfulness(coder, X, bank, center=False) != faithfulness(coder, X, bank)


def test_centring_removes_a_shared_offset():
    """Concepts sharing a large offset (CLIP's modality gap between text and
    images) all look alike to raw cosines; removing the bank mean undoes it."""
    X, bank, _ = make_concept_data(500, 32, 20, 2)
    offset = 3.0 * np.ones(32) / np.sqrt(32)
    shifted = ConceptBank(bank.names, bank.embeddings + offset)
    coder = oracle_coder(bank, 2)
    assert faithfulness(coder, X, shifted) > 0.95
    assert specificity(coder, X, shifted) == 1.0
    assert faithfulness(coder, X, shifted, center=False) < 0.9
    assert specificity(coder, X, shifted, center=False) < 0.5


# --- null levels: known answers ---------------------------------------------

NULLS = ["gaussian", "shuffled", "sphere"]


@pytest.mark.parametrize("null", NULLS)
def test_atoms_equal_to_the_bank_are_far_above_every_null(concept_data, null):
    X, bank, _, coder = concept_data
    # measured: faithfulness 1.00 vs nulls <= 0.83, specificity 1.0 vs <= 0.59
    assert faithfulness(coder, X, bank) > faithfulness(coder, X, bank, baseline=null) + 0.15
    assert specificity(coder, X, bank) > specificity(coder, X, bank, baseline=null) + 0.3


def test_baseline_true_is_the_gaussian_null(concept_data):
    X, bank, _, coder = concept_data
    for score in (faithfulness, specificity):
        assert score(coder, X, bank, baseline=True) == score(coder, X, bank, baseline="gaussian")


def test_unknown_baseline_is_rejected(concept_data):
    X, bank, _, coder = concept_data
    with pytest.raises(ValueError, match="baseline must be"):
        faithfulness(coder, X, bank, baseline="uniform")


def test_random_permutation_of_names_sits_on_the_shuffled_null(concept_data):
    """One random assignment is one draw of the shuffled null.

    Under "the name says nothing", an atom's AUROC has mean 1/2 and the
    Mann-Whitney variance (n1 + n0 + 1) / (12 n1 n0); atoms fire on disjoint-ish
    random rows, so the mean over m atoms has variance ~ mean(v) / m. The
    single assignment and the null (mean of D draws) then differ by a normal
    with variance mean(v) (1/m + 1/(m D)): 4 standard deviations is the band.
    Specificity of the oracle is the share of fixed points of the permutation,
    ~ Poisson(1) / m per draw: same band with variance 1/m^2 (1 + 1/D).
    """
    X, bank, _, coder = concept_data
    names = np.random.default_rng(7).permutation(len(bank))
    n1 = (coder.transform(X) > 0).sum(axis=0)
    n0 = X.shape[0] - n1
    m, D = len(bank), _N_BASELINE_DRAWS
    v = np.mean((n1 + n0 + 1) / (12 * n1 * n0))
    band = 4 * np.sqrt(v * (1 / m + 1 / (m * D)))
    null = faithfulness(coder, X, bank, baseline="shuffled")
    assert abs(faithfulness(coder, X, bank, names=names) - null) < band
    band = 4 * np.sqrt((1 + 1 / D) / m**2)
    null = specificity(coder, X, bank, baseline="shuffled")
    assert abs(specificity(coder, X, bank, names=names) - null) < band


@pytest.mark.parametrize("null", ["gaussian", "sphere"])
def test_independent_random_banks_sit_on_their_null(concept_data, null):
    """The null is the mean score of banks drawn from its distribution.

    Score K independent banks: their mean m and standard deviation s estimate
    the distribution of one draw, so the null (a mean of D draws) and m differ
    by a normal with standard deviation s sqrt(1/D + 1/K): 4 of them is the band.
    """
    X, bank, _, coder = concept_data
    K, D = 12, _N_BASELINE_DRAWS
    for score in (faithfulness, specificity):
        draws = [score(coder, X, random_bank(bank, 100 + i, null)) for i in range(K)]
        band = 4 * np.std(draws, ddof=1) * np.sqrt(1 / D + 1 / K)
        assert abs(score(coder, X, bank, baseline=null) - np.mean(draws)) <= band


def _anisotropic_concept_data(rng, n_samples=600, n_features=64, n_concepts=40):
    """Concepts in a narrow cone around a shared direction, spread over 8 directions."""
    offset = 3.0 * np.ones(n_features) / np.sqrt(n_features)
    basis = rng.standard_normal((8, n_features))
    concepts = offset + rng.standard_normal((n_concepts, 8)) @ basis / 8
    bank = ConceptBank([f"c{i}" for i in range(n_concepts)], concepts)
    _, _, codes = make_concept_data(n_samples, n_features, n_concepts, 3)
    X = codes @ bank.embeddings.astype(np.float64)
    return X + 0.02 * rng.standard_normal(X.shape), bank


def test_gaussian_null_keeps_the_geometry_the_sphere_ignores(rng):
    """On an anisotropic bank (real embeddings are), random directions of the
    same geometry score higher than uniform ones: the sphere flatters every
    description, which is why the Gaussian null is the default."""
    X, bank = _anisotropic_concept_data(rng)
    coder = oracle_coder(bank)
    T = bank.embeddings.astype(np.float64)
    G = random_bank(bank, 0, "gaussian").embeddings.astype(np.float64)
    # mean pairwise cosine: ~0.8 in the cone, ~0 on the sphere; 0.1 is far
    # above the sampling error of the mean of 40 x 39 cosines
    assert abs((T @ T.T).mean() - (G @ G.T).mean()) < 0.1
    for score in (faithfulness, specificity):
        assert score(coder, X, bank, baseline="gaussian") > score(
            coder, X, bank, baseline="sphere"
        )


# Rows that drew concepts 30-39 keep fewer than 3 atoms; OMP warns it stopped early.
@pytest.mark.filterwarnings("ignore:Orthogonal matching pursuit ended prematurely")
def test_per_atom_scores_are_nan_for_dead_atoms(concept_data):
    _, bank, codes, coder = concept_data
    X = codes[:, :30] @ bank.embeddings[:30].astype(np.float64)
    for score in (faithfulness, specificity):
        per_atom = score(coder, X, bank, per_atom=True)
        assert per_atom.shape == (len(bank),)
        assert np.isnan(per_atom[30:]).all() and np.isfinite(per_atom[:30]).all()
        assert score(coder, X, bank) == pytest.approx(per_atom[:30].mean())
    assert dead_fraction(coder, X) == 0.25
    assert unique_name_ratio(coder, X, bank) == 1.0


@pytest.mark.filterwarnings("ignore:Orthogonal matching pursuit ended prematurely")
def test_count_dead_divides_by_all_atoms(concept_data):
    """10 of 40 atoms are dead: counted as not specific, they cost 10/40."""
    _, bank, codes, coder = concept_data
    X = codes[:, :30] @ bank.embeddings[:30].astype(np.float64)
    alive_share = 1 - dead_fraction(coder, X)
    assert specificity(coder, X, bank, count_dead=True) == pytest.approx(
        alive_share * specificity(coder, X, bank)
    )
    assert unique_name_ratio(coder, X, bank, count_dead=True) == pytest.approx(alive_share)
    per_atom = specificity(coder, X, bank, count_dead=True, per_atom=True)
    np.testing.assert_array_equal(per_atom[30:], 0.0)


def test_sparsity_and_coherence(concept_data):
    X, bank, codes, coder = concept_data
    assert l0(coder, X) == 3.0
    assert dead_fraction(coder, X) == 0.0
    assert coherence(np.eye(4)) == 0.0
    assert coherence([[1.0, 0.0], [0.0, 1.0], [-2.0, 0.0]]) == 1.0
    D = bank.embeddings.astype(np.float64)
    expected = np.max(np.abs(D @ D.T) - np.eye(len(D)))
    assert coherence(coder) == pytest.approx(expected, rel=1e-6)


# --- Pipelines and scorers --------------------------------------------------

def test_scores_of_a_pipeline_are_taken_in_the_dictionary_space(concept_data):
    X, bank, _, coder = concept_data
    pipe = Pipeline([("norm", Normalizer()), ("dict", coder)]).fit(X)
    X_norm = Normalizer().transform(X)
    assert faithfulness(pipe, X, bank) == faithfulness(coder, X_norm, bank)
    assert specificity(pipe, X, bank) == specificity(coder, X_norm, bank)
    X_hat = coder.inverse_transform(coder.transform(X_norm))
    assert reconstruction_scorer(pipe, X) == signal_recovered(X_norm, X_hat)
    ev = make_reconstruction_scorer("explained_variance")(pipe, X, None)
    assert ev == explained_variance(X_norm, X_hat)
    assert make_faithfulness_scorer(bank)(pipe, X) == faithfulness(pipe, X, bank)
    assert make_specificity_scorer(bank)(pipe, X) == specificity(pipe, X, bank)


def test_scorers_pickle(concept_data):
    X, bank, _, coder = concept_data
    for scorer in (reconstruction_scorer, make_faithfulness_scorer(bank)):
        assert pickle.loads(pickle.dumps(scorer))(coder, X) == scorer(coder, X)
    assert "make_faithfulness_scorer(bank=ConceptBank" in repr(make_faithfulness_scorer(bank))


def _grid_estimator(name):
    if name == "DoubleBatchKSVD":
        return DoubleBatchKSVD(12, max_iter=5, random_state=0), "n_nonzero_coefs"
    if name == "MiniBatchDictionaryLearning":
        return MiniBatchDictionaryLearning(
            12, transform_algorithm="omp", max_iter=5, random_state=0
        ), "transform_n_nonzero_coefs"
    pytest.importorskip("torch")
    from skdict import SparseAutoencoder

    return SparseAutoencoder(
        12, max_iter=5, batch_size=32, learning_rate=3e-3, device="cpu", random_state=0
    ), "k"


@pytest.mark.parametrize(
    "name", ["DoubleBatchKSVD", "MiniBatchDictionaryLearning", "SparseAutoencoder"]
)
def test_grid_search_picks_most_coefficients_for_reconstruction(name):
    estimator, param = _grid_estimator(name)
    X, bank, _ = make_concept_data(240, 24, 12, 3, random_state=2)
    search = GridSearchCV(
        Pipeline([("norm", Normalizer()), ("dict", estimator)]),
        {f"dict__{param}": [1, 3, 8]},
        scoring={
            "rec": reconstruction_scorer,
            "faith": make_faithfulness_scorer(bank),
            "spec": make_specificity_scorer(bank),
        },
        refit="rec",
        cv=3,
    ).fit(X)
    assert search.best_params_ == {f"dict__{param}": 8}
    rec = search.cv_results_["mean_test_rec"]
    assert rec[0] < rec[1] < rec[2]
    for key in ("mean_test_faith", "mean_test_spec"):
        assert np.all((search.cv_results_[key] >= 0) & (search.cv_results_[key] <= 1))


# --- bad input --------------------------------------------------------------

def test_bad_input_gives_clear_errors(concept_data):
    X, bank, _, coder = concept_data
    with pytest.raises(ValueError, match="64 features but the bank's concepts have 3"):
        faithfulness(coder, X, ConceptBank(["a", "b"], [[1, 0, 0], [0, 1, 0]]))
    with pytest.raises(NotFittedError):
        specificity(DoubleBatchKSVD(4), X, bank)
    with pytest.raises(TypeError, match="bank must be a skdict.ConceptBank"):
        faithfulness(coder, X, bank.embeddings)
    with pytest.raises(ValueError, match=r"names must be an int array of shape \(40,\)"):
        faithfulness(coder, X, bank, names=[0, 1])
    with pytest.raises(ValueError, match="outside"):
        specificity(coder, X, bank, names=np.full(40, 40))
    with pytest.raises(TypeError, match="estimator must be a fitted dictionary learner"):
        l0(Normalizer().fit(X), X)
    with pytest.raises(ValueError, match="kind must be one of"):
        make_reconstruction_scorer("mse")
    with pytest.raises(ValueError, match="same shape"):
        signal_recovered(X, X[:, :3])


# --- model selection: the sparsest setting that scores almost best -----------

def _cv_results(ks, means, stds, name="score"):
    return {"param_k": np.ma.masked_array(ks, dtype=object), f"mean_test_{name}": means,
            f"std_test_{name}": stds}


def test_refit_sparsest_takes_the_smallest_k_within_tolerance():
    results = _cv_results([4, 8, 16], [0.60, 0.67, 0.68], [0.01, 0.02, 0.015])
    assert refit_sparsest("k")(results) == 1  # 0.67 >= 0.68 - 0.015
    assert refit_sparsest("k", tolerance=0.1)(results) == 0
    assert refit_sparsest("k", tolerance=0)(results) == 2  # the plain argmax


def test_refit_sparsest_breaks_ties_on_k_by_score_and_reads_named_scorers():
    """Two settings share the sparsest k (another parameter differs): the better wins."""
    results = _cv_results([16, 4, 4], [0.70, 0.66, 0.69], [0.02, 0.0, 0.0], name="rec")
    assert refit_sparsest("k", score="rec")(results) == 2
    with pytest.raises(ValueError, match="score="):
        refit_sparsest("k")(results)
    with pytest.raises(ValueError, match="param="):
        refit_sparsest("n_nonzero_coefs", score="rec")(results)
    with pytest.raises(ValueError, match="tolerance"):
        refit_sparsest("k", tolerance=-1)


def test_refit_sparsest_in_grid_search_prefers_fewer_nonzeros():
    """With the reconstruction scorer the plain refit takes the largest k; a
    tolerance as large as the gain from 2 to 4 non-zeros takes 2 instead."""
    X, _, _ = make_concept_data(300, 16, 12, 2)
    grid = {"n_nonzero_coefs": [2, 4]}
    model = DoubleBatchKSVD(12, max_iter=3, random_state=0)
    plain = GridSearchCV(model, grid, scoring=reconstruction_scorer, cv=2).fit(X)
    assert plain.best_params_ == {"n_nonzero_coefs": 4}
    means = plain.cv_results_["mean_test_score"]
    sparse = GridSearchCV(
        model, grid, scoring=reconstruction_scorer, cv=2,
        # 1e-12 covers the rounding of the subtraction (values near 1, eps 2e-16)
        refit=refit_sparsest("n_nonzero_coefs", tolerance=means[1] - means[0] + 1e-12),
    ).fit(X)
    assert sparse.best_params_ == {"n_nonzero_coefs": 2}
    assert pickle.loads(pickle.dumps(sparse)).best_index_ == 0
