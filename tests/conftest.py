"""Shared fixtures, and how the tests choose float tolerances.

Tolerances
----------
A tolerance says which differences are rounding and which are bugs, so each is
derived, never tuned until green on one machine:

* Same inputs, same code path, same kernels (a pickle round trip, a sparse vs
  dense copy of the same codes): compare exactly (``assert_array_equal``).
* float64 along different paths (numba vs torch, batch sizes, thread counts):
  rounding is ~eps64 = 2e-16 relative, times the condition number of any solve;
  1e-8 to 1e-12 absolute is derived from that and still catches real errors.
* float32 along different paths: batch size, thread count, SIMD width (numba
  runs with fastmath reassociation) and the BLAS kernel all change the order of
  summation, so results differ by far more than 1e-5 on some machines. Use
  ``_tolerance.dot_rtol(dtype, n_terms)`` for a reduction of ``n_terms`` terms
  (``(sqrt(n) + 2) * eps``), multiplied by the number of layers it passes
  through, and ``_tolerance.assert_same_codes`` for least-squares codes, whose
  error is further amplified by ``cond(G_S)`` of the support's Gram matrix.
  Or compare in float64.
* Values stored rounded (the explorer's JSON keeps 4 significant digits): the
  rounding (5e-4 relative) sets the tolerance.

Write the derivation next to the assert in one comment.
"""

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from _checks import BACKENDS

# Tests assert behaviour, never time: on a loaded machine (a shared CI runner, a
# laptop building something else) drawing examples or running one can take
# seconds, which must not fail a test.
settings.register_profile("skdict", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("skdict")


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(params=BACKENDS)
def backend(request):
    """The name of each compute backend in turn ("numba", "torch")."""
    return request.param


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


# A CLIP small enough to build in milliseconds, registered as a named open_clip config.
_TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16,
                   "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2,
                 "layers": 1},
}


@pytest.fixture(scope="module")
def clip_checkpoint(tmp_path_factory, torch_one_thread):
    """Random weights of a tiny CLIP in a local checkpoint file, as a user would have.

    Returns the registered model name and the file.
    """
    open_clip = pytest.importorskip("open_clip")
    import torch

    tmp = tmp_path_factory.mktemp("clip")
    config = tmp / "skdict-tiny-clip.json"
    config.write_text(json.dumps(_TINY_CLIP))
    open_clip.add_model_config(config)
    torch.manual_seed(0)
    weights = tmp / "tiny-clip.pt"
    torch.save(open_clip.create_model("skdict-tiny-clip").state_dict(), weights)
    return "skdict-tiny-clip", weights
