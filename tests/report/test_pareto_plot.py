"""The quantization Pareto plot (report/plots.pareto): a real PNG from matplotlib, None without points."""

from __future__ import annotations

import io

from edgetune.report.plots import pareto

ROWS = [
    {"build": "gpu", "kind": "GPU build", "size_mb": None, "accuracy": 0.85},
    {"build": "Q8_0", "kind": "plain", "size_mb": 144.8, "accuracy": 0.86, "kld_mean": 0.008},
    {"build": "Q4_0+imatrix", "kind": "imatrix", "size_mb": 91.9, "accuracy": 0.77, "kld_mean": 0.52},
    {"build": "auto:Q4_0-size", "kind": "searched mix", "size_mb": 91.5, "accuracy": 0.82, "kld_mean": 0.2},
    {"build": "Q4_0+recovery", "kind": "recovery adapter", "size_mb": 96.0, "accuracy": 0.83, "kld_mean": 0.15},
]


def test_pareto_plot_is_a_png_with_both_panels():
    from PIL import Image

    png = pareto(ROWS)
    assert png is not None and png.startswith(b"\x89PNG")
    width, height = Image.open(io.BytesIO(png)).size
    assert width > 1.5 * height  # two panels side by side


def test_no_points_no_plot():
    assert pareto(ROWS[:1]) is None
    assert pareto([]) is None
