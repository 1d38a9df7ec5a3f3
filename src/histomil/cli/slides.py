"""`histomil preprocess` and `histomil synth slides`."""

from __future__ import annotations

from pathlib import Path

import typer

from histomil.cli._app import (
    EXECUTOR_HELP,
    RAY_ADDRESS_HELP,
    RAY_TIMEOUT_HELP,
    app,
    cpus_per_task_option,
    deprecated,
    synth_app,
    user_errors,
)

LEVEL0_MPP_HELP = "Level-0 um/px of the slides (only when their metadata lacks it)."


@app.command()
def preprocess(
    slides: list[Path] = typer.Argument(
        ..., help="Slide files, folders of slides, or manifest CSVs (slide_path [, mpp])."
    ),
    out: Path = typer.Option(
        ..., "--out", metavar="DIR", help="Output folder (patches/, tissue/, thumbnails/)."
    ),
    patch_size: int = typer.Option(224, "--patch-size", help="Patch side in px at the target."),
    target_mpp: float | None = typer.Option(
        None, "--target-mpp", help="Target resolution of the patches in um/px (default 0.5 = 20x)."
    ),
    target_magnification: float | None = typer.Option(
        None, "--target-magnification", help="Target magnification instead (20 = 0.5 um/px)."
    ),
    level0_mpp: float | None = typer.Option(None, "--level0-mpp", help=LEVEL0_MPP_HELP),
    min_tissue: float = typer.Option(0.05, "--min-tissue", help="Keep patches with >= this."),
    segmentation: str = typer.Option(
        "saturation", "--segmentation", help="saturation (ink-robust) | otsu (the paper's)."
    ),
    backend: str | None = typer.Option(None, "--backend", help="openslide | tiffslide | pil."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Redo slides already done."),
    skip_errors: bool = typer.Option(
        False, "--skip-errors", help="Exit 0 even when some slides fail (they are reported)."
    ),
    workers: int = typer.Option(1, "--workers", help="Parallel tasks (slides)."),
    executor: str = typer.Option("local", "--executor", help=EXECUTOR_HELP),
    ray_address: str | None = typer.Option(None, "--ray-address", help=RAY_ADDRESS_HELP),
    ray_timeout: float = typer.Option(30.0, "--ray-timeout", help=RAY_TIMEOUT_HELP),
    cpus_per_task: float = cpus_per_task_option("slide"),
    old_mpp: float | None = typer.Option(None, "--mpp", hidden=True),
    old_magnification: float | None = typer.Option(None, "--magnification", hidden=True),
    old_slide_mpp: float | None = typer.Option(None, "--slide-mpp", hidden=True),
) -> None:
    """Segment tissue and tile slides into patch coordinate files."""
    from histomil.api import preprocess as run

    target_mpp = deprecated("--mpp", "--target-mpp", old_mpp, target_mpp)
    target_magnification = deprecated(
        "--magnification", "--target-magnification", old_magnification, target_magnification
    )
    level0_mpp = deprecated("--slide-mpp", "--level0-mpp", old_slide_mpp, level0_mpp)
    if target_mpp is not None and target_magnification is not None:
        raise typer.BadParameter("give either --target-mpp or --target-magnification, not both")
    with user_errors():
        result = run(
            slides,
            out,
            patch_size=patch_size,
            target_mpp=target_mpp,
            target_magnification=target_magnification,
            level0_mpp=level0_mpp,
            min_tissue=min_tissue,
            segmentation=segmentation,
            backend=backend,
            overwrite=overwrite,
            skip_errors=skip_errors,
            workers=workers,
            executor=executor,
            ray_address=ray_address,
            ray_timeout=ray_timeout,
            cpus_per_task=cpus_per_task,
        )
    summary = ", ".join(f"{v} {k}" for k, v in result.counts.items())
    n_slides = sum(result.counts.values())  # not result.n_slides: that builds the DataFrame
    typer.echo(f"{n_slides} slide(s): {summary}; {result.n_patches} patches")
    typer.echo(f"outputs in {result.out} (status table: {result.status_file})")


@synth_app.command("slides")
def synth_slides(
    out: Path = typer.Option(
        ..., "--out", metavar="DIR", help="Output folder (slides/ and manifest.csv)."
    ),
    n: int = typer.Option(4, "--n", help="Number of slides."),
    seed: int = typer.Option(0, "--seed", help="Seed; the same seed gives the same slides."),
    size: str = typer.Option("2000", "--size", help="Level-0 size: W (4:3) or WxH, in px."),
    positive_fraction: float = typer.Option(0.5, "--positive-fraction", help="Share positive."),
    level0_mpp: float = typer.Option(
        0.5, "--level0-mpp", help="Level-0 um/px of the slides (written into the TIFF)."
    ),
    tiff_layout: str = typer.Option(
        "multipage", "--tiff-layout", help="TIFF pyramid layout: multipage | subifd | flat."
    ),
    compression: str = typer.Option("jpeg", "--compression", help="jpeg | deflate."),
    artefacts: bool = typer.Option(True, "--artefacts/--no-artefacts", help="Pen, faint tissue."),
    old_mpp: float | None = typer.Option(None, "--mpp", hidden=True),
    old_layout: str | None = typer.Option(None, "--layout", hidden=True),
) -> None:
    """Write synthetic pyramidal TIFF slides, lesion annotations (XML, GeoJSON) and a manifest."""
    from histomil.synth.slides import SlideSynthConfig, make_synthetic_slides, parse_size

    level0_mpp = deprecated("--mpp", "--level0-mpp", old_mpp, level0_mpp, default=0.5)
    # --layout names extract's output layout (histomil|clam|trident); here it was the TIFF's
    tiff_layout = deprecated("--layout", "--tiff-layout", old_layout, tiff_layout, "multipage")
    try:
        config = SlideSynthConfig(
            size=parse_size(size),
            mpp=level0_mpp,
            layout=tiff_layout,
            compression=compression,
            artefacts=artefacts,
        )
        manifest = make_synthetic_slides(out, n, seed, config, positive_fraction)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    typer.echo(f"wrote {n} slide(s) to {out / 'slides'}; manifest {manifest}")
