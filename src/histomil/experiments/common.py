"""Options shared by every experiment and the helpers that turn them into a sweep."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from histomil.executors import ExecutorConfig
from histomil.experiments.methods import DISPLAY, Method, select_methods
from histomil.experiments.plots import Series
from histomil.experiments.registry import ExperimentSpec
from histomil.experiments.settings import ExperimentSection
from histomil.experiments.sweep import BaseConfig, Point, SweepOptions, fold_rows, run_sweep


@dataclass(frozen=True)
class ExperimentOptions:
    """CLI-level choices: parallelism, grid/methods/repeats overrides, existing runs."""

    workers: int = 1
    executor: str = "local"
    ray_address: str | None = None
    grid: tuple[Any, ...] | None = None
    methods: tuple[str, ...] | None = None
    repeats: int | None = None
    runs: tuple[tuple[str, str], ...] = ()  # localization: (name, run dir) pairs
    ray_timeout: float = 30.0

    def executor_config(self, out: Path | None = None) -> ExecutorConfig:
        """Where the sweep's points run; with Ray, its messages go to ``out/ray.log``."""
        log = None if out is None or self.executor != "ray" else str(Path(out) / "ray.log")
        return ExecutorConfig(
            self.executor,
            self.workers,
            self.ray_address,
            ray_timeout=self.ray_timeout,
            ray_log=log,
        )

    def sweep_options(self, out: Path | None = None) -> SweepOptions:
        return SweepOptions(executor=self.executor_config(out), repeats=self.repeats)


@dataclass(frozen=True)
class Context:
    """One experiment invocation: its spec, the base config, the validated ``experiment:``
    section, the output folder and the options."""

    spec: ExperimentSpec
    base: BaseConfig
    section: ExperimentSection
    out: Path
    options: ExperimentOptions = field(default_factory=ExperimentOptions)

    def grid(self, default: Sequence[Any]) -> list[Any]:
        """Grid values: CLI ``--grid``, else the YAML's grid key, else ``default``."""
        key = self.spec.grid_key
        values = self.options.grid or (getattr(self.section, key) if key else None) or default
        values = list(values)
        if not values:
            raise ValueError("the grid is empty")
        return values

    def methods(self, default: Sequence[str]) -> list[Method]:
        """Methods named on the CLI (``--methods``), else ``use_methods``, else ``default``."""
        requested = list(self.options.methods) if self.options.methods else None
        return select_methods(self.section, requested, list(default))

    def methods_named(self, names: Sequence[str]) -> list[Method]:
        """These methods (built-in or from ``experiment.methods``), whatever ``--methods`` says."""
        return select_methods(self.section, list(names), list(names))

    def run(self, points: list[Point]) -> tuple[dict[str, Path], pd.DataFrame]:
        """Train the points (resuming) and return their run dirs and raw per-fold test rows."""
        runs = run_sweep(self.base, points, self.out, self.options.sweep_options(self.out))
        return runs, fold_rows(points, runs)


def as_fractions(values: Sequence[float], name: str) -> list[float]:
    """Shares given as fractions (0.2) or, when any value exceeds 1, as percentages (20)."""
    v = [float(x) for x in values]
    if any(x > 1 for x in v):
        v = [x / 100.0 for x in v]
    bad = [x for x in v if not 0 <= x <= 1]
    if bad:
        raise ValueError(f"{name} values must be in [0, 1] (or 0-100 %), got {values}")
    return v


def tag(value: float) -> str:
    """Folder-safe text of a grid value (``0.25`` -> ``0.25``, ``448.0`` -> ``448``)."""
    return f"{float(value):g}"


def level0_mpp(base: BaseConfig, config_dir: str | os.PathLike | None = None) -> float | None:
    """``experiment.level0_mpp`` if set, else the level-0 mpp recorded in the first bag file."""
    explicit = base.experiment.get("level0_mpp")
    if explicit is not None:
        return float(explicit)
    from histomil.bags.dataset import bag_file_attrs
    from histomil.training.config import config_from_dict

    cfg = config_from_dict(base.raw, base_dir=base.base_dir)
    from histomil.manifest import read_manifest

    first = str(read_manifest(cfg.data.manifest)["slide_id"].iloc[0])
    _, attrs = bag_file_attrs(cfg.data.bags, first)
    for key in ("level0_mpp", "mpp_level0", "coords.level0_mpp"):
        if key in attrs:
            return float(attrs[key])
    return None


def data_points(
    methods: Sequence[Method], values: Sequence[float], key: str, label: str, prefix: str
) -> list[Point]:
    """Every method at every value of ``data.<key>``: point ``<method>__<prefix><value>``
    labelled ``{"method", label: value}``."""
    return [
        Point(
            f"{m.name}__{prefix}{tag(v)}",
            {**m.overrides, "data": {key: v}},
            {"method": m.name, label: v},
        )
        for m in methods
        for v in values
    ]


def metric_values(rows: pd.DataFrame, mask: Any, metric: str) -> list[float]:
    """Per-fold values of ``metric`` in the rows selected by ``mask`` ([] when not measured)."""
    return rows.loc[mask, metric].astype(float).tolist() if metric in rows else []


def auroc_series(
    summ: pd.DataFrame, key: str, names: list[str], stars: dict | None = None
) -> list[Series]:
    """One AUROC line (mean, sd bars) per method along grid column ``key``."""
    out = []
    for name in names:
        sel = summ[summ.method == name].sort_values(key)
        out.append(
            Series(
                DISPLAY.get(name, name),
                sel[key].tolist(),
                sel.auroc_mean.tolist(),
                sel.auroc_sd.tolist(),
                (stars or {}).get(name, {}),
            )
        )
    return out
