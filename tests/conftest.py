import numpy as np
import pytest


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="module")
def torch_one_thread():
    """Run a module's tiny torch models on one thread, restoring the count after.

    Extra threads only contend on a busy 2-core machine for models this small.
    """
    torch = pytest.importorskip("torch")
    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n_threads)
