"""Demo outputs a pathologist looks at: heatmaps, a QuPath export and HTML reports."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from histomil._io import read_csv
from histomil.demo.settings import METHODS, DemoPaths


@dataclass
class DemoOutputs:
    """Files written by :func:`step_outputs` (the ones to open are listed first)."""

    report: Path | None = None
    run_reports: dict[str, Path] = field(default_factory=dict)
    heatmaps: list[Path] = field(default_factory=list)
    qupath: Path | None = None
    figures: list[Path] = field(default_factory=list)
    showcase: dict[str, str] = field(default_factory=dict)


def pick_slides(run: Path) -> dict[str, tuple[str, int]]:
    """The most confident positive and negative test slides of a run: ``{"positive": (slide_id,
    fold), "negative": ...}``, ranked by the predicted probability of the true class."""
    df = read_csv(run / "predictions.csv")
    test = df[df["split"] == "test"]
    out = {}
    for name, label in (("positive", 1), ("negative", 0)):
        rows = test[test["label"] == label]
        if len(rows):
            best = rows.loc[(rows["prob"] if label else -rows["prob"]).idxmax()]
            out[name] = (str(best["slide_id"]), int(best["fold"]))
    return out


def step_heatmaps(paths: DemoPaths, picks: dict[str, tuple[str, int]]) -> list[Path]:
    """Heatmaps (+ top/bottom patch montages) of the showcase positive slide for every method
    and of the showcase negative slide for rank induction, in the results folder."""
    from histomil.viz import HeatmapOptions, render_heatmap

    options = HeatmapOptions(top_k=6)
    jobs = [(m, picks["positive"]) for m in METHODS if "positive" in picks]
    if "negative" in picks:
        jobs.append(("rank_induction", picks["negative"]))
    out = []
    for method, (slide_id, fold) in jobs:
        png = paths.results / f"heatmap_{slide_id}_{method}.png"
        out.append(render_heatmap(paths.run(method), png, options, slide_id=slide_id, fold=fold))
    return out


def step_qupath(paths: DemoPaths, method: str, slide_id: str, fold: int) -> Path:
    """QuPath GeoJSON of one slide: patch detections with attention measurements, tissue and
    lesion polygons."""
    from histomil.viz import QuPathOptions, export_qupath

    options = QuPathOptions(tissue_path=paths.preprocess / "tissue" / f"{slide_id}.geojson")
    out = paths.results / f"qupath_{slide_id}_{method}.geojson"
    return export_qupath(paths.run(method), out, options, slide_id=slide_id, fold=fold)


def copy_tiling_figures(paths: DemoPaths, slide_ids: list[str]) -> list[Path]:
    """Copy preprocessing overviews (tissue contour + patch grid) of one synthetic slide and of
    the real slide into the results folder so the report shows them."""
    out = []
    sources = [
        (paths.preprocess / "thumbnails" / f"{s}.png", f"tiling_synthetic_{s}.png")
        for s in slide_ids
    ]
    sources += [
        (p, f"tiling_real_{p.name}") for p in sorted((paths.real / "thumbnails").glob("*.png"))
    ]
    for src, name in sources:
        if src.is_file():
            shutil.copyfile(src, paths.results / name)
            out.append(paths.results / name)
    return out


def step_reports(paths: DemoPaths, title: str) -> tuple[Path, dict[str, Path]]:
    """One HTML report per run and one for the results folder (table, figures, all runs)."""
    from histomil.viz import ReportOptions, build_report

    runs = {
        m: build_report(paths.run(m), options=ReportOptions(title=f"histomil demo: {m}"))
        for m in METHODS
    }
    report = build_report(paths.results, options=ReportOptions(title=title))
    return report, runs
