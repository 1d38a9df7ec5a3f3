"""The experiment registry as data: name -> where its code lives, what it varies, what it reads.

Pure Python with no imports beyond the standard library, so the CLI builds its help text and
validates a NAME from this table without loading pandas or torch. The code of an experiment
(``module.run(ctx)``) is imported only when the experiment runs (:func:`load`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: ``experiment:`` keys every sweep experiment reads (methods table, reuse of finished points)
COMMON_KEYS = ("methods", "use_methods", "reuse")


@dataclass(frozen=True)
class ExperimentSpec:
    """One experiment: its module (``histomil.experiments.<module>``, function ``run``), the
    paper item it reproduces, the ``experiment:`` key of its grid (``None``: no grid; ``--grid``
    overrides it) and every other ``experiment:`` key it reads."""

    name: str
    module: str
    paper: str
    grid_key: str | None
    keys: tuple[str, ...]
    takes_runs: bool = False  # scores existing runs (``--runs NAME=DIR``) instead of training

    @property
    def all_keys(self) -> tuple[str, ...]:
        grid = (self.grid_key,) if self.grid_key else ()
        return (*grid, *self.keys)


SPECS: tuple[ExperimentSpec, ...] = (
    ExperimentSpec(
        name="compare", module="compare", paper="Table 2", grid_key=None,
        keys=(*COMMON_KEYS, "reference"),
    ),
    ExperimentSpec(
        name="low-data", module="low_data", paper="Figure 2", grid_key="grid",
        keys=(*COMMON_KEYS, "reference"),
    ),
    ExperimentSpec(
        name="granularity", module="granularity", paper="Figure 3", grid_key="grid",
        keys=(*COMMON_KEYS, "reference", "level0_mpp"),
    ),
    ExperimentSpec(
        name="annotation-fraction", module="annotation_fraction", paper="Figure 4",
        grid_key="grid", keys=(*COMMON_KEYS, "baseline"),
    ),
    ExperimentSpec(
        name="threshold", module="threshold", paper="Table 3", grid_key="grid",
        keys=(*COMMON_KEYS, "reference_threshold"),
    ),
    ExperimentSpec(
        name="localization", module="localization", paper="Figure 5", grid_key="alphas",
        keys=(*COMMON_KEYS, "localization_key"), takes_runs=True,
    ),
    ExperimentSpec(
        name="mhim-ablation", module="mhim", paper="MHIM Tables 7-10", grid_key="variants",
        keys=(*COMMON_KEYS, "mhim_params"),
    ),
)  # fmt: skip

EXPERIMENTS: dict[str, ExperimentSpec] = {s.name: s for s in SPECS}


def get_spec(name: str) -> ExperimentSpec:
    """The spec of ``name``; a ValueError listing the valid names otherwise."""
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; valid: {', '.join(EXPERIMENTS)}")
    return EXPERIMENTS[name]


def load(spec: ExperimentSpec) -> Callable[[Any], dict[str, Any]]:
    """The experiment's ``run(ctx) -> summary`` (imported now, with its heavy dependencies)."""
    return importlib.import_module(f"histomil.experiments.{spec.module}").run


def names_help() -> str:
    """The NAME help of ``histomil experiment``: every experiment with its paper item."""
    return " | ".join(f"{s.name} ({s.paper})" for s in SPECS)
