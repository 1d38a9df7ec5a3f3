"""Slide-level objectives: ``bag`` (BCE/CE/survival NLL), ``rank_induction`` and
``attention_induction``.

All three share :meth:`BagObjective.bag_loss`:

- classification with one logit: binary cross-entropy on ``logits[:, 0]``;
- classification with C >= 2 logits: cross-entropy;
- survival (``task == "survival"``): discrete-time NLL (:func:`survival_nll`), with
  ``bag.label`` holding the time-bin index (set by the trainer from training-only bin edges)
  and ``bag.event`` the event indicator;

plus the model's internal ``aux_loss`` (CLAM instance clustering, DTFD tier 1): a model with a
``bag_weight`` attribute gets ``bag_weight * bag + (1 - bag_weight) * aux``, any other model
``bag + aux``.

Class 0 is the negative (normal) class: "positive slide" means ``label != 0``. For one-logit
models the ranked/induced branch is the positive class's (``output.class_scores(1)``); for
multi-class models it is the branch of the slide's own class.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from histomil.bags.bag import Bag
from histomil.models.base import MILModel, MILOutput
from histomil.objectives.base import LossOutput, Objective, TrainContext
from histomil.objectives.rank import rank_loss
from histomil.objectives.survival import survival_nll

TASKS = ("classification", "survival")


def slide_loss(logits: Tensor, bag: Bag, task: str, survival_alpha: float = 0.0) -> Tensor:
    """Slide-level loss of logits (1, C): BCE (C = 1), CE (C >= 2) or survival NLL."""
    logits = logits.float()  # float32 also under bfloat16 autocast
    if task == "survival":
        if bag.event is None:
            raise ValueError(f"survival bag {bag.slide_id} has no event indicator")
        bins = torch.tensor([int(bag.label)], device=logits.device)
        events = torch.tensor([float(bag.event)], device=logits.device)
        return survival_nll(logits, bins, events, alpha=survival_alpha)
    if logits.shape[-1] == 1:
        target = torch.tensor([float(bag.label)], device=logits.device, dtype=logits.dtype)
        return F.binary_cross_entropy_with_logits(logits[:, 0], target)
    target = torch.tensor([int(bag.label)], device=logits.device)
    return F.cross_entropy(logits, target)


class BagObjective(Objective):
    """Slide-level loss only (``bag``): the AB-MIL/CLAM/... baseline."""

    name = "bag"

    def __init__(self, survival_alpha: float = 0.0) -> None:
        super().__init__()
        self.survival_alpha = float(survival_alpha)
        self.task = "classification"
        self.n_classes = 1

    def setup(self, model: MILModel, context: TrainContext) -> None:
        if context.task not in TASKS:
            raise ValueError(f"unknown task {context.task!r}; valid: {', '.join(TASKS)}")
        self.task = context.task
        self.n_classes = context.n_classes

    # -- shared pieces ----------------------------------------------------------------------
    def run_model(self, model: MILModel, bag: Bag) -> MILOutput:
        """Training forward pass; the slide label is passed for label-dependent model losses."""
        label = None
        if self.task == "classification":
            label = torch.tensor([int(bag.label)], device=bag.features.device)
        return model(bag.features, coords=bag.coords, label=label)

    def slide_loss(self, logits: Tensor, bag: Bag) -> Tensor:
        """Slide-level loss of logits (1, C) for ``bag`` (no auxiliary term)."""
        return slide_loss(logits, bag, self.task, self.survival_alpha)

    def bag_loss(
        self, model: MILModel, output: MILOutput, bag: Bag
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Slide loss plus the model's auxiliary loss; returns (loss, logged terms).

        Terms are detached tensors, not floats: reading them here would synchronise with the
        device every step; the trainer sums them on the device and reads them once per epoch.
        """
        slide = self.slide_loss(output.logits, bag)
        terms = {"bag": slide.detach()}
        if output.aux_loss is None:
            return slide, terms
        terms["aux"] = output.aux_loss.detach()
        bag_weight = model.bag_weight
        if bag_weight is None:
            return slide + output.aux_loss, terms
        return bag_weight * slide + (1.0 - bag_weight) * output.aux_loss, terms

    def target_class(self, bag: Bag) -> int:
        """Class whose attention branch is supervised: 1 for one-logit models, else the label."""
        return 1 if self.n_classes == 1 else int(bag.label)

    def forward(self, model: MILModel, bag: Bag) -> LossOutput:
        output = self.run_model(model, bag)
        loss, terms = self.bag_loss(model, output, bag)
        terms["total"] = loss.detach()
        return LossOutput(loss, terms, output)


def _is_positive(bag: Bag) -> bool:
    return int(bag.label) != 0


class RankInduction(BagObjective):
    """``bag + weight * rank_loss`` on positive slides with lesion labels (Kim et al.)."""

    name = "rank_induction"

    def __init__(
        self,
        sigma: float = 1.0,
        margin: float = 1.0,
        weight: float = 1.0,
        max_pos: int | None = 1024,
        max_neg: int | None = 1024,
        drop_margin: bool = False,
        include_equal_pairs: bool = False,
        survival_alpha: float = 0.0,
    ) -> None:
        super().__init__(survival_alpha)
        self.rank_params: dict[str, Any] = {
            "sigma": float(sigma),
            "margin": float(margin),
            "max_pos": max_pos,
            "max_neg": max_neg,
            "drop_margin": bool(drop_margin),
            "include_equal_pairs": bool(include_equal_pairs),
        }
        self.weight = float(weight)
        self.generator = torch.Generator().manual_seed(0)

    def setup(self, model: MILModel, context: TrainContext) -> None:
        super().setup(model, context)
        if self.task != "classification":
            raise ValueError("rank_induction needs task: classification")
        self.generator = torch.Generator().manual_seed(int(context.seed))

    def forward(self, model: MILModel, bag: Bag) -> LossOutput:
        output = self.run_model(model, bag)
        loss, terms = self.bag_loss(model, output, bag)
        if _is_positive(bag) and bag.has_lesion_labels:
            scores = output.class_scores(self.target_class(bag))
            if scores is None:
                raise ValueError(f"rank_induction needs attention scores; {type(model).__name__}")
            rank = rank_loss(
                scores[0], bag.patch_labels, generator=self.generator, **self.rank_params
            )
            terms["rank"] = rank.detach()
            loss = loss + self.weight * rank
        terms["total"] = loss.detach()
        return LossOutput(loss, terms, output)


class AttentionInduction(BagObjective):
    """``bag + weight * sum_k (a_k - t_k)^2`` on annotated positive slides (Koga et al.).

    ``a`` are the pooling weights actually used (after thresholding) of the supervised branch,
    ``t = bag.attn_target`` (lesion-area share per patch, summing to 1). ``reduction="sum"``
    (default) is the squared error summed over patches, as in Koga et al.'s attention loss and the
    rank-induction authors' baseline (``MSELoss(reduction="sum")``); ``"mean"`` divides by N,
    which makes the term vanish on large bags.
    """

    name = "attention_induction"

    def __init__(
        self, weight: float = 1.0, reduction: str = "sum", survival_alpha: float = 0.0
    ) -> None:
        super().__init__(survival_alpha)
        if reduction not in ("sum", "mean"):
            raise ValueError(f"reduction must be sum or mean, got {reduction!r}")
        self.weight = float(weight)
        self.reduction = reduction

    def setup(self, model: MILModel, context: TrainContext) -> None:
        super().setup(model, context)
        if self.task != "classification":
            raise ValueError("attention_induction needs task: classification")

    def forward(self, model: MILModel, bag: Bag) -> LossOutput:
        output = self.run_model(model, bag)
        loss, terms = self.bag_loss(model, output, bag)
        if _is_positive(bag) and bag.attn_target is not None and bag.has_lesion_labels:
            weights = output.class_weights(self.target_class(bag))
            if weights is None:
                raise ValueError(f"attention_induction needs attention; {type(model).__name__}")
            target = bag.attn_target.to(weights.dtype).to(weights.device)
            err = (weights[0] - target) ** 2
            attn = err.sum() if self.reduction == "sum" else err.mean()
            terms["attn"] = attn.detach()
            loss = loss + self.weight * attn
        terms["total"] = loss.detach()
        return LossOutput(loss, terms, output)
