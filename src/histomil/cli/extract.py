"""`histomil extract`: patch files -> bag files of patch features."""

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
    user_errors,
)


@app.command()
def extract(
    patches: Path = typer.Option(
        ..., "--patches", metavar="DIR", help="Folder of patch files (<slide_id>.h5)."
    ),
    out: Path = typer.Option(
        ..., "--out", metavar="DIR", help="Output folder; bags go to OUT/bags/<slide_id>.h5."
    ),
    encoder: str = typer.Option(
        "resnet50_trunc",
        "--encoder",
        help="resnet50_trunc | resnet50 | uni | uni2_h | conch_v15 | virchow | virchow2 | "
        "gigapath | h_optimus_0 | h_optimus_1 | phikon_v2 | lunit_vits8 | timm:<name>.",
    ),
    weights: Path | None = typer.Option(
        None,
        "--weights",
        metavar="FILE",
        help="Checkpoint in the published layout (else $HISTOMIL_WEIGHTS_<NAME>, "
        "$HISTOMIL_WEIGHTS_FILE or the local caches; never downloaded).",
    ),
    random_weights: bool = typer.Option(
        False, "--random-weights", help="Use random weights (tests/demos only; recorded)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed for --random-weights."),
    batch_size: int = typer.Option(64, "--batch-size", help="Patches per forward pass."),
    readers: int = typer.Option(2, "--readers", help="Patch-reading processes (0 = none)."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda."),
    precision: str = typer.Option(
        "auto",
        "--precision",
        help="Compute precision: auto | float32 | bfloat16 | float16 (float16 on CUDA only).",
    ),
    dtype: str = typer.Option("float32", "--dtype", help="Stored features: float32 | float16."),
    export_pt: bool = typer.Option(False, "--export-pt", help="Also write CLAM pt_files/<id>.pt."),
    layout: str = typer.Option(
        "histomil",
        "--layout",
        help="histomil (OUT/bags) | clam (OUT/h5_files + pt_files) | trident "
        "(OUT/features_<encoder>).",
    ),
    slides: Path | None = typer.Option(
        None,
        "--slides",
        metavar="DIR",
        help="Folder holding the slides when they moved since preprocess.",
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Redo slides already done."),
    skip_errors: bool = typer.Option(
        False, "--skip-errors", help="Exit 0 even when some slides fail (see OUT/extract.csv)."
    ),
    executor: str = typer.Option("local", "--executor", help=EXECUTOR_HELP),
    ray_address: str | None = typer.Option(None, "--ray-address", help=RAY_ADDRESS_HELP),
    ray_timeout: float = typer.Option(30.0, "--ray-timeout", help=RAY_TIMEOUT_HELP),
    cpus_per_task: float = cpus_per_task_option("slide"),
    old_float16: bool = typer.Option(False, "--float16", hidden=True),
    old_workers: int | None = typer.Option(None, "--workers", hidden=True),
) -> None:
    """Encode every patch of every slide into OUT/bags/<slide_id>.h5 (skips slides done)."""
    from histomil.api import extract as run

    dtype = deprecated("--float16", "--dtype float16", "float16" if old_float16 else None, dtype,
                       default="float32")  # fmt: skip
    readers = deprecated("--workers (patch readers)", "--readers", old_workers, readers, default=2)
    with user_errors():
        result = run(
            patches,
            out,
            encoder=encoder,
            weights=weights,
            random_weights=random_weights,
            seed=seed,
            batch_size=batch_size,
            readers=readers,
            device=device,
            precision=precision,
            dtype=dtype,
            export_pt=export_pt,
            slides=slides,
            overwrite=overwrite,
            layout=layout,
            skip_errors=skip_errors,
            executor=executor,
            ray_address=ray_address,
            ray_timeout=ray_timeout,
            cpus_per_task=cpus_per_task,
        )
    counts = {s: result.counts.get(s, 0) for s in ("done", "skipped", "failed")}
    typer.echo(
        f"extract: {counts['done']} done, {counts['skipped']} skipped, {counts['failed']} failed "
        f"-> {result.bags_dir} (status: {result.status_file})"
    )
