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
        "compare",
        "compare",
        "Table 2",
        None,
        (*COMMON_KEYS, "reference"),
    ),
    ExperimentSpec(
        "low-data",
        "low_data",
        "Figure 2",
        "grid",
        (*COMMON_KEYS, "reference"),
    ),
    ExperimentSpec(
        "granularity",
        "granularity",
        "Figure 3",
        "grid",
        (*COMMON_KEYS, "reference", "level0_mpp"),
    ),
    ExperimentSpec(
        "annotation-fraction",
        "annotation_fraction",
        "Figure 4",
        "grid",
        (*COMMON_KEYS, "baseline"),
    ),
    ExperimentSpec(
        "threshold",
        "threshold",
        "Table 3",
        "grid",
        (*COMMON_KEYS, "reference_threshold"),
    ),
    ExperimentSpec(
        "localization",
        "localization",
        "Figure 5",
        "alphas",
        (*COMMON_KEYS, "localization_key"),
        takes_runs=True,
    ),
    ExperimentSpec(
        "mhim-ablation",
        "mhim",
        "MHIM Tables 7-10",
        "variants",
        (*COMMON_KEYS, "mhim_params"),
    ),
)

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
    """One line per experiment for ``histomil experiment --help``."""
    return " | ".join(f"{s.name} ({s.paper})" for s in SPECS)
