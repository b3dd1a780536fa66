"""sklearn's 8x8 digits as images, and a tiny timm ViT trained on them in seconds."""

from numbers import Integral, Real

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.utils import Bunch
from sklearn.utils._param_validation import Interval, StrOptions, validate_params

from .._optional import import_optional

_TEST_SIZE = 0.25
_SPLIT_SEED = 0
DIGITS_INPUT_SIZE = (1, 8, 8)


@validate_params(
    {"subset": [StrOptions({"all", "train", "test"})], "return_X_y": ["boolean"]},
    prefer_skip_nested_validation=True,
)
def load_digits_images(*, subset="all", return_X_y=False):
    """sklearn's handwritten digits as a batch of 1-channel 8x8 images.

    The images are scaled to [0, 1] (the raw data is 0..16), which is the
    preprocessing :func:`train_digits_vit` models expect, so they can be given
    to :class:`~skdict.ClassEmbeddingProjector` directly.

    Parameters
    ----------
    subset : {"all", "train", "test"}, default="all"
        All 1797 digits, or one side of the fixed stratified split (75% / 25%,
        seed 0) that :func:`train_digits_vit` trains on.
    return_X_y : bool, default=False
        Return ``(images, target)`` instead of a Bunch.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        ``images``: float32 array of shape (n_images, 1, 8, 8) in [0, 1];
        ``target``: int array of shape (n_images,) with the digit 0-9;
        ``target_names``: the ten digits.
    (images, target) : tuple
        When ``return_X_y=True``.

    Examples
    --------
    >>> from skdict.datasets import load_digits_images
    >>> images, target = load_digits_images(subset="test", return_X_y=True)
    >>> images.shape, images.dtype, int(target.max())
    ((450, 1, 8, 8), dtype('float32'), 9)
    """
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]
    target = digits.target
    if subset != "all":
        train, test = train_test_split(
            np.arange(len(target)),
            test_size=_TEST_SIZE,
            stratify=target,
            random_state=_SPLIT_SEED,
        )
        rows = train if subset == "train" else test
        images, target = images[rows], target[rows]
    if return_X_y:
        return images, target
    return Bunch(images=images, target=target, target_names=np.arange(10))


def make_digits_vit(*, global_pool="token", reg_tokens=0, random_state=0):
    """The untrained digits ViT: 4 blocks, width 64, 4 heads, 2x2 patches of 8x8 images.

    Its ``pretrained_cfg`` describes the input (1 channel, 8x8, values in [0, 1])
    so that timm's data config preprocesses PIL or uint8 digits the same way.
    """
    torch = import_optional("torch", "vision", "the digits ViT")
    vit = import_optional("timm.models.vision_transformer", "vision", "the digits ViT")
    with torch.random.fork_rng():
        torch.manual_seed(random_state)
        model = vit.VisionTransformer(
            img_size=8,
            patch_size=2,
            in_chans=1,
            num_classes=10,
            embed_dim=64,
            depth=4,
            num_heads=4,
            mlp_ratio=2.0,
            global_pool=global_pool,
            class_token=global_pool == "token",
            reg_tokens=reg_tokens,
        )
    model.pretrained_cfg = dict(
        input_size=DIGITS_INPUT_SIZE,
        mean=(0.0,),
        std=(1.0,),
        crop_pct=1.0,
        interpolation="bilinear",
        num_classes=10,
    )
    return model.eval()


@validate_params(
    {
        "max_epochs": [Interval(Integral, 0, None, closed="left")],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "random_state": [Interval(Integral, 0, None, closed="left")],
    },
    prefer_skip_nested_validation=True,
)
def train_digits_vit(*, max_epochs=20, learning_rate=1.5e-3, batch_size=32, random_state=0):
    """Train a tiny timm ViT on sklearn's digits, on the CPU, in seconds.

    The model has 4 pre-norm blocks of width 64 (4 heads, MLP width 128), a
    class token and 2x2 patches of the 8x8 images (16 patch tokens). It is
    trained with AdamW and a cosine learning-rate schedule on the ``"train"``
    subset of :func:`load_digits_images`, on one CPU thread (a model this
    small gains nothing from more). With the defaults it reaches 95% accuracy
    on the ``"test"`` subset after about 25 s of CPU time (measured on a busy
    2-core machine; less on an idle one).
    The same `random_state` gives the same weights (on the same torch build
    and thread count).

    Parameters
    ----------
    max_epochs : int, default=20
        Passes over the 1347 training images; 0 returns the random model.
    learning_rate : float, default=1.5e-3
        Peak AdamW learning rate.
    batch_size : int, default=32
        Images per step.
    random_state : int, default=0
        Seed of the initial weights and of the batch order.

    Returns
    -------
    model : timm.models.vision_transformer.VisionTransformer
        The trained model in eval mode, on the CPU. It takes float tensors of
        shape (N, 1, 8, 8) in [0, 1] and returns (N, 10) logits.

    Examples
    --------
    >>> import torch
    >>> from skdict.datasets import load_digits_images, train_digits_vit
    >>> model = train_digits_vit(max_epochs=1)
    >>> images, target = load_digits_images(subset="test", return_X_y=True)
    >>> with torch.no_grad():
    ...     model(torch.from_numpy(images[:4])).shape
    torch.Size([4, 10])
    """
    torch = import_optional("torch", "vision", "train_digits_vit")
    model = make_digits_vit(random_state=random_state)
    images, target = load_digits_images(subset="train", return_X_y=True)
    X, y = torch.from_numpy(images), torch.from_numpy(target)
    generator = torch.Generator().manual_seed(random_state)
    n_steps = max_epochs * -(-len(y) // batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.05)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=learning_rate, total_steps=max(n_steps, 1), pct_start=0.1
    )
    # A model this small gains nothing from threads, and on a busy machine
    # oversubscribed threads make every step many times slower.
    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    model.train()
    try:
        _fit(model, X, y, optimizer, schedule, generator, max_epochs, batch_size, torch)
    finally:
        torch.set_num_threads(n_threads)
    return model.eval()


def _fit(model, X, y, optimizer, schedule, generator, max_epochs, batch_size, torch):
    for _ in range(max_epochs):
        for rows in torch.randperm(len(y), generator=generator).split(batch_size):
            loss = torch.nn.functional.cross_entropy(model(X[rows]), y[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
