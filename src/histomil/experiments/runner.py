"""The experiment registry: ``run_experiment(name, config, out, options)``."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from histomil.executors import ensure_connected
from histomil.experiments.annotation import annotation_fraction, granularity
from histomil.experiments.attention import localization, threshold
from histomil.experiments.classification import compare, low_data
from histomil.experiments.common import Context, ExperimentOptions
from histomil.experiments.mhim import mhim_ablation
from histomil.experiments.sweep import load_base

EXPERIMENTS: dict[str, Callable[[Context], dict[str, Any]]] = {
    "compare": compare,
    "low-data": low_data,
    "granularity": granularity,
    "annotation-fraction": annotation_fraction,
    "threshold": threshold,
    "localization": localization,
    "mhim-ablation": mhim_ablation,
}


def run_experiment(
    name: str,
    config: str | os.PathLike,
    out_dir: str | os.PathLike,
    options: ExperimentOptions | None = None,
) -> dict[str, Any]:
    """Run experiment ``name`` from the YAML ``config`` into ``out_dir``; returns its summary.

    Writes ``results.csv``, ``table.md``, ``summary.json``, PNG figures, ``configs/`` and
    ``runs/``; a rerun skips finished points.
    """
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; valid: {', '.join(EXPERIMENTS)}")
    options = options or ExperimentOptions()
    out = Path(out_dir).resolve()
    base = load_base(config)
    # a Ray cluster is connected (within --ray-timeout) before anything is written; the
    # connection then serves every batch of the sweep
    ensure_connected(options.executor_config())
    out.mkdir(parents=True, exist_ok=True)
    ctx = Context(base, out, options)
    return EXPERIMENTS[name](ctx)
