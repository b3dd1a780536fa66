"""``skdict embed`` end to end: digits written as PNG files, a random tiny timm ViT and
open_clip CLIP saved to local weight files, the command run through ``main``."""

import contextlib
import io
import os
import re
import sys

import numpy as np
import pytest
from sklearn.decomposition import SparseCoder

import skdict
from skdict.cli import main

from _tolerance import dot_rtol

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")
Image = pytest.importorskip("PIL.Image")

pytestmark = pytest.mark.usefixtures("torch_one_thread")

# timm's smallest registered ViT: 160x160 inputs in 16x16 patches, width 64, 6 blocks.
TIMM_NAME, TIMM_DEPTH, TIMM_WIDTH = "test_vit", 6, 64
# Names whose order as names (D10 < d0 < d1 < d10...) is not the order they were made in.
IMAGE_NAMES = ["d0.png", "d1.png", "d2.png", "d10.png", "d11.jpg", "D12.PNG", "d3.png",
               "d4.png", "d5.png"]
TEXTS = ["a dog", "a cat", "the sea", "a red car"]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """A folder of sklearn digits as image files, a stray text file, and the images' paths
    in name order (the rows' order)."""
    from sklearn.datasets import load_digits

    folder = tmp_path_factory.mktemp("digits")
    digits = load_digits().images
    for name, digit in zip(IMAGE_NAMES, digits):
        Image.fromarray((digit * 255 / 16).astype(np.uint8)).save(folder / name)
    (folder / "notes.txt").write_text("not an image")
    return folder, sorted(str(folder / name) for name in IMAGE_NAMES)


def _save_random_timm(path, name, seed=0):
    torch.manual_seed(seed)
    model = timm.create_model(name)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(model.state_dict(), path)
    else:
        torch.save(model.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def timm_weights(tmp_path_factory):
    """A random test_vit in a .safetensors file, as a user's checkpoint."""
    return _save_random_timm(tmp_path_factory.mktemp("timm") / "test_vit.safetensors",
                             TIMM_NAME)


@pytest.fixture
def texts(tmp_path_factory):
    path = tmp_path_factory.mktemp("texts") / "texts.txt"
    path.write_text("\r\n".join(f"{text} " for text in TEXTS) + "\r\n")  # stripped on reading
    return path


def _embed(argv, capsys):
    """Run ``skdict embed``; return the exit code and stderr."""
    code = main(["embed", *map(str, argv), "-q"])
    return code, capsys.readouterr().err


def _one_line(err):
    return err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("options", [[], ["--token", "mean", "--layer", "2"]])
def test_timm_rows_equal_the_python_embedder(images, timm_weights, tmp_path, capsys, options):
    from skdict import TimmEmbedder

    folder, paths = images
    out = tmp_path / "X.npy"
    code, err = _embed([folder, "--model", f"timm:{TIMM_NAME}:{timm_weights}",
                        "--batch-size", 4, *options, "-o", out], capsys)
    assert code == 0, err
    X = np.load(out, mmap_mode="r")
    assert X.dtype == np.float32 and X.shape == (len(paths), TIMM_WIDTH)
    assert (tmp_path / "X.inputs.txt").read_text(encoding="utf-8").splitlines() == paths
    assert sorted(os.listdir(tmp_path)) == ["X.inputs.txt", "X.npy"]  # no temporary file
    params = dict(zip(options[::2], options[1::2]))
    expected = TimmEmbedder(
        TIMM_NAME, pretrained=timm_weights, token=params.get("--token", "cls"),
        layer=int(params.get("--layer", -1)), device="cpu",
    ).fit().transform(paths)
    # The command runs batches of 4, the embedder one batch of 9: other GEMM
    # kernels. Each of the blocks, plus the patch embedding, adds at most one
    # rounding of its longest reduction (the patch embedding's 3 * 16 * 16
    # terms bound them all) relative to the activations' size.
    atol = (TIMM_DEPTH + 1) * dot_rtol(np.float32, 768) * np.abs(expected).max()
    np.testing.assert_allclose(X, expected, rtol=0, atol=atol)
    assert np.ptp(expected, axis=0).max() > 1000 * atol  # images give different rows


def test_clip_embeds_images_and_texts(images, clip_checkpoint, texts, tmp_path, capsys):
    from skdict import CLIPEmbedder

    folder, paths = images
    name, weights = clip_checkpoint
    model = f"clip:{name}:{weights}"
    assert _embed([folder, "--model", model, "--batch-size", 4, "-o", tmp_path / "I"],
                  capsys)[0] == 0
    assert _embed([texts, "--model", model, "-o", tmp_path / "T.npy"], capsys)[0] == 0
    clip = CLIPEmbedder(name, pretrained=weights, device="cpu").fit()
    I, T = np.load(tmp_path / "I.npy"), np.load(tmp_path / "T.npy")
    assert I.dtype == T.dtype == np.float32
    assert I.shape == (len(paths), 32) and T.shape == (len(TEXTS), 32)
    assert (tmp_path / "I.inputs.txt").read_text(encoding="utf-8").splitlines() == paths
    assert (tmp_path / "T.inputs.txt").read_text(encoding="utf-8").splitlines() == TEXTS
    # Unit vectors from a 1-layer encoder, in batches of 4 against one batch:
    # the layer, the patch embedding (3 * 16 * 16 terms, the longest reduction)
    # and the projection each add one dot-product rounding.
    atol = 3 * dot_rtol(np.float32, 768)
    np.testing.assert_allclose(I, clip.transform(paths), rtol=0, atol=atol)
    np.testing.assert_allclose(T, clip.encode_text(TEXTS), rtol=0, atol=atol)


@pytest.fixture
def clip_model(clip_checkpoint):
    return clip_checkpoint[0]


@pytest.mark.parametrize("kind", ["timm", "clip"])
def test_a_model_without_weights_needs_random_weights(kind, images, clip_model, tmp_path,
                                                      capsys):
    folder, paths = images
    spec = f"timm:{TIMM_NAME}" if kind == "timm" else f"clip:{clip_model}"
    out = tmp_path / "out" / "X.npy"
    code, err = _embed([folder, "--model", spec, "-o", out], capsys)
    assert code == 2 and _one_line(err)
    assert f"--model {spec!r} names no weights" in err and "--random-weights" in err
    assert not out.parent.exists()
    code, err = _embed([folder, "--model", spec, "--random-weights", "-o", out], capsys)
    assert code == 0, err
    width = TIMM_WIDTH if kind == "timm" else 32
    assert np.load(out).shape == (len(paths), width)


def test_embedder_without_weights_needs_random_weights(clip_model, tmp_path, capsys):
    """describe / score / explore --embedder: no random CLIP naming atoms by default."""
    atoms = np.random.default_rng(0).standard_normal((4, 32))
    skdict.save(SparseCoder(atoms / np.linalg.norm(atoms, axis=1, keepdims=True)),
                tmp_path / "m.skdict")
    (tmp_path / "names.txt").write_text("\n".join(TEXTS))
    argv = ["describe", str(tmp_path / "m.skdict"), "--concepts", str(tmp_path / "names.txt"),
            "--embedder", f"clip:{clip_model}", "-q"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert _one_line(err) and "names no weights" in err and "--random-weights" in err
    assert main(argv + ["--random-weights"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 4  # one named line per atom


@pytest.fixture(scope="module")
def bad_weights(tmp_path_factory):
    """Files given as weights that are not the weights of the model asked for."""
    folder = tmp_path_factory.mktemp("bad")
    np.savez(folder / "weights.npz", a=np.zeros(3))
    (folder / "bogus.safetensors").write_bytes(b"not a safetensors file at all")
    (folder / "garbage.pt").write_bytes(b"hello world")
    _save_random_timm(folder / "test_vit2.pth", "test_vit2")  # another architecture
    return folder


@pytest.mark.parametrize("kind, file, message", [
    ("clip", "weights.npz", "does not hold weights of model='skdict-tiny-clip'"),
    ("clip", "bogus.safetensors", "does not hold weights of model='skdict-tiny-clip'"),
    ("clip", "test_vit2.pth", "does not hold weights of model='skdict-tiny-clip'"),
    ("clip", "garbage.pt", "is not a torch checkpoint"),
    ("timm", "bogus.safetensors", "does not hold weights of model='test_vit'"),
    ("timm", "test_vit2.pth", "does not hold weights of model='test_vit'"),
    ("timm", "garbage.pt", "is not a torch checkpoint"),
    ("timm", "weights.npz", "does not hold weights of model='test_vit'"),
])
def test_wrong_weight_files_are_one_line(kind, file, message, images, clip_model, bad_weights,
                                         tmp_path, capsys):
    folder, _ = images
    weights = bad_weights / file
    spec = f"{kind}:{TIMM_NAME if kind == 'timm' else clip_model}:{weights}"
    code, err = _embed([folder, "--model", spec, "-o", tmp_path / "X.npy"], capsys)
    assert code == 2 and _one_line(err), err
    assert f"--model {spec!r}: pretrained={str(weights)!r} {message}" in err
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("file", ["weights.npz", "bogus.safetensors"])
def test_wrong_embedder_weight_files_are_one_line(file, clip_model, bad_weights, tmp_path,
                                                  capsys):
    """Issue 22 item 14: --embedder clip:ViT-B-32:weights.npz gave a traceback."""
    skdict.save(SparseCoder(np.eye(32)[:4]), tmp_path / "m.skdict")
    (tmp_path / "names.txt").write_text("\n".join(TEXTS))
    assert main(["describe", str(tmp_path / "m.skdict"), "--concepts",
                 str(tmp_path / "names.txt"), "--embedder",
                 f"clip:{clip_model}:{bad_weights / file}", "-q"]) == 2
    err = capsys.readouterr().err
    assert _one_line(err) and "does not hold weights of model='skdict-tiny-clip'" in err


@pytest.fixture
def broken_images(images, tmp_path):
    """The digits with a truncated PNG midway: pillow fails to decode it without naming it."""
    folder = tmp_path / "broken"
    folder.mkdir()
    for path in images[1]:
        (folder / os.path.basename(path)).write_bytes(open(path, "rb").read())
    (folder / "d3.png").write_bytes((folder / "d3.png").read_bytes()[:60])
    return folder


@pytest.fixture
def previous(tmp_path):
    """An X.npy from an earlier run, which a failed run must leave as it was."""
    out = tmp_path / "out"
    out.mkdir()
    np.save(out / "X.npy", np.arange(6.0).reshape(2, 3))
    return out / "X.npy"


def test_a_failing_image_midway_leaves_no_partial_output(broken_images, timm_weights,
                                                         previous, capsys):
    code, err = _embed([broken_images, "--model", f"timm:{TIMM_NAME}:{timm_weights}",
                        "--batch-size", 2, "-o", previous], capsys)
    assert code == 2 and _one_line(err), err
    # rows 0-5 (D12.PNG to d2.png) were written before the batch holding d3
    assert f"cannot read image {str(broken_images / 'd3.png')!r}" in err
    assert os.listdir(previous.parent) == ["X.npy"]
    np.testing.assert_array_equal(np.load(previous), np.arange(6.0).reshape(2, 3))


class _CtrlCOnProgress(io.StringIO):
    """A terminal whose user presses Ctrl-C once the progress bar counts a row done."""

    def write(self, text):
        if any(int(done) > 0 for done in re.findall(r"(\d+)/\d+", text)):
            raise KeyboardInterrupt
        return super().write(text)


def test_ctrl_c_leaves_no_partial_output(images, timm_weights, previous, monkeypatch):
    folder, _ = images
    monkeypatch.setattr(sys, "stderr", _CtrlCOnProgress())
    # Without -q, the progress bar reports rows as they are written; Ctrl-C
    # ends the run there (KeyboardInterrupt, or exit 130 if main catches it).
    with contextlib.suppress(KeyboardInterrupt):
        main(["embed", str(folder), "--model", f"timm:{TIMM_NAME}:{timm_weights}",
              "--batch-size", "2", "-o", str(previous)])
    assert os.listdir(previous.parent) == ["X.npy"]
    np.testing.assert_array_equal(np.load(previous), np.arange(6.0).reshape(2, 3))


@pytest.mark.parametrize("argv, message", [
    (["{texts}", "--model", "timm:test_vit:{timm}"],
     "--model 'timm:test_vit:{timm}' embeds images only, and INPUT '{texts}' is a file"),
    (["{images}", "--model", "clip:{clip}:{clip_weights}", "--token", "mean"],
     "--token and --layer choose what a timm ViT gives"),
    (["{images}", "--model", "timm:test_vit:{timm}", "--random-weights"],
     "names weights but --random-weights asks for random ones"),
    (["{images}", "--model", "timm:test_vit:random"], "ask for random weights with "
     "--random-weights"),
    (["{images}", "--model", "timm:test_vit:{timm}", "--layer", "6"],
     "layer=6 but the model has 6 blocks"),
    (["{images}", "--model", "vit:test_vit"], "--model 'vit:test_vit' is not understood"),
    (["{images}/d1.png", "--model", "clip:{clip}:{clip_weights}"],
     "INPUT '{images}/d1.png' is one image; give the folder that holds the images"),
    (["{empty}", "--model", "timm:test_vit:{timm}"], "holds no image files"),
    (["{images}/none", "--model", "timm:test_vit:{timm}"], "'{images}/none' does not exist"),
    (["{images}", "--model", "timm:test_vit:{images}/none.pth"],
     "pretrained='{images}/none.pth' is not an existing file"),
])
def test_bad_invocations_are_one_line(argv, message, images, texts, timm_weights,
                                      clip_checkpoint, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    names = dict(images=images[0], texts=texts, timm=timm_weights, clip=clip_checkpoint[0],
                 clip_weights=clip_checkpoint[1], empty=tmp_path / "empty")
    out = tmp_path / "out"
    code, err = _embed([a.format(**names) for a in argv] + ["-o", out / "X.npy"], capsys)
    assert code == 2 and _one_line(err), err
    assert message.format(**names) in err
    assert not out.exists()


def test_an_output_that_is_an_input_is_refused(clip_checkpoint, texts, capsys):
    name, weights = clip_checkpoint
    before = texts.read_bytes()
    code, err = _embed([texts, "--model", f"clip:{name}:{weights}", "-o",
                        texts.with_suffix(".npy")], capsys)
    assert code == 0, err  # texts.npy and texts.inputs.txt beside texts.txt: fine
    inputs_list = texts.with_suffix(".inputs.txt")
    code, err = _embed([inputs_list, "--model", f"clip:{name}:{weights}", "-o",
                        texts.with_suffix(".npy")], capsys)
    assert code == 2 and "the inputs list of -o" in err and "is also an input" in err
    assert texts.read_bytes() == before
