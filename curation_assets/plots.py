"""Plots as PNG embedded in markdown metadata (Dagster has no plot metadata type)."""

from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from dagster import MetadataValue  # noqa: E402
from PIL import Image, ImageDraw, ImageFont  # noqa: E402


# Above this many bars a plot is drawn as one filled step line: one artist instead of one patch
# per bar (a 1,000-cluster bar chart took ~1 s to render, once per shard and run).
MAX_BARS = 60


def figure_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)  # laid out by the figure's constrained layout: one render
    plt.close(fig)
    return buf.getvalue()


def _figure(width: float, height: float):
    """A figure and its axes, laid out by constrained layout."""
    return plt.subplots(figsize=(width, height), layout="constrained")


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


def _ticks(lo: float, hi: float, most: int = 6) -> np.ndarray:
    """Round tick values (steps of 1, 2, 2.5 or 5 x 10^k) inside [lo, hi]."""
    span = hi - lo if hi > lo else 1.0
    step = 10.0 ** np.floor(np.log10(span / most))
    step *= next(f for f in (1, 2, 2.5, 5, 10) if span / (f * step) <= most)
    return np.arange(np.ceil(lo / step) * step, hi + step * 1e-9, step) + 0.0  # + 0.0: no "-0" label


def step_chart(heights, edges, title: str, xlabel: str, ylabel: str, size=(540, 288)) -> bytes:
    """A filled bar per [edges[i], edges[i+1]) as PNG, drawn with Pillow: ~10 ms against ~100 ms
    for the same chart in matplotlib, which made per-shard charts a visible part of a run (four
    a shard, 200 at 5M rows)."""
    heights = np.nan_to_num(np.asarray(heights, dtype=np.float64))
    edges = np.asarray(edges, dtype=np.float64)
    width, height = size
    left, right, top, bottom = 64, 14, 28, 44
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    small, large = ImageFont.load_default(size=11), ImageFont.load_default(size=13)
    x0, x1 = float(edges[0]), float(edges[-1]) if edges[-1] > edges[0] else float(edges[0]) + 1.0
    y1 = max(float(heights.max(initial=0.0)), 1e-12) * 1.05
    px = lambda v: left + (v - x0) / (x1 - x0) * (width - left - right)  # noqa: E731
    py = lambda v: height - bottom - v / y1 * (height - top - bottom)  # noqa: E731
    for h, a, b in zip(heights, edges[:-1], edges[1:]):
        if h > 0:
            draw.rectangle([px(a), py(h), max(px(b) - 1, px(a)), height - bottom], fill="#3b6ea8")
    draw.rectangle([left, top, width - right, height - bottom], outline="black")
    for t in _ticks(x0, x1):
        draw.line([px(t), height - bottom, px(t), height - bottom + 4], fill="black")
        draw.text((px(t), height - bottom + 6), f"{t:.6g}", fill="black", font=small, anchor="ma")
    for t in _ticks(0.0, y1):
        draw.line([left - 4, py(t), left, py(t)], fill="black")
        draw.text((left - 6, py(t)), f"{t:.6g}", fill="black", font=small, anchor="rm")
    draw.text(((left + width - right) / 2, 7), title, fill="black", font=large, anchor="ma")
    draw.text(((left + width - right) / 2, height - 16), xlabel, fill="black", font=small, anchor="ma")
    label = Image.new("RGB", (height - top - bottom, 14), "white")
    ImageDraw.Draw(label).text((label.width / 2, 0), ylabel, fill="black", font=small, anchor="ma")
    img.paste(label.rotate(90, expand=True), (2, top))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def histogram(values, title: str, xlabel: str, bins: int = 40) -> MetadataValue:
    counts, edges = np.histogram(np.asarray(values, dtype=np.float64), bins=bins)
    return png_markdown(step_chart(counts, edges, title, xlabel, "count"), title)


def _bars(ax, x0: float, width: float, values, **style) -> None:
    """One bar per value at x0 + i (width `width`), or one step line when there are many (a
    line, not a step patch: matplotlib bounds a patch vertex by vertex in Python, 0.4 s for three
    1,000-step outlines)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size > MAX_BARS:
        ax.plot(x0 + np.arange(values.size), values, drawstyle="steps-mid", linewidth=1, **style)
    else:
        ax.bar(x0 + np.arange(values.size), values, width=width, **style)


def bars(labels, values, title: str, ylabel: str, xlabel: str = "") -> MetadataValue:
    """One bar per label; over 30 labels (clusters, per shard) a step chart over their positions."""
    if len(labels) > 30:
        edges = np.arange(len(values) + 1) - 0.5
        return png_markdown(step_chart(values, edges, title, xlabel, ylabel), title)
    fig, ax = _figure(max(4, 0.18 * len(values) + 2), 3.2)
    _bars(ax, 0.0, 0.8, values, color="#3b6ea8")
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
        # many clusters: overlaid step lines, so every series stays visible
        _bars(ax, 0.0 if many else i * width, width, vals, label=name)
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
