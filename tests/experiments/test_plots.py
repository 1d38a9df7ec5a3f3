"""Experiment figures carry a caption that says what they show (the report displays it)."""

from __future__ import annotations

from histomil.experiments.plots import Axes, Series, line_figure
from histomil.viz._figures import figure_caption


def test_line_figure_stores_a_descriptive_caption(tmp_path):
    series = [
        Series("AB-MIL", [0.1, 0.5], [0.7, 0.8], [0.05, 0.04]),
        Series("rank induction", [0.1, 0.5], [0.75, 0.85], [0.05, 0.03]),
    ]
    path = tmp_path / "low_data.png"
    line_figure(path, [(series, Axes("training fraction", "test AUROC", "Low data"))])
    caption = figure_caption(path)
    assert caption.startswith("Low data: test AUROC by training fraction for AB-MIL, rank")
    assert "sd over folds" in caption and "low_data" not in caption
