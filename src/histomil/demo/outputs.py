"""Demo outputs a pathologist looks at: heatmaps, a QuPath export and HTML reports."""

from __future__ import annotations

from pathlib import Path

from histomil._io import read_csv
from histomil.demo.settings import METHODS, DemoPaths


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
    the real slide into the results folder, with a micrometre scale bar and a stored caption,
    so the report shows them."""
    out = []
    sources = [(paths.preprocess, s, "synthetic", f"tiling_synthetic_{s}.png") for s in slide_ids]
    sources += [
        (paths.real, p.stem, "real", f"tiling_real_{p.name}")
        for p in sorted((paths.real / "thumbnails").glob("*.png"))
    ]
    for root, slide_id, kind, name in sources:
        src = root / "thumbnails" / f"{slide_id}.png"
        if src.is_file():
            out.append(
                annotate_overview(
                    src, root / "patches" / f"{slide_id}.h5", paths.results / name, kind
                )
            )
    return out


def annotate_overview(src: Path, patch_file: Path, dst: Path, kind: str) -> Path:
    """``dst``: the overview ``src`` with a scale bar (resolution and size from the patch file's
    ``level0_mpp``/``level0_width``; none when unknown) and a caption saying what it shows."""
    import h5py
    from PIL import Image

    from histomil.viz._figures import set_png_caption
    from histomil.viz._scalebar import draw_pil_scale_bar

    attrs: dict = {}
    if patch_file.is_file():
        with h5py.File(patch_file, "r") as f:
            attrs = dict(f.attrs)
    slide_id = str(attrs.get("slide_id", src.stem))
    with Image.open(src) as img:
        img = img.convert("RGB")
    mpp, width0 = attrs.get("level0_mpp"), attrs.get("level0_width")
    scale = ""
    if mpp and width0:
        draw_pil_scale_bar(img, float(mpp) * float(width0) / img.width)
        scale = " Scale bar in micrometres."
    img.save(dst, format="PNG")
    size = attrs.get("patch_size_level0")
    grid = f"{int(size)} x {int(size)} level-0 px patches" if size else "patches"
    return set_png_caption(
        dst,
        f"Preprocessing of the {kind} slide {slide_id}: green, the tissue contour found by "
        f"segmentation; blue, the grid of {grid} kept for feature extraction.{scale}",
    )


def step_reports(paths: DemoPaths, title: str) -> tuple[Path, dict[str, Path]]:
    """One HTML report per run and one for the results folder (table, figures, all runs)."""
    from histomil.viz import ReportOptions, build_report

    runs = {
        m: build_report(paths.run(m), options=ReportOptions(title=f"histomil demo: {m}"))
        for m in METHODS
    }
    report = build_report(paths.results, options=ReportOptions(title=title))
    return report, runs
