"""`histomil demo --quick` end to end through the CLI, its outputs, resume and settings checks."""

from __future__ import annotations

import json
import re
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from histomil.cli import app
from histomil.demo import QUICK, find_real_slide
from histomil.demo.settings import METHODS

runner = CliRunner()


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("demo") / "out"
    result = runner.invoke(app, ["demo", "--out", str(out), "--quick", "--seed", "0"])
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    return out, result.output


def test_quick_demo_prints_table_and_where_to_look(quick_demo):
    out, text = quick_demo
    flat = re.sub(r"\s+", " ", text)
    for name in ("AB-MIL", "Rank induction", "MHIM-v2"):
        assert name in flat
    assert "test AUROC" in flat and "±" in flat
    assert "RANDOM weights" in flat and "resnet50_trunc" in flat
    assert "Open first" in flat and "report.html" in flat and "heatmap_" in flat
    assert "synthetic slides" in flat and f"{QUICK.n_slides}/{QUICK.n_slides}" in flat  # bar
    # counts are integers listed once, never a mean over folds such as "n 14.667"
    assert re.search(r"each fold scored on its own test slides \(\d+(, \d+)+\)", flat)
    assert not re.search(r"\bn \d+\.\d+", flat)


def test_quick_demo_data_steps(quick_demo):
    out, _ = quick_demo
    manifest = pd.read_csv(out / "synthetic" / "manifest.csv")
    assert len(manifest) == QUICK.n_slides and manifest["label"].sum() == QUICK.n_slides // 2
    labels = pd.read_csv(out / "preprocess" / "labels" / "label.csv")
    assert (labels["status"] == "ok").all() and labels["n_lesion"].sum() > 0
    bags = sorted((out / "preprocess" / "bags").glob("*.h5"))
    assert len(bags) == QUICK.n_slides
    with h5py.File(bags[0], "r") as f:
        assert f["features"].shape[1] == 1024 and f.attrs["encoder_weights"] == "random"
        assert np.isfinite(f["features"][:]).all() and "patch_labels" in f
    if find_real_slide() is not None:
        assert (out / "real_slide" / "thumbnails" / "CMU-1-Small-Region.png").is_file()


def test_quick_demo_runs_and_metrics(quick_demo):
    out, _ = quick_demo
    results = pd.read_csv(out / "results" / "results.csv")
    assert list(results["method"]) == list(METHODS)
    for method in METHODS:
        run = out / "results" / "runs" / method
        metrics = json.loads((run / "metrics.json").read_text())
        aurocs = [f["test"]["auroc"] for f in metrics["folds"]]
        assert len(aurocs) == QUICK.folds
        assert all(0.0 <= a <= 1.0 for a in aurocs)
        assert (out / "results" / "configs" / f"{method}.yaml").is_file()
        assert (run / "report.html").is_file()
    config = (out / "results" / "configs" / "mhim_v2.yaml").read_text()
    assert str(out.resolve() / "results" / "runs" / "abmil") in config  # teacher from AB-MIL


def test_quick_demo_heatmaps_qupath_report(quick_demo):
    out, _ = quick_demo
    res = out / "results"
    heatmaps = sorted(p for p in res.glob("heatmap_*.png") if not p.stem.endswith("_montage"))
    assert len(heatmaps) >= len(METHODS)
    for png in heatmaps:
        with Image.open(png) as im:
            im.load()
            assert im.size[0] > 100 and im.size[1] > 100
    (geojson,) = res.glob("qupath_*.geojson")
    data = json.loads(geojson.read_text())
    slide_id = geojson.stem.split("_rank_induction")[0].removeprefix("qupath_")
    with h5py.File(out / "preprocess" / "bags" / f"{slide_id}.h5", "r") as f:
        n_patches = f["coords"].shape[0]
    kinds = [f["properties"]["objectType"] for f in data["features"]]
    assert kinds.count("detection") == n_patches and "annotation" in kinds
    html = (res / "report.html").read_text()
    assert "<img" in html and "AB-MIL" in html
    assert not re.search(r"""(src|href)=["'](https?:|//)""", html)
    # the top report links every run report; runs are not listed per fold as "pooled"
    links = {h for h in re.findall(r'href="([^"#][^"]*)"', html)}
    assert links == {f"runs/{m}/report.html" for m in METHODS}
    assert all((res / h).is_file() for h in links) and "folds/0" not in html
    captions = re.findall(r"<figcaption>([^<]*)</figcaption>", html)
    assert captions and not any(c.endswith(".png") or c.startswith("heatmap_") for c in captions)
    assert any("tissue contour" in c for c in captions)
    assert "Pooled over folds" not in html and "not pooled" in html  # fold-mean table labelled
    summary = json.loads((res / "demo_summary.json").read_text())
    assert summary["weights"] == "random" and len(summary["results"]) == len(METHODS)


def test_quick_demo_resumes_and_refuses_other_settings(quick_demo):
    out, _ = quick_demo
    before = {m: (out / "results" / "runs" / m / "metrics.json").read_text() for m in METHODS}
    result = runner.invoke(app, ["demo", "--out", str(out), "--quick", "--seed", "0"])
    assert result.exit_code == 0, result.output
    assert "resuming" in result.output
    extract = pd.read_csv(out / "preprocess" / "extract.csv")
    assert (extract["status"] == "skipped").all()
    labels = pd.read_csv(out / "preprocess" / "labels" / "label.csv")
    assert (labels["status"] == "skipped").all()
    for m in METHODS:
        after = json.loads((out / "results" / "runs" / m / "metrics.json").read_text())
        assert after["folds"] == json.loads(before[m])["folds"]
    other = runner.invoke(app, ["demo", "--out", str(out), "--quick", "--seed", "1"])
    assert other.exit_code == 1 and "error: " in other.output and "other settings" in other.output
    assert "Traceback" not in other.output


def test_demo_missing_weights_file(tmp_path):
    result = runner.invoke(
        app,
        ["demo", "--out", str(tmp_path / "d"), "--quick", "--weights", str(tmp_path / "no.pth")],
    )
    assert result.exit_code == 1 and "error: " in result.output
    assert "no such file" in result.output and "Traceback" not in result.output
