"""`histomil heatmap`, `histomil export-qupath` and `histomil report`."""

from __future__ import annotations

from pathlib import Path

import typer

from histomil.cli._app import app, fail

_SOURCE_HELP = (
    "A training run directory (with --slide), one attention file attention/<k>/<slide>.h5, or a "
    "bag file (histomil, CLAM h5_files/, TRIDENT features_<enc>/) together with --attention."
)


@app.command()
def heatmap(
    source: Path = typer.Argument(..., help=_SOURCE_HELP),
    slide: str | None = typer.Option(
        None, "--slide", help="Slide id (needed for a run directory)."
    ),
    fold: str | None = typer.Option(
        None, "--fold", help="Fold (default: where the slide was tested)."
    ),
    scale: str = typer.Option("percentile", "--scale", help="raw | percentile"),
    out: Path | None = typer.Option(
        None, "--out", help="PNG (default RUN/heatmaps/<slide>_fold<k>.png)."
    ),
    slide_path: Path | None = typer.Option(None, "--slide-path", help="Override the slide file."),
    annotation: Path | None = typer.Option(None, "--annotation", help="Lesion annotation file."),
    attention: Path | None = typer.Option(
        None, "--attention", help="Attention .npy/.h5 for a bag."
    ),
    top_k: int = typer.Option(8, "--top-k", help="Patches per montage row (0: no montage)."),
    patch_size_level0: int | None = typer.Option(
        None, "--patch-size-level0", help="When not stored."
    ),
) -> None:
    """Attention (and instance probability) over the slide thumbnail, plus a top/bottom montage."""
    from histomil.viz.attention import VizError
    from histomil.viz.heatmap import HeatmapOptions, montage_path_for, render_heatmap

    try:
        options = HeatmapOptions(
            scale=scale, top_k=top_k, slide_path=slide_path, annotation_path=annotation,
            attention_path=attention, patch_size_level0=patch_size_level0,
        )  # fmt: skip
        path = render_heatmap(source, out, options, slide_id=slide, fold=fold)
    except VizError as exc:
        raise fail(str(exc)) from exc
    typer.echo(f"heatmap: {path}")
    if montage_path_for(path).is_file():
        typer.echo(f"montage: {montage_path_for(path)}")


@app.command("export-qupath")
def export_qupath_cmd(
    source: Path = typer.Argument(..., help=_SOURCE_HELP),
    out: Path = typer.Option(..., "--out", help="GeoJSON file to write."),
    slide: str | None = typer.Option(
        None, "--slide", help="Slide id (needed for a run directory)."
    ),
    fold: str | None = typer.Option(
        None, "--fold", help="Fold (default: where the slide was tested)."
    ),
    attention: Path | None = typer.Option(
        None, "--attention", help="Attention .npy/.h5 for a bag."
    ),
    annotation: Path | None = typer.Option(None, "--annotation", help="Lesion annotation file."),
    tissue: Path | None = typer.Option(
        None, "--tissue", help="Tissue GeoJSON (default OUT/tissue/)."
    ),
    legacy: bool = typer.Option(False, "--legacy-measurements", help="QuPath 0.2/0.3 list form."),
) -> None:
    """Patches as QuPath detections with attention/prediction measurements, plus annotations."""
    from histomil.viz.attention import VizError
    from histomil.viz.qupath import QuPathOptions, export_qupath

    try:
        options = QuPathOptions(
            tissue_path=tissue, annotation_path=annotation, attention_path=attention,
            legacy_measurements=legacy,
        )  # fmt: skip
        path = export_qupath(source, out, options, slide_id=slide, fold=fold)
    except VizError as exc:
        raise fail(str(exc)) from exc
    typer.echo(f"QuPath GeoJSON: {path} (File > Import objects, or drag onto the image)")


@app.command()
def report(
    directory: Path = typer.Argument(..., help="A training run or an experiment directory."),
    out: Path | None = typer.Option(None, "--out", help="HTML file (default DIR/report.html)."),
    n_boot: int = typer.Option(1000, "--n-boot", help="Bootstrap resamples for the CIs."),
    no_heatmaps: bool = typer.Option(False, "--no-heatmaps", help="Skip the heatmap section."),
) -> None:
    """One self-contained HTML report (config, metrics with CIs, curves, heatmaps, tables)."""
    from histomil.viz.attention import VizError
    from histomil.viz.report import ReportOptions, build_report

    try:
        path = build_report(directory, out, ReportOptions(n_boot=n_boot, heatmaps=not no_heatmaps))
    except VizError as exc:
        raise fail(str(exc)) from exc
    typer.echo(f"report: {path}")
