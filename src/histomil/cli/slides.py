"""`histomil preprocess` and `histomil synth slides`."""

from __future__ import annotations

from pathlib import Path

import typer

from histomil.cli._app import (
    EXECUTOR_HELP,
    app,
    cpus_per_task_option,
    executor_config,
    fail,
    synth_app,
)


@app.command()
def preprocess(
    slides: list[Path] = typer.Argument(
        ..., help="Slide files, folders of slides, or manifest CSVs (slide_path [, mpp])."
    ),
    out: Path = typer.Option(..., "--out", help="Job directory (patches/, tissue/, thumbnails/)."),
    patch_size: int = typer.Option(224, "--patch-size", help="Patch side in px at the target."),
    mpp: float | None = typer.Option(
        None, "--mpp", help="Target resolution in um/px (default 0.5 = 20x)."
    ),
    magnification: float | None = typer.Option(
        None, "--magnification", help="Target magnification instead of --mpp (20 = 0.5 um/px)."
    ),
    slide_mpp: float | None = typer.Option(
        None, "--slide-mpp", help="Level-0 um/px of the slides when their metadata lacks it."
    ),
    min_tissue: float = typer.Option(0.05, "--min-tissue", help="Keep patches with >= this."),
    segmentation: str = typer.Option("otsu", "--segmentation", help="otsu | saturation."),
    backend: str | None = typer.Option(None, "--backend", help="openslide | tiffslide | pil."),
    workers: int = typer.Option(1, "--workers", help="Parallel slide processes."),
    executor: str = typer.Option("local", "--executor", help=EXECUTOR_HELP),
    ray_address: str | None = typer.Option(
        None,
        "--ray-address",
        help="Ray cluster address (default: RAY_ADDRESS or a local instance).",
    ),
    cpus_per_task: float = cpus_per_task_option(),
    skip_errors: bool = typer.Option(
        False, "--skip-errors", help="Exit 0 even when some slides fail (they are reported)."
    ),
) -> None:
    """Segment tissue and tile slides into patch coordinate files."""
    from histomil.executors import BatchError
    from histomil.slides.preprocess import PreprocessConfig, preprocess_slides
    from histomil.slides.tiling import mpp_from_magnification
    from histomil.slides.tissue import SegmentationConfig

    if mpp is not None and magnification is not None:
        raise fail("give either --mpp or --magnification, not both")
    try:
        target = mpp if mpp is not None else 0.5
        if magnification is not None:
            target = mpp_from_magnification(magnification)
        config = PreprocessConfig(
            patch_size=patch_size,
            target_mpp=target,
            min_tissue=min_tissue,
            segmentation=SegmentationConfig(method=segmentation),
            backend=backend,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    exec_config = executor_config(executor, workers, ray_address, cpus_per_task=cpus_per_task)
    try:
        table = preprocess_slides(slides, out, config, exec_config, slide_mpp, skip_errors)
    except BatchError as exc:
        raise fail(str(exc)) from exc
    except (FileNotFoundError, ValueError) as exc:
        raise fail(str(exc)) from exc
    counts = table["status"].value_counts().to_dict()
    summary = ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
    typer.echo(
        f"{len(table)} slide(s): {summary}; {int(table['n_patches'].clip(lower=0).sum())} patches"
    )
    typer.echo(f"outputs in {out} (status table: {out / 'preprocess.csv'})")


@synth_app.command("slides")
def synth_slides(
    out: Path = typer.Option(..., "--out", help="Output folder (slides/ and manifest.csv)."),
    n: int = typer.Option(4, "--n", help="Number of slides."),
    seed: int = typer.Option(0, "--seed", help="Seed; the same seed gives the same slides."),
    size: str = typer.Option("2000", "--size", help="Level-0 size: W (4:3) or WxH, in px."),
    positive_fraction: float = typer.Option(0.5, "--positive-fraction", help="Share positive."),
    mpp: float = typer.Option(0.5, "--mpp", help="Level-0 um/px written into the TIFF."),
    layout: str = typer.Option("multipage", "--layout", help="multipage | subifd | flat."),
    compression: str = typer.Option("jpeg", "--compression", help="jpeg | deflate."),
    artefacts: bool = typer.Option(True, "--artefacts/--no-artefacts", help="Pen, faint tissue."),
) -> None:
    """Write synthetic pyramidal TIFF slides, lesion annotations (XML, GeoJSON) and a manifest."""
    from histomil.slides.synth import SynthConfig, make_synthetic_slides, parse_size

    try:
        config = SynthConfig(
            size=parse_size(size),
            mpp=mpp,
            layout=layout,
            compression=compression,
            artefacts=artefacts,
        )
        manifest = make_synthetic_slides(out, n, seed, config, positive_fraction)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    typer.echo(f"wrote {n} slide(s) to {out / 'slides'}; manifest {manifest}")
