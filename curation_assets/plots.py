"""Plots as PNG embedded in markdown metadata (Dagster has no plot metadata type)."""

from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from dagster import MetadataValue  # noqa: E402


# Above this many bars a plot is drawn as one filled step line: one artist instead of one patch
# per bar (a 1,000-cluster bar chart took ~1 s to render, once per shard and run).
MAX_BARS = 60


def figure_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)  # laid out by the figure's constrained layout: one render
    plt.close(fig)
    return buf.getvalue()


def _figure(width: float, height: float, fixed: bool = False):
    """A figure and its axes: laid out by constrained layout, or (`fixed`: plots without rotated
    tick labels, drawn per shard) in fixed margins, a third cheaper to render."""
    if not fixed:
        return plt.subplots(figsize=(width, height), layout="constrained")
    fig = plt.figure(figsize=(width, height))
    return fig, fig.add_axes((0.9 / width, 0.5 / height, 1 - 1.1 / width, 1 - 0.85 / height))


def png_markdown(png: bytes, title: str) -> MetadataValue:
    data = base64.b64encode(png).decode("ascii")
    return MetadataValue.md(f"### {title}\n\n![{title}](data:image/png;base64,{data})")


def figure_markdown(fig, title: str) -> MetadataValue:
    return png_markdown(figure_png(fig), title)


def metric_vs_budget(series: dict[str, tuple[list, list, list | None]], title: str, ylabel: str,
                     log_y: bool = False, reference: float | None = None) -> bytes:
    """One line per method: (budget fractions, values, error bars or None); an optional dashed
    reference line (e.g. the full-data score)."""
    fig, ax = _figure(6.5, 3.8)
    for name, (x, y, err) in series.items():
        ax.errorbar(np.asarray(x) * 100, y, yerr=err, marker="o", ms=3, capsize=2, label=name)
    if reference is not None:
        ax.axhline(reference, color="black", linestyle="--", linewidth=1, label="full data")
    ax.set_xscale("log")
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel("budget (% of examples)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=2)
    return figure_png(fig)


def histogram(values, title: str, xlabel: str, bins: int = 40) -> MetadataValue:
    fig, ax = _figure(6, 3.2, fixed=True)
    counts, edges = np.histogram(np.asarray(values, dtype=np.float64), bins=bins)
    ax.stairs(counts, edges, fill=True, color="#3b6ea8")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    ax.set_title(title)
    return figure_markdown(fig, title)


def _bars(ax, x0: float, width: float, values, fill: bool = True, **style) -> None:
    """One bar per value at x0 + i (width `width`), or one step line (filled if `fill`) when
    there are many."""
    values = np.asarray(values, dtype=np.float64)
    if values.size > MAX_BARS:
        ax.stairs(values, x0 + np.arange(values.size + 1) - 0.5, fill=fill, **style)
    else:
        ax.bar(x0 + np.arange(values.size), values, width=width, **style)


def bars(labels, values, title: str, ylabel: str) -> MetadataValue:
    fig, ax = _figure(max(4, 0.18 * min(len(values), MAX_BARS) + 2), 3.2, fixed=len(labels) > 30)
    _bars(ax, 0.0, 0.8, values, color="#3b6ea8")
    if len(labels) <= 30:
        ax.set_xticks(np.arange(len(values)), [str(x) for x in labels], rotation=90, fontsize=7)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    return figure_markdown(fig, title)


def line(values, title: str, xlabel: str, ylabel: str) -> MetadataValue:
    fig, ax = _figure(6, 3.2)
    ax.plot(np.arange(1, len(values) + 1), values, marker="o", ms=3)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    return figure_markdown(fig, title)


def grouped_shares(labels, series: dict[str, np.ndarray], title: str) -> MetadataValue:
    fig, ax = _figure(max(5, 0.25 * min(len(labels), MAX_BARS) + 2), 3.4)
    many = len(labels) > MAX_BARS
    width = 0.8 / max(1, len(series))
    for i, (name, vals) in enumerate(series.items()):
        # many clusters: overlaid step lines (outlines only, so every series stays visible)
        _bars(ax, 0.0 if many else i * width, width, vals, fill=not many, label=name)
    ax.set_xlabel("cluster")
    ax.set_ylabel("share")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return figure_markdown(fig, title)


def markdown_table(header: list[str], rows: list[list]) -> str:
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(out)
