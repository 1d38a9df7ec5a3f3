"""The typer application, the command groups and what every command shares.

Shared here: ``-h``/``--help`` everywhere, ``histomil --version``, warnings printed as one
readable line, deprecated option spellings mapped to their new names with a one-line notice,
and one error path (``error: ...`` and exit 1) for problems the user can fix.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import typer

from histomil.executors import EXECUTORS, ExecutorConfig

CONTEXT = {"help_option_names": ["-h", "--help"]}

app = typer.Typer(
    name="histomil",
    help="Whole-slide images + partial annotations -> trained, evaluated, explained MIL models.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
    context_settings=CONTEXT,
)
synth_app = typer.Typer(
    help="Generate synthetic slides or feature bags.",
    no_args_is_help=True,
    context_settings=CONTEXT,
)
app.add_typer(synth_app, name="synth")
bench_app = typer.Typer(
    help="Measure computational cost.", no_args_is_help=True, context_settings=CONTEXT
)
app.add_typer(bench_app, name="bench")

EXECUTOR_HELP = f"Where tasks run: {' | '.join(EXECUTORS)}."
RAY_ADDRESS_HELP = "Ray cluster address (default: RAY_ADDRESS or a local instance)."
RAY_TIMEOUT_HELP = "Seconds to wait for a Ray cluster to answer before giving up (one line)."


def print_warning(message: str) -> None:
    """One readable line on stderr (rich markup off: paths may contain brackets)."""
    from rich.console import Console

    Console(stderr=True, highlight=False, soft_wrap=True).print(
        f"warning: {message}", style="yellow", markup=False
    )


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    print_warning(str(message).strip())


@contextlib.contextmanager
def readable_warnings() -> Iterator[None]:
    """Show Python warnings as ``warning: <text>`` instead of ``file:line: UserWarning: ...``."""
    previous = warnings.showwarning
    warnings.showwarning = _show_warning
    try:
        yield
    finally:
        warnings.showwarning = previous


def _version(value: bool) -> None:
    if value:
        from histomil import __version__

        typer.echo(__version__)
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Whole-slide images + partial annotations -> trained, evaluated, explained MIL models."""
    ctx.with_resource(readable_warnings())


def deprecated(old: str, new: str, old_value, new_value, default=None):  # noqa: ANN001, ANN201
    """The value to use when an option has an old spelling ``old`` kept for one release.

    Prints one line when the old spelling was used; refuses both spellings at once.
    """
    if old_value is None or old_value is False:
        return new_value
    if new_value != default:
        raise fail(f"{old} is the old spelling of {new}; give only {new}")
    print_warning(f"{old} is deprecated and will be removed in the next release; use {new}")
    return old_value


def cpus_per_task_option(what: str = "task") -> float:
    """``--cpus-per-task`` with help that speaks of the command's own tasks."""
    return typer.Option(
        1.0,
        "--cpus-per-task",
        help=f"Ray: CPUs reserved per {what}; its math libraries use that many threads.",
    )


def executor_config(
    executor: str,
    workers: int,
    ray_address: str | None = None,
    gpus_per_task: float = 0.0,
    cpus_per_task: float = 1.0,
    ray_timeout: float = 30.0,
) -> ExecutorConfig:
    """Build an ExecutorConfig from the common CLI options, with a clean CLI error."""
    try:
        return ExecutorConfig(
            executor=executor,
            workers=workers,
            ray_address=ray_address,
            num_cpus_per_task=cpus_per_task,
            num_gpus_per_task=gpus_per_task,
            ray_timeout=ray_timeout,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print an error the way every command does and return the Exit to raise."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code)


# Errors a user can fix by changing the input or the options. RuntimeError subclasses are
# matched by name so this module never imports the (heavy) modules that define them.
_FIXABLE = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError)
_FIXABLE_NAMES = {
    "BatchError", "WeightsError", "SlideError", "StaleOutputError", "SweepError", "ClusterError",
    "TrainingDivergedError",
}  # fmt: skip


def is_user_error(exc: BaseException) -> bool:
    """True for problems in the input or options (shown as one line), False for bugs."""
    return isinstance(exc, _FIXABLE) or any(c.__name__ in _FIXABLE_NAMES for c in type(exc).__mro__)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn the errors a user can fix (bad input, failed slides) into ``error: ...`` + exit 1."""
    try:
        yield
    except Exception as exc:
        if not is_user_error(exc):
            raise
        raise fail(str(exc).strip() or type(exc).__name__) from exc
