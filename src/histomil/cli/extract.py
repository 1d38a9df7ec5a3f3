"""`histomil extract`: patch files -> bag files of patch features."""

from __future__ import annotations

from pathlib import Path

import typer

from histomil.cli._app import EXECUTOR_HELP, app, cpus_per_task_option, executor_config, fail


@app.command()
def extract(
    patches: Path = typer.Option(..., "--patches", help="Folder of patch files (<id>.h5)."),
    out: Path = typer.Option(..., "--out", help="Output folder; bags go to OUT/bags/<id>.h5."),
    encoder: str = typer.Option(
        "resnet50_trunc",
        "--encoder",
        help="resnet50_trunc | resnet50 | uni | uni2_h | conch_v15 | virchow | virchow2 | "
        "gigapath | h_optimus_0 | h_optimus_1 | phikon_v2 | lunit_vits8 | timm:<name>.",
    ),
    weights: Path | None = typer.Option(
        None,
        "--weights",
        help="Checkpoint in the published layout (else $HISTOMIL_WEIGHTS_<NAME>, "
        "$HISTOMIL_WEIGHTS_FILE or the local caches; never downloaded).",
    ),
    random_weights: bool = typer.Option(
        False, "--random-weights", help="Use random weights (tests/demos only; recorded)."
    ),
    batch_size: int = typer.Option(64, "--batch-size", help="Patches per forward pass."),
    workers: int = typer.Option(2, "--workers", help="Patch-reading worker processes (0 = none)."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda."),
    precision: str = typer.Option(
        "auto", "--precision", help="auto | fp32 | bf16 | fp16 (fp16 on CUDA only)."
    ),
    float16: bool = typer.Option(False, "--float16", help="Store features as float16."),
    export_pt: bool = typer.Option(False, "--export-pt", help="Also write CLAM pt_files/<id>.pt."),
    layout: str = typer.Option(
        "histomil",
        "--layout",
        help="histomil (OUT/bags) | clam (OUT/h5_files + pt_files) | trident "
        "(OUT/features_<encoder>).",
    ),
    slides: Path | None = typer.Option(
        None, "--slides", help="Folder holding the slides when they moved since preprocess."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Re-extract slides already done."),
    skip_errors: bool = typer.Option(
        False, "--skip-errors", help="Exit 0 even when some slides fail (see OUT/extract.csv)."
    ),
    executor: str = typer.Option("local", "--executor", help=EXECUTOR_HELP),
    ray_address: str | None = typer.Option(None, "--ray-address", help="Ray cluster address."),
    cpus_per_task: float = cpus_per_task_option(),
    seed: int = typer.Option(0, "--seed", help="Seed for --random-weights."),
) -> None:
    """Encode every patch of every slide into OUT/bags/<slide_id>.h5 (skips slides done)."""
    from histomil.executors import BatchError
    from histomil.features import EncoderError, ExtractConfig, WeightsError, WeightsSpec
    from histomil.features.extract import bag_path_for, extract_dir

    try:
        config = ExtractConfig(
            encoder=encoder,
            weights=WeightsSpec(path=weights, random=random_weights, seed=seed),
            batch_size=batch_size,
            workers=workers,
            device=device,
            precision=precision,
            storage_dtype="float16" if float16 else "float32",
            export_pt=export_pt,
            overwrite=overwrite,
            slides_dir=None if slides is None else str(slides),
            layout=layout,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    ex = executor_config(executor, 1, ray_address, cpus_per_task=cpus_per_task)
    try:
        rows = extract_dir(patches, out, config, ex, skip_errors=skip_errors)
    except (BatchError, EncoderError, WeightsError, FileNotFoundError, RuntimeError) as exc:
        raise fail(str(exc)) from exc
    counts = {s: sum(r["status"] == s for r in rows) for s in ("done", "skipped", "failed")}
    typer.echo(
        f"extract: {counts['done']} done, {counts['skipped']} skipped, {counts['failed']} failed "
        f"-> {bag_path_for(out, 'x', config).parent} (status: {out / 'extract.csv'})"
    )
