"""All folds of a run and the run-level outputs.

``train(config, out_dir, executor=...)`` writes ``RUN/config.yaml`` (resolved), runs one
executor task per unfinished fold (finished folds, marked by ``folds/<k>/result.json``, are final
and skipped on rerun; an interrupted fold restarts from scratch with the same seed, so a resumed
run equals an uninterrupted one), then aggregates ``RUN/predictions.csv`` and
``RUN/metrics.json`` (per fold plus mean/sd over folds of every metric).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from histomil._io import atomic_write_json, atomic_write_text
from histomil.executors import BatchError, ExecutorConfig, Task, run_tasks
from histomil.manifest import read_manifest
from histomil.training.config import (
    TrainConfig,
    config_to_dict,
    dump_config,
    load_config,
    matches_saved,
)
from histomil.training.fold import read_fold_result, run_fold
from histomil.training.splits import make_splits


@dataclass
class RunResult:
    """What a run produced: its folder, per-fold summaries, aggregated metrics."""

    run_dir: Path
    folds: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    predictions: pd.DataFrame | None = None


def _check_same_config(run_dir: Path, config: TrainConfig, resume: bool) -> None:
    import yaml

    path = run_dir / "config.yaml"
    if not path.is_file():
        return
    if not resume:
        raise FileExistsError(f"{run_dir} already holds a run; use --resume or another --out")
    saved = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not matches_saved(saved, config):
        raise ValueError(
            f"{run_dir} holds a run with a different config; finished folds would be mixed "
            "with new ones. Use another --out (or delete the folder)."
        )


def _check_names(config: TrainConfig) -> None:
    """Fail before any fold starts when the model/objective name or parameters are wrong."""
    from histomil.models import check_model_params
    from histomil.objectives import create_objective

    check_model_params(config.model.name, config.model.params)
    params = {k: v for k, v in config.objective.params.items() if k != "teacher_init"}
    create_objective(config.objective.name, **params)


def summarize_folds(folds: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-fold metrics plus mean and sd (ddof=1) over folds for every split and metric."""
    out: dict[str, Any] = {"folds": folds, "n_folds": len(folds)}
    for split in ("val", "test"):
        names = sorted({k for f in folds for k in f.get(split, {})})
        agg = {}
        for name in names:
            vals = np.array([f[split].get(name, np.nan) for f in folds], dtype=float)
            ok = vals[np.isfinite(vals)]
            agg[name] = {
                "mean": float(ok.mean()) if ok.size else None,
                "sd": float(ok.std(ddof=1)) if ok.size > 1 else None,
                "n": int(ok.size),
            }
        out[split] = agg
    return out


def train(
    config: TrainConfig | str | os.PathLike,
    out_dir: str | os.PathLike,
    executor: ExecutorConfig | None = None,
    resume: bool = True,
    folds: list[int] | None = None,
) -> RunResult:
    """Run every fold of ``config`` into ``out_dir`` and aggregate the outputs."""
    if not isinstance(config, TrainConfig):
        config = load_config(config)
    _check_names(config)
    run_dir = Path(out_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    _check_same_config(run_dir, config, resume)
    atomic_write_text(run_dir / "config.yaml", dump_config(config))
    required = ("slide_id", "time", "event") if config.task == "survival" else ("slide_id", "label")
    df = read_manifest(config.data.manifest, required=required)
    splits = make_splits(df, config.split, config.train.seed, config.task)
    if folds is not None:
        splits = [s for s in splits if s.fold in set(folds)]
    todo = [s for s in splits if read_fold_result(run_dir, s.fold) is None]
    tasks = [
        Task(f"fold {s.fold}", run_fold, {"config": config, "split": s, "run_dir": str(run_dir)})
        for s in todo
    ]
    results = run_tasks(tasks, executor, description=f"train {config.objective.name}")
    failed = [r for r in results if not r.ok]
    summaries = [read_fold_result(run_dir, s.fold) for s in splits]
    done = [s for s in summaries if s is not None]
    preds = [pd.read_csv(run_dir / "folds" / str(s["fold"]) / "predictions.csv") for s in done]
    predictions = pd.concat(preds, ignore_index=True) if preds else pd.DataFrame()
    atomic_write_text(run_dir / "predictions.csv", predictions.to_csv(index=False))
    metrics = summarize_folds(done)
    metrics["task"] = config.task
    metrics["config"] = config_to_dict(config)
    atomic_write_json(run_dir / "metrics.json", metrics)
    if failed:
        msg = "; ".join(f"{r.key}: {r.error.splitlines()[0]}" for r in failed)
        raise BatchError(f"{len(failed)} fold(s) failed ({msg}); rerun to resume the others")
    return RunResult(run_dir, done, metrics, predictions)
