"""skdict.save / skdict.load: round trips, and tampered files refused with one line."""

import copy
import io
import json
import pickle
import zipfile

import numpy as np
import pytest
from sklearn.decomposition import PCA, DictionaryLearning, MiniBatchDictionaryLearning, SparseCoder

import skdict
from skdict import DoubleBatchKSVD
from skdict.datasets import make_sparse_signals
from _model_files import rewrite_model

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _sae(**params):
    from skdict import SparseAutoencoder

    return SparseAutoencoder(16, k=2, max_iter=2, batch_size=64, device="cpu", random_state=0,
                             **params)


ESTIMATORS = {
    "ksvd": lambda: DoubleBatchKSVD(16, n_nonzero_coefs=2, max_iter=3, random_state=0,
                                    callback=lambda env: False),
    "ksvd-nested": lambda: DoubleBatchKSVD(16, n_nonzero_coefs=3, nested_groups=[4, 16],
                                           max_iter=2, random_state=0),
    "sae-topk": _sae,
    "sae-batchtopk": lambda: _sae(activation="batchtopk"),
    "sae-jumprelu": lambda: _sae(activation="jumprelu"),
    "minibatch": lambda: MiniBatchDictionaryLearning(16, max_iter=2, random_state=0),
    "dictionary-learning": lambda: DictionaryLearning(16, max_iter=2, random_state=0),
    "sparse-coder": lambda: SparseCoder(np.eye(12, dtype=np.float32)[:10],
                                        transform_algorithm="omp",
                                        transform_n_nonzero_coefs=2),
}


@pytest.fixture(scope="module")
def X():
    return make_sparse_signals(200, 12, 16, 2, random_state=0)[0]


@pytest.fixture(scope="module")
def ksvd(X):
    return ESTIMATORS["ksvd"]().fit(X)


@pytest.mark.parametrize("name", ESTIMATORS)
def test_round_trip_gives_bit_identical_codes(name, X, tmp_path):
    model = ESTIMATORS[name]().fit(X)
    path = skdict.save(model, tmp_path / "model.skdict")
    assert path == tmp_path / "model.skdict" and path.is_file()
    loaded = skdict.load(path)
    assert type(loaded) is type(model)
    # Same arrays, same parameters: transform must take the same path to the same bits.
    np.testing.assert_array_equal(loaded.transform(X), model.transform(X))
    codes = model.transform(X[:5])
    if hasattr(model, "inverse_transform"):
        np.testing.assert_array_equal(loaded.inverse_transform(codes),
                                      model.inverse_transform(codes))
    expected = {k: v for k, v in model.get_params().items() if not callable(v)}
    params = loaded.get_params()
    assert all(params[k] is None for k in set(params) - set(expected))  # callbacks -> None
    for key, value in expected.items():
        np.testing.assert_array_equal(params[key], value)


def test_round_trip_keeps_partial_fit_going(X, tmp_path):
    """Private training state (random state, MiniBatch statistics) survives the file."""
    for model in (ESTIMATORS["ksvd"]().fit(X), ESTIMATORS["minibatch"]().fit(X)):
        loaded = skdict.load(skdict.save(model, tmp_path / "m.skdict"))
        reference = copy.deepcopy(model)
        np.testing.assert_array_equal(loaded.partial_fit(X[:50]).components_,
                                      reference.partial_fit(X[:50]).components_)


def test_feature_names_round_trip(X, tmp_path):
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
    model = DoubleBatchKSVD(16, n_nonzero_coefs=2, max_iter=2, random_state=0).fit(frame)
    loaded = skdict.load(skdict.save(model, tmp_path / "m.skdict"))
    assert list(loaded.feature_names_in_) == list(frame.columns)


def test_saved_file_has_the_usual_permissions(ksvd, tmp_path):
    """Written through a private temporary file, the model is still readable by others."""
    reference = tmp_path / "plain"
    reference.write_bytes(b"")
    path = skdict.save(ksvd, tmp_path / "m.skdict")
    assert path.stat().st_mode & 0o777 == reference.stat().st_mode & 0o777


def test_saving_leaves_the_estimator_unchanged(X, tmp_path):
    model = _sae().fit(X)
    before = set(vars(model))
    skdict.save(model, tmp_path / "m.skdict")
    assert set(vars(model)) == before


def test_save_refuses_what_it_cannot_store(X, tmp_path):
    with pytest.raises(TypeError, match="skdict.save accepts DoubleBatchKSVD"):
        skdict.save(PCA(2).fit(X), tmp_path / "pca.skdict")
    model = DoubleBatchKSVD(16, n_nonzero_coefs=2, max_iter=2,
                            random_state=np.random.RandomState(0)).fit(X)
    with pytest.raises(TypeError, match=r"set_params\(random_state=0\)"):
        skdict.save(model, tmp_path / "rs.skdict")
    assert not (tmp_path / "rs.skdict").exists()
    assert list(tmp_path.iterdir()) == []  # no temporary file left behind


def test_failed_save_keeps_the_previous_file(ksvd, tmp_path):
    path = skdict.save(ksvd, tmp_path / "m.skdict")
    before = path.read_bytes()
    ksvd_bad = DoubleBatchKSVD(16, random_state=np.random.RandomState(0))
    with pytest.raises(TypeError):
        skdict.save(ksvd_bad, path)
    assert path.read_bytes() == before


def _nan_components(ksvd):
    D = ksvd.components_.copy()
    D[0, 0] = np.nan
    return D


TAMPERING = {
    "wrong shape": (None, lambda m: {"attr.components_": m.components_[:, :5]},
                    r"components_ has shape \(16, 5\); expected \(16, 12\)"),
    "wrong shape of usage": (None, lambda m: {"attr.atom_usage_": np.zeros(3, np.int64)},
                             r"atom_usage_ has shape \(3,\); expected \(16,\)"),
    "NaN": (None, lambda m: {"attr.components_": _nan_components(m)},
            "'attr.components_' holds NaN or infinite values"),
    "object array": (None, lambda m: {"attr.components_": np.array([None, 1], dtype=object)},
                     "components_ holds object values"),
    "string dictionary": (None, lambda m: {"attr.components_": np.array([["a"]])},
                          "holds <U1 values"),
    "unknown parameter": (lambda d: d["params"].update(evil=1), None,
                          "unknown parameter 'evil' for DoubleBatchKSVD"),
    "invalid parameter": (lambda d: d["params"].update(n_nonzero_coefs=-1), None,
                          "invalid parameter for DoubleBatchKSVD: The 'n_nonzero_coefs'"),
    "unknown class": (lambda d: d.update({"class": "os.system"}), None,
                      "holds a 'os.system'; skdict model files hold DoubleBatchKSVD"),
    "bad version": (lambda d: d.update(format_version=99), None,
                    "uses model format version 99; this skdict reads version 1"),
    "method shadowed": (lambda d: d["attributes"].update(transform=1), None,
                        "'transform' would replace a parameter or method"),
    "dunder": (lambda d: d["attributes"].update(__class__=1), None,
               "'__class__' is not a valid attribute name"),
    "missing array": (lambda d: d["attributes"].update(error_={"array": "nope"}), None,
                      "the array 'nope' is missing"),
    "n_components": (lambda d: d["params"].update(n_components=8, n_nonzero_coefs=2), None,
                     r"_groups is \[\(0, 16, 2\)\]; the parameters imply \[\(0, 8, 2\)\]"),
}


@pytest.mark.parametrize("case", TAMPERING)
def test_tampered_files_are_refused_with_one_line(ksvd, tmp_path, case):
    edit, arrays, message = TAMPERING[case]
    path = skdict.save(ksvd, tmp_path / "m.skdict")
    tampered = rewrite_model(path, edit=edit, arrays=arrays(ksvd) if arrays else None)
    with pytest.raises(ValueError, match=message) as error:
        skdict.load(tampered)
    assert "\n" not in str(error.value)


def test_deeply_nested_json_is_refused(ksvd, tmp_path):
    path = skdict.save(ksvd, tmp_path / "m.skdict")
    with zipfile.ZipFile(path) as archive:
        text = archive.read("model.json").decode()
    deep = '{"list": [' * 50_000 + "1" + "]}" * 50_000
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("model.json", text.replace('"attributes": {',
                                                    f'"attributes": {{"deep_": {deep}, ', 1))
    with pytest.raises(ValueError, match="nested too deeply"):
        skdict.load(path)


def test_sae_arrays_and_scale_are_checked(X, tmp_path):
    path = skdict.save(_sae().fit(X), tmp_path / "m.skdict")
    tampered = rewrite_model(path, arrays={"attr.encoder_bias_": np.zeros(16, np.int64)})
    with pytest.raises(ValueError, match="encoder_bias_ holds int64 values"):
        skdict.load(tampered)
    tampered = rewrite_model(path, edit=lambda d: d["attributes"].update(scale_="big"))
    with pytest.raises(ValueError, match="scale_ is 'big'; expected a finite number"):
        skdict.load(tampered)


def test_sae_threshold_is_checked(X, tmp_path):
    path = skdict.save(_sae(activation="jumprelu").fit(X), tmp_path / "m.skdict")
    tampered = rewrite_model(path, arrays={"attr.threshold_": np.ones(3, np.float32)})
    with pytest.raises(ValueError, match=r"threshold_ has shape \(3,\); expected \(16,\)"):
        skdict.load(tampered)


@pytest.mark.parametrize("content, message", [
    (b"", "not a zip archive"),
    (pickle.dumps({"a": 1}), "not a zip archive"),
])
def test_non_model_files_are_refused(tmp_path, content, message):
    path = tmp_path / "junk.skdict"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        skdict.load(path)


def test_an_npz_archive_is_not_a_model(tmp_path):
    np.savez(tmp_path / "X.npz", X=np.ones((2, 2)))
    with pytest.raises(ValueError, match=r"not a skdict model file \(no model.json\)"):
        skdict.load(tmp_path / "X.npz")


def test_loading_runs_no_code(ksvd, tmp_path):
    """A pickle smuggled in as an array member is not unpickled."""
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = skdict.save(ksvd, tmp_path / "m.skdict")
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.array([Evil()], dtype=object), allow_pickle=True)
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    members["attr.components_.npy"] = buffer.getvalue()
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    with pytest.raises(ValueError, match="components_ holds object values"):
        skdict.load(path)
    assert not marker.exists()


# ---------------------------------------------------------------- weight checkpoints


def _code_running_pickle(path, marker):
    """A torch checkpoint that creates `marker` when fully unpickled."""
    torch = pytest.importorskip("torch")

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"weight": Evil()}, path)


def test_timm_checkpoints_load_as_weights_only(tmp_path):
    torch = pytest.importorskip("torch")
    timm = pytest.importorskip("timm")
    from skdict import TimmEmbedder

    reference = timm.create_model("vit_tiny_patch16_224")
    weights = tmp_path / "weights.pth"
    torch.save(reference.state_dict(), weights)
    embedder = TimmEmbedder("vit_tiny_patch16_224", pretrained=weights, device="cpu").fit()
    np.testing.assert_array_equal(embedder.model_.blocks[3].mlp.fc1.weight.detach().numpy(),
                                  reference.blocks[3].mlp.fc1.weight.detach().numpy())

    marker = tmp_path / "pwned"
    _code_running_pickle(tmp_path / "evil.pth", marker)
    with pytest.raises(ValueError, match="is not a plain weights file"):
        TimmEmbedder("vit_tiny_patch16_224", pretrained=tmp_path / "evil.pth").fit()
    torch.save(reference, tmp_path / "whole.pt")
    with pytest.raises(ValueError, match="saved whole with torch.save.model. can only be"):
        TimmEmbedder(str(tmp_path / "whole.pt")).fit()
    assert not marker.exists()


def test_clip_checkpoint_with_code_is_refused(tmp_path):
    pytest.importorskip("open_clip")
    from skdict import CLIPEmbedder

    marker = tmp_path / "pwned"
    _code_running_pickle(tmp_path / "evil.pt", marker)
    with pytest.raises(ValueError, match="is not a plain weights file"):
        CLIPEmbedder("ViT-S-32", pretrained=tmp_path / "evil.pt", device="cpu").fit()
    assert not marker.exists()


# ---------------------------------------------------------------- SAELens layout


def _saelens_encode(folder, X):
    """SAELens' documented inference, from the files alone: f((x - b_dec) W_enc + b_enc)."""
    from safetensors.numpy import load_file

    config = json.loads((folder / "cfg.json").read_text())
    w = {k: v.astype(np.float64) for k, v in load_file(str(folder / "sae_weights.safetensors"))
         .items()}
    pre = (X - w["b_dec"]) @ w["W_enc"] + w["b_enc"]
    if config["architecture"] == "jumprelu":
        return pre * (pre > w["threshold"])
    if config["architecture"] == "topk":
        keep = np.argsort(-pre, axis=1, kind="stable")[:, :config["k"]]
        out = np.zeros_like(pre)
        np.put_along_axis(out, keep, np.take_along_axis(pre, keep, axis=1), axis=1)
        return np.maximum(out, 0)
    return np.maximum(pre, 0)


@pytest.mark.parametrize("activation", ["topk", "relu", "jumprelu", "batchtopk"])
def test_saelens_export_encodes_like_the_sae(activation, X, tmp_path):
    pytest.importorskip("safetensors")
    sae = _sae(activation=activation).fit(X.astype(np.float32))
    folder = skdict.save(sae, tmp_path / "sae", format="saelens")
    config = json.loads((folder / "cfg.json").read_text())
    assert (config["d_in"], config["d_sae"]) == (12, 16)
    expected = sae.transform(X.astype(np.float32))
    # float32 weights, with scale_ folded into b_enc and the threshold: the codes agree to
    # float32 rounding of pre-activations of size ~|x|*|W| (≤ 1e-5 relative), away from ties.
    np.testing.assert_allclose(_saelens_encode(folder, X), expected, rtol=1e-4, atol=1e-5)
    loaded = skdict.load(folder)
    np.testing.assert_allclose(loaded.transform(X.astype(np.float32)), expected, rtol=1e-4,
                               atol=1e-5)
    codes = expected[:5]
    np.testing.assert_allclose(loaded.inverse_transform(codes), sae.inverse_transform(codes),
                               rtol=1e-5, atol=1e-6)


def test_saelens_folder_is_validated(X, tmp_path):
    pytest.importorskip("safetensors")
    from safetensors.numpy import load_file, save_file

    folder = skdict.save(_sae().fit(X.astype(np.float32)), tmp_path / "sae", format="saelens")
    tensors = load_file(str(folder / "sae_weights.safetensors"))
    tensors["b_enc"] = tensors["b_enc"][:3]
    save_file(tensors, str(folder / "sae_weights.safetensors"))
    with pytest.raises(ValueError, match=r"b_enc is a F32 tensor of shape \(3,\); expected"):
        skdict.load(folder)
    config = json.loads((folder / "cfg.json").read_text())
    config["architecture"] = "gated"
    (folder / "cfg.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="architecture 'gated' is not supported"):
        skdict.load(folder)
    with pytest.raises(TypeError, match="format='saelens' holds a SparseAutoencoder"):
        skdict.save(DoubleBatchKSVD(4), tmp_path / "k", format="saelens")
