"""Baselines for strategies with ``needs_baseline`` (MHIM): same model, ``bag`` objective
(``rank_induction`` when the MHIM student trains with the rank loss), same split and seed.

Per fold the state dict comes from, in order: ``objective.params.teacher_init`` (a run folder,
whose ``folds/<k>/checkpoint.pt`` is used, or a checkpoint file; ``auto`` or unset means the
next two options); an existing finished
``RUN/baseline/folds/<k>/``; otherwise the baseline is trained now into ``RUN/baseline/``.

A teacher never saw this fold's held-out slides: a checkpoint from another run is used only
when its fold's ``split.json`` (next to the checkpoint) records exactly this fold's
train/validation/test slides, else :class:`~histomil.training.cohort.SplitMismatchError`
names the slides that would leak. The run's own baseline is retrained when its recorded split
differs (it is a cache of this run).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from histomil.training.config import ObjectiveConfig, OutputConfig, TrainConfig
from histomil.training.splits import FoldSplit


def _load(path: Path) -> dict[str, Any]:
    import torch

    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    return ckpt["model"] if isinstance(ckpt, dict) and "model" in ckpt else ckpt


_RANK_KEYS = ("weight", "sigma", "margin", "max_pos", "max_neg")


def baseline_objective(objective: dict[str, Any]) -> dict[str, Any]:
    """The baseline's objective for an MHIM objective ``{"name", "params"}``: ``bag``, or
    ``rank_induction`` with the same settings when the student trains with the rank loss
    (``params.rank.weight > 0``), so the teacher comes from the rank-induction baseline."""
    rank = (objective.get("params") or {}).get("rank") or {}
    if not isinstance(rank, dict) or float(rank.get("weight", 0.0) or 0.0) <= 0:
        return {"name": "bag", "params": {}}
    return {"name": "rank_induction", "params": {k: rank[k] for k in _RANK_KEYS if k in rank}}


def baseline_state(
    config: TrainConfig, split: FoldSplit, run_dir: str, baseline_dir: str | None = None
) -> dict[str, Any]:
    """Model state dict of the fold's trained baseline (trained here when missing)."""
    from histomil.training.cohort import SplitMismatchError, read_split, split_leaks
    from histomil.training.fold import read_fold_result, run_fold

    teacher = config.objective.params.get("teacher_init")
    if isinstance(teacher, str) and teacher and teacher != "auto":
        path = Path(teacher)
        if path.is_dir():
            path = path / "folds" / str(split.fold) / "checkpoint.pt"
        if not path.is_file():
            raise FileNotFoundError(f"objective.params.teacher_init: no checkpoint at {path}")
        problem = split_leaks(read_split(path.parent), split, f"teacher {path}")
        if problem:
            raise SplitMismatchError(problem)
        return _load(path)
    base = Path(baseline_dir) if baseline_dir else Path(run_dir) / "baseline"
    ckpt = base / "folds" / str(split.fold) / "checkpoint.pt"
    fresh = read_fold_result(base, split.fold) is not None and ckpt.is_file()
    if not fresh or split_leaks(read_split(ckpt.parent), split, "baseline") is not None:
        base_obj = baseline_objective(
            {"name": config.objective.name, "params": dict(config.objective.params)}
        )
        base_cfg = replace(
            config,
            objective=ObjectiveConfig(base_obj["name"], base_obj["params"]),
            output=OutputConfig(attention=False, attention_splits=(), save_checkpoints=True),
        )
        run_fold(base_cfg, split, str(base))
    return _load(ckpt)
