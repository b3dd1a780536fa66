import pickle

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.stats import rankdata
from sklearn.decomposition import MiniBatchDictionaryLearning, SparseCoder
from sklearn.exceptions import NotFittedError
from sklearn.metrics import explained_variance_score, r2_score, roc_auc_score
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import Normalizer

from skdict import ConceptBank, DoubleBatchKSVD
from skdict._auroc import _row_ranks, row_auroc
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

@settings(max_examples=50)
@given(
    arrays(np.int8, (4, 30), elements=st.integers(-3, 3)),
    arrays(np.bool_, (4, 30)),
)
def test_row_auroc_matches_roc_auc_score(scores, labels):
    """Integer scores make ties common: they must be counted as half, as sklearn does."""
    scores = scores.astype(np.float64)
    got = row_auroc(scores, labels)
    for j in range(4):
        if 0 < labels[j].sum() < 30:
            assert got[j] == pytest.approx(roc_auc_score(labels[j], scores[j]))
        else:
            assert np.isnan(got[j])


@settings(max_examples=30)
@given(arrays(np.float64, (3, 40), elements=st.sampled_from([-1.5, 0.0, 0.25, 2.0, 7.0])))
def test_row_ranks_match_scipy(scores):
    np.testing.assert_array_equal(_row_ranks(scores), rankdata(scores, axis=1))


def test_row_auroc_accepts_sparse_labels(rng):
    scores = rng.standard_normal((6, 50))
    labels = rng.random((6, 50)) < 0.3
    np.testing.assert_allclose(
        row_auroc(scores, sp.csr_matrix(labels)), row_auroc(scores, labels)
    )


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
