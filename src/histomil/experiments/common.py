"""Options shared by every experiment and the helpers that turn them into a sweep."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from histomil.executors import ExecutorConfig
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

    def sweep_options(self) -> SweepOptions:
        executor = ExecutorConfig(self.executor, self.workers, self.ray_address)
        return SweepOptions(executor=executor, repeats=self.repeats)


@dataclass(frozen=True)
class Context:
    """One experiment invocation: the base config, output folder and options."""

    base: BaseConfig
    out: Path
    options: ExperimentOptions = field(default_factory=ExperimentOptions)

    @property
    def experiment(self) -> dict[str, Any]:
        return self.base.experiment

    def grid(self, default: Sequence[Any], key: str = "grid") -> list[Any]:
        """Grid values: CLI ``--grid``, else ``experiment.<key>`` in the YAML, else ``default``."""
        values = self.options.grid or self.experiment.get(key) or default
        values = list(values)
        if not values:
            raise ValueError("the grid is empty")
        return values

    def requested_methods(self) -> list[str] | None:
        """Methods named on the CLI (``--methods``), if any."""
        return list(self.options.methods) if self.options.methods else None

    def run(self, points: list[Point]) -> tuple[dict[str, Path], pd.DataFrame]:
        """Train the points (resuming) and return their run dirs and raw per-fold test rows."""
        runs = run_sweep(self.base, points, self.out, self.options.sweep_options())
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
