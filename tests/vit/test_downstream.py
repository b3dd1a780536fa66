"""downstream_recovered: a dictionary's reconstruction spliced into the digits ViT."""

import numpy as np
import pytest
from sklearn.decomposition import SparseCoder
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skdict import ClassEmbeddingProjector, DoubleBatchKSVD, TimmEmbedder
from skdict.inspection import downstream_recovered

pytest.importorskip("timm")

WIDTH = 64  # the digits ViT's embedding width


@pytest.fixture(scope="module")
def projector(trained_vit):
    return ClassEmbeddingProjector(trained_vit, device="cpu").fit()


def _identity():
    """A dictionary whose reconstruction is exact: codes are the rows themselves."""
    return SparseCoder(np.eye(WIDTH, dtype=np.float32), transform_algorithm="threshold",
                       transform_alpha=0.0)


@pytest.mark.parametrize("tokens", ["cls", "all"])
def test_an_exact_reconstruction_recovers_everything(projector, digits_test, tokens):
    images, y = digits_test
    result = downstream_recovered(projector, _identity(), images[:200], y[:200],
                                  tokens=tokens)
    assert result.cross_entropy.spliced == result.cross_entropy.original
    assert result.cross_entropy_recovered == 1.0 and result.accuracy_recovered == 1.0
    # the ablation costs the trained ViT most of its accuracy (10 classes)
    assert result.accuracy.original > 0.8 and result.accuracy.ablated < 0.5
    assert result.layer == 3 and result.tokens == tokens


def test_reconstructing_the_mean_recovers_nothing(projector, trained_vit, digits_test):
    images, y = digits_test
    images, y = images[:200], y[:200]
    cls = TimmEmbedder(trained_vit, layer=-1, token="cls", device="cpu").fit_transform(images)
    # zero codes around the data mean: every CLS token becomes the mean CLS token
    mean_only = make_pipeline(StandardScaler(with_std=False),
                              SparseCoder(np.eye(WIDTH, dtype=np.float32),
                                          transform_algorithm="threshold",
                                          transform_alpha=1e9)).fit(cls)
    result = downstream_recovered(projector, mean_only, images, y)
    # the two means are sums of the same float32 states in another order (float64
    # here, float32 through the scaler): they agree to ~1e-7 relative, which
    # moves the cross-entropy by ~1e-6 of its gap of about 4
    assert result.cross_entropy_recovered == pytest.approx(0.0, abs=1e-4)
    assert result.accuracy_recovered == 0.0


def test_a_dictionary_of_the_cls_tokens_recovers_the_accuracy(projector, trained_vit):
    from skdict.datasets import load_digits_images

    train_images, _ = load_digits_images(subset="train", return_X_y=True)
    test_images, y_test = load_digits_images(subset="test", return_X_y=True)
    cls = TimmEmbedder(trained_vit, layer=-1, token="cls", device="cpu").fit_transform(
        train_images)
    ksvd = DoubleBatchKSVD(64, n_nonzero_coefs=4, max_iter=10, random_state=0).fit(cls)
    result = downstream_recovered(projector, ksvd, test_images, y_test)
    # the demo's setting (64 atoms, L0 = 4, 40 iterations on all digits) recovers
    # 0.997 of the accuracy and 0.999 of the cross-entropy on the test digits
    assert result.accuracy_recovered >= 0.95
    assert 0.95 <= result.cross_entropy_recovered <= 1.05


@pytest.mark.parametrize("params, message", [
    (dict(layer=4), r"layer=4 but the model has 4 blocks; use an index in \[-4, 3\]"),
    (dict(tokens="patches"), r"tokens must be one of \['cls', 'all'\]"),
])
def test_bad_parameters_are_refused(projector, digits_test, params, message):
    images, y = digits_test
    with pytest.raises(ValueError, match=message):
        downstream_recovered(projector, _identity(), images[:4], y[:4], **params)


def test_a_dictionary_of_another_width_is_refused(projector, digits_test):
    images, y = digits_test
    narrow = SparseCoder(np.eye(8), transform_algorithm="threshold", transform_alpha=0.0)
    with pytest.raises(ValueError, match="atoms of 8 features but the model's blocks output"):
        downstream_recovered(projector, narrow, images[:4], y[:4])
    with pytest.raises(ValueError, match=r"y must be an int array of shape \(4,\)"):
        downstream_recovered(projector, _identity(), images[:4], y[:3])
