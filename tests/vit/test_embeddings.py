import pickle

import numpy as np
import pytest
from sklearn.pipeline import make_pipeline

torch = pytest.importorskip("torch")
pytest.importorskip("timm")

from skdict import CLIPEmbedder, DoubleBatchKSVD, TimmEmbedder  # noqa: E402
from skdict._vit.hub import hub_reachable  # noqa: E402
from skdict.datasets import load_digits_images, make_digits_vit  # noqa: E402

from _tolerance import assert_same_codes, dot_rtol  # noqa: E402


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def digits():
    return load_digits_images(subset="test", return_X_y=True)[0][:60]


def _block_outputs(model, images):
    h = model._pos_embed(model.patch_embed(torch.from_numpy(images)))
    out = []
    with torch.no_grad():
        for block in model.blocks:
            h = block(h)
            out.append(h.numpy())
    return out


@pytest.mark.parametrize("layer", [0, -1])
def test_timm_embedder_reads_the_chosen_block(digits, layer):
    model = make_digits_vit(random_state=2)
    hidden = _block_outputs(model, digits[:5])[layer]
    # The embedder runs other batch sizes (2 images) and so other GEMM kernels
    # than this reference: each of the blocks up to `layer` adds a dot-product
    # rounding of its longest reduction (the MLP's 256 hidden units), relative
    # to the activations' size. The mean over 16 patch tokens adds 16 terms.
    n_blocks = len(model.blocks) if layer == -1 else layer + 1
    atol = (n_blocks * dot_rtol(np.float32, 256) + dot_rtol(np.float32, 16)) * np.abs(hidden).max()
    cls = TimmEmbedder(model, layer=layer, device="cpu").fit().transform(digits[:5])
    np.testing.assert_allclose(cls, hidden[:, 0], rtol=0, atol=atol)
    mean = TimmEmbedder(model, layer=layer, token="mean", device="cpu").fit()
    np.testing.assert_allclose(mean.transform(digits[:5]), hidden[:, 1:].mean(1), rtol=0, atol=atol)
    every = TimmEmbedder(model, layer=layer, token="all", batch_size=2, device="cpu").fit()
    np.testing.assert_allclose(every.transform(digits[:5]), hidden.reshape(-1, 64), rtol=0,
                               atol=atol)
    # Same weights, same batch, same kernels: identical bits.
    restored = pickle.loads(pickle.dumps(mean))
    np.testing.assert_array_equal(restored.transform(digits[:5]), mean.transform(digits[:5]))


def test_timm_embedder_in_a_pipeline_with_ksvd(digits):
    pipe = make_pipeline(
        TimmEmbedder(make_digits_vit(), token="mean", device="cpu"),
        DoubleBatchKSVD(n_components=8, n_nonzero_coefs=2, max_iter=3, random_state=0),
    )
    codes = pipe.fit_transform(digits)
    assert codes.shape == (60, 8)
    assert np.all((codes != 0).sum(axis=1) <= 2)
    ksvd = pipe[-1]
    assert ksvd.components_.shape == (8, 64)
    # Transforming 5 images must code them as the 60-image fit_transform did.
    # X @ D.T runs through another BLAS kernel for 5 rows than for 60, and the
    # least-squares step amplifies that by cond(G_S), which reaches ~700 here
    # because the mean-token embeddings of a random ViT are nearly collinear.
    assert_same_codes(pipe.transform(digits[:5]), codes[:5], ksvd.components_, np.float32)
    assert len(pipe[0].get_feature_names_out()) == 64


def test_timm_embedder_bad_input(digits):
    with pytest.raises(ValueError, match="layer=4"):
        TimmEmbedder(make_digits_vit(), layer=4).fit()
    with pytest.raises(ValueError, match="not a timm model name"):
        TimmEmbedder("not_a_model").fit()
    embedder = TimmEmbedder(make_digits_vit(), device="cpu").fit()
    with pytest.raises(ValueError, match="uint8"):
        embedder.transform(np.zeros((2, 8, 8), dtype=np.int64))
    with pytest.raises(ValueError, match=r"\(N, 1, 8, 8\)"):
        embedder.transform(np.zeros((2, 8, 8, 1), dtype=np.float32))


@pytest.fixture(scope="module")
def clip(torch_one_thread):
    pytest.importorskip("open_clip")
    return CLIPEmbedder("ViT-B-32", pretrained="random", device="cpu").fit()


def test_clip_embeds_images_and_texts(clip):
    images = np.random.default_rng(0).integers(0, 256, (2, 40, 30, 3), dtype=np.uint8)
    Z = clip.transform(images)
    assert Z.shape == (2, 512) and Z.dtype == np.float32
    # unit vectors normalised in float32: the 512-term norm rounds by dot_rtol(512) ~ 3e-6
    np.testing.assert_allclose(np.linalg.norm(Z, axis=1), 1.0, rtol=1e-5)
    T = clip.encode_text(["a photo of a dog", "a photo of a cat", "a cat"])
    assert T.shape == (3, 512)
    np.testing.assert_allclose(np.linalg.norm(T, axis=1), 1.0, rtol=1e-5)
    assert not np.allclose(T[0], T[1])


def test_clip_checkpoint_file_reproduces_the_model(clip, tmp_path):
    path = tmp_path / "clip.pt"
    torch.save(clip.model_.state_dict(), path)
    images = np.random.default_rng(1).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    texts = ["a red square", "a blue circle"]
    loaded = CLIPEmbedder("ViT-B-32", pretrained=path, device="cpu").fit()
    # The same weights run on the same batch with the same kernels and thread
    # count, so only bit-level noise is allowed (unit vectors: 1e-6 ~ 8 eps32).
    np.testing.assert_allclose(loaded.transform(images), clip.transform(images), atol=1e-6)
    np.testing.assert_allclose(loaded.encode_text(texts), clip.encode_text(texts), atol=1e-6)


def test_clip_bad_input(clip, tmp_path):
    with pytest.raises(ValueError, match="not an open_clip model name"):
        CLIPEmbedder("ViT-Q-99").fit()
    with pytest.raises(FileNotFoundError, match="neither an existing checkpoint"):
        CLIPEmbedder("ViT-B-32", pretrained=str(tmp_path / "missing.pt")).fit()
    with pytest.raises(ValueError, match="no weights: set pretrained to an open_clip tag"):
        CLIPEmbedder("ViT-B-32").fit()
    with pytest.raises(ValueError, match=r"\(N, 3, 224, 224\)"):
        clip.transform(np.zeros((1, 1, 224, 224), dtype=np.float32))
    with pytest.raises(ValueError, match="non-empty list of strings"):
        clip.encode_text([])


@pytest.mark.skipif(hub_reachable(), reason="the hub is reachable from this machine")
def test_clip_hub_tag_without_network_fails_fast_with_advice():
    pytest.importorskip("open_clip")
    with pytest.raises(RuntimeError, match="pretrained='/path/to/"):
        CLIPEmbedder("ViT-B-32", pretrained="laion2b_s34b_b79k", device="cpu").fit()


def test_timm_weights_are_chosen_never_random_by_default(tmp_path):
    """Random weights only when asked for: pretrained='random', never by default."""
    from sklearn.base import clone

    with pytest.raises(ValueError, match="no weights: set pretrained to True"):
        TimmEmbedder("test_vit", device="cpu").fit()
    with pytest.raises(ValueError, match="pass pretrained='random'"):
        TimmEmbedder("test_vit", pretrained=False, device="cpu").fit()
    # Parameters stay as given (validated in fit), so clone and get_params round-trip.
    assert clone(TimmEmbedder("test_vit")).get_params()["pretrained"] is None
    random = TimmEmbedder("test_vit", pretrained="random", device="cpu").fit()
    assert random.get_params()["pretrained"] == "random"
    weights = tmp_path / "test_vit.pth"
    torch.save(random.model_.state_dict(), weights)
    loaded = TimmEmbedder("test_vit", pretrained=weights, device="cpu").fit()
    images = (np.random.default_rng(0).random((2, 160, 160, 3)) * 255).astype(np.uint8)
    # Same weights, same batch, same kernels: identical bits.
    np.testing.assert_array_equal(loaded.transform(images), random.transform(images))
    with pytest.raises(ValueError, match="does not hold weights of model='test_vit2'"):
        TimmEmbedder("test_vit2", pretrained=weights, device="cpu").fit()
    with pytest.raises(ValueError, match="model is a module, which keeps its own weights"):
        TimmEmbedder(make_digits_vit(), pretrained=weights, device="cpu").fit()
