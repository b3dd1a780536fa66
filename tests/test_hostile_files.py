"""Hostile inputs, second round (issue 22): nothing lost, nothing silent, one line each.

Each test names the issue's item it covers. Files are built small and tampered
by hand; memory is measured with tracemalloc, which sees numpy's and Python's
allocations (all that loading a model file makes).
"""

import contextlib
import io
import json
import os
import signal
import struct
import subprocess
import sys
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.utils._param_validation import InvalidParameterError

import skdict
from skdict import DoubleBatchKSVD, SparseAutoencoder
from skdict.cli import main
from skdict.datasets import make_sparse_signals
from skdict.explore import build_site
from _model_files import rewrite_model

# The checkout whose skdict is under test (subprocesses import the same one).
ROOT = Path(skdict.__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def X():
    return make_sparse_signals(120, 12, 16, 2, random_state=0)[0]


@pytest.fixture(scope="module")
def files(X, tmp_path_factory):
    """X.npy, a DoubleBatchKSVD model (float64 and float32) and a SparseAutoencoder."""
    tmp = tmp_path_factory.mktemp("hostile")
    np.save(tmp / "X.npy", X)
    ksvd = DoubleBatchKSVD(16, n_nonzero_coefs=2, max_iter=3, random_state=0).fit(X)
    skdict.save(ksvd, tmp / "m.skdict")
    ksvd32 = DoubleBatchKSVD(16, n_nonzero_coefs=2, max_iter=3, random_state=0)
    skdict.save(ksvd32.fit(X.astype(np.float32)), tmp / "m32.skdict")
    sae = SparseAutoencoder(16, k=2, max_iter=2, batch_size=32, device="cpu", random_state=0)
    skdict.save(sae.fit(X.astype(np.float32)), tmp / "sae.skdict")
    return tmp


def _cli(*argv):
    """(exit code, stderr lines) of the command run in this process."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main([str(a) for a in argv])
    return code, err.getvalue().strip().splitlines()


def _tree(folder):
    """Every path under `folder` with its bytes (None for folders, the target for links)."""
    tree = {}
    for path in sorted(Path(folder).rglob("*")):
        rel = str(path.relative_to(folder))
        if path.is_symlink():
            tree[rel] = ("link", os.readlink(path))
        else:
            tree[rel] = path.read_bytes() if path.is_file() else None
    return tree


def _array_of(path, key):
    with zipfile.ZipFile(path) as archive:
        return np.lib.format.read_array(io.BytesIO(archive.read(f"{key}.npy")))


def _one_line_error(code, lines, *fragments):
    assert code == 2, lines
    assert len(lines) == 1, lines
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


# ---------------------------------------------------------------- 1, 2: the explorer's folder


def _explore(files, out, *extra):
    return _cli("explore", files / "m.skdict", files / "X.npy", "--out", out, "-q", *extra)


@pytest.mark.parametrize("taken", ["data", "assets", "index.html"])
def test_explore_refuses_a_name_the_user_owns_and_changes_nothing(files, tmp_path, taken):
    """Item 1: the user's own data/ (or assets/, index.html) is never replaced."""
    out = tmp_path / "w"
    out.mkdir()
    if taken == "index.html":
        (out / taken).write_text("my page")
    else:
        (out / taken).mkdir()
        (out / taken / "embeddings.npy").write_bytes(b"the user's own file")
    (out / "notes.txt").write_text("keep me")
    before = _tree(out)
    code, lines = _explore(files, out)
    _one_line_error(code, lines, f"already holds '{taken}'", "nothing was changed")
    assert _tree(out) == before


def test_explore_into_the_current_folder_keeps_the_users_files(files, tmp_path, monkeypatch):
    """Item 1, ``--out .``: the same refusal, nothing moved."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "X.npy").write_bytes(b"user data")
    before = _tree(tmp_path)
    monkeypatch.chdir(tmp_path)
    code, lines = _explore(files, ".")
    _one_line_error(code, lines, "already holds 'data'")
    assert _tree(tmp_path) == before


def test_explore_rebuilds_its_own_site_and_leaves_other_files(files, tmp_path, X):
    """A second build replaces the first one's entries (and drops its thumbnails)."""
    model = skdict.load(files / "m.skdict")
    out = tmp_path / "site"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    images = np.zeros((X.shape[0], 8, 8))
    build_site(model, X, out, images=images, top_k=2)
    assert (out / "thumbs").is_dir()
    build_site(model, X, out, top_k=3)
    assert sorted(p.name for p in out.iterdir()) == [
        ".skdict-site.json", "assets", "data", "index.html", "notes.txt"]
    assert (out / "notes.txt").read_text() == "keep me"
    manifest = json.loads((out / ".skdict-site.json").read_text())
    assert manifest["entries"] == ["assets", "data", "index.html"]


def test_explore_with_a_symlinked_data_folder_changes_nothing(files, tmp_path):
    """Item 2: refused before any work; nothing (assets/) is moved in."""
    out, elsewhere = tmp_path / "w", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "data").symlink_to(elsewhere)
    before = _tree(out)
    code, lines = _explore(files, out)
    _one_line_error(code, lines, "already holds 'data'")
    assert _tree(out) == before
    assert list(elsewhere.iterdir()) == []


def test_a_failed_commit_leaves_the_folder_as_it_was(files, tmp_path, X, monkeypatch):
    """Item 2: a rename that fails half-way through the commit is undone."""
    model = skdict.load(files / "m.skdict")
    out = tmp_path / "site"
    build_site(model, X, out, top_k=2)
    (out / "notes.txt").write_text("keep me")
    before = _tree(out)
    renames = []
    real_rename = os.rename

    def fails_on_the_fourth(source, target):
        renames.append(target)
        if len(renames) == 4:  # mid-commit: new manifest in, old assets/ moved aside
            raise OSError(28, "No space left on device")
        real_rename(source, target)

    monkeypatch.setattr(os, "rename", fails_on_the_fourth)
    with pytest.raises(OSError, match="No space left"):
        build_site(model, X, out, top_k=3)
    monkeypatch.undo()
    assert len(renames) > 4  # the undo renamed back
    assert _tree(out) == before


def test_a_failed_build_into_a_new_folder_leaves_nothing(files, tmp_path, X):
    model = skdict.load(files / "m.skdict")
    images = np.zeros((X.shape[0], 8, 8, 2))  # 2 channels: refused by the thumbnails
    with pytest.raises(ValueError):
        build_site(model, X, tmp_path / "new" / "site", images=list(images), top_k=2)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- 3: bounded inflation


def _peak_bytes(function):
    tracemalloc.start()
    try:
        function()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


# 64 MiB of inflation from a file of ~70 KiB; loading may allocate a few MiB
# (the small model's arrays, zipfile's buffers), not the 64 MiB it claims.
_INFLATION = 64 << 20
_PEAK_BOUND = 4 << 20


@pytest.mark.parametrize("case", ["JSON padding", "error_ of 64 MiB", "padded member"])
def test_a_model_file_cannot_inflate_beyond_its_model(files, tmp_path, case):
    """Item 3: refused before the members are inflated, in bounded memory."""
    path = files / "m.skdict"
    if case == "JSON padding":
        with zipfile.ZipFile(path) as archive:
            text = archive.read("model.json")
        members = {"model.json": text[:-1] + b" " * _INFLATION + text[-1:]}
        tampered = rewrite_model(path, tmp_path / "t.skdict", members=members)
        message = "model.json inflates to 64 MiB"
    elif case == "error_ of 64 MiB":
        tampered = rewrite_model(path, tmp_path / "t.skdict",
                            arrays={"attr.error_": np.zeros(_INFLATION // 8)})
        message = r"error_ has shape \(8388608,\); expected \(3,\)"
    else:
        buffer = io.BytesIO()
        np.lib.format.write_array(buffer, _array_of(path, "attr.components_"))
        members = {"attr.components_.npy": buffer.getvalue() + b"\0" * _INFLATION}
        tampered = rewrite_model(path, tmp_path / "t.skdict", members=members)
        message = "components_ inflates to"
    assert tampered.stat().st_size < _INFLATION // 100
    skdict.load(path)  # imports and caches whatever loading needs, outside the measure
    error = []

    def load():
        with pytest.raises(ValueError, match=message) as info:
            skdict.load(tampered)
        error.append(str(info.value))

    assert _peak_bytes(load) < _PEAK_BOUND
    assert "\n" not in error[0]


@pytest.mark.parametrize("name, value, message", [
    ("n_iter_", 7, r"error_ has shape \(3,\); expected \(7,\)"),
    ("_groups", {"list": []}, r"_groups is \[\]; the parameters imply \[\(0, 16, 2\)\]"),
    ("batch_size_", 3, "unknown attribute 'batch_size_' for DoubleBatchKSVD"),
    ("n_features_in_", True, "n_features_in_ must be a positive int, got True"),
])
def test_every_attribute_is_checked(files, tmp_path, name, value, message):
    """Item 3: attributes the dictionary's shape does not imply are checked too."""
    tampered = rewrite_model(files / "m.skdict", tmp_path / "t.skdict",
                        lambda d: d["attributes"].update({name: value}))
    with pytest.raises(ValueError, match=message):
        skdict.load(tampered)


def test_a_fitted_model_missing_an_attribute_is_refused(files, tmp_path):
    tampered = rewrite_model(files / "m.skdict", tmp_path / "t.skdict",
                        lambda d: d["attributes"].pop("_groups"))
    with pytest.raises(ValueError, match="the fitted DoubleBatchKSVD lacks '_groups'"):
        skdict.load(tampered)


# ---------------------------------------------------------------- 4: devices and pipes


needs_dev_zero = pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero")


@needs_dev_zero
def test_labels_from_dev_zero_are_read_with_a_bound(files, tmp_path):
    """Item 4: /dev/zero as --labels is refused after 64 MiB, not read until OOM."""
    code, lines = _explore(files, tmp_path / "s", "--labels", "/dev/zero")
    _one_line_error(code, lines, "is not a regular file and gives more than 64 MiB")


@needs_dev_zero
def test_a_device_as_model_is_refused(files, tmp_path):
    """Item 4: a model path of /dev/zero is refused at once, not read forever."""
    code, lines = _cli("encode", "/dev/zero", files / "X.npy", "-o", tmp_path / "c.npz")
    _one_line_error(code, lines, "'/dev/zero' is not a regular file or folder")
    with pytest.raises(ValueError, match="is not a regular file"):
        skdict.load("/dev/zero")


def test_labels_from_a_pipe_are_read(files, tmp_path, X):
    """A bound, not a refusal: text from a pipe (``--labels <(...)``) still works."""
    fifo = tmp_path / "labels"
    os.mkfifo(fifo)
    writer = subprocess.Popen(
        [sys.executable, "-c",
         f"open({str(fifo)!r}, 'w').write(''.join(f'row {{i}}\\n' for i in range({len(X)})))"])
    code, lines = _explore(files, tmp_path / "s", "--labels", fifo)
    writer.wait(timeout=60)
    assert code == 0, lines


# ---------------------------------------------------------------- 5: signals


def _foreground():
    """Give the child a foreground command's SIGINT: a non-interactive shell starts
    its background jobs (``make test &``) with SIGINT ignored, which Python then
    keeps ignored, as a command run under nohup should."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _run(script):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=300, preexec_fn=_foreground)


_KILL_DURING = (
    "import os, signal, sys\n"
    "import numpy as np, scipy.sparse as sp, shutil\n"
    "from skdict.cli import main\n"
    "def killed(*args, **kwargs):\n"
    "    os.kill(os.getpid(), signal.{signal})\n"
    "    raise AssertionError('the signal was not delivered')\n"
    "{target} = killed\n"
    "raise SystemExit(main({argv!r}))\n"
)


@pytest.mark.parametrize("sig, code, word", [("SIGTERM", 143, "terminated"),
                                              ("SIGINT", 130, "interrupted")])
@pytest.mark.parametrize("command", ["fit", "encode", "explore"])
def test_signals_end_a_command_with_one_line_and_no_leftovers(files, tmp_path, sig, code,
                                                              word, command):
    """Item 5: SIGTERM and Ctrl-C clean up, print one line and exit 143 / 130."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "m.skdict").write_bytes((files / "m.skdict").read_bytes())
    (out / "codes.npz").write_bytes(b"previous codes")
    if command == "explore":
        build_site(skdict.load(files / "m.skdict"), np.load(files / "X.npy"), out / "site",
                   top_k=2)
    before = _tree(out)
    target, argv = {
        # Mid-save of the model: the temporary file is half written.
        "fit": ("np.lib.format.write_array",
                ["fit", files / "X.npy", "--n-components", "4", "--n-nonzero", "1",
                 "--max-iter", "1", "-o", out / "m.skdict", "-q"]),
        "encode": ("sp.save_npz", ["encode", out / "m.skdict", files / "X.npy", "-o",
                                   out / "codes.npz", "-q"]),
        # Mid-build of the site: the staging folder is half filled.
        "explore": ("shutil.copyfile", ["explore", out / "m.skdict", files / "X.npy",
                                        "--out", out / "site", "-q"]),
    }[command]
    result = _run(_KILL_DURING.format(signal=sig, target=target,
                                      argv=[str(a) for a in argv]))
    assert result.returncode == code, result.stderr
    assert result.stderr.strip().splitlines() == [f"skdict {command}: {word}"]
    assert _tree(out) == before


def test_a_signal_during_the_commit_waits_for_it(files, tmp_path):
    """A SIGTERM between two renames of the commit is delivered after the last one."""
    out = tmp_path / "site"
    argv = ["explore", str(files / "m.skdict"), str(files / "X.npy"), "--out", str(out), "-q"]
    script = (
        "import os, signal\n"
        "from skdict.cli import main\n"
        "rename = os.rename\n"
        "def rename_and_kill(source, target):\n"
        "    rename(source, target)\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "os.rename = rename_and_kill\n"
        f"raise SystemExit(main({argv!r}))\n"
    )
    result = _run(script)
    assert result.returncode == 143, result.stderr
    manifest = json.loads((out / ".skdict-site.json").read_text())
    assert sorted(p.name for p in out.iterdir()) == sorted(manifest["entries"] +
                                                           [".skdict-site.json"])
    assert (out / "data" / "atoms.js").is_file()


# ---------------------------------------------------------------- 6, 7: magnitudes


def test_encode_refuses_data_fit_refuses(files, tmp_path, X):
    """Item 6: data of magnitude 1e-300 is refused by encode as fit refuses it."""
    np.save(tmp_path / "tiny.npy", X * 1e-300)
    code, lines = _cli("encode", files / "m.skdict", tmp_path / "tiny.npy", "-o",
                       tmp_path / "c.npz")
    _one_line_error(code, lines, "too small for float64 arithmetic")
    assert not (tmp_path / "c.npz").exists()
    code, lines = _cli("fit", tmp_path / "tiny.npy", "--n-components", "4", "--n-nonzero",
                       "1", "-o", tmp_path / "m.skdict")
    _one_line_error(code, lines, "too small for float64 arithmetic")


@pytest.mark.parametrize("command", ["encode", "score"])
def test_sae_commands_refuse_data_its_float32_arithmetic_loses(files, tmp_path, X, command):
    """Item 6 for a SparseAutoencoder: it divides X by its scale and works in float32,
    so float64 data of magnitude 1e-60 (fine in float64) would vanish there."""
    np.save(tmp_path / "tiny.npy", X * 1e-60)
    extra = ["-o", tmp_path / "c.npz"] if command == "encode" else []
    code, lines = _cli(command, files / "sae.skdict", tmp_path / "tiny.npy", *extra)
    _one_line_error(code, lines, "too small for float32 arithmetic")


@pytest.mark.parametrize("model, edit, arrays, message", [
    ("sae", {"scale_": 1e300}, None, "scale_=1e+300 is not a normal float32 number"),
    ("sae", {"scale_": 1e-300}, None, "scale_=1e-300 is not a normal float32 number"),
    ("sae", None, ("components_", 1e30), "components_ is too large for float32"),
    ("sae", None, ("encoder_weight_", 1e30), "encoder_weight_ is too large for float32"),
    ("m32", None, ("components_", 1e30), "components_ is too large for float32"),
    ("m", None, ("components_", 1e160), "components_ is too large for float64"),
    ("m", None, ("components_", 1e-170), "components_ is too small for float64"),
])
def test_magnitudes_of_a_model_file_are_checked(files, tmp_path, model, edit, arrays, message):
    """Item 7: finite but unusable magnitudes are refused, not coded as inf or 0."""
    path = files / f"{model}.skdict"
    replace = None
    if arrays:
        name, factor = arrays
        array = _array_of(path, f"attr.{name}")
        replace = {f"attr.{name}": array * array.dtype.type(factor)}
    tampered = rewrite_model(path, tmp_path / "t.skdict",
                        edit and (lambda d: d["attributes"].update(edit)), replace)
    code, lines = _cli("encode", tampered, files / "X.npy", "-o", tmp_path / "c.npz")
    _one_line_error(code, lines, message)


# ---------------------------------------------------------------- 10, 11: zips


def test_a_model_as_embeddings_is_refused(files, tmp_path):
    """Item 10: a model (any zip) as EMBEDDINGS gives one line, not AttributeError."""
    code, lines = _cli("encode", files / "m.skdict", files / "m.skdict", "-o",
                       tmp_path / "c.npz")
    _one_line_error(code, lines, "is a skdict model file; give embeddings as")
    np.savez(tmp_path / "archive.npz", X=np.ones((3, 12)))
    os.replace(tmp_path / "archive.npz", tmp_path / "renamed.npy")
    code, lines = _cli("encode", files / "m.skdict", tmp_path / "renamed.npy", "-o",
                       tmp_path / "c.npz")
    _one_line_error(code, lines, "is a zip archive (an .npz file or a model), not a .npy")
    shards = tmp_path / "shards"
    shards.mkdir()
    np.save(shards / "0.npy", np.ones((3, 12)))
    (shards / "1.npy").write_bytes((files / "m.skdict").read_bytes())
    code, lines = _cli("encode", files / "m.skdict", shards, "-o", tmp_path / "c.npz")
    _one_line_error(code, lines, "1.npy' is a zip archive")


def _corrupt_member(path, out, how):
    """Flip a member's CRC (both headers) or bytes of its deflate stream."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("attr.components_.npy")
    if how == "crc":
        crc = struct.pack("<I", info.CRC ^ 1)
        data[info.header_offset + 14:info.header_offset + 18] = crc
        central = data.find(b"PK\x01\x02")  # the central directory's entries
        while central != -1:
            name_length = struct.unpack("<H", data[central + 28:central + 30])[0]
            if data[central + 46:central + 46 + name_length] == info.filename.encode():
                data[central + 16:central + 20] = crc
            central = data.find(b"PK\x01\x02", central + 4)
    else:
        start = info.header_offset + 30 + len(info.filename) + len(info.extra)
        for i in range(start + 2, start + 22):
            data[i] ^= 0x5A
    out.write_bytes(bytes(data))
    return out


@pytest.mark.parametrize("how, message", [("crc", "Bad CRC-32"), ("deflate", "decompress")])
def test_a_corrupt_member_gives_one_line(files, tmp_path, how, message):
    """Item 11: BadZipFile and zlib.error become the ValueError load promises."""
    corrupt = _corrupt_member(files / "m.skdict", tmp_path / "c.skdict", how)
    with pytest.raises(ValueError, match=f"cannot read the array 'attr.components_': .*"
                                         f"{message}") as info:
        skdict.load(corrupt)
    assert "\n" not in str(info.value)


def test_impossible_shapes_and_states_are_refused(files, tmp_path):
    """Item 11: an RNG state of 3 words, an .npy header of (1e6, 1e6)."""
    path = files / "m.skdict"
    tampered = rewrite_model(path, tmp_path / "r.skdict",
                        arrays={"attr._rng": np.arange(3, dtype=np.uint32)})
    with pytest.raises(ValueError, match=r"_rng has shape \(3,\); expected \(624,\)"):
        skdict.load(tampered)
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": (10**6, 10**6)})
    members = {"attr.components_.npy": header.getvalue() + b"\0" * 64}
    tampered = rewrite_model(path, tmp_path / "h.skdict", members=members)
    with pytest.raises(ValueError, match=r"has shape \(1000000, 1000000\); expected \(16, 12\)"):
        skdict.load(tampered)


# ---------------------------------------------------------------- 13: concept banks


@pytest.mark.parametrize("names, message", [
    (np.arange(16), "names is a 1-D array of int64"),
    (np.array([[f"a{i}", f"b{i}"] for i in range(16)]), "names is a 2-D array"),
    (np.array([""] + [f"n{i}" for i in range(15)]), "non-empty strings only"),
])
def test_a_bank_with_names_that_are_not_strings_gives_one_line(files, tmp_path, names,
                                                               message):
    """Item 13: integer or 2-D names in a bank file: exit 2, not TypeError."""
    vectors = np.random.default_rng(0).standard_normal((16, 12))
    np.savez(tmp_path / "bank.npz", names=names, embeddings=vectors, center=np.bool_(True))
    code, lines = _cli("describe", files / "m.skdict", "--concepts", tmp_path / "bank.npz")
    _one_line_error(code, lines, message)


# ---------------------------------------------------------------- 16, 17: smaller


def test_a_byte_order_mark_is_not_part_of_the_first_line(tmp_path):
    """Item 16: a UTF-8 BOM does not end up in the first label or concept name."""
    from skdict._app.files import read_lines

    path = tmp_path / "labels.txt"
    path.write_bytes("\ufeffcat\ndog\n".encode())
    assert read_lines(path, "labels file", allow_blank=True) == ["cat", "dog"]


@pytest.mark.parametrize("make", [
    lambda: DoubleBatchKSVD(4, n_nonzero_coefs=1, max_iter=1, n_jobs=0),
    lambda: SparseAutoencoder(4, k=1, max_iter=1, n_jobs=0, device="cpu"),
])
def test_n_jobs_zero_is_refused(make, X):
    """Item 16: as scikit-learn and joblib, n_jobs=0 means nothing."""
    with pytest.raises(InvalidParameterError, match="'n_jobs' parameter .* Got 0 instead"):
        make().fit(X)


@pytest.mark.parametrize("command", [None, "demo", "embed", "fit", "encode", "describe", "score",
                                     "explore"])
def test_help_is_plain_text(command, capsys):
    """Item 16: no reStructuredText markup (``demo``) in --help."""
    with pytest.raises(SystemExit):
        main(([command] if command else []) + ["--help"])
    assert "``" not in capsys.readouterr().out


def test_packaging_includes_only_the_package(tmp_path):
    """Item 17: the skdict-demo/ output folder is not mapped as a package."""
    import tomllib

    from setuptools import find_namespace_packages

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = config["tool"]["setuptools"]["packages"]["find"]["include"]
    (tmp_path / "skdict" / "_app").mkdir(parents=True)
    (tmp_path / "skdict" / "__init__.py").write_text("")
    (tmp_path / "skdict" / "_app" / "__init__.py").write_text("")
    (tmp_path / "skdict-demo").mkdir()
    (tmp_path / "skdict-demo" / "report.html").write_text("<html>")
    found = find_namespace_packages(where=str(tmp_path), include=include)
    assert sorted(found) == ["skdict", "skdict._app"]


def test_codes_of_a_sound_file_are_unchanged(files, tmp_path, X):
    """The checks refuse only what is broken: encode still writes the model's codes."""
    assert _cli("encode", files / "m.skdict", files / "X.npy", "-o", tmp_path / "c.npz",
                "-q")[0] == 0
    expected = skdict.load(files / "m.skdict").transform(X)
    np.testing.assert_array_equal(sp.load_npz(tmp_path / "c.npz").toarray(), expected)
