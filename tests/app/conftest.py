"""Fixtures shared by the command-line tests."""

import json

import pytest

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
    """Random weights of a tiny CLIP in a local checkpoint file, as a user would have."""
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
