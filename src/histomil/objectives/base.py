"""The objective contract: ``objective(model, bag) -> LossOutput``.

An objective owns everything about *how* a model is trained (losses, teachers, masking) and
never edits a model. It is an ``nn.Module`` so that strategies with their own trainable parts
(MHIM's recycle network) are optimised with the model: the trainer optimises
``model.parameters()`` plus ``objective.parameters()`` that require gradients.

Lifecycle hooks (all optional; the defaults do nothing) let strategies with state work
with the same trainer:

- ``setup(model, context)`` once per fold before training (e.g. build the MHIM teacher from a
  baseline checkpoint);
- ``on_epoch_start(epoch, max_epochs)`` (schedules, e.g. MHIM's cosine decay of beta_h);
- ``after_optimizer_step(model)`` (EMA updates);
- ``set_steps_per_epoch(n)`` (once, before the first epoch) and ``epoch_stats()`` (numbers for
  the epoch's history row);
- ``predict(model, bag)`` at validation/test time (default: the model on the full bag).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

from histomil.bags.bag import Bag
from histomil.models.base import MILModel, MILOutput


@dataclass
class LossOutput:
    """Total loss (scalar with graph) plus named components for logging.

    Loss components are detached 0-d tensors (reading them as floats every step would
    synchronise with the device); bookkeeping numbers (MHIM's ``beta_h``, ``n_keep``) are floats.
    """

    loss: Tensor
    terms: dict[str, Tensor | float] = field(default_factory=dict)
    output: MILOutput | None = None


@dataclass
class TrainContext:
    """What the trainer tells an objective in ``setup``: the fold, where things are, the task."""

    fold: int = 0
    task: str = "classification"
    n_classes: int = 1
    run_dir: str | None = None
    seed: int = 0
    baseline_state: dict[str, Any] | None = None  # model state dict of a trained baseline
    extra: dict[str, Any] = field(default_factory=dict)


class Objective(nn.Module):
    """Base class of every objective / training strategy."""

    name: str = "objective"
    #: True for strategies (MHIM) that start from a trained baseline of the same model: the
    #: run then trains (or loads, ``objective.baseline: <run folder>``) that baseline per fold
    #: and passes its state dict in ``TrainContext.baseline_state`` before calling ``setup``.
    needs_baseline: bool = False

    @classmethod
    def baseline_objective(cls, params: dict[str, Any]) -> dict[str, Any]:
        """``{"name", "params"}`` of the objective the baseline is trained with, given this
        objective's ``params`` (only read when :attr:`needs_baseline`): ``bag`` by default."""
        return {"name": "bag", "params": {}}

    @classmethod
    def resolved_params(cls, params: dict[str, Any]) -> dict[str, Any]:
        """Every setting this objective trains with for the given ``params``: the given ones
        plus the constructor's defaults (recorded in a run's provenance, so that a default
        changed by a later histomil is detected on resume). Strategies with nested settings
        groups override it to resolve the groups."""
        from histomil.provenance import effective_params

        return effective_params(cls, params or {})

    def forward(self, model: MILModel, bag: Bag) -> LossOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def setup(self, model: MILModel, context: TrainContext) -> None:
        """Called once per fold before the first epoch."""

    def on_epoch_start(self, epoch: int, max_epochs: int) -> None:
        """Called at the start of every training epoch (0-based)."""

    def after_optimizer_step(self, model: MILModel) -> None:
        """Called after every optimizer step."""

    def set_steps_per_epoch(self, n: int) -> None:
        """Called once by the trainer before the first epoch: optimizer steps per epoch."""

    def epoch_stats(self) -> dict[str, float]:
        """Numbers added to the epoch's history row (e.g. how far MHIM's teacher moved)."""
        return {}

    def predict(self, model: MILModel, bag: Bag) -> MILOutput:
        """Inference on the full bag (used for validation, test and attention export)."""
        return model(bag.features, coords=bag.coords)
