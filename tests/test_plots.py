"""The per-shard charts drawn with Pillow show what they claim: bar heights follow the counts."""

import base64
import io

import numpy as np
from PIL import Image

from curation_assets.plots import bars, histogram, step_chart

BAR = (0x3B, 0x6E, 0xA8)


def _bar_heights(png: bytes, columns) -> list[int]:
    """Pixels of bar colour in each given image column."""
    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    return [int(np.all(img[:, c] == BAR, axis=1).sum()) for c in columns]


def test_step_chart_bar_heights_are_proportional_to_the_values():
    png = step_chart([1.0, 2.0, 4.0, 0.0], [0, 1, 2, 3, 4], "t", "x", "y")
    img = Image.open(io.BytesIO(png))
    assert img.format == "PNG" and img.size == (540, 288)
    plot_left, plot_right = 64, 540 - 14
    centres = [int(plot_left + (i + 0.5) / 4 * (plot_right - plot_left)) for i in range(4)]
    h = _bar_heights(png, centres)
    assert h[3] == 0 and h[0] > 10
    assert abs(h[1] / h[0] - 2) < 0.1 and abs(h[2] / h[0] - 4) < 0.2


def test_histogram_and_many_bars_embed_a_decodable_png_in_markdown():
    for value in (histogram(np.random.default_rng(0).normal(size=1000), "norms", "L2 norm"),
                  bars(np.arange(500), np.arange(500.0), "members per cluster", "members", "cluster")):
        text = value.value
        assert text.startswith("### ")
        data = base64.b64decode(text.split("base64,", 1)[1].rstrip(")"))
        assert Image.open(io.BytesIO(data)).format == "PNG"
        assert max(_bar_heights(data, range(64, 526))) > 100  # the tallest bar fills most of the plot
