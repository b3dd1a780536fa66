"""One encoding of X shared by every score: chunked codes, precomputed codes,
streaming reconstruction scores, and bounded memory."""

import pickle
import tracemalloc

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.decomposition import MiniBatchDictionaryLearning, SparseCoder
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from skdict import ConceptBank, DoubleBatchKSVD, SparseAutoencoder, describe_atoms
from skdict._description import _SCORE_BYTES
from skdict._dictionary import encoded, sparse_codes
from skdict.explore import build_site
from skdict.metrics import (
    dead_fraction,
    dictionary_scores,
    explained_variance,
    faithfulness,
    l0,
    make_dictionary_scorer,
    signal_recovered,
    specificity,
    unique_name_ratio,
)

from _concept_data import make_concept_data, oracle_coder
from _tolerance import assert_same_codes, dot_rtol


class CountingCoder(SparseCoder):
    """A SparseCoder that counts the rows it is asked to encode (a test double of the
    estimator: the metrics under test are not touched)."""

    rows_encoded = 0

    def transform(self, X, y=None):
        type(self).rows_encoded += len(X)
        return super().transform(X)


@pytest.fixture(scope="module")
def data():
    X, bank, _ = make_concept_data(500, random_state=2)
    model = DoubleBatchKSVD(48, n_nonzero_coefs=4, max_iter=4, random_state=0).fit(X)
    return X, bank, model


def _counting_coder(bank):
    CountingCoder.rows_encoded = 0
    return CountingCoder(bank.embeddings.astype(np.float64), transform_algorithm="omp",
                         transform_n_nonzero_coefs=3)


# --- chunked codes ----------------------------------------------------------

@pytest.mark.parametrize("chunk_rows", [1, 7, 10_000])
def test_chunked_codes_equal_one_transform(data, tmp_path, chunk_rows):
    X, _, model = data
    np.save(tmp_path / "X.npy", X)
    X_map = np.load(tmp_path / "X.npy", mmap_mode="r")
    codes = sparse_codes(model, X_map, chunk_rows=chunk_rows)
    assert sp.isspmatrix_csr(codes) and codes.dtype == X.dtype
    # chunks of other sizes take other BLAS paths for the correlations
    assert_same_codes(codes.toarray(), model.transform(X), model.components_, X.dtype)


def test_chunked_codes_of_other_estimators(data):
    X, _, _ = data
    X32 = X.astype(np.float32)
    sae = SparseAutoencoder(32, k=3, max_iter=1, batch_size=128, random_state=0).fit(X32)
    mbdl = MiniBatchDictionaryLearning(16, transform_algorithm="omp",
                                       transform_n_nonzero_coefs=3, max_iter=2,
                                       random_state=0).fit(X)
    for model, rows in ((sae, X32), (mbdl, X)):
        codes = sparse_codes(model, rows, chunk_rows=33)
        assert_same_codes(codes.toarray(), model.transform(rows), model.components_,
                          rows.dtype)
        assert codes.nnz == np.count_nonzero(codes.data)


# --- streaming reconstruction -----------------------------------------------

@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_streaming_reconstruction_scores_equal_the_dense_ones(data, dtype):
    X, _, model = data
    X = X.astype(dtype)
    model = DoubleBatchKSVD(48, n_nonzero_coefs=4, max_iter=3, random_state=0).fit(X)
    X_hat = model.inverse_transform(model.transform(X))
    recovered, explained = encoded(model, X).reconstruction
    # The reconstruction is decoded from CSR here and from dense codes there: each
    # entry is a sum of n_nonzero_coefs products in another order (dot_rtol of
    # ||x_hat||), which the residual r = x - x_hat amplifies by ||x_hat|| / ||r||;
    # squared residuals double it. The float64 sums over rows add round-off only.
    residual = np.linalg.norm(X - X_hat, axis=1)
    amplification = np.max(np.linalg.norm(X_hat, axis=1) / residual)
    rtol = 2 * amplification * dot_rtol(dtype, model.n_nonzero_coefs)
    assert recovered == pytest.approx(signal_recovered(X, X_hat), rel=rtol)
    assert explained == pytest.approx(explained_variance(X, X_hat), rel=rtol)


def test_reconstruction_of_scikit_learn_models_reads_sparse_codes(data):
    """MiniBatchDictionaryLearning's inverse_transform refuses CSR codes; the
    scores decode them as codes @ components_ instead (issue 22, item 15)."""
    X, _, _ = data
    mbdl = MiniBatchDictionaryLearning(16, transform_algorithm="omp",
                                       transform_n_nonzero_coefs=3, max_iter=2,
                                       random_state=0).fit(X)
    scores = dictionary_scores(mbdl, X, scores=["signal_recovered", "explained_variance"])
    X_hat = mbdl.inverse_transform(mbdl.transform(X))
    assert scores["signal_recovered"] == pytest.approx(signal_recovered(X, X_hat), rel=1e-12)
    assert scores["explained_variance"] == pytest.approx(explained_variance(X, X_hat),
                                                         rel=1e-12)


# --- precomputed codes --------------------------------------------------------

def test_metrics_given_codes_equal_metrics_that_encode(data):
    X, bank, model = data
    codes = model.transform(X)
    for sparse in (codes, sp.csr_matrix(codes)):
        assert faithfulness(model, X, bank, codes=sparse) == faithfulness(model, X, bank)
        assert specificity(model, X, bank, codes=sparse, baseline=True) == specificity(
            model, X, bank, baseline=True)
        assert unique_name_ratio(model, X, bank, codes=sparse) == unique_name_ratio(
            model, X, bank)
        assert l0(model, X, codes=sparse) == l0(model, X)
        assert dead_fraction(model, X, codes=sparse) == dead_fraction(model, X)
    given = describe_atoms(model, bank, codes=codes)
    encoded_here = describe_atoms(model, bank, X=X)
    for key in ("indices", "scores", "alive", "signs"):
        np.testing.assert_array_equal(given[key], encoded_here[key])


def test_given_codes_are_not_encoded_again(data):
    X, bank, _ = data
    coder = _counting_coder(bank)
    codes = coder.transform(X)
    CountingCoder.rows_encoded = 0
    dictionary_scores(coder, X, bank, codes=codes, baseline=True)
    faithfulness(coder, X, bank, codes=codes, baseline="shuffled")
    describe_atoms(coder, bank, codes=codes)
    assert CountingCoder.rows_encoded == 0


def test_every_score_and_null_level_encodes_the_rows_once(data):
    X, bank, _ = data
    coder = _counting_coder(bank)
    dictionary_scores(coder, X, bank, baseline=True)
    assert CountingCoder.rows_encoded == len(X)


def test_the_explorer_encodes_the_rows_once(data, tmp_path):
    X, bank, _ = data
    coder = _counting_coder(bank)
    model = MiniBatchDictionaryLearning(40, max_iter=1, random_state=0).fit(X)
    model.components_ = coder.dictionary  # a learned dictionary (explore needs components_)
    counting = CountingCoder(model.components_, transform_algorithm="omp",
                             transform_n_nonzero_coefs=3)
    counting.components_ = model.components_
    CountingCoder.rows_encoded = 0
    build_site(counting, X, tmp_path / "site", bank=bank)
    assert CountingCoder.rows_encoded == len(X)


@pytest.mark.parametrize("bad, match", [
    (np.zeros((499, 48)), "codes has shape"),
    (np.zeros((500, 47)), "codes has shape"),
    (np.full((500, 48), np.nan), "NaN or infinite"),
])
def test_codes_that_do_not_fit_are_refused(data, bad, match):
    X, bank, model = data
    with pytest.raises(ValueError, match=match):
        faithfulness(model, X, bank, codes=bad)
    with pytest.raises(ValueError, match=match):
        dictionary_scores(model, X, codes=bad)


# --- dictionary_scores and its scorer -----------------------------------------

def test_dictionary_scores_equal_the_separate_functions(data):
    X, bank, model = data
    got = dictionary_scores(model, X, bank, baseline=True)
    X_hat = model.inverse_transform(model.transform(X))
    expected = {
        "signal_recovered": signal_recovered(X, X_hat),
        "explained_variance": explained_variance(X, X_hat),
        "l0": l0(model, X),
        "dead_fraction": dead_fraction(model, X),
        "faithfulness": faithfulness(model, X, bank),
        "specificity": specificity(model, X, bank),
        "unique_name_ratio": unique_name_ratio(model, X, bank),
        "faithfulness_null": faithfulness(model, X, bank, baseline=True),
        "specificity_null": specificity(model, X, bank, baseline=True),
    }
    assert list(got) == list(expected)
    for name, value in expected.items():
        # reconstruction: float64 sums in another order; the rest: the same numbers
        assert got[name] == pytest.approx(value, rel=1e-12), name


def test_dictionary_scores_checks_its_arguments(data):
    X, bank, model = data
    with pytest.raises(ValueError, match="need a concept bank"):
        dictionary_scores(model, X, scores=["faithfulness"])
    with pytest.raises(ValueError, match="scores must be"):
        dictionary_scores(model, X, bank, scores=["accuracy"])
    with pytest.raises(ValueError, match="baseline must be"):
        dictionary_scores(model, X, bank, baseline="uniform")


def test_the_dictionary_scorer_in_a_grid_search(data):
    X, bank, _ = data
    pipe = Pipeline([("scale", StandardScaler()),
                     ("ksvd", DoubleBatchKSVD(24, max_iter=2, random_state=0))])
    scaled_bank = ConceptBank(bank.names, StandardScaler().fit(X).transform(bank.embeddings))
    scorer = make_dictionary_scorer(scaled_bank)
    search = GridSearchCV(pipe, {"ksvd__n_nonzero_coefs": [2, 4]}, cv=2,
                          scoring=scorer, refit="signal_recovered").fit(X)
    for name in ("signal_recovered", "faithfulness", "specificity", "l0"):
        assert np.all(np.isfinite(search.cv_results_[f"mean_test_{name}"]))
    l0_means = search.cv_results_["mean_test_l0"]
    assert l0_means[0] <= 2 < l0_means[1] <= 4
    assert pickle.loads(pickle.dumps(scorer))(search.best_estimator_, X) == scorer(
        search.best_estimator_, X)
    assert "make_dictionary_scorer(bank=ConceptBank" in repr(scorer)


# --- bounded memory ---------------------------------------------------------

def test_scores_never_hold_rows_times_atoms(rng):
    """60,000 rows x 2,048 atoms: a dense code matrix alone would be 983 MB. The
    scores hold a block of cosines of at most _SCORE_BYTES, a few copies of the
    sparse codes and dense row chunks of a fixed size (301 MB measured)."""
    n, n_atoms, n_features = 60_000, 2048, 16
    D = rng.standard_normal((n_atoms, n_features))
    coder = SparseCoder(D / np.linalg.norm(D, axis=1, keepdims=True),
                        transform_algorithm="threshold", transform_alpha=2.5)
    X = rng.standard_normal((n, n_features))
    bank = ConceptBank([f"c{i}" for i in range(64)], rng.standard_normal((64, n_features)))
    tracemalloc.start()
    try:
        codes = encoded(coder, X).codes
        tracemalloc.reset_peak()
        dictionary_scores(coder, X, bank, baseline=True, codes=codes)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    codes_bytes = codes.data.nbytes + codes.indices.nbytes + codes.indptr.nbytes
    fixed = _SCORE_BYTES + 4 * 32 * 2**20  # the cosine block, four dense row chunks
    assert peak < fixed + 4 * codes_bytes, f"{peak / 2**20:.0f} MB"
    assert peak < n * n_atoms * 8 / 2, f"{peak / 2**20:.0f} MB"
