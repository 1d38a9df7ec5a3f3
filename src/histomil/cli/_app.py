"""The typer application and the command groups; command modules attach to these."""

from __future__ import annotations

import typer

from histomil.executors import EXECUTORS, ExecutorConfig

app = typer.Typer(
    name="histomil",
    help="Whole-slide images + partial annotations -> trained, evaluated, explained MIL models.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)
synth_app = typer.Typer(help="Generate synthetic slides or feature bags.", no_args_is_help=True)
app.add_typer(synth_app, name="synth")
bench_app = typer.Typer(help="Measure computational cost.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")

EXECUTOR_HELP = f"Where tasks run: {' | '.join(EXECUTORS)}."


CPUS_PER_TASK_HELP = (
    "Ray: CPUs reserved per task; the task's math libraries use that many threads "
    "(e.g. 8 for extraction on CPU-only nodes)."
)


def cpus_per_task_option() -> float:
    return typer.Option(1.0, "--cpus-per-task", help=CPUS_PER_TASK_HELP)


def executor_config(
    executor: str,
    workers: int,
    ray_address: str | None = None,
    gpus_per_task: float = 0.0,
    cpus_per_task: float = 1.0,
) -> ExecutorConfig:
    """Build an ExecutorConfig from the common CLI options, with a clean CLI error."""
    try:
        return ExecutorConfig(
            executor=executor,
            workers=workers,
            ray_address=ray_address,
            num_cpus_per_task=cpus_per_task,
            num_gpus_per_task=gpus_per_task,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print an error the way every command does and return the Exit to raise."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code)
