"""`histomil heatmap`, `histomil export-qupath` and `histomil report`."""

from __future__ import annotations

from pathlib import Path

import typer

from histomil.cli._app import app, deprecated, print_warning, user_errors

_SOURCE_HELP = (
    "A training run folder (with --slide-id), one attention file attention/<k>/<slide>.h5, or a "
    "bag file (histomil, CLAM h5_files/, TRIDENT features_<enc>/) together with --attention."
)
_ANNOTATIONS_HELP = (
    "Lesion annotation file, or a folder of <slide_id>.<ext> files (default: the file recorded "
    "when the slide was labelled)."
)


def _file_out(out: Path | None, suffix: str, new: str) -> tuple[Path | None, Path | None]:
    """``(folder, file)``: ``--out`` names a folder; a ``suffix`` file is the old form."""
    if out is not None and out.suffix.lower() == suffix:
        print_warning(
            f"--out {out.name} (a file) is deprecated and will be removed in the next release; "
            f"--out names a folder ({new})"
        )
        return None, out
    return out, None


@app.command()
def heatmap(
    source: Path = typer.Argument(..., help=_SOURCE_HELP),
    slide_id: str | None = typer.Option(
        None, "--slide-id", metavar="ID", help="Slide id (needed for a run folder)."
    ),
    fold: str | None = typer.Option(
        None, "--fold", help="Fold (default: where the slide was tested)."
    ),
    scale: str = typer.Option("percentile", "--scale", help="raw | percentile"),
    out: Path | None = typer.Option(
        None,
        "--out",
        metavar="DIR",
        help="Output folder (default RUN/heatmaps for a run; required for a bag file).",
    ),
    slide_path: Path | None = typer.Option(
        None, "--slide-path", metavar="FILE", help="The slide file (default: the recorded one)."
    ),
    annotations: Path | None = typer.Option(
        None, "--annotations", metavar="PATH", help=_ANNOTATIONS_HELP
    ),
    attention: Path | None = typer.Option(
        None, "--attention", metavar="FILE", help="Attention .npy/.h5 for a bag."
    ),
    top_k: int = typer.Option(8, "--top-k", help="Patches per montage row (0: no montage)."),
    patch_size_level0: int | None = typer.Option(
        None, "--patch-size-level0", help="Patch side in level-0 px, when not stored."
    ),
    old_slide: str | None = typer.Option(None, "--slide", hidden=True),
    old_annotation: Path | None = typer.Option(None, "--annotation", hidden=True),
) -> None:
    """Attention (and instance probability) over the slide thumbnail, plus a top/bottom montage."""
    from histomil.api import heatmap as run

    slide_id = deprecated("--slide", "--slide-id", old_slide, slide_id)
    annotations = deprecated("--annotation", "--annotations", old_annotation, annotations)
    out_dir, out_file = _file_out(out, ".png", "RUN/heatmaps by default")
    with user_errors():
        if out_file is not None:
            out_dir = out_file.parent
        result = run(
            source,
            out_dir,
            slide_id=slide_id,
            fold=fold,
            scale=scale,
            slide_path=slide_path,
            annotations=annotations,
            attention=attention,
            top_k=top_k,
            patch_size_level0=patch_size_level0,
        )
        png, montage = result.png, result.montage
        if out_file is not None and png != out_file.absolute():
            png = png.replace(out_file)
            if montage is not None:
                from histomil.viz.heatmap import montage_path_for

                montage = montage.replace(montage_path_for(out_file))
    typer.echo(f"heatmap: {png}")
    if montage is not None:
        typer.echo(f"montage: {montage}")


@app.command("export-qupath")
def export_qupath_cmd(
    source: Path = typer.Argument(..., help=_SOURCE_HELP),
    out: Path = typer.Option(
        ..., "--out", metavar="DIR", help="Output folder; writes OUT/<slide_id>.geojson."
    ),
    slide_id: str | None = typer.Option(
        None, "--slide-id", metavar="ID", help="Slide id (needed for a run folder)."
    ),
    fold: str | None = typer.Option(
        None, "--fold", help="Fold (default: where the slide was tested)."
    ),
    attention: Path | None = typer.Option(
        None, "--attention", metavar="FILE", help="Attention .npy/.h5 for a bag."
    ),
    annotations: Path | None = typer.Option(
        None, "--annotations", metavar="PATH", help=_ANNOTATIONS_HELP
    ),
    tissue: Path | None = typer.Option(
        None, "--tissue", metavar="FILE", help="Tissue GeoJSON (default: found next to the bags)."
    ),
    legacy: bool = typer.Option(False, "--legacy-measurements", help="QuPath 0.2/0.3 list form."),
    old_slide: str | None = typer.Option(None, "--slide", hidden=True),
    old_annotation: Path | None = typer.Option(None, "--annotation", hidden=True),
) -> None:
    """Patches as QuPath detections with attention/prediction measurements, plus annotations."""
    from histomil.api._common import annotation_file
    from histomil.viz.attention import load_attention
    from histomil.viz.qupath import QuPathOptions, export_qupath

    slide_id = deprecated("--slide", "--slide-id", old_slide, slide_id)
    annotations = deprecated("--annotation", "--annotations", old_annotation, annotations)
    out_dir, out_file = _file_out(out, ".geojson", "OUT/<slide_id>.geojson")
    with user_errors():
        data = load_attention(source, slide_id, fold, attention, None)
        options = QuPathOptions(
            tissue_path=tissue, annotation_path=annotation_file(annotations, data.slide_id),
            attention_path=attention, legacy_measurements=legacy,
        )  # fmt: skip
        if out_file is None:
            out_file = out_dir / f"{data.slide_id}.geojson"
        path = export_qupath(source, out_file, options, slide_id=slide_id, fold=fold)
    typer.echo(f"QuPath GeoJSON: {path} (File > Import objects, or drag onto the image)")


@app.command()
def report(
    directory: Path = typer.Argument(..., help="A training run or an experiment folder."),
    out: Path | None = typer.Option(
        None, "--out", metavar="DIR", help="Output folder of report.html (default: DIRECTORY)."
    ),
    n_boot: int = typer.Option(1000, "--n-boot", help="Bootstrap resamples for the CIs."),
    no_heatmaps: bool = typer.Option(False, "--no-heatmaps", help="Skip the heatmap section."),
) -> None:
    """One self-contained HTML report (config, metrics with CIs, curves, heatmaps, tables)."""
    from histomil.viz.report import ReportOptions, build_report

    out_dir, out_file = _file_out(out, ".html", "OUT/report.html")
    if out_dir is not None:
        out_file = out_dir / "report.html"
    with user_errors():
        path = build_report(
            directory, out_file, ReportOptions(n_boot=n_boot, heatmaps=not no_heatmaps)
        )
    typer.echo(f"report: {path}")
