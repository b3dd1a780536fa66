"""Fixtures shared by the projector and inspection tests."""

import pytest


@pytest.fixture(scope="module")
def digits_test():
    """sklearn's digits test split as images, and their labels."""
    from skdict.datasets import load_digits_images

    return load_digits_images(subset="test", return_X_y=True)


@pytest.fixture(scope="module")
def trained_vit(torch_one_thread):
    """The digits ViT, trained once per session (see _vits.trained_digits_vit)."""
    from _vits import trained_digits_vit

    return trained_digits_vit()
