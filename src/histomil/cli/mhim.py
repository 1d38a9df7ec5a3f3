"""``histomil bench cost``: parameters, training time, peak memory and inference speed."""

from __future__ import annotations

from pathlib import Path

import typer

from histomil.cli._app import bench_app, fail


@bench_app.command("cost")
def cost(
    manifest: Path = typer.Option(
        ..., metavar="FILE", help="Manifest CSV (slide_id, label) of the bags."
    ),
    out: Path = typer.Option(..., metavar="DIR", help="Output folder (cost.csv, cost.md)."),
    bags: Path | None = typer.Option(
        None, metavar="DIR", help="Folder of bag files (default: <manifest dir>/bags)."
    ),
    epochs: int = typer.Option(1, min=1, help="Timed training epochs per method."),
    max_bags: int | None = typer.Option(None, min=1, help="Use only the first N bags."),
    device: str = typer.Option("cpu", help="cpu | cuda"),
    isolate: bool = typer.Option(True, help="One process per method (clean peak memory)."),
    seed: int = typer.Option(0, help="Seed for every random choice."),
    threads: int = typer.Option(1, min=1, help="torch intra-op threads."),
) -> None:
    """AB-MIL, DTFD-MIL, TransMIL and MHIM-v2(AB-MIL / TransMIL) on the same bags (Table 6)."""
    from histomil.experiments.cost import CostSettings, measure_cost

    if not manifest.is_file():
        raise fail(f"manifest not found: {manifest}")
    settings = CostSettings(epochs, max_bags, device, isolate, seed, threads=threads)
    table = measure_cost(manifest, bags, out, settings=settings)
    typer.echo((out / "cost.md").read_text(encoding="utf-8"))
    typer.echo(f"wrote {out / 'cost.csv'} ({len(table)} methods)")
