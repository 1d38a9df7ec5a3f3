"""`histomil label`: patch labels, overlaps and attention targets from expert annotations."""

from __future__ import annotations

from pathlib import Path

import typer

from histomil.cli._app import (
    EXECUTOR_HELP,
    RAY_ADDRESS_HELP,
    RAY_TIMEOUT_HELP,
    app,
    cpus_per_task_option,
    user_errors,
)


@app.command()
def label(
    patches: Path = typer.Option(
        ..., "--patches", metavar="DIR", help="Folder of patch files (<slide_id>.h5)."
    ),
    annotations: Path = typer.Option(
        ...,
        "--annotations",
        metavar="PATH",
        help="An annotation file (.xml/.geojson/.json), a folder of <slide_id>.<ext> files, "
        "or a manifest CSV with label and annotation_path columns.",
    ),
    out: Path | None = typer.Option(
        None,
        "--out",
        metavar="DIR",
        help="Output folder (label.csv, labels_geojson/). Without it the outputs go into "
        "--patches (deprecated).",
    ),
    manifest: Path | None = typer.Option(
        None, "--manifest", metavar="FILE", help="Manifest CSV giving slide labels."
    ),
    padding_px: float | None = typer.Option(
        None, "--padding-px", help="Grow lesions by this many level-0 pixels."
    ),
    padding_um: float | None = typer.Option(
        None, "--padding-um", help="Grow lesions by this many micrometres (uses level-0 mpp)."
    ),
    min_overlap: float = typer.Option(
        0.05, "--min-overlap", help="Label 1 where the lesion covers more than this fraction."
    ),
    unannotated: str = typer.Option(
        "unknown",
        "--unannotated",
        help="Slides without label and annotation file: unknown (-1) or negative (0).",
    ),
    qupath: bool = typer.Option(
        False, "--qupath", help="Also write OUT/labels_geojson/<slide_id>.geojson for QuPath."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Redo slides already labelled."),
    skip_errors: bool = typer.Option(
        False, "--skip-errors", help="Exit 0 even when some slides fail (see label.csv)."
    ),
    workers: int = typer.Option(1, "--workers", help="Parallel tasks (slides)."),
    executor: str = typer.Option("local", "--executor", help=EXECUTOR_HELP),
    ray_address: str | None = typer.Option(None, "--ray-address", help=RAY_ADDRESS_HELP),
    ray_timeout: float = typer.Option(30.0, "--ray-timeout", help=RAY_TIMEOUT_HELP),
    cpus_per_task: float = cpus_per_task_option("slide"),
) -> None:
    """Add patch_labels, overlap and attn_target to patch (and bag) files."""
    from histomil.api import label as run

    with user_errors():
        result = run(
            patches,
            annotations,
            out,
            manifest=manifest,
            padding_px=padding_px,
            padding_um=padding_um,
            min_overlap=min_overlap,
            unannotated=unannotated,
            qupath=qupath,
            overwrite=overwrite,
            skip_errors=skip_errors,
            workers=workers,
            executor=executor,
            ray_address=ray_address,
            ray_timeout=ray_timeout,
            cpus_per_task=cpus_per_task,
        )
    ok = result.counts.get("ok", 0)
    typer.echo(
        f"labelled {ok}/{result.n_slides} slide(s), {result.n_lesion} lesion patches; "
        f"status in {result.status_file}"
    )
