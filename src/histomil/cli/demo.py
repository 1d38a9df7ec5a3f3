"""`histomil demo` and `histomil version`."""

from __future__ import annotations

from pathlib import Path

import typer

from histomil.cli._app import app, user_errors


@app.command()
def demo(
    out: Path = typer.Option(Path("histomil-demo"), "--out", metavar="DIR", help="Output folder."),
    quick: bool = typer.Option(False, "--quick", help="A smaller, faster run (used by tests)."),
    seed: int = typer.Option(0, "--seed", help="Seed for every random choice."),
    weights: Path | None = typer.Option(
        None,
        "--weights",
        metavar="FILE",
        help="Local ResNet-50 checkpoint (default: seeded random weights).",
    ),
    workers: int = typer.Option(2, "--workers", help="Parallel tasks (slides, folds)."),
) -> None:
    """Run the whole pipeline on an embedded synthetic cohort (and the real slide when present)."""
    from histomil.demo import run_demo

    with user_errors():
        run_demo(out, quick=quick, seed=seed, weights=weights, workers=workers)


@app.command()
def version() -> None:
    """Print the package version."""
    from histomil import __version__

    typer.echo(__version__)
