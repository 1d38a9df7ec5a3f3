"""`histomil train`: cross-validated training from a YAML config."""

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
def train(
    config: Path = typer.Option(..., "--config", metavar="FILE", help="Training config (YAML)."),
    out: Path = typer.Option(
        ..., "--out", metavar="DIR", help="Output folder of the run (outputs, checkpoints)."
    ),
    resume: bool = typer.Option(
        True, "--resume/--no-resume", help="Skip finished folds of an existing run."
    ),
    workers: int = typer.Option(1, "--workers", help="Parallel tasks (folds)."),
    executor: str = typer.Option("local", "--executor", help=EXECUTOR_HELP),
    ray_address: str | None = typer.Option(None, "--ray-address", help=RAY_ADDRESS_HELP),
    ray_timeout: float = typer.Option(30.0, "--ray-timeout", help=RAY_TIMEOUT_HELP),
    cpus_per_task: float = cpus_per_task_option("fold"),
) -> None:
    """Train and evaluate every fold; writes predictions.csv, metrics.json, attention files."""
    from histomil.api import train as run
    from histomil.viz.summary import metrics_summary

    with user_errors():
        result = run(
            config,
            out,
            resume=resume,
            workers=workers,
            executor=executor,
            ray_address=ray_address,
            ray_timeout=ray_timeout,
            cpus_per_task=cpus_per_task,
        )
    shown = metrics_summary(result.metrics)  # counts per fold as integers, never averaged
    typer.echo(f"{result.n_folds} fold(s) -> {result.out}" + (f" | test {shown}" if shown else ""))
