import numpy as np
import pytest
from sklearn.decomposition import SparseCoder
from sklearn.exceptions import NotFittedError
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import Normalizer

from skdict import ConceptBank, DoubleBatchKSVD, describe_atoms

from _concept_data import make_antipodal_data, make_concept_data, oracle_coder


def test_bank_stores_unit_float32_rows_and_names():
    bank = ConceptBank(["a", "b", "c"], [[3.0, 4.0], [0.0, -2.0], [1.0, 1.0]])
    assert bank.names == ["a", "b", "c"] and len(bank) == 3 and bank.n_features == 2
    assert bank.embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(bank.embeddings, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(bank.embeddings[0], [0.6, 0.8], rtol=1e-6)


@pytest.mark.parametrize(
    "names, embeddings, match",
    [
        (["a", "b"], [[1.0, np.nan], [0.0, 1.0]], "NaN"),
        (["a", "b"], [[1.0, 0.0]], "one embedding per name"),
        ([], np.zeros((0, 2)), "empty"),
        (["a", "a"], [[1.0, 0.0], [0.0, 1.0]], "'a' appears more than once"),
        (["a", "b"], [[1.0, 0.0], [0.0, 0.0]], "row 1 .'b'. is zero"),
        (["a"], [[1.0, 0.0]], "at least two concepts"),
    ],
)
def test_bank_rejects_bad_input(names, embeddings, match):
    with pytest.raises(ValueError, match=match):
        ConceptBank(names, embeddings)


def test_bank_rejects_non_string_names():
    with pytest.raises(TypeError, match="names must hold non-empty strings"):
        ConceptBank(["a", 2], np.eye(2))
    with pytest.raises(TypeError, match="sequence of strings"):
        ConceptBank("ab", np.eye(2))


def test_save_load_round_trip(tmp_path):
    bank = ConceptBank(["un chat", "a dog"], [[1.0, 2.0, 0.0], [0.0, 1.0, 1.0]], center=False)
    bank.save(tmp_path / "bank.npz")
    loaded = ConceptBank.load(tmp_path / "bank.npz")
    assert loaded.names == bank.names and loaded.center is False
    np.testing.assert_array_equal(loaded.embeddings, bank.embeddings)


def test_load_rejects_other_npz(tmp_path):
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(ValueError, match="not a ConceptBank file"):
        ConceptBank.load(tmp_path / "other.npz")


class _FakeTextEncoder:
    """Embeds a text by its letter counts, as a torch tensor when asked."""

    def __init__(self, as_tensor=False):
        self.as_tensor = as_tensor

    def encode_text(self, texts):
        out = np.array([[t.count(c) for c in "abcde"] for t in texts], dtype=np.float32)
        if self.as_tensor:
            torch = pytest.importorskip("torch")
            return torch.from_numpy(out)
        return out


@pytest.mark.parametrize("as_tensor", [False, True])
def test_from_texts_embeds_every_text(as_tensor):
    texts = ["abba", "cede", "aaa"]
    bank = ConceptBank.from_texts(texts, _FakeTextEncoder(as_tensor))
    assert bank.names == texts
    expected = np.array([[2, 2, 0, 0, 0], [0, 0, 1, 1, 2], [3, 0, 0, 0, 0]], float)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(bank.embeddings, expected, rtol=1e-6)


def test_from_texts_needs_encode_text():
    with pytest.raises(TypeError, match="encode_text"):
        ConceptBank.from_texts(["a", "b"], object())


def test_from_class_head_gives_each_logit_s_direction():
    """Off the current activation, the gradient of logit c with respect to the
    residual (CLS token) is parallel to bank concept c."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("timm")
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    model = VisionTransformer(
        img_size=8, patch_size=2, in_chans=1, num_classes=5, embed_dim=16, depth=1,
        num_heads=2,
    ).eval()
    with torch.no_grad():
        model.norm.weight.uniform_(0.5, 2.0)
    bank = ConceptBank.from_class_head(model, center=False)
    assert bank.names == ["0", "1", "2", "3", "4"] and bank.n_features == 16

    h = torch.randn(1, 17, 16, requires_grad=True)
    logits = model.forward_head(model.norm(h))
    cls = h[0, 0].detach().numpy()
    u = (cls - cls.mean()) / np.linalg.norm(cls - cls.mean())
    off_activation = np.eye(16) - np.outer(u, u)
    for c in range(5):
        (grad,) = torch.autograd.grad(logits[0, c], h, retain_graph=True)
        g = off_activation @ grad[0, 0].numpy()
        v = off_activation @ bank.embeddings[c]
        assert g @ v / (np.linalg.norm(g) * np.linalg.norm(v)) > 0.999


def test_from_class_head_uses_projector_classes():
    pytest.importorskip("timm")
    from types import SimpleNamespace

    from timm.models.vision_transformer import VisionTransformer

    model = VisionTransformer(
        img_size=8, patch_size=2, in_chans=1, num_classes=3, embed_dim=8, depth=1,
        num_heads=2,
    )
    projector = SimpleNamespace(model_=model, classes_=np.array(["cat", "dog", "owl"]))
    assert ConceptBank.from_class_head(projector).names == ["cat", "dog", "owl"]
    with pytest.raises(TypeError, match="ClassEmbeddingProjector"):
        ConceptBank.from_class_head(object())


def test_describe_atoms_top_k_in_order():
    bank = ConceptBank(["e", "ne", "n"], [[1, 0], [1, 1], [0, 1]], center=False)
    out = describe_atoms(np.array([[1.0, 0.1], [0.1, 1.0]]), bank, top_k=3)
    np.testing.assert_array_equal(out.names, [["e", "ne", "n"], ["n", "ne", "e"]])
    np.testing.assert_array_equal(out.indices, [[0, 1, 2], [2, 1, 0]])
    assert np.all(np.diff(out.scores, axis=1) <= 0)
    np.testing.assert_allclose(out.scores[0, 0], 1 / np.hypot(1, 0.1))
    assert out.alive.all() and (out.signs == 1).all()


def test_describe_atoms_names_the_oracle_dictionary():
    X, bank, _ = make_concept_data()
    out = describe_atoms(oracle_coder(bank), bank, X=X)
    np.testing.assert_array_equal(out.indices[:, 0], np.arange(len(bank)))
    assert out.names[3, 0] == "concept 3"


def test_describe_atoms_is_sign_aware():
    """Atoms the data use with negative codes are named by their opposite."""
    X, bank, _ = make_concept_data()
    D = bank.embeddings.astype(np.float64).copy()
    flipped = np.arange(0, len(bank), 3)
    D[flipped] *= -1
    coder = SparseCoder(D, transform_algorithm="omp", transform_n_nonzero_coefs=3)
    out = describe_atoms(coder, bank, X=X)
    np.testing.assert_array_equal(np.flatnonzero(out.signs == -1), flipped)
    np.testing.assert_array_equal(out.indices[:, 0], np.arange(len(bank)))
    unsigned = describe_atoms(coder, bank)
    assert (unsigned.indices[flipped, 0] != flipped).all()


# Rows that drew concepts 30-39 keep fewer than 3 atoms; OMP warns it stopped early.
@pytest.mark.filterwarnings("ignore:Orthogonal matching pursuit ended prematurely")
def test_describe_atoms_marks_dead_atoms():
    X, bank, codes = make_concept_data(noise=0.0)
    X = codes[:, :30] @ bank.embeddings[:30].astype(np.float64)
    out = describe_atoms(oracle_coder(bank), bank, X=X)
    np.testing.assert_array_equal(out.alive, np.arange(len(bank)) < 30)


def test_describe_atoms_names_a_fitted_ksvd_in_a_pipeline():
    X, bank, _ = make_concept_data(300, 32, 12, 2, random_state=1)
    pipe = Pipeline([
        ("norm", Normalizer()),
        ("ksvd", DoubleBatchKSVD(12, n_nonzero_coefs=2, max_iter=20, random_state=0)),
    ]).fit(X)
    out = describe_atoms(pipe, bank, X=X)
    assert len(set(out.indices[:, 0])) >= 11
    assert np.median(out.scores) > 0.9


def test_describe_atoms_bad_input():
    X, bank, _ = make_concept_data(50, 8, 4, 1)
    with pytest.raises(ValueError, match="atoms have 5 features but the bank's concepts have 8"):
        describe_atoms(np.ones((3, 5)), bank)
    with pytest.raises(ValueError, match="top_k must be an int between 1 and the bank size"):
        describe_atoms(bank.embeddings, bank, top_k=5)
    with pytest.raises(TypeError, match="X needs an estimator"):
        describe_atoms(bank.embeddings, bank, X=X)
    with pytest.raises(TypeError, match="bank must be a skdict.ConceptBank"):
        describe_atoms(bank.embeddings, bank.embeddings)
    with pytest.raises(NotFittedError):
        describe_atoms(DoubleBatchKSVD(4), bank, X=X)


def test_describe_atoms_names_each_used_sign():
    """An atom used as c and as -c gets both names, one per sign."""
    X, bank, coder = make_antipodal_data()
    out = describe_atoms(coder, bank, X=X)
    assert out.both_signs.all()
    main = np.where(out.signs > 0, np.arange(20), np.arange(20) + 20)
    np.testing.assert_array_equal(out.indices[:, 0], main)
    np.testing.assert_array_equal(out.opposite_indices[:, 0], (main + 20) % 40)
    assert all(name.startswith("not ") != main_name.startswith("not ")
               for name, main_name in zip(out.opposite_names[:, 0], out.names[:, 0]))


def test_describe_atoms_has_no_opposite_name_for_one_signed_atoms():
    X, bank, _ = make_concept_data()
    out = describe_atoms(oracle_coder(bank), bank, X=X)
    assert not out.both_signs.any()
    assert (out.opposite_names == "").all() and (out.opposite_indices == -1).all()
    assert np.isnan(out.opposite_scores).all()
