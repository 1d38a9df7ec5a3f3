"""`histomil train`: cross-validated training from a YAML config."""

from __future__ import annotations

from pathlib import Path

import typer

from histomil.cli._app import EXECUTOR_HELP, app, cpus_per_task_option, executor_config, fail


@app.command()
def train(
    config: Path = typer.Option(..., "--config", help="Training config (YAML)."),
    out: Path = typer.Option(..., "--out", help="Run folder (outputs, checkpoints)."),
    workers: int = typer.Option(1, "--workers", help="Folds trained in parallel (local)."),
    executor: str = typer.Option("local", "--executor", help=EXECUTOR_HELP),
    ray_address: str | None = typer.Option(
        None,
        "--ray-address",
        help="Ray cluster address (default: RAY_ADDRESS or a local instance).",
    ),
    cpus_per_task: float = cpus_per_task_option(),
    resume: bool = typer.Option(
        True, "--resume/--no-resume", help="Skip finished folds of an existing run."
    ),
) -> None:
    """Train and evaluate every fold; writes predictions.csv, metrics.json, attention files."""
    from histomil.executors import BatchError
    from histomil.training import ConfigError
    from histomil.training import train as run_training
    from histomil.viz.summary import metrics_summary

    try:
        result = run_training(
            config,
            out,
            executor_config(executor, workers, ray_address, cpus_per_task=cpus_per_task),
            resume=resume,
        )
    except (BatchError, ConfigError, FileExistsError, FileNotFoundError, ValueError) as exc:
        raise fail(str(exc)) from exc
    shown = metrics_summary(result.metrics)  # counts per fold as integers, never averaged
    typer.echo(
        f"{len(result.folds)} fold(s) -> {result.run_dir}" + (f" | test {shown}" if shown else "")
    )
