"""Learning-rate schedules of the trainer (``train.scheduler``), stepped once per optimizer step.

- ``none``: constant ``lr``.
- ``cosine``: linear warm-up from ``lr / warmup`` to ``lr`` over the first ``lr_warmup_steps``
  optimizer steps (none by default), then cosine annealing from ``lr`` to ``lr_min`` over the
  remaining steps of ``max_epochs`` epochs:
  ``lr_s = lr_min + (lr - lr_min) * (1 + cos(pi * (s - w) / (S - w))) / 2`` with ``S`` =
  ``max_epochs * steps_per_epoch`` and ``w`` the warm-up steps. The MHIM-v2 paper anneals the
  learning rate with a cosine over its 200 epochs (authors' code: ``CosineAnnealingLR`` with
  ``T_max = num_epoch`` and ``eta_min = 0``); stepping per optimizer step gives the same curve
  sampled more finely. With early stopping the schedule still runs over ``max_epochs``, as in the
  paper and the authors' code.

The schedule is a ``torch.optim.lr_scheduler.LambdaLR`` (its state dict is what a checkpoint
holds), so resuming restores the step count and hence the learning rate.
"""

from __future__ import annotations

import math

import torch

from histomil.training.config import TrainSettings

SCHEDULERS = ("none", "cosine")


def steps_per_epoch(n_bags: int, batch_accumulation: int) -> int:
    """Optimizer steps in one epoch of ``n_bags`` bags (the last partial batch also steps)."""
    return max(1, math.ceil(n_bags / max(1, batch_accumulation)))


def lr_factor(step: int, total: int, warmup: int = 0, min_ratio: float = 0.0) -> float:
    """Multiplier of the base lr at optimizer step ``step`` (0-based) of ``total``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup)
    t = min(max((step - warmup) / span, 0.0), 1.0)
    return min_ratio + (1.0 - min_ratio) * (1.0 + math.cos(math.pi * t)) / 2.0


def build_scheduler(
    optimizer: torch.optim.Optimizer, settings: TrainSettings, n_steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR | None:
    """The schedule of ``settings.scheduler`` (None for ``none``)."""
    if settings.scheduler not in SCHEDULERS:
        raise ValueError(f"train.scheduler must be one of {SCHEDULERS}, got {settings.scheduler!r}")
    if settings.scheduler == "none":
        return None
    if settings.lr_min > settings.lr:
        raise ValueError(f"train.lr_min ({settings.lr_min}) must be <= train.lr ({settings.lr})")
    total = settings.max_epochs * n_steps_per_epoch
    warmup = settings.lr_warmup_steps
    ratio = settings.lr_min / settings.lr
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total, warmup, ratio)
    )
