"""Fuzzed model files (issue 22): every mutation loads cleanly or fails with one line.

Hypothesis mutates bytes of a valid ``.skdict`` file (the archive itself, and
the members' content re-zipped with valid checksums, so that the JSON and the
``.npy`` headers are reached) and of a SAELens folder (``cfg.json`` and the
safetensors file). Every outcome must be a loaded estimator or a ValueError
with a one-line message, never another exception, and loading must stay
within a bounded amount of memory.
"""

import io
import json
import resource
import tracemalloc
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import skdict
from skdict import DoubleBatchKSVD, SparseAutoencoder
from skdict.datasets import make_sparse_signals

pytestmark = pytest.mark.usefixtures("torch_one_thread")

# Few examples, each a load of a file of a few KiB: the test runs in seconds.
FUZZ = settings(max_examples=120, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])
# The models hold a few KiB of arrays; loading them (zipfile's buffers, JSON,
# numpy) peaks well under 1 MiB. A mutation that made loading allocate what
# a corrupted header claims would exceed this by orders of magnitude.
_PEAK_BOUND = 4 << 20


class _Files(dict):
    """The valid files, shown by name in Hypothesis' reports (not as KiB of bytes)."""

    def __repr__(self):
        return f"<valid files: {', '.join(self)}>"


@pytest.fixture(scope="module")
def valid(tmp_path_factory):
    """Bytes of a .skdict file, its members, and a SAELens folder's two files."""
    pytest.importorskip("safetensors")
    tmp = tmp_path_factory.mktemp("fuzz")
    X = make_sparse_signals(100, 8, 12, 2, random_state=0)[0].astype(np.float32)
    ksvd = DoubleBatchKSVD(12, n_nonzero_coefs=2, max_iter=2, random_state=0).fit(X)
    path = skdict.save(ksvd, tmp / "m.skdict")
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    sae = SparseAutoencoder(12, activation="jumprelu", max_iter=1, batch_size=50,
                            device="cpu", random_state=0).fit(X)
    folder = skdict.save(sae, tmp / "sae", format="saelens")
    skdict.load(path), skdict.load(folder)  # imports done outside the measurements
    return _Files({"archive": path.read_bytes(), "members": members,
                   "cfg.json": (folder / "cfg.json").read_bytes(),
                   "sae_weights.safetensors": (folder / "sae_weights.safetensors").read_bytes()})


def _mutations(max_size=8):
    """(offset fraction, byte) pairs and an optional truncation fraction."""
    edits = st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)),
                     min_size=1, max_size=max_size)
    return st.tuples(edits, st.one_of(st.none(), st.floats(0, 1)))


def _mutate(data, mutation):
    edits, truncate = mutation
    data = bytearray(data)
    for fraction, value in edits:
        data[int(fraction * len(data))] = value
    if truncate is not None:
        del data[int(truncate * len(data)):]
    return bytes(data)


def _load_cleanly_or_one_line(path):
    """Load `path`; the outcome must be an estimator or a one-line ValueError."""
    tracemalloc.start()
    try:
        try:
            model = skdict.load(path)
        except ValueError as exc:
            assert "\n" not in str(exc).strip(), str(exc)
        else:
            assert type(model).__name__ in skdict._persistence.ACCEPTED
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < _PEAK_BOUND, f"loading took {peak / 2**20:.0f} MiB"


@FUZZ
@given(mutation=_mutations())
def test_mutated_archive(valid, tmp_path, mutation):
    path = tmp_path / "m.skdict"
    path.write_bytes(_mutate(valid["archive"], mutation))
    _load_cleanly_or_one_line(path)


@FUZZ
@given(member=st.sampled_from(["model.json", "attr.components_.npy", "attr.error_.npy",
                               "attr.atom_usage_.npy", "attr._rng.npy"]),
       mutation=_mutations(max_size=4))
def test_mutated_members(valid, tmp_path, member, mutation):
    """Members mutated and re-zipped: checksums hold, so the content itself is read."""
    members = dict(valid["members"])
    members[member] = _mutate(members[member], mutation)
    path = tmp_path / "m.skdict"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for key, data in members.items():
            archive.writestr(key, data)
    _load_cleanly_or_one_line(path)


@FUZZ
@given(which=st.sampled_from(["cfg.json", "sae_weights.safetensors"]),
       mutation=_mutations())
def test_mutated_saelens_folder(valid, tmp_path_factory, which, mutation):
    """The weights are read through torch, which tracemalloc does not see: the
    process's peak resident memory must not grow by more than the bound either."""
    folder = tmp_path_factory.mktemp("sae")
    for name in ("cfg.json", "sae_weights.safetensors"):
        data = valid[name]
        (folder / name).write_bytes(_mutate(data, mutation) if name == which else data)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    _load_cleanly_or_one_line(folder)
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    assert grown < _PEAK_BOUND, f"the peak resident memory grew by {grown / 2**20:.0f} MiB"


def test_the_mutations_reach_the_content(valid):
    """The fuzzed members are the ones the model holds (the test is not vacuous)."""
    names = set(valid["members"])
    assert {"model.json", "attr.components_.npy", "attr.error_.npy",
            "attr.atom_usage_.npy", "attr._rng.npy"} <= names
    config = json.loads(valid["cfg.json"])
    assert config["architecture"] == "jumprelu"
    assert np.lib.format.read_magic(io.BytesIO(valid["members"]["attr.components_.npy"]))
