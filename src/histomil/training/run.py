"""All folds of a run and the run-level outputs.

``train(config, out_dir, executor=...)`` first validates every input at once
(:func:`histomil.training.cohort.validate_cohort`: manifest, labels, bags, splits, the splits
of a baseline taken from another run) and writes nothing when that fails. It then writes
``RUN/config.yaml`` (resolved) and ``RUN/provenance.json`` (config, splits, manifest and bag
file identities), runs one executor task per unfinished fold (finished folds, marked by
``folds/<k>/result.json``, are final and skipped on rerun; an interrupted fold continues after
its last finished epoch (``folds/<k>/resume.pt``, :func:`histomil.training.fold.run_fold`), so a
resumed run equals an uninterrupted one; a fold whose
objective needs a baseline first resolves or trains it, :mod:`histomil.training.baseline`), then aggregates ``RUN/predictions.csv`` and
``RUN/metrics.json`` (per fold plus mean/sd over folds of every metric) once every fold has
finished.

Rerunning into a folder: with no finished fold the folder is taken over by the new config
(a failed first attempt can be corrected and rerun); with finished folds the recorded
provenance must equal the new one, else the run is refused naming every change (config
``old -> new``, changed bag files, other splits).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from histomil import provenance
from histomil._io import atomic_write_json, atomic_write_text, read_csv, write_csv
from histomil.evaluation.stats import mean_sd
from histomil.executors import BatchError, ExecutorConfig, Task, run_tasks
from histomil.training.baseline import run_fold_with_baseline
from histomil.training.cohort import (
    Cohort,
    CohortError,
    baseline_checkpoints,
    read_split,
    run_provenance,
    split_leaks,
    validate_cohort,
)
from histomil.training.config import (
    TrainConfig,
    config_differences,
    config_to_dict,
    dump_config,
    load_config,
    with_defaults,
)
from histomil.training.fold import read_fold_result, run_fold
from histomil.training.split_files import write_split_files

log = logging.getLogger(__name__)
PROVENANCE = "provenance.json"


class RunMismatchError(provenance.StaleOutputError, ValueError):
    """A run folder's finished folds were made from other inputs, config or splits."""


@dataclass
class RunResult:
    """What a run produced: its folder, per-fold summaries, aggregated metrics."""

    run_dir: Path
    folds: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    predictions: pd.DataFrame | None = None


def _finished_folds(run_dir: Path) -> list[int]:
    folds = run_dir / "folds"
    if not folds.is_dir():
        return []
    return sorted(
        int(p.name) for p in folds.iterdir() if p.name.isdigit() and (p / "result.json").is_file()
    )


def check_existing_run(
    run_dir: Path,
    config: TrainConfig,
    cohort: Cohort,
    wanted: dict[str, Any],
    resume: bool = True,
    strict: bool = False,
) -> None:
    """Refuse to add folds to a run folder whose finished folds came from other inputs.

    A folder without finished folds (a first attempt that failed) is simply reused. A run
    without ``provenance.json`` (older histomil) is accepted on an equal config with a
    warning, unless ``strict`` (then it counts as different).
    """

    finished = _finished_folds(run_dir)
    if not finished:
        return
    if not resume:
        raise FileExistsError(f"{run_dir} already holds a run; use --resume or another --out")
    how = "finished folds would be mixed with new ones. Use another --out (or delete the folder)"
    try:
        _check_inputs(run_dir, config, cohort, wanted, strict, how)
    except provenance.StaleOutputError as exc:
        changed = _changed_bags(provenance.read_json(run_dir / PROVENANCE), wanted, cohort)
        extra = f" [changed bag file(s): {', '.join(changed)}]" if changed else ""
        raise RunMismatchError(f"{exc}{extra}") from None


def _changed_bags(recorded: dict | None, wanted: dict, cohort: Cohort) -> list[str]:
    """Paths of the bag files whose identity differs from the recorded one."""
    if not recorded:
        return []
    old, new = recorded.get("inputs", {}), wanted.get("inputs", {})
    keys = sorted(
        k for k in set(old) | set(new) if k.startswith("bag ") and old.get(k) != new.get(k)
    )
    return [str(cohort.bag_paths.get(k[4:], k[4:])) for k in keys]


def _check_inputs(run_dir, config, cohort, wanted, strict: bool, how: str) -> None:
    import yaml

    recorded = provenance.read_json(run_dir / PROVENANCE)
    if recorded is None and strict:
        provenance.decide(run_dir / PROVENANCE, None, wanted, how=how)
    if recorded is None:  # a run made before provenance was recorded: compare its config
        path = run_dir / "config.yaml"
        saved = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else {}
        changes = config_differences(saved or {}, config)
        if changes:
            raise provenance.StaleOutputError(
                f"{run_dir} holds a run with a different config ({'; '.join(changes)}); {how}"
            )
        log.warning(
            "%s records no input provenance (older histomil): its bag files cannot be "
            "verified; resuming with the current ones",
            run_dir,
        )
    else:
        old = dict(recorded)
        params = dict(old.get("params", {}))
        params["config"] = with_defaults(params.get("config") or {}, config)
        if "resolved" not in params and not strict:
            # recorded by a histomil before the resolved settings were: a default changed since
            # cannot be detected (strict callers, which reuse whole runs, treat it as different)
            params["resolved"] = wanted.get("params", {}).get("resolved")
            log.warning(
                "%s records only the given model/objective settings (older histomil): a "
                "default changed since its finished folds were made cannot be detected",
                run_dir,
            )
        old["params"] = params
        provenance.decide(run_dir / PROVENANCE, old, wanted, how=how)
    by_fold = {s.fold: s for s in cohort.splits}
    for k in _finished_folds(run_dir):
        record = read_split(run_dir / "folds" / str(k))
        if k in by_fold and record is not None:
            problem = split_leaks(record, by_fold[k], f"{run_dir} fold {k}")
            if problem:
                raise provenance.StaleOutputError(f"{problem}; {how}")


def _baseline_problems(config: TrainConfig, cohort: Cohort) -> list[str]:
    """A baseline taken from another run must come from folds with exactly these splits."""
    ckpts = baseline_checkpoints(config, cohort.splits)
    if ckpts is None:
        return []
    out = []
    for s in cohort.splits:
        ckpt = ckpts[s.fold]
        if not ckpt.is_file():
            out.append(f"objective.baseline: no checkpoint at {ckpt}")
            continue
        problem = split_leaks(read_split(ckpt.parent), s, f"baseline {ckpt}")
        if problem:
            out.append(problem)
    return out


def _check_names(config: TrainConfig) -> bool:
    """Fail before any fold starts when the model/objective name or parameters are wrong, or
    when ``objective.baseline`` is given to an objective without a baseline. Returns whether
    the objective needs a per-fold baseline."""
    from histomil.models import check_model_params, create_model
    from histomil.objectives import create_objective

    check_model_params(config.model.name, config.model.params)
    # a throwaway model on 16-d features checks the parameter *values* too (a dropout of 2, heads
    # that do not divide the width) before anything is written; folds build the real one
    try:
        create_model(config.model.name, 16, 2, **config.model.params)
    except (ValueError, TypeError) as err:
        raise ValueError(f"model {config.model.name!r}: {err}") from None
    objective = create_objective(config.objective.name, **config.objective.params)
    if config.objective.baseline and not objective.needs_baseline:
        raise ValueError(
            f"objective.baseline is set but objective {config.objective.name!r} trains "
            "without a baseline; remove it"
        )
    return objective.needs_baseline


def summarize_folds(folds: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-fold metrics plus mean and sd (ddof=1) over folds for every split and metric."""
    out: dict[str, Any] = {"folds": folds, "n_folds": len(folds)}
    for split in ("val", "test"):
        names = sorted({k for f in folds for k in f.get(split, {})})
        agg = {}
        for name in names:
            mean, sd, n = mean_sd([f[split].get(name, np.nan) for f in folds])
            agg[name] = {"mean": mean if n else None, "sd": sd if n > 1 else None, "n": n}
        out[split] = agg
    return out


@dataclass
class PendingRun:
    """A run whose inputs passed every check (:func:`check_run`); nothing is written yet."""

    config: TrainConfig
    run_dir: Path
    cohort: Cohort
    wanted: dict[str, Any]
    needs_baseline: bool


def check_run(
    config: TrainConfig | str | os.PathLike,
    out_dir: str | os.PathLike,
    resume: bool = True,
    inputs: tuple[Cohort, dict[str, Any]] | None = None,
) -> PendingRun:
    """Every check :func:`train` makes before it writes: names and values of the model and
    objective parameters, the cohort (manifest, labels, bags, splits), the baseline's splits,
    and an existing run in ``out_dir``. Raises on the first problem; writes nothing.

    ``inputs``: the ``(cohort, provenance)`` of ``config`` when the caller has validated them
    already (a sweep does, for every point)."""
    if not isinstance(config, TrainConfig):
        config = load_config(config)
    needs_baseline = _check_names(config)
    cohort = validate_cohort(config) if inputs is None else inputs[0]
    leaks = _baseline_problems(config, cohort)
    if leaks:
        raise CohortError(
            "the baseline would have seen this run's held-out slides (nothing was written): "
            + " | ".join(leaks)
        )
    run_dir = Path(out_dir).resolve()
    wanted = run_provenance(config, cohort) if inputs is None else inputs[1]
    check_existing_run(run_dir, config, cohort, wanted, resume)
    return PendingRun(config, run_dir, cohort, wanted, needs_baseline)


def start_run(
    run: PendingRun, folds: list[int] | None = None, prefix: str = ""
) -> tuple[list[Task], list[int]]:
    """Write the run's config, provenance and split files; return one task per unfinished fold
    (``prefix`` goes before each task key) and the folds the run reports on."""
    run_dir, config = run.run_dir, run.config
    run_dir.mkdir(parents=True, exist_ok=True)
    for stale in ("metrics.json", "predictions.csv"):  # rewritten by finish_run
        (run_dir / stale).unlink(missing_ok=True)
    atomic_write_text(run_dir / "config.yaml", dump_config(config))
    provenance.write_json(run_dir / PROVENANCE, run.wanted)
    splits = run.cohort.splits
    write_split_files(splits, run_dir / "splits")  # CLAM's splits_<k>.csv of this run
    if folds is not None:
        splits = [s for s in splits if s.fold in set(folds)]
    todo = [s for s in splits if read_fold_result(run_dir, s.fold) is None]
    # with a baseline, the fold's baseline is resolved (or trained) inside the fold's task
    fold_task = run_fold_with_baseline if run.needs_baseline else run_fold
    tasks = [
        Task(
            f"{prefix}fold {s.fold}",
            fold_task,
            {"config": config, "split": s, "run_dir": str(run_dir)},
        )
        for s in todo
    ]
    return tasks, [s.fold for s in splits]


def finish_run(run: PendingRun, folds: list[int]) -> RunResult:
    """Aggregate the finished ``folds`` into ``predictions.csv`` and ``metrics.json``."""
    run_dir = run.run_dir
    summaries = [read_fold_result(run_dir, k) for k in folds]
    done = [s for s in summaries if s is not None]
    preds = [read_csv(run_dir / "folds" / str(s["fold"]) / "predictions.csv") for s in done]
    predictions = pd.concat(preds, ignore_index=True) if preds else pd.DataFrame()
    write_csv(predictions, run_dir / "predictions.csv")
    metrics = summarize_folds(done)
    metrics["task"] = run.config.task
    metrics["config"] = config_to_dict(run.config)
    atomic_write_json(run_dir / "metrics.json", metrics)
    return RunResult(run_dir, done, metrics, predictions)


def train(
    config: TrainConfig | str | os.PathLike,
    out_dir: str | os.PathLike,
    executor: ExecutorConfig | None = None,
    resume: bool = True,
    folds: list[int] | None = None,
) -> RunResult:
    """Run every fold of ``config`` into ``out_dir`` and aggregate the outputs."""
    run = check_run(config, out_dir, resume)
    tasks, reported = start_run(run, folds)
    results = run_tasks(tasks, executor, description=f"train {run.config.objective.name}")
    failed = [r for r in results if not r.ok]
    if failed:  # no run-level outputs from a subset of folds
        msg = "; ".join(f"{r.key}: {r.error.splitlines()[0]}" for r in failed)
        raise BatchError(f"{len(failed)} fold(s) failed ({msg}); rerun to resume the others")
    return finish_run(run, reported)
