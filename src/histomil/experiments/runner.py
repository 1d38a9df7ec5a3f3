"""Run a registered experiment: ``run_experiment(name, config, out, options)``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from histomil.executors import ensure_connected
from histomil.experiments.common import Context, ExperimentOptions
from histomil.experiments.registry import get_spec, load
from histomil.experiments.settings import validate_section
from histomil.experiments.sweep import load_base


def run_experiment(
    name: str,
    config: str | os.PathLike,
    out_dir: str | os.PathLike,
    options: ExperimentOptions | None = None,
) -> dict[str, Any]:
    """Run experiment ``name`` from the YAML ``config`` into ``out_dir``; returns its summary.

    Writes ``results.csv``, ``table.md``, ``summary.json``, PNG figures, ``configs/`` and
    ``runs/``; a rerun skips finished points. The ``experiment:`` section and the options are
    checked before anything is written.
    """
    spec = get_spec(name)
    options = options or ExperimentOptions()
    if options.grid and spec.grid_key is None:
        raise ValueError(f"experiment {name} has no grid; drop --grid")
    if options.runs and not spec.takes_runs:
        raise ValueError(f"experiment {name} trains its own runs; --runs is for localization")
    base = load_base(config)
    section = validate_section(spec, base.experiment, str(config))
    out = Path(out_dir).resolve()
    # a Ray cluster is connected (within --ray-timeout) before anything is written; the
    # connection then serves every batch of the sweep
    ensure_connected(options.executor_config())
    out.mkdir(parents=True, exist_ok=True)
    return load(spec)(Context(spec, base, section, out, options))
