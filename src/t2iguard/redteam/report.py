"""Reports a person reads: markdown tables and a self-contained HTML page with plots.

Plots are drawn with matplotlib (the ``redteam`` extra) and embedded as PNG data URIs, so one
HTML file carries everything. Without matplotlib the HTML report still has every table and says
which plots are missing.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

Row = Sequence[Any]


def fmt(value: Any, digits: int = 1) -> str:
    """Cells: rates as percentages, None as an en dash."""
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def pct(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{100 * value:.{digits}f} %"


def md_table(headers: Sequence[str], rows: Sequence[Row]) -> str:
    def cell(v: Any) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def html_table(headers: Sequence[str], rows: Sequence[Row]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def have_plots() -> bool:
    return _pyplot() is not None


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    _pyplot().close(fig)
    return buf.getvalue()


def bar_chart(
    labels: Sequence[str],
    series: dict[str, Sequence[float | None]],
    *,
    title: str,
    ylabel: str,
    percent: bool = True,
    horizontal: bool = False,
) -> bytes | None:
    """Grouped bars (PNG bytes); ``None`` without matplotlib."""
    plt = _pyplot()
    if plt is None or not labels:
        return None
    import numpy as np

    n = max(1, len(series))
    width = 0.8 / n
    size = (9, max(3.0, 0.32 * len(labels) + 1)) if horizontal else (max(6.0, 0.5 * len(labels) + 2), 4.2)
    fig, ax = plt.subplots(figsize=size)
    x = np.arange(len(labels))
    for k, (name, values) in enumerate(series.items()):
        vals = [(v or 0.0) * (100 if percent else 1) for v in values]
        pos = x + (k - (n - 1) / 2) * width
        if horizontal:
            ax.barh(pos, vals, height=width, label=name)
        else:
            ax.bar(pos, vals, width=width, label=name)
    if horizontal:
        ax.set_yticks(x, labels)
        ax.invert_yaxis()
        ax.set_xlabel(ylabel)
    else:
        ax.set_xticks(x, labels, rotation=30, ha="right")
        ax.set_ylabel(ylabel)
    ax.set_title(title)
    if n > 1:
        ax.legend(fontsize=8)
    ax.grid(axis="x" if horizontal else "y", alpha=0.3)
    return _png(fig)


def funnel_chart(stages: Sequence[tuple[str, dict[str, int]]], *, title: str) -> bytes | None:
    """Per-dataset funnels: for each dataset, the count remaining after each layer."""
    plt = _pyplot()
    if plt is None or not stages:
        return None
    fig, axes = plt.subplots(1, len(stages), figsize=(6.5 * len(stages), 3.6), squeeze=False, layout="constrained")
    for ax, (name, counts) in zip(axes[0], stages, strict=True):
        labels = list(counts)
        values = [counts[k] for k in labels]
        ax.barh(range(len(labels)), values, color="#4c72b0")
        ax.set_yticks(range(len(labels)), labels)
        ax.invert_yaxis()
        for i, v in enumerate(values):
            ax.text(v, i, f" {v}", va="center", fontsize=8)
        ax.set_title(name)
        ax.set_xlabel("prompts")
    fig.suptitle(title)
    return _png(fig)


def box_chart(data: dict[str, Sequence[float]], *, title: str, ylabel: str, log: bool = True) -> bytes | None:
    """Distributions as box plots (latency per layer)."""
    plt = _pyplot()
    data = {k: list(v) for k, v in data.items() if len(v)}
    if plt is None or not data:
        return None
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(data) + 2), 4.0))
    ax.boxplot(list(data.values()), showfliers=True)
    ax.set_xticks(range(1, len(data) + 1), list(data), rotation=30, ha="right")
    if log:
        ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2em auto;max-width:1150px;color:#222;padding:0 1em}
table{border-collapse:collapse;margin:.6em 0 1.4em;font-size:.88em}
th,td{border:1px solid #ccc;padding:.25em .55em;text-align:left;vertical-align:top}
th{background:#f2f2f2} code,pre{background:#f6f6f6;padding:.1em .3em}
.note{color:#555;font-size:.9em} img{max-width:100%;margin:.5em 0 1em}
"""


class HtmlReport:
    """A small builder for a self-contained HTML page."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.parts: list[str] = []

    def h(self, text: str, level: int = 2) -> None:
        self.parts.append(f"<h{level}>{html.escape(text)}</h{level}>")

    def p(self, text: str, cls: str | None = None) -> None:
        c = f' class="{cls}"' if cls else ""
        self.parts.append(f"<p{c}>{html.escape(text)}</p>")

    def table(self, headers: Sequence[str], rows: Sequence[Row]) -> None:
        self.parts.append(html_table(headers, rows))

    def image(self, png: bytes | None, alt: str) -> None:
        if png is None:
            self.p(f"[plot '{alt}' not drawn: install the 'redteam' extra for matplotlib]", "note")
            return
        data = base64.b64encode(png).decode("ascii")
        self.parts.append(f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">')

    def pre(self, text: str) -> None:
        self.parts.append(f"<pre>{html.escape(text)}</pre>")

    def render(self) -> str:
        body = "\n".join(self.parts)
        return (
            f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(self.title)}</title>'
            f"<style>{_CSS}</style></head><body><h1>{html.escape(self.title)}</h1>\n{body}\n</body></html>\n"
        )


def write_outputs(
    out_dir: str | Path, stem: str, data: dict[str, Any], markdown: str, page: HtmlReport
) -> dict[str, Path]:
    """Write ``stem.json``, ``stem.md`` and ``stem.html`` into ``out_dir``; return the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / f"{stem}.json", "md": out / f"{stem}.md", "html": out / f"{stem}.html"}
    paths["json"].write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    paths["md"].write_text(markdown.rstrip() + "\n", encoding="utf-8")
    paths["html"].write_text(page.render(), encoding="utf-8")
    return paths
