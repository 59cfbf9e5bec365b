"""Plots as PNG embedded in markdown metadata (Dagster has no plot metadata type)."""

from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from dagster import MetadataValue  # noqa: E402


def figure_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def png_markdown(png: bytes, title: str) -> MetadataValue:
    data = base64.b64encode(png).decode("ascii")
    return MetadataValue.md(f"### {title}\n\n![{title}](data:image/png;base64,{data})")


def figure_markdown(fig, title: str) -> MetadataValue:
    return png_markdown(figure_png(fig), title)


def metric_vs_budget(series: dict[str, tuple[list, list, list | None]], title: str, ylabel: str,
                     log_y: bool = False, reference: float | None = None) -> bytes:
    """One line per method: (budget fractions, values, error bars or None); an optional dashed
    reference line (e.g. the full-data score)."""
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
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
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.hist(np.asarray(values, dtype=np.float64), bins=bins, color="#3b6ea8")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    ax.set_title(title)
    return figure_markdown(fig, title)


def bars(labels, values, title: str, ylabel: str) -> MetadataValue:
    fig, ax = plt.subplots(figsize=(max(4, 0.18 * len(values) + 2), 3.2))
    ax.bar(np.arange(len(values)), values, color="#3b6ea8")
    if len(labels) <= 30:
        ax.set_xticks(np.arange(len(values)), [str(x) for x in labels], rotation=90, fontsize=7)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    return figure_markdown(fig, title)


def line(values, title: str, xlabel: str, ylabel: str) -> MetadataValue:
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.plot(np.arange(1, len(values) + 1), values, marker="o", ms=3)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    return figure_markdown(fig, title)


def grouped_shares(labels, series: dict[str, np.ndarray], title: str) -> MetadataValue:
    fig, ax = plt.subplots(figsize=(max(5, 0.25 * len(labels) + 2), 3.4))
    width = 0.8 / max(1, len(series))
    x = np.arange(len(labels))
    for i, (name, vals) in enumerate(series.items()):
        ax.bar(x + i * width, vals, width=width, label=name)
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
