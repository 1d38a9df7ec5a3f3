"""`histomil synth bags`: synthetic CAMELYON-like feature bags (and a survival cohort)."""

from __future__ import annotations

from pathlib import Path

import typer

from histomil.cli._app import fail, synth_app


@synth_app.command("bags")
def bags(
    out: Path = typer.Option(
        ..., "--out", metavar="DIR", help="Output folder (bags/, manifest.csv, synth.json)."
    ),
    preset: str = typer.Option(
        "camelyon16",
        "--preset",
        help="Preset name (docs/synthetic.md lists them; an unknown name lists the valid ones).",
    ),
    seed: int = typer.Option(0, "--seed", help="Master seed; each slide's seed derives from it."),
    feature_dim: int | None = typer.Option(None, "--feature-dim", help="Feature dimension D."),
    signal: float | None = typer.Option(
        None, "--signal", help="Lesion shift along its direction, in noise-sd units."
    ),
    dtype: str | None = typer.Option(None, "--dtype", help="Stored features: float32 | float16."),
    sets: list[str] = typer.Option(
        [], "--set", help="Any other setting as key=value (see docs/synthetic.md); repeatable."
    ),
    workers: int = typer.Option(1, "--workers", help="Parallel tasks (slides)."),
) -> None:
    """Write synthetic bags with patch labels, annotations and a manifest with splits."""
    from histomil.synth.bag_config import parse_override
    from histomil.synth.bags import generate_bags

    try:
        overrides = dict(parse_override(s) for s in sets)
        for key, value in (("feature_dim", feature_dim), ("signal", signal), ("dtype", dtype)):
            if value is not None:
                overrides[key] = value
        manifest = generate_bags(out, preset, seed, workers=workers, **overrides)
    except ValueError as exc:
        raise fail(str(exc)) from exc
    typer.echo(f"wrote {manifest}")
