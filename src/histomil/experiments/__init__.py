"""The papers' experiments as sweeps over training configs (docs/experiments.md).

``run_experiment(name, config, out_dir, options)`` with ``name`` one of :data:`EXPERIMENTS`.
"""

from histomil.experiments.common import ExperimentOptions
from histomil.experiments.runner import EXPERIMENTS, run_experiment
from histomil.experiments.sweep import Point, SweepError, load_base, run_sweep

__all__ = [
    "EXPERIMENTS",
    "ExperimentOptions",
    "Point",
    "SweepError",
    "load_base",
    "run_experiment",
    "run_sweep",
]
