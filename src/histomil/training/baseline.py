"""Per-fold baselines for objectives that start from a trained model (``needs_baseline``).

The objective says *whether* it needs a baseline (:attr:`Objective.needs_baseline`) and *how*
the baseline is trained (:meth:`Objective.baseline_objective`: by default the ``bag``
objective); the config says *where* it comes from (``objective.baseline``). Per fold the
state dict is, in order:

- ``objective.baseline`` = a run folder (its ``folds/<k>/checkpoint.pt``) or a checkpoint
  file: that checkpoint;
- ``objective.baseline`` unset or ``auto``: an existing finished ``RUN/baseline/folds/<k>/``,
  otherwise the baseline is trained now into ``RUN/baseline/`` (same model, split and seed).

A baseline never saw this fold's held-out slides: a checkpoint from another run is used only
when its fold's ``split.json`` (next to the checkpoint) records exactly this fold's
train/validation/test slides, else :class:`~histomil.training.cohort.SplitMismatchError`
names the slides that would leak. The run's own baseline is retrained when its recorded split
differs (it is a cache of this run).

Import direction: this module runs folds (:mod:`histomil.training.fold`); the fold itself only
receives the state dict, so ``fold`` never imports ``baseline``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from histomil.training.cohort import (
    SplitMismatchError,
    baseline_checkpoints,
    read_split,
    split_leaks,
)
from histomil.training.config import ObjectiveConfig, OutputConfig, TrainConfig
from histomil.training.fold import read_fold_result, run_fold
from histomil.training.splits import FoldSplit

BASELINE_DIR = "baseline"


def _load(path: Path) -> dict[str, Any]:
    import torch

    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    return ckpt["model"] if isinstance(ckpt, dict) and "model" in ckpt else ckpt


def baseline_config(config: TrainConfig) -> TrainConfig:
    """The config of ``config``'s baseline: the objective the strategy names, no attention
    export, checkpoints kept (they are the baseline)."""
    from histomil.objectives.registry import objective_class

    cls = objective_class(config.objective.name)
    base = cls.baseline_objective(dict(config.objective.params))
    return replace(
        config,
        objective=ObjectiveConfig(base["name"], dict(base["params"])),
        output=OutputConfig(attention=False, attention_splits=(), save_checkpoints=True),
    )


def baseline_state(config: TrainConfig, split: FoldSplit, run_dir: str) -> dict[str, Any]:
    """Model state dict of the fold's trained baseline (trained here when missing)."""
    given = baseline_checkpoints(config, [split])
    if given is not None:
        path = given[split.fold]
        if not path.is_file():
            raise FileNotFoundError(f"objective.baseline: no checkpoint at {path}")
        problem = split_leaks(read_split(path.parent), split, f"baseline {path}")
        if problem:
            raise SplitMismatchError(problem)
        return _load(path)
    base = Path(run_dir) / BASELINE_DIR
    ckpt = base / "folds" / str(split.fold) / "checkpoint.pt"
    fresh = read_fold_result(base, split.fold) is not None and ckpt.is_file()
    if not fresh or split_leaks(read_split(ckpt.parent), split, "baseline") is not None:
        run_fold(baseline_config(config), split, str(base))
    return _load(ckpt)


def run_fold_with_baseline(config: TrainConfig, split: FoldSplit, run_dir: str) -> dict:
    """The fold task of a run whose objective needs a baseline: resolve (or train) the
    fold's baseline, then :func:`~histomil.training.fold.run_fold` with its state dict."""
    state = baseline_state(config, split, run_dir)
    return run_fold(config, split, run_dir, baseline_state=state)
