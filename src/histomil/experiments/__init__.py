"""The papers' experiments as sweeps over training configs (docs/experiments.md).

``run_experiment(name, config, out_dir, options)`` with ``name`` one of :data:`EXPERIMENTS`
(the registry, :mod:`histomil.experiments.registry`). Attributes load lazily so that the CLI
reads the registry without importing pandas.
"""

from __future__ import annotations

import importlib
from typing import Any

from histomil.experiments.registry import EXPERIMENTS, ExperimentSpec

_LAZY = {
    "ExperimentOptions": "histomil.experiments.common",
    "Point": "histomil.experiments.sweep",
    "SweepError": "histomil.experiments.sweep",
    "load_base": "histomil.experiments.sweep",
    "run_sweep": "histomil.experiments.sweep",
    "run_experiment": "histomil.experiments.runner",
}

__all__ = ["EXPERIMENTS", "ExperimentSpec", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
