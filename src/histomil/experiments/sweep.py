"""A sweep: one base training config, named points (config overrides), the same splits and seeds.

Every point is trained with :func:`histomil.training.train` into ``DIR/runs/<point>/`` and its
resolved config is saved as ``DIR/configs/<point>.yaml``. Every point's run is checked
(:func:`histomil.training.run.check_run`) before any is written; then the unfinished folds of
all points go to :func:`histomil.executors.run_tasks` as one batch (one task per fold), so every
worker stays busy until the last fold, whatever the number of points. A point whose run is
complete (every fold's ``result.json`` and ``metrics.json``) is skipped, so an interrupted
sweep resumes; a partly finished point resumes at fold level.

Identical points are shared across experiments through ``experiment.reuse`` (a list of other
experiment folders, relative to the YAML): a point that is not done here is copied from a
finished run in ``<folder>/runs/*`` whose resolved ``config.yaml`` equals the point's (e.g. rank
induction at T = 1 in ``threshold`` is the ``rank_induction`` point of ``compare``). Only an
exact match of the whole resolved config counts, so a different fold count, data path, grid
value or default never matches; and only a run whose recorded provenance (manifest and bag
file identities, splits) equals the point's and whose every fold records exactly the point's
train/val/test slides (``folds/<k>/split.json``), so a run over edited bags or another
manifest is never copied. A finished point is skipped only under the same condition (else
:func:`~histomil.training.train` refuses it, naming what changed).

The experiment YAML is a training config plus an optional ``experiment:`` section (grid values,
methods, alphas, ...) that the experiment reads; the rest must be a valid training config.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from histomil._io import atomic_write_text
from histomil.executors import ExecutorConfig, run_tasks
from histomil.provenance import StaleOutputError
from histomil.training.config import TrainConfig, config_from_dict, dump_config, matches_saved

log = logging.getLogger(__name__)

#: sections a method replaces as a whole (a CLAM model must not inherit AB-MIL's params)
REPLACED = ("model", "objective")


@dataclass(frozen=True)
class Point:
    """One sweep point: ``name`` (folder name), config ``overrides`` and ``labels`` for tables.

    ``overrides`` are deep-merged into the base config, except ``model`` and ``objective``
    (when present), which replace the base section as a whole.
    """

    name: str
    overrides: dict[str, Any]
    labels: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BaseConfig:
    """The experiment YAML split into the training part and the ``experiment:`` section."""

    raw: dict[str, Any]
    base_dir: str | None
    experiment: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SweepOptions:
    """How points run: executor and worker count, optional Monte Carlo ``repeats`` override."""

    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    repeats: int | None = None


class SweepError(RuntimeError):
    """Some points failed; finished ones are kept and a rerun resumes the others."""


def load_base(path: str | os.PathLike) -> BaseConfig:
    """Read an experiment YAML (training config + optional ``experiment:`` section)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"experiment config {path} does not exist")
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: the config must be a mapping")
    experiment = raw.pop("experiment", None) or {}
    if not isinstance(experiment, dict):
        raise ValueError(f"{path}: the experiment section must be a mapping")
    return BaseConfig(raw, str(path.resolve().parent), experiment)


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``base`` updated recursively with ``over`` (new dicts; inputs untouched)."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def resolve_point(base: BaseConfig, point: Point, options: SweepOptions) -> TrainConfig:
    """The validated training config of one point (model/objective sections replaced)."""
    raw = copy.deepcopy(base.raw)
    over = dict(point.overrides)
    for section in REPLACED:
        if section in over:
            raw[section] = copy.deepcopy(over.pop(section))
    raw = deep_merge(raw, over)
    if options.repeats is not None:
        raw = deep_merge(raw, {"split": {"repeats": int(options.repeats)}})
    try:
        return config_from_dict(raw, base_dir=base.base_dir)
    except ValueError as exc:
        raise ValueError(f"sweep point {point.name!r}: {exc}") from exc


def point_done(run_dir: str | os.PathLike, config: TrainConfig) -> bool:
    """True when the run holds ``metrics.json`` and every fold's ``result.json``."""
    run_dir = Path(run_dir)
    if not (run_dir / "metrics.json").is_file():
        return False
    folds = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8")).get("n_folds")
    return folds == config.split.n_folds and all(
        (run_dir / "folds" / str(k) / "result.json").is_file() for k in range(folds)
    )


def reuse_dirs(base: BaseConfig) -> list[Path]:
    """Experiment folders named in ``experiment.reuse`` (relative to the YAML's folder)."""
    value = base.experiment.get("reuse") or []
    if isinstance(value, (str, os.PathLike)):
        value = [value]
    root = Path(base.base_dir or ".")
    return [(root / str(v)).resolve() for v in value]


def _inputs_of(config: TrainConfig):
    """(validated cohort, wanted provenance) of a point; raises on unusable inputs."""
    from histomil.training.cohort import run_provenance, validate_cohort

    cohort = validate_cohort(config)
    return cohort, run_provenance(config, cohort)


def same_inputs(run_dir: Path, config: TrainConfig, inputs, strict: bool) -> bool:
    """Whether the finished folds of ``run_dir`` were made from exactly these inputs/splits."""
    from histomil.training.run import check_existing_run

    cohort, wanted = inputs
    try:
        check_existing_run(run_dir, config, cohort, wanted, resume=True, strict=strict)
    except StaleOutputError as exc:
        log.info("%s: %s", run_dir, exc)
        return False
    if not strict:
        return True
    from histomil.training.cohort import read_split, split_leaks

    return all(
        split_leaks(read_split(run_dir / "folds" / str(s.fold)), s, str(run_dir)) is None
        for s in cohort.splits
    )


def find_identical_run(config: TrainConfig, folders: list[Path], inputs=None) -> Path | None:
    """A finished run in ``<folder>/runs/*`` whose saved resolved config equals ``config`` and
    whose recorded inputs and per-fold splits equal the point's."""
    import yaml

    for folder in folders:
        for path in sorted((folder / "runs").glob("*/config.yaml")):
            saved = yaml.safe_load(path.read_text(encoding="utf-8"))
            if not (matches_saved(saved, config) and point_done(path.parent, config)):
                continue
            inputs = inputs or _inputs_of(config)
            if same_inputs(path.parent, config, inputs, strict=True):
                return path.parent
            log.info("not reusing %s: made from other inputs or splits", path.parent)
    return None


def run_sweep(
    base: BaseConfig, points: list[Point], out_dir: str | os.PathLike, options: SweepOptions
) -> dict[str, Path]:
    """Train every unfinished point; returns ``{point: run_dir}`` (raises after the batch if
    any point failed, naming it)."""
    out = Path(out_dir).resolve()
    names = [p.name for p in points]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate sweep point names: {names}")
    # every point's config and inputs (manifest, labels, bags, splits) are checked before
    # anything is written or trained
    resolved = [(p, resolve_point(base, p, options)) for p in points]
    checked = [(p, c, _inputs_of(c)) for p, c in resolved]
    from histomil.training.run import check_run, finish_run, start_run

    plan, runs = [], {}
    for point, config, inputs in checked:
        run_dir = out / "runs" / point.name
        runs[point.name] = run_dir
        if point_done(run_dir, config) and same_inputs(run_dir, config, inputs, strict=False):
            plan.append((point, config, None, None))
            continue
        source = None if run_dir.exists() else find_identical_run(config, reuse_dirs(base), inputs)
        if source is not None and source.resolve() != run_dir.resolve():
            plan.append((point, config, source, None))
            continue
        try:  # the checks train() makes, for every point before any point is written
            pending = check_run(config, run_dir, resume=True, inputs=inputs)
        except (ValueError, OSError) as exc:
            raise SweepError(f"point {point.name}: {exc} (nothing was trained)") from exc
        plan.append((point, config, None, pending))
    tasks, started, owner = [], [], {}
    for point, config, source, pending in plan:
        atomic_write_text(out / "configs" / f"{point.name}.yaml", dump_config(config))
        if source is not None:
            shutil.copytree(source, runs[point.name], symlinks=True)
            atomic_write_text(runs[point.name] / "reused_from.txt", f"{source}\n")
            log.info("point %s: reused the identical finished run %s", point.name, source)
        elif pending is not None:
            point_tasks, folds = start_run(pending, prefix=f"{point.name} ")
            owner.update({t.key: point.name for t in point_tasks})
            tasks += point_tasks
            started.append((point.name, pending, folds))
    results = run_tasks(tasks, options.executor, description=f"sweep {out.name}")
    failed = [r for r in results if not r.ok]
    broken = {owner[r.key] for r in failed}
    for name, pending, folds in started:
        if name not in broken:  # run-level outputs only from a point whose folds all finished
            finish_run(pending, folds)
    if failed:
        msg = "; ".join(f"{r.key}: {(r.error or '').splitlines()[0]}" for r in failed)
        raise SweepError(f"{len(failed)} fold(s) failed ({msg}); rerun to resume")
    return runs


def fold_rows(points: list[Point], runs: dict[str, Path], split: str = "test") -> pd.DataFrame:
    """Raw per-fold rows: ``point``, the point's labels, ``fold`` and every ``split`` metric."""
    rows = []
    for point in points:
        folds_dir = runs[point.name] / "folds"
        for result in sorted(folds_dir.glob("*/result.json"), key=lambda p: int(p.parent.name)):
            data = json.loads(result.read_text(encoding="utf-8"))
            metrics = {k: v for k, v in data.get(split, {}).items() if k not in ("n", "threshold")}
            rows.append({"point": point.name, **point.labels, "fold": data["fold"], **metrics})
    return pd.DataFrame(rows)
