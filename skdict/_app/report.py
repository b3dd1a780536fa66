"""Result tables for the terminal, and the self-contained HTML report of ``skdict demo``.

The report is one HTML file with its figures inlined as base64 PNGs and its
style inline, so that it opens offline and can be mailed as is; the PNGs and a
``results.json`` are written next to it for reuse.
"""

import base64
import html
import io
import json
import math
from pathlib import Path

import numpy as np


def format_cell(value):
    """A table cell as text: floats with 3 decimals, missing values as an en dash."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def format_table(columns, rows):
    """A plain-text table: first column left-aligned, the others right-aligned.

    Examples
    --------
    >>> print(format_table(["method", "score"], [["a", 0.5], ["bb", None]]))
    method  score
    -------------
    a       0.500
    bb          –
    """
    cells = [[format_cell(v) for v in row] for row in rows]
    widths = [max(len(str(c)) for c in col) for col in zip(columns, *cells)]

    def line(values):
        first = f"{values[0]:<{widths[0]}}"
        rest = "".join(f"  {v:>{w}}" for v, w in zip(values[1:], widths[1:]))
        return first + rest

    header = line([str(c) for c in columns])
    return "\n".join([header, "-" * len(header), *[line(row) for row in cells]])


def _html_table(columns, rows):
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(format_cell(v))}</td>" for v in row) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _png_bytes(figure):
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()


def _json_safe(value):
    """NaN and infinities become null, numpy arrays lists and scalars plain numbers."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; color: #222; }
table { border-collapse: collapse; margin: 1rem 0; }
th, td { padding: .3rem .7rem; border-bottom: 1px solid #ddd; text-align: right; }
th:first-child, td:first-child { text-align: left; }
img { max-width: 100%; }
"""


class Report:
    """Sections of text, tables and figures, written as one self-contained HTML file.

    Parameters
    ----------
    title : str
        Page title and top heading.

    Examples
    --------
    >>> report = Report("demo")
    >>> report.add_table("scores", ["method", "score"], [["a", 0.5]])
    >>> "<td>0.500</td>" in report.html()
    True
    """

    def __init__(self, title):
        self.title = title
        self._parts = []
        self._figures = {}

    def add_heading(self, text):
        self._parts.append(f"<h2>{html.escape(text)}</h2>")

    def add_text(self, text):
        self._parts.append(f"<p>{html.escape(text)}</p>")

    def add_link(self, text, href):
        self._parts.append(
            f'<p><a href="{html.escape(href, quote=True)}">{html.escape(text)}</a></p>'
        )

    def add_table(self, caption, columns, rows):
        self._parts.append(f"<h3>{html.escape(caption)}</h3>{_html_table(columns, rows)}")

    def add_figure(self, name, figure, caption):
        """Inline a matplotlib figure; it is also written as ``name.png``."""
        png = _png_bytes(figure)
        self._figures[f"{name}.png"] = png
        data = base64.b64encode(png).decode("ascii")
        self._parts.append(
            f'<figure><img alt="{html.escape(caption, quote=True)}" '
            f'src="data:image/png;base64,{data}"><figcaption>{html.escape(caption)}'
            "</figcaption></figure>"
        )

    def html(self):
        title = html.escape(self.title)
        return (
            f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{title}'
            f"</title><style>{_STYLE}</style></head><body><h1>{title}</h1>"
            + "\n".join(self._parts)
            + "</body></html>\n"
        )

    def write(self, out_dir, results):
        """Write ``report.html``, the PNGs and ``results.json`` into `out_dir`."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        for name, png in self._figures.items():
            (out_dir / name).write_bytes(png)
        (out_dir / "results.json").write_text(
            json.dumps(_json_safe(results), indent=2), encoding="utf-8"
        )
        path = out_dir / "report.html"
        path.write_text(self.html(), encoding="utf-8")
        return path
