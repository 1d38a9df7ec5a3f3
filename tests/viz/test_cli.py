"""`histomil heatmap`, `export-qupath` and `report` parse arguments and call the library."""

from __future__ import annotations

import json

from PIL import Image
from typer.testing import CliRunner

from histomil.cli import app

runner = CliRunner()


def test_cli_commands(run_dir, tmp_path):
    png = tmp_path / "h.png"
    res = runner.invoke(app, ["heatmap", str(run_dir), "--slide", "slide_pos0", "--fold", "0",
                              "--scale", "raw", "--top-k", "2", "--out", str(png)])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "montage:" in res.output and Image.open(png).format == "PNG"
    geo = tmp_path / "q.geojson"
    res = runner.invoke(
        app, ["export-qupath", str(run_dir), "--slide", "slide_neg1", "--out", str(geo)]
    )
    assert res.exit_code == 0, res.output
    assert json.loads(geo.read_text())["type"] == "FeatureCollection"
    html = tmp_path / "r.html"
    res = runner.invoke(app, ["report", str(run_dir), "--out", str(html), "--n-boot", "20",
                              "--no-heatmaps"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert 'id="heatmaps"' not in html.read_text() and 'id="metrics"' in html.read_text()


def test_cli_errors_are_clean(run_dir, tmp_path):
    res = runner.invoke(app, ["heatmap", str(run_dir), "--slide", "nope"])
    assert res.exit_code == 1 and "no attention file for slide 'nope'" in res.output
    res = runner.invoke(app, ["heatmap", str(run_dir), "--slide", "slide_pos0", "--scale", "log"])
    assert res.exit_code == 1 and "unknown scale" in res.output
    res = runner.invoke(app, ["report", str(tmp_path)])
    assert res.exit_code == 1 and "neither a run" in res.output
