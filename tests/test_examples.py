"""Every gallery script runs to the end, offline, in a fresh process."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("plot_*.py"))


def test_the_gallery_has_examples():
    assert len(EXAMPLES) >= 5


# Half of the suite's time (~3.5 of ~6 min on a busy 2-core machine): `make test`
# and CI run them; `pytest -m "not slow"` leaves them to the docs build.
@pytest.mark.slow
@pytest.mark.parametrize("script", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs(script, tmp_path):
    env = dict(os.environ, MPLBACKEND="Agg", PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_has_a_title_docstring(script):
    lines = script.read_text().split('"""')[1].strip().splitlines()
    if set(lines[0]) == {"="}:  # an overlined title needs a matching overline
        assert len(lines[0]) >= len(lines[1]), "title overline too short"
        lines = lines[1:]
    title, underline = lines[:2]
    assert title and set(underline) == {"="} and len(underline) >= len(title)
