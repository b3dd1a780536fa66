"""SAELens folders as SAELens 6 computes them (issue 22, items 8 and 12).

Two levels. Without SAELens installed, folders are written by hand and skdict's
codes are compared with SAELens' inference written out in numpy (float64): the
formulas of ``SAE.encode`` for standard, topk (with ``rescale_acts_by_decoder_norm``),
jumprelu and batchtopk. With SAELens installed (the ``saelens`` extra), the
folders come from SAELens' own ``save_model`` / ``save_inference_model`` and the
reference codes from its ``encode``; skdict's exports are read back by
``SAE.load_from_disk``.
"""

import json

import numpy as np
import pytest

import skdict
from skdict import SparseAutoencoder
from _tolerance import dot_rtol

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")
from safetensors.torch import save_file  # noqa: E402

pytestmark = pytest.mark.usefixtures("torch_one_thread")

D_IN, D_SAE, K = 12, 32, 4


@pytest.fixture(scope="module")
def X():
    return np.random.default_rng(0).standard_normal((200, D_IN)).astype(np.float32)


def _weights(seed, *, decoder_norms=1.0):
    """Random SAE weights with the given decoder row norms (float32 tensors)."""
    g = torch.Generator().manual_seed(seed)
    W_dec = torch.randn(D_SAE, D_IN, generator=g)
    W_dec = W_dec / W_dec.norm(dim=1, keepdim=True) * decoder_norms
    return {"W_enc": torch.randn(D_IN, D_SAE, generator=g) * 0.5, "W_dec": W_dec,
            "b_enc": torch.randn(D_SAE, generator=g) * 0.3,
            "b_dec": torch.randn(D_IN, generator=g) * 0.3}


def _folder(path, config, tensors):
    path.mkdir()
    save_file({k: v.contiguous() for k, v in tensors.items()},
              str(path / "sae_weights.safetensors"))
    (path / "cfg.json").write_text(json.dumps(config))
    return path


def _config(architecture, **extra):
    return {"architecture": architecture, "d_in": D_IN, "d_sae": D_SAE, "dtype": "float32",
            "device": "cpu", "apply_b_dec_to_input": True, "normalize_activations": "none",
            "metadata": {"sae_lens_version": "6.54.12"}, **extra}


def _reference(config, tensors, X):
    """SAELens 6's inference in float64: (codes, pre-activations, decision boundary)."""
    w = {k: v.float().double().numpy() for k, v in tensors.items()}
    architecture = config["architecture"]
    if config.get("activation_fn_str") == "topk":  # a pre-6.0 config
        architecture, config = "topk", {**config, "k": config["activation_fn_kwargs"]["k"]}
    x = X.astype(np.float64) - (w["b_dec"] if config["apply_b_dec_to_input"] else 0)
    pre = x @ w["W_enc"] + w["b_enc"]
    rescale = config.get("rescale_acts_by_decoder_norm", architecture == "batchtopk")
    if architecture in ("topk", "batchtopk") and rescale:
        pre = pre * np.linalg.norm(w["W_dec"], axis=1)
    boundary = np.zeros_like(pre)
    if architecture == "topk":
        ordered = -np.sort(-pre, axis=1)
        boundary += (ordered[:, config["k"] - 1:config["k"]] + ordered[:, config["k"]:][:, :1]) / 2
    elif architecture == "jumprelu":
        boundary += w["threshold"]
    elif architecture == "batchtopk":  # inference: a JumpReLU with the learned threshold
        boundary += w["topk_threshold"]
    codes = np.maximum(pre, 0) * (pre > boundary)
    return codes, pre, boundary, w


def _bound(X, w, config):
    """How far two float32 computations of the same pre-activations may differ.

    A pre-activation is a dot product of d_in terms plus a bias: summed in
    another order it moves by dot_rtol times the sum of the absolute terms
    (with |b_dec| @ |W_enc| for the fold of apply_b_dec_to_input). skdict folds
    per-latent scales (decoder norms, b_dec @ W_enc) into the weights, one
    more rounding of each term; twice dot_rtol covers both.
    """
    W = np.abs(w["W_enc"])
    terms = np.abs(X - w["b_dec"]) @ W + np.abs(w["b_dec"]) @ W + np.abs(w["b_enc"])
    if config.get("rescale_acts_by_decoder_norm", config["architecture"] == "batchtopk"):
        terms = terms * np.linalg.norm(w["W_dec"], axis=1)
    return 2 * dot_rtol(np.float32, D_IN + 2) * terms


def _assert_codes_match(actual, expected, pre, boundary, bound):
    """Same codes within `bound`; a latent may fire in one and not the other only when
    its pre-activation is within `bound` of the decision boundary (or of zero)."""
    near = (np.abs(pre - boundary) <= 2 * bound) | (np.abs(pre) <= 2 * bound)
    differ = (actual != 0) != (expected != 0)
    assert not np.any(differ & ~near), "supports differ away from the decision boundary"
    same = ~differ
    assert np.all(np.abs(actual - expected)[same] <= bound[same]), \
        f"codes differ by {np.abs(actual - expected)[same].max():.3g}"
    assert np.mean(expected != 0) > 0.05  # the comparison is not of empty codes


# ---------------------------------------------------------------- formulas (no SAELens)


def _tensors(architecture, seed=0, **options):
    tensors = _weights(seed, **options)
    if architecture == "jumprelu":
        tensors["threshold"] = torch.linspace(-0.5, 0.6, D_SAE)  # some below zero
    if architecture == "batchtopk":
        tensors["topk_threshold"] = torch.tensor(0.3, dtype=torch.float64)
    return tensors


CASES = {
    "standard": (_config("standard"), {}),
    # The decoder rows are not unit vectors: what TopKSAE.save_model writes when
    # training left them unnormalised.
    "topk rescaled": (_config("topk", k=K, rescale_acts_by_decoder_norm=True),
                      {"decoder_norms": torch.linspace(0.2, 3.0, D_SAE)[:, None]}),
    "topk": (_config("topk", k=K, rescale_acts_by_decoder_norm=False), {}),
    "pre-6.0 topk": ({"architecture": "standard", "d_in": D_IN, "d_sae": D_SAE,
                      "activation_fn_str": "topk", "activation_fn_kwargs": {"k": K},
                      "apply_b_dec_to_input": True, "dtype": "float32"}, {}),
    "jumprelu, negative thresholds": (_config("jumprelu"), {}),
    # BatchTopK's training layout: rescale_acts_by_decoder_norm defaults to true.
    "batchtopk": (_config("batchtopk", k=K),
                  {"decoder_norms": torch.linspace(0.5, 2.0, D_SAE)[:, None]}),
    "no b_dec on the input": (_config("standard", apply_b_dec_to_input=False), {}),
    "bfloat16": (_config("jumprelu", dtype="bfloat16"), {}),
}


@pytest.mark.parametrize("case", CASES)
def test_folders_encode_as_saelens_computes(case, X, tmp_path):
    """Item 8: every option SAELens applies at inference is folded in, exactly."""
    config, options = CASES[case]
    architecture = config["architecture"] if "activation_fn_str" not in config else "topk"
    tensors = _tensors(architecture, **options)
    if case == "bfloat16":
        tensors = {k: v.bfloat16() for k, v in tensors.items()}
    folder = _folder(tmp_path / "sae", config, tensors)
    expected, pre, boundary, w = _reference(config, tensors, X)
    sae = skdict.load(folder)
    codes = sae.transform(X)
    bound = _bound(X, w, {**config, "architecture": architecture})
    _assert_codes_match(codes, expected, pre, boundary, bound)
    if architecture == "topk":
        assert np.all((codes != 0).sum(1) <= K)
    # Decoding (SAELens divides rescaled codes by the norms again) gives SAELens' x_hat.
    rescale = config.get("rescale_acts_by_decoder_norm", architecture == "batchtopk")
    norms = np.linalg.norm(w["W_dec"], axis=1) if architecture in ("topk", "batchtopk") \
        and rescale else 1.0
    x_hat = (expected / norms) @ w["W_dec"] + w["b_dec"]
    # A sum of d_sae code-times-atom terms (float32) on codes that agree within `bound`.
    scale = np.abs(expected) @ np.abs(w["W_dec"] / np.atleast_1d(norms)[:, None]) + 1
    tolerance = dot_rtol(np.float32, D_SAE) * scale + np.abs(w["W_dec"]).max() * bound.max()
    assert np.all(np.abs(sae.inverse_transform(codes) - x_hat) <= tolerance)


def _tampered(tmp_path, config=None, tensors=None):
    return _folder(tmp_path / "sae", config or _config("topk", k=K),
                   tensors or _tensors("topk"))


@pytest.mark.parametrize("config, message", [
    ([1, 2], "cfg.json holds a JSON list; SAELens writes an object"),
    ("topk", "cfg.json holds a JSON str"),
    (_config("topk"), r"k=None must be an int in \[1, 32\] for a topk SAE"),
    (_config("topk", k=True), r"k=True must be an int"),
    (_config("topk", k=K, rescale_acts_by_decoder_norm="yes"),
     "rescale_acts_by_decoder_norm must be true or false"),
    (_config("standard", normalize_activations="layer_norm"),
     "normalises each row at run time"),
    (_config("standard", normalize_activations="expected_average_only_in"),
     "fold it in SAELens .fold_activation_norm_scaling_factor"),
    ({**_config("standard"), "metadata": {}, "activation_fn_str": "tanh-relu"},
     "activation_fn='tanh-relu' of a pre-6.0 config is not supported"),
    ({**_config("standard"), "metadata": {}, "activation_fn_str": "topk"},
     "activation_fn 'topk' needs activation_fn_kwargs.k"),
    (_config("gated"), "architecture 'gated' is not supported"),
])
def test_configs_skdict_cannot_follow_are_refused(config, message, tmp_path):
    """Items 8 and 12: one line for each, not a traceback or other codes."""
    folder = _tampered(tmp_path, config=config)
    with pytest.raises(ValueError, match=message) as info:
        skdict.load(folder)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("extra, message", [
    ({"scaling_factor": torch.full((D_SAE,), 2.0)}, "scaling_factor is not all ones"),
    ({"log_threshold": torch.zeros(D_SAE)}, "holds 'log_threshold', which a topk SAE"),
    ({"W_enc": torch.zeros(D_IN, D_SAE, dtype=torch.int32)}, "W_enc is a I32 tensor"),
])
def test_tensors_skdict_does_not_read_are_refused(extra, message, tmp_path):
    """Item 8: a tensor that would be ignored is refused."""
    folder = _tampered(tmp_path, tensors={**_tensors("topk"), **extra})
    with pytest.raises(ValueError, match=message):
        skdict.load(folder)


def test_an_all_ones_scaling_factor_is_read_as_saelens_drops_it(X, tmp_path):
    config = _config("topk", k=K)
    tensors = {**_tensors("topk"), "scaling_factor": torch.ones(D_SAE)}
    plain = skdict.load(_folder(tmp_path / "plain", config, _tensors("topk")))
    with_ones = skdict.load(_folder(tmp_path / "ones", config, tensors))
    np.testing.assert_array_equal(with_ones.transform(X), plain.transform(X))


def test_the_export_is_a_current_saelens_config(X, tmp_path):
    """Item 8: metadata.sae_lens_version, so SAELens keeps the config as written."""
    sae = SparseAutoencoder(16, k=2, max_iter=1, batch_size=64, device="cpu",
                            random_state=0).fit(X)
    folder = skdict.save(sae, tmp_path / "sae", format="saelens")
    config = json.loads((folder / "cfg.json").read_text())
    assert config["metadata"]["sae_lens_version"] == "6.0.0"
    assert config["metadata"]["skdict_activation"] == "topk"
    assert config["rescale_acts_by_decoder_norm"] is False


# ---------------------------------------------------------------- SAELens itself


@pytest.fixture(scope="module")
def sae_lens():
    return pytest.importorskip("sae_lens")


def _saelens_codes(model, X):
    with torch.no_grad():
        return model.encode(torch.from_numpy(X)).float().numpy()


def _check_against(model, skdict_model, X):
    """skdict's codes against SAELens' on the float64 pre-activations of `model`'s weights."""
    tensors = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    config = {**model.cfg.to_dict(), "architecture": model.cfg.architecture()}
    _, pre, boundary, w = _reference(config, tensors, X)
    expected = _saelens_codes(model, X)
    _assert_codes_match(skdict_model.transform(X), expected, pre, boundary,
                        _bound(X, w, config))


@pytest.mark.parametrize("activation", ["topk", "relu", "jumprelu", "batchtopk"])
def test_skdict_exports_load_in_saelens(sae_lens, activation, X, tmp_path):
    """Item 8: SAE.load_from_disk reads the export and encodes as skdict does."""
    sae = SparseAutoencoder(D_SAE, activation=activation, k=K, max_iter=3, batch_size=64,
                            device="cpu", random_state=0).fit(X)
    folder = skdict.save(sae, tmp_path / "sae", format="saelens")
    model = sae_lens.SAE.load_from_disk(folder)
    assert model.cfg.metadata.exported_by.startswith("skdict")  # not dropped as pre-6.0
    _check_against(model, sae, X)


def _trained_like(sae_lens, architecture, seed=0):
    """A SAELens training SAE with weights as training leaves them (decoder rows of any
    norm, some JumpReLU thresholds below zero, a learned BatchTopK threshold)."""
    make = {
        "standard": (sae_lens.StandardTrainingSAE, sae_lens.StandardTrainingSAEConfig, {}),
        "topk": (sae_lens.TopKTrainingSAE, sae_lens.TopKTrainingSAEConfig, {"k": K}),
        "jumprelu": (sae_lens.JumpReLUTrainingSAE, sae_lens.JumpReLUTrainingSAEConfig, {}),
        "batchtopk": (sae_lens.BatchTopKTrainingSAE, sae_lens.BatchTopKTrainingSAEConfig,
                      {"k": K}),
    }
    cls, config_cls, options = make[architecture]
    model = cls(config_cls(d_in=D_IN, d_sae=D_SAE, **options))
    weights = _tensors(architecture, seed, decoder_norms=torch.linspace(0.2, 3.0, D_SAE)[:, None])
    with torch.no_grad():
        for name in ("W_enc", "W_dec", "b_enc", "b_dec", "threshold"):
            if name in weights and hasattr(model, name):
                getattr(model, name).copy_(weights[name])
    if architecture == "batchtopk":
        model.topk_threshold = torch.tensor(0.3, dtype=torch.float64)
    return model


@pytest.mark.parametrize("save", ["save_model", "save_inference_model"])
@pytest.mark.parametrize("architecture", ["standard", "topk", "jumprelu", "batchtopk"])
def test_saelens_folders_load_in_skdict(sae_lens, architecture, save, X, tmp_path):
    """Item 8: what SAELens writes, skdict reads with SAELens' inference codes."""
    model = _trained_like(sae_lens, architecture)
    getattr(model, save)(tmp_path / "training")
    model.save_inference_model(tmp_path / "inference")
    reference = sae_lens.SAE.load_from_disk(tmp_path / "inference")
    _check_against(reference, skdict.load(tmp_path / "training"), X)


def test_bfloat16_folders_load_in_skdict(sae_lens, X, tmp_path):
    """Item 8: bf16 weights are read; codes are SAELens' on the same weights in float32."""
    model = _trained_like(sae_lens, "jumprelu").to(torch.bfloat16)
    model.save_model(tmp_path / "bf16")
    assert json.loads((tmp_path / "bf16" / "cfg.json").read_text())["dtype"] == "bfloat16"
    reference = sae_lens.SAE.load_from_disk(tmp_path / "bf16", dtype="float32")
    _check_against(reference, skdict.load(tmp_path / "bf16"), X)


def test_no_b_dec_on_the_input_loads_in_skdict(sae_lens, X, tmp_path):
    """Item 8: apply_b_dec_to_input=false is folded into the encoder bias."""
    model = sae_lens.StandardTrainingSAE(sae_lens.StandardTrainingSAEConfig(
        d_in=D_IN, d_sae=D_SAE, apply_b_dec_to_input=False))
    with torch.no_grad():
        for name, value in _weights(1).items():
            getattr(model, name).copy_(value)
    model.save_inference_model(tmp_path / "sae")
    reference = sae_lens.SAE.load_from_disk(tmp_path / "sae")
    _check_against(reference, skdict.load(tmp_path / "sae"), X)


def test_a_pre_6_topk_config_loads_as_saelens_reads_it(sae_lens, X, tmp_path):
    """Item 8: activation_fn_str 'topk' with k in activation_fn_kwargs is a TopK SAE."""
    config = {"d_in": D_IN, "d_sae": D_SAE, "dtype": "float32", "device": "cpu",
              "activation_fn_str": "topk", "activation_fn_kwargs": {"k": K},
              "apply_b_dec_to_input": True, "hook_name": "blocks.0.hook_resid_pre"}
    folder = _folder(tmp_path / "old", config, _weights(2))
    reference = sae_lens.SAE.load_from_disk(folder)
    assert reference.cfg.architecture() == "topk" and reference.cfg.k == K
    _check_against(reference, skdict.load(folder), X)
