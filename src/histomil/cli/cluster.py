"""`histomil cluster check`: what a Ray cluster offers, and whether it can run a cohort."""

from __future__ import annotations

from pathlib import Path

import typer

from histomil.cli._app import app, fail

cluster_app = typer.Typer(help="Inspect a Ray cluster before running on it.", no_args_is_help=True)
app.add_typer(cluster_app, name="cluster")


@cluster_app.command("check")
def check(
    ray_address: str | None = typer.Option(
        None, "--ray-address", help="Ray cluster address (default: RAY_ADDRESS, else 'auto')."
    ),
    paths: list[Path] = typer.Option(
        [],
        "--path",
        help="A folder every node must share (data, --out); repeat for several. Each node "
        "writes and reads a small file there.",
    ),
    ray_timeout: float = typer.Option(
        30.0, "--ray-timeout", help="Seconds to wait for the cluster to answer."
    ),
) -> None:
    """Nodes, CPUs, GPUs and memory; versions per node against this machine; shared storage."""
    from rich.console import Console
    from rich.table import Table

    from histomil.cluster import ClusterError, check_cluster, connect

    missing = [str(p) for p in paths if not p.is_dir()]
    if missing:
        raise fail(f"--path folder(s) not found on this machine: {', '.join(missing)}")
    address = ray_address or None
    try:
        connect({"address": address or "auto", "log_to_driver": False}, ray_timeout)
        report = check_cluster(paths)
    except ClusterError as exc:
        raise fail(str(exc)) from None
    table = Table(title=f"Ray cluster: {len(report.nodes)} node(s)")
    for col in ("node", "address", "CPUs", "GPUs", "memory GB", "python", "ray", "torch",
                "histomil", "storage"):  # fmt: skip
        table.add_column(col)
    for n in report.nodes:
        v = n.versions
        storage = "n/a" if not n.storage else (
            "ok" if all(s == "ok" for s in n.storage.values()) else "FAILED"
        )  # fmt: skip
        table.add_row(
            n.host, n.address, f"{n.cpus:g}", f"{n.gpus:g}", f"{n.memory_gb:g}",
            v.get("python", "?"), v.get("ray", "?"), v.get("torch", "?"), v.get("histomil", "?"),
            n.error or storage,
        )  # fmt: skip
    console = Console()
    console.print(table)
    d = report.driver
    console.print(
        f"driver: python {d['python']}, ray {d['ray']}, torch {d['torch']}, "
        f"histomil {d['histomil']}"
    )
    problems = report.problems()
    for line in problems:
        typer.secho(f"problem: {line}", fg=typer.colors.RED, err=True)
    if problems:
        raise typer.Exit(1)
    typer.echo(
        "cluster check passed" + (f" (shared: {', '.join(map(str, paths))})" if paths else "")
    )
