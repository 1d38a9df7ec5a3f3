"""`histomil experiment NAME`: the papers' experiments as sweeps (docs/experiments.md)."""

from __future__ import annotations

from pathlib import Path

import typer

from histomil.cli._app import EXECUTOR_HELP, RAY_ADDRESS_HELP, RAY_TIMEOUT_HELP, app, fail
from histomil.experiments.registry import EXPERIMENTS, names_help


def _split(text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    items = tuple(s.strip() for s in text.split(",") if s.strip())
    return items or None


def _grid(text: str | None) -> tuple[float | str, ...] | None:
    items = _split(text)
    if items is None:
        return None
    out: list[float | str] = []
    for item in items:
        try:
            out.append(float(item))
        except ValueError:
            out.append(item)  # named grids (MHIM variants)
    return tuple(out)


def _runs(items: list[str]) -> tuple[tuple[str, str], ...]:
    out = []
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise typer.BadParameter(f"--runs expects NAME=RUN_DIR, got {item!r}")
        out.append((name, path))
    return tuple(out)


@app.command()
def experiment(
    name: str = typer.Argument(..., help=names_help()),
    config: Path = typer.Option(
        ..., "--config", metavar="FILE", help="Base training config (YAML)."
    ),
    out: Path = typer.Option(..., "--out", metavar="DIR", help="Output folder of the experiment."),
    workers: int = typer.Option(1, "--workers", help="Parallel tasks (sweep points)."),
    executor: str = typer.Option("local", "--executor", help=EXECUTOR_HELP),
    ray_address: str | None = typer.Option(None, "--ray-address", help=RAY_ADDRESS_HELP),
    ray_timeout: float = typer.Option(30.0, "--ray-timeout", help=RAY_TIMEOUT_HELP),
    grid: str | None = typer.Option(
        None,
        "--grid",
        help="Comma-separated grid values (fractions, paddings, T, alphas, variants).",
    ),
    methods: str | None = typer.Option(None, "--methods", help="Comma-separated method names."),
    repeats: int | None = typer.Option(None, "--repeats", help="Monte Carlo repeats (folds)."),
    runs: list[str] = typer.Option(
        [], "--runs", help="localization: existing run NAME=DIR (repeatable)."
    ),
) -> None:
    """Run one paper experiment: results.csv, table.md, PNG figures, summary.json."""
    from histomil.cluster import ClusterError
    from histomil.experiments import ExperimentOptions, SweepError, run_experiment
    from histomil.training import ConfigError

    if name not in EXPERIMENTS:
        raise fail(f"unknown experiment {name!r}; valid: {', '.join(EXPERIMENTS)}")
    try:
        options = ExperimentOptions(
            workers=workers,
            executor=executor,
            ray_address=ray_address,
            ray_timeout=ray_timeout,
            grid=_grid(grid),
            methods=_split(methods),
            repeats=repeats,
            runs=_runs(runs),
        )
        run_experiment(name, config, out, options)
    except (SweepError, ConfigError, ClusterError, FileNotFoundError, ValueError) as exc:
        raise fail(str(exc)) from exc
    typer.echo((out / "table.md").read_text(encoding="utf-8"))
    typer.echo(f"results -> {out}")
