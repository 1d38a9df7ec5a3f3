"""Run independent tasks (one per slide, fold or sweep point) locally or on a Ray cluster.

Every batch command goes through :func:`run_tasks`, so failure isolation, progress and the
choice of executor live in one place. A task is a picklable top-level function plus keyword
arguments; a task that raises is reported in its :class:`TaskResult` and never stops the others.

- ``local``: ``workers`` = 1 runs in this process; more start that many "spawn" worker
  processes, each limited to ``cpu_count // workers`` math threads (no oversubscription) unless
  ``OMP_NUM_THREADS`` is set.
- ``ray``: one Ray task per :class:`Task` (``num_cpus_per_task``/``num_gpus_per_task`` are the
  resource request; extraction asks for a GPU with ``--device cuda``). Ray is reused when the
  caller already initialised it; otherwise :func:`run_tasks` connects to ``ray_address`` /
  ``RAY_ADDRESS`` or starts a local instance with ``workers`` CPUs, and shuts that connection
  (and a local instance) down when the batch ends, so a library call leaves no processes behind.
  Callers running many batches call ``ray.init`` once themselves. Tasks are never retried by
  Ray: a failure is reported and a rerun resumes, because every job skips finished outputs.
  Inputs and outputs must be on storage every node sees (docs/scale.md).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any, Literal

ExecutorName = Literal["local", "ray"]
EXECUTORS: tuple[str, ...] = ("local", "ray")
_CANCEL_WAIT_S = 10.0


@dataclass(frozen=True)
class Task:
    """One unit of work: ``fn(**kwargs)``; ``key`` names it in reports (slide id, fold, ...)."""

    key: str
    fn: Callable[..., Any]
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TaskResult:
    key: str
    ok: bool
    value: Any = None
    error: str | None = None
    seconds: float = 0.0


@dataclass(frozen=True)
class ExecutorConfig:
    """How to run a batch: ``executor`` local|ray, ``workers`` processes (local), Ray options."""

    executor: str = "local"
    workers: int = 1
    ray_address: str | None = None
    num_cpus_per_task: float = 1.0
    num_gpus_per_task: float = 0.0
    ray_timeout: float = 30.0
    ray_log: str | None = None  # Ray's own messages go to this file, not the terminal

    def __post_init__(self) -> None:
        if self.executor not in EXECUTORS:
            raise ValueError(f"unknown executor {self.executor!r}; valid: {', '.join(EXECUTORS)}")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if self.num_cpus_per_task <= 0:
            raise ValueError(f"CPUs per task must be > 0, got {self.num_cpus_per_task}")
        if self.num_gpus_per_task < 0:
            raise ValueError(f"GPUs per task must be >= 0, got {self.num_gpus_per_task}")
        if self.ray_timeout <= 0:
            raise ValueError(f"Ray connection timeout must be > 0 s, got {self.ray_timeout}")


class BatchError(RuntimeError):
    """Raised by callers (not by run_tasks) when failures must stop a command after the batch."""


def one_line(error: str | None) -> str:
    """The one-line message of a task error (``Type: message``), for status tables: the full
    text with its traceback belongs in the error log (:func:`write_error_log`)."""
    return next((line.strip() for line in (error or "").splitlines() if line.strip()), "")


def write_error_log(path: str | os.PathLike, errors: dict[str, str]) -> None:
    """Rewrite ``path`` with the full error text (traceback included) of each failed task of
    this batch, one section per key; remove it when the batch had no failure."""
    from pathlib import Path

    from histomil._io import atomic_write_text

    target = Path(path)
    if not errors:
        target.unlink(missing_ok=True)
        return
    text = "".join(f"=== {key} ===\n{err.rstrip()}\n\n" for key, err in errors.items())
    atomic_write_text(target, text)


def _call(task: Task) -> TaskResult:
    start = time.perf_counter()
    try:
        value = task.fn(**task.kwargs)
    except BaseException as exc:  # noqa: BLE001 - isolate every failure, KeyboardInterrupt aside
        if isinstance(exc, KeyboardInterrupt):
            raise
        err = f"{type(exc).__name__}: {exc}"
        tb = traceback.format_exc(limit=6)
        return TaskResult(task.key, False, None, f"{err}\n{tb}", time.perf_counter() - start)
    return TaskResult(task.key, True, value, None, time.perf_counter() - start)


def _call_ray(task: Task) -> TaskResult:
    """A Ray task: torch uses the task's CPUs as threads, then :func:`_call`.

    Ray sets ``OMP_NUM_THREADS`` to the task's CPUs before each task, but a reused worker
    process that imported torch for an earlier task keeps that task's thread count; set it again.
    """
    threads = os.environ.get("OMP_NUM_THREADS", "")
    torch = sys.modules.get("torch")
    if torch is not None and threads.isdigit() and int(threads) > 0:
        torch.set_num_threads(int(threads))
    return _call(task)


def run_tasks(
    tasks: Sequence[Task],
    config: ExecutorConfig | None = None,
    *,
    description: str = "tasks",
    on_result: Callable[[TaskResult], str | None] | None = None,
) -> list[TaskResult]:
    """Run ``tasks`` and return one result per task, in the order of ``tasks``.

    ``on_result`` is called in the parent process as each task finishes (to append a status row,
    for instance), so an interrupted batch keeps what it finished; a string it returns is shown
    next to the progress bar.
    """
    config = config or ExecutorConfig()
    if not tasks:
        return []
    if config.executor == "ray":
        results = _run_ray(tasks, config, description, on_result)
    elif config.workers == 1 or len(tasks) == 1:
        results = _run_serial(tasks, description, on_result)
    else:
        results = _run_processes(tasks, config.workers, description, on_result)
    order = {t.key: i for i, t in enumerate(tasks)}
    return sorted(results, key=lambda r: order[r.key])


def progress_bar(description: str, total: int):
    """A rich bar (description, bar, done/total, elapsed, remaining, a status field) and its task
    id; every batch and the synthetic-slide generator use this one."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
    )
    return progress, progress.add_task(description, total=total, status="")


def _report(progress, bar, result: TaskResult, failures: list[int], on_result) -> None:
    if not result.ok:
        failures[0] += 1
    # on_result may return a short string (e.g. "1234 patches") shown next to the bar
    extra = on_result(result) if on_result is not None else None
    status = f"last: {result.key}" + (f" | failed: {failures[0]}" if failures[0] else "")
    if isinstance(extra, str) and extra:
        status += f" | {extra}"
    progress.update(bar, advance=1, status=status)


def _run_serial(tasks, description, on_result) -> list[TaskResult]:
    progress, bar = progress_bar(description, len(tasks))
    failures = [0]
    results = []
    with progress:
        for task in tasks:
            result = _call(task)
            results.append(result)
            _report(progress, bar, result, failures, on_result)
    return results


def _limit_threads(threads: int) -> None:
    """Worker initializer: ``threads`` math threads per process unless the user chose; warnings
    print as one ``warning: ...`` line, as in the main process (``histomil.cli``)."""
    import warnings

    warnings.formatwarning = _one_line_warning
    if "OMP_NUM_THREADS" in os.environ:
        return
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    torch = sys.modules.get("torch")  # imported already by the spawned main module
    if torch is not None:
        torch.set_num_threads(threads)


def _one_line_warning(message, category, filename, lineno, line=None) -> str:  # noqa: ANN001
    return f"warning: {str(message).strip()}\n"


def worker_threads(workers: int) -> int:
    """Math threads per local worker process: the cores shared out, at least one."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def _run_processes(tasks, workers, description, on_result) -> list[TaskResult]:
    # "spawn" keeps workers free of the parent's threads (torch, OpenSlide) and works everywhere.
    ctx = mp.get_context("spawn")
    progress, bar = progress_bar(description, len(tasks))
    failures = [0]
    results = []
    pool = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=ctx,
        initializer=_limit_threads,
        initargs=(worker_threads(workers),),
    )
    with progress, pool:
        futures = {pool.submit(_call, task): task for task in tasks}
        for future in as_completed(futures):
            task = futures[future]
            try:
                result = future.result()
            except Exception as exc:  # the worker process itself died (e.g. segfault, OOM kill)
                result = TaskResult(task.key, False, None, f"worker died: {exc!r}")
            results.append(result)
            _report(progress, bar, result, failures, on_result)
    return results


def _import_ray():
    try:
        import ray
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the Ray executor needs the optional extra: pip install 'histomil[ray]'"
        ) from exc
    return ray


def ray_init_kwargs(config: ExecutorConfig) -> dict[str, Any]:
    """The ``ray.init`` arguments for ``config``: a cluster address, or a fresh local instance.

    ``ray_address`` (``auto``, ``HOST:6379`` or ``ray://HOST:10001``) wins; else the
    ``RAY_ADDRESS`` environment variable (read by Ray itself); else a new local instance with
    ``workers`` CPUs (``address="local"`` so a stray ``ray start`` on this machine is not joined).
    """
    quiet = {"log_to_driver": False}
    if config.ray_address:
        return {"address": config.ray_address, **quiet}
    if os.environ.get("RAY_ADDRESS"):
        return quiet
    return {"address": "local", "num_cpus": config.workers, "include_dashboard": False, **quiet}


def _ensure_ray(config: ExecutorConfig):
    """Return (ray, started): ``started`` is True when this call connected/started Ray.

    Connecting to an existing cluster is bounded by ``config.ray_timeout`` and fails with a
    one-line :class:`~histomil.cluster.ClusterError` (see :func:`histomil.cluster.connect`).
    """
    from histomil.cluster import connect

    ray = _import_ray()
    if ray.is_initialized():
        return ray, False
    connect(ray_init_kwargs(config), config.ray_timeout, ray, log=config.ray_log)
    return ray, True


def ensure_connected(config: ExecutorConfig) -> bool:
    """Connect to (or start) Ray now when ``config`` asks for it, so a command can fail on an
    unreachable cluster before it writes anything. Returns whether this call connected."""
    if config.executor != "ray":
        return False
    return _ensure_ray(config)[1]


def _run_ray(tasks, config: ExecutorConfig, description, on_result) -> list[TaskResult]:
    """One Ray task per :class:`Task`; Ray is shut down again only if this call started it."""
    from histomil.cluster import ray_messages_to

    ray, started = _ensure_ray(config)
    log = config.ray_log
    before = _size(log)
    with ray_messages_to(log):
        try:
            return _submit_ray(ray, tasks, config, description, on_result)
        finally:
            if started:
                ray.shutdown()
            if _size(log) > before:
                print(
                    f"note: Ray reported messages during {description}; see {log}", file=sys.stderr
                )


def _size(path: str | None) -> int:
    try:
        return os.path.getsize(path) if path else 0
    except OSError:
        return 0


def _submit_ray(ray, tasks, config: ExecutorConfig, description, on_result) -> list[TaskResult]:
    # max_retries=0: a task that failed is reported, not silently rerun (reruns resume instead).
    remote = ray.remote(_call_ray).options(
        num_cpus=config.num_cpus_per_task, num_gpus=config.num_gpus_per_task, max_retries=0
    )
    pending = {remote.remote(task): task for task in tasks}
    progress, bar = progress_bar(description, len(tasks))
    failures = [0]
    results = []
    try:
        with progress:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                ref = done[0]
                task = pending.pop(ref)
                try:
                    result = ray.get(ref)
                except Exception as exc:  # the Ray worker died or the task could not run
                    error = f"ray task failed: {type(exc).__name__}: {str(exc).strip()}"
                    result = TaskResult(task.key, False, None, error)
                results.append(result)
                _report(progress, bar, result, failures, on_result)
    finally:
        # Interrupted driver (Ctrl-C, an on_result error): cancel what has not finished so a
        # cluster does not keep working for nobody; finished outputs stay and a rerun resumes.
        # Not ``force``: killing workers races with the next batch's scheduling.
        if pending:
            for ref in pending:
                ray.cancel(ref)
            ray.wait(list(pending), num_returns=len(pending), timeout=_CANCEL_WAIT_S)
    return results
