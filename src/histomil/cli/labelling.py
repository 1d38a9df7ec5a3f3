"""`histomil label`: patch labels, overlaps and attention targets from expert annotations."""

from __future__ import annotations

from pathlib import Path

import typer

from histomil.cli._app import EXECUTOR_HELP, app, cpus_per_task_option, executor_config, fail


@app.command()
def label(
    patches: Path = typer.Option(..., "--patches", help="Directory of patch files (<id>.h5)."),
    annotations: Path = typer.Option(
        ...,
        "--annotations",
        help="Directory of <id>.xml/.geojson/.json annotation files, or a manifest CSV "
        "with label and annotation_path columns.",
    ),
    manifest: Path | None = typer.Option(
        None, "--manifest", help="Manifest CSV giving slide labels (with an annotation dir)."
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
        False, "--qupath", help="Also write DIR/labels_geojson/<id>.geojson for QuPath."
    ),
    workers: int = typer.Option(1, "--workers", help="Parallel worker processes."),
    executor: str = typer.Option("local", "--executor", help=EXECUTOR_HELP),
    ray_address: str | None = typer.Option(
        None,
        "--ray-address",
        help="Ray cluster address (default: RAY_ADDRESS or a local instance).",
    ),
    cpus_per_task: float = cpus_per_task_option(),
    skip_errors: bool = typer.Option(
        False, "--skip-errors", help="Exit 0 even when some slides fail (see label.csv)."
    ),
) -> None:
    """Add patch_labels, overlap and attn_target to patch (and bag) files."""
    from histomil.annotations.labelling import LabelConfig, label_patches_dir
    from histomil.executors import BatchError

    exec_config = executor_config(executor, workers, ray_address, cpus_per_task=cpus_per_task)
    try:
        config = LabelConfig(
            padding_px=padding_px,
            padding_um=padding_um,
            min_overlap=min_overlap,
            unannotated=unannotated,
            qupath=qupath,
        )
        table = label_patches_dir(patches, annotations, manifest, config, exec_config, skip_errors)
    except (ValueError, FileNotFoundError, BatchError) as exc:
        raise fail(str(exc)) from exc
    ok = int((table["status"] == "ok").sum())
    typer.echo(
        f"labelled {ok}/{len(table)} slide(s), {int(table['n_lesion'].sum())} lesion patches; "
        f"status in {patches / 'label.csv'}"
    )
