"""The demo's report writer: self-contained HTML, PNG files, strict JSON."""

import base64
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from skdict._app.report import Report, format_table  # noqa: E402


def test_report_inlines_figures_and_writes_files(tmp_path):
    report = Report("t")
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    report.add_figure("curve", fig, "a curve")
    report.add_table("scores", ["method", "score"], [["<b>x</b>", float("nan")]])
    path = report.write(tmp_path, {"score": np.float32(0.5), "missing": float("nan"),
                                   "curve": np.arange(2)})
    html = path.read_text()
    png = (tmp_path / "curve.png").read_bytes()
    assert png.startswith(b"\x89PNG")
    assert base64.b64encode(png).decode() in html
    assert "&lt;b&gt;x&lt;/b&gt;" in html and "<b>x</b>" not in html
    assert "<td>–</td>" in html
    results = json.loads((tmp_path / "results.json").read_text())
    assert results == {"score": 0.5, "missing": None, "curve": [0, 1]}


def test_format_table_aligns_columns():
    lines = format_table(["a", "long header"], [["row", 1.23456], ["r", 7]]).splitlines()
    assert lines[0] == "a    long header"
    assert lines[2] == "row        1.235"
    assert lines[3] == "r              7"
    assert len({len(line) for line in lines}) == 1
