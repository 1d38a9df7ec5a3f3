"""MHIM-MIL v2 and v1 as a training strategy around any MIL model (the student).

One training step on one bag (paper Algorithms 1-2):

1. the frozen teacher runs on the full bag: bag embedding ``F_t`` and instance scores
   (:mod:`~histomil.objectives.mhim.scoring`);
2. :func:`~histomil.objectives.mhim.masking.mask_instances` drops the randomly-high-score
   masked instances and splits the rest into kept and large-scale-masked ones;
3. the student projects kept and masked instances (``project``); the global recycle network
   turns the masked ones into K tokens appended to the kept ones; ``aggregate`` gives the
   student output on this mined bag;
4. ``L = L_slide + alpha * L_con (+ rank_weight * L_rank)``; ``L_slide`` is the ``bag``
   objective's loss (classification or survival, plus any model auxiliary loss).

After each optimizer step the teacher and the recycle queries are EMA-updated. ``predict`` runs
the student on the full bag (with the recycle tokens appended when ``recycle.at_inference``);
the returned ``scores``/``weights``/``instance_logits`` are cut to the bag's N instances.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from histomil.bags.bag import Bag
from histomil.models.base import MILModel, MILOutput
from histomil.objectives.base import LossOutput, Objective, TrainContext
from histomil.objectives.mhim.config import (
    ConsistencyConfig,
    MaskingConfig,
    RankConfig,
    RecycleConfig,
    TeacherConfig,
    group,
)
from histomil.objectives.mhim.masking import MaskResult, cosine_decay, mask_instances
from histomil.objectives.mhim.recycle import GlobalRecycle
from histomil.objectives.mhim.scoring import instance_scores
from histomil.objectives.mhim.teacher import (
    build_teacher,
    consistency_loss,
    ema_update,
    flat_parameters,
    half_life_momentum,
    init_student,
    momentum_at,
    relative_distance,
)
from histomil.objectives.rank import rank_loss
from histomil.objectives.slide import BagObjective


class MHIM(Objective):
    """Masked hard-instance mining with a momentum teacher (v2 defaults; see :class:`MHIMv1`)."""

    name = "mhim_v2"
    needs_baseline = True
    _defaults: dict[str, dict[str, Any]] = {}
    _RANK_KEYS = ("weight", "sigma", "margin", "max_pos", "max_neg")

    @classmethod
    def baseline_objective(cls, params: dict[str, Any]) -> dict[str, Any]:
        """``bag``, or ``rank_induction`` with the same settings when the student trains with
        the rank loss (``rank.weight > 0``), so the teacher comes from the rank-induction
        baseline."""
        rank = (params or {}).get("rank") or {}
        if not isinstance(rank, dict) or float(rank.get("weight", 0.0) or 0.0) <= 0:
            return {"name": "bag", "params": {}}
        return {
            "name": "rank_induction",
            "params": {k: rank[k] for k in cls._RANK_KEYS if k in rank},
        }

    @classmethod
    def resolved_params(cls, params: dict[str, Any]) -> dict[str, Any]:
        """The settings groups with every field resolved (the class defaults over the dataclass
        defaults, then ``params``), plus ``survival_alpha``."""
        from dataclasses import asdict

        from histomil.provenance import normalise

        built = cls(**(params or {}))
        groups = {
            "masking": built.masking,
            "teacher": built.teacher_cfg,
            "recycle": built.recycle_cfg,
            "consistency": built.consistency,
            "rank": built.rank,
        }
        out: dict[str, Any] = {k: asdict(v) for k, v in groups.items()}
        out["survival_alpha"] = built.bag.survival_alpha
        return normalise(out)

    def __init__(
        self,
        masking: dict[str, Any] | MaskingConfig | None = None,
        teacher: dict[str, Any] | TeacherConfig | None = None,
        recycle: dict[str, Any] | RecycleConfig | None = None,
        consistency: dict[str, Any] | ConsistencyConfig | None = None,
        rank: dict[str, Any] | RankConfig | None = None,
        survival_alpha: float = 0.0,
    ) -> None:
        super().__init__()
        d = self._defaults
        self.masking = group(MaskingConfig, masking, d.get("masking", {}))
        self.teacher_cfg = group(TeacherConfig, teacher, d.get("teacher", {}))
        self.recycle_cfg = group(RecycleConfig, recycle, d.get("recycle", {}))
        self.consistency = group(ConsistencyConfig, consistency, d.get("consistency", {}))
        self.rank = group(RankConfig, rank, d.get("rank", {}))
        self.bag = BagObjective(survival_alpha)
        self.teacher: MILModel | None = None
        self.recycle: GlobalRecycle | None = None
        self.beta_h = self.masking.beta_h
        self.momentum = self.teacher_cfg.momentum
        self.generator = torch.Generator().manual_seed(0)
        self.task = "classification"
        self.initialised: list[str] = []
        self.steps_per_epoch: int | None = None
        self._teacher_init: Tensor | None = None  # teacher parameters at setup (drift)

    # -- lifecycle ------------------------------------------------------------------------------
    def setup(self, model: MILModel, context: TrainContext) -> None:
        """Teacher from the baseline (frozen), student projection from the same baseline, and a
        fresh recycle network sized to the student's projection."""
        self.bag.setup(model, context)
        self.task = context.task
        state = context.baseline_state
        if state is None:
            raise ValueError(
                f"{self.name} needs a trained baseline (context.baseline_state); set "
                "objective.baseline: auto or a run directory"
            )
        self.initialised = init_student(model, state, self.teacher_cfg.init_student)
        self.teacher = build_teacher(model, state)
        self._teacher_init = flat_parameters(self.teacher)
        self.generator = torch.Generator().manual_seed(int(context.seed) * 1009 + context.fold)
        self.recycle = None
        masks_some = self.masking.large_scale != "none" and self.masking.beta_l > 0
        # without large-scale masking the recycle network would never be trained; do not build
        # one (it would only append untrained tokens at inference)
        if self.recycle_cfg.enabled and masks_some:
            if model.needs_coords:
                raise ValueError(
                    f"the recycle network cannot give coordinates to {type(model).__name__}"
                )
            device = next(model.parameters()).device
            with torch.no_grad():
                dim = model.project(torch.zeros(1, 1, model.in_dim, device=device)).shape[-1]
            rc = self.recycle_cfg
            self.recycle = GlobalRecycle(
                dim, rc.n_queries, rc.heads, rc.momentum, rc.dropout, seed=int(context.seed)
            ).to(device)
        self.beta_h = self.masking.beta_h
        self.momentum = self.teacher_cfg.momentum  # until the trainer gives the steps per epoch

    def set_steps_per_epoch(self, n: int) -> None:
        self.steps_per_epoch = int(n)
        self.momentum = self.base_momentum()

    def base_momentum(self) -> float:
        """Per-step EMA momentum: ``teacher.momentum``, or the one of
        ``teacher.momentum_half_life_epochs`` once the trainer gave the steps per epoch."""
        hl = self.teacher_cfg.momentum_half_life_epochs
        if hl is None:
            return self.teacher_cfg.momentum
        if self.steps_per_epoch is None:
            raise RuntimeError(
                "teacher.momentum_half_life_epochs needs the steps per epoch "
                "(set_steps_per_epoch is called by the trainer before training)"
            )
        return half_life_momentum(hl, self.steps_per_epoch)

    def on_epoch_start(self, epoch: int, max_epochs: int) -> None:
        """Cosine decay of beta_h (to 0 at ``masking.decay_epochs``, default ``max_epochs``) and
        the momentum schedule."""
        if self.masking.decay:
            span = self.masking.decay_epochs or max_epochs
            self.beta_h = cosine_decay(self.masking.beta_h, epoch, span)
        self.momentum = momentum_at(
            self.base_momentum(), epoch, max_epochs, self.teacher_cfg.schedule
        )

    def epoch_stats(self) -> dict[str, float]:
        """``teacher_drift``: relative L2 distance of the teacher's parameters from its
        initialisation (the baseline), ``||theta_t - theta_0|| / ||theta_0||``."""
        if self.teacher is None or self._teacher_init is None:
            return {}
        return {"teacher_drift": relative_distance(self.teacher, self._teacher_init)}

    def after_optimizer_step(self, model: MILModel) -> None:
        """EMA of the teacher toward the student and of the recycle queries."""
        if self.teacher is not None:
            ema_update(self.teacher, model, self.momentum)
        if self.recycle is not None:
            self.recycle.apply_ema()

    def train(self, mode: bool = True) -> MHIM:
        """The teacher always stays in eval mode (no dropout)."""
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    # -- training step -------------------------------------------------------------------------
    def _target(self, bag: Bag) -> int | None:
        sc = self.masking.score_class
        if self.task == "survival" or sc == "max":
            return None
        if sc == "positive":
            return 1
        return int(bag.label)

    def mine(self, bag: Bag) -> tuple[MaskResult, Tensor, Tensor]:
        """Teacher pass and masking: (mask result, teacher embedding (1, E), scores (N,))."""
        if self.teacher is None:
            raise RuntimeError(f"{self.name}: setup() was not called")
        x = bag.features.unsqueeze(0) if bag.features.dim() == 2 else bag.features
        coords = None
        if self.teacher.needs_coords and bag.coords is not None:  # HIPT's regions
            coords = bag.coords.unsqueeze(0) if bag.coords.dim() == 2 else bag.coords
        with torch.no_grad():
            h_t = self.teacher.project(x)
            out_t = self.teacher.aggregate(h_t, None, coords)
            scores = instance_scores(
                self.teacher, out_t, h_t, self._target(bag), self.masking.scoring
            ).float()
        adjusted = scores.clone()
        lesions = bag.patch_labels is not None and bool((bag.patch_labels == 1).any())
        if lesions and self.masking.high_score_masking != "scores":
            is_lesion = (bag.patch_labels == 1).to(adjusted.device)
            fill = float("inf") if self.masking.high_score_masking == "target" else float("-inf")
            adjusted = adjusted.masked_fill(is_lesion, fill)
        m = self.masking
        result = mask_instances(
            adjusted,
            self.beta_h,
            m.beta_l,
            self.generator,
            random_high=m.random_high,
            large_scale=m.large_scale,
        )
        return result, out_t.embedding, scores

    def forward(self, model: MILModel, bag: Bag) -> LossOutput:
        result, emb_t, _ = self.mine(bag)
        x = bag.features.unsqueeze(0) if bag.features.dim() == 2 else bag.features
        dev = x.device
        keep, rec = result.keep.to(dev), result.recycled.to(dev)
        use_recycle = self.recycle is not None and rec.numel() > 0
        idx = torch.cat([keep, rec]) if use_recycle else keep
        # the projection selects the rows itself (index_select copies whole rows, about 3x
        # faster on CPU than x[:, idx]) and keeps x, not the copy, for backward; split's
        # backward concatenates the two gradients instead of zero-filling two full copies
        h = model.project(x, idx)  # (1, n_keep [+ n_rec], H)
        n_keep = keep.numel()
        tokens = h
        if use_recycle:
            kept, masked = h.split([n_keep, h.shape[1] - n_keep], dim=1)
            tokens = torch.cat([kept, self.recycle(masked)], dim=1)
        coords = None
        if model.needs_coords and bag.coords is not None:
            coords = bag.coords.unsqueeze(0)[:, keep.to(bag.coords.device)]
        label = None
        if self.task == "classification":
            label = torch.tensor([int(bag.label)], device=dev)
        out = model.aggregate(tokens, None, coords, label)
        loss, terms = self.bag.bag_loss(model, out, bag)
        con = consistency_loss(out.embedding, emb_t, self.consistency.tau)
        loss = loss + self.consistency.alpha * con
        terms["con"] = con.detach()
        if self.rank.weight > 0 and self.task == "classification":
            rank = self._rank(out, bag, result.keep, n_keep)
            if rank is not None:
                loss = loss + self.rank.weight * rank
                terms["rank"] = rank.detach()
        terms.update(
            total=loss.detach(),
            beta_h=self.beta_h,
            momentum=self.momentum,
            n_keep=float(n_keep),
            n_recycled=float(result.recycled.numel()),
            n_high=float(result.high.numel()),
        )
        return LossOutput(loss, terms, out)

    def _rank(self, out: MILOutput, bag: Bag, keep: Tensor, n_keep: int) -> Tensor | None:
        """Rank loss on the student's raw scores of the kept annotated instances."""
        if int(bag.label) == 0 or not bag.has_lesion_labels:
            return None
        scores = out.class_scores(self.bag.target_class(bag))
        if scores is None:
            raise ValueError("rank induction with MHIM needs a student with attention scores")
        labels = bag.patch_labels[keep.to(bag.patch_labels.device)]
        r = self.rank
        return rank_loss(
            scores[0, :n_keep], labels, r.sigma, r.margin, r.max_pos, r.max_neg, self.generator
        )

    # -- inference -------------------------------------------------------------------------------
    def predict(self, model: MILModel, bag: Bag) -> MILOutput:
        """Student on the full bag (+ recycle tokens of the whole bag when ``at_inference``)."""
        if self.recycle is None or not self.recycle_cfg.at_inference:
            return model(bag.features, coords=bag.coords)
        x = bag.features.unsqueeze(0) if bag.features.dim() == 2 else bag.features
        n = x.shape[1]
        h = model.project(x)
        out = model.aggregate(torch.cat([h, self.recycle(h)], dim=1), None)
        extras = dict(out.extras)
        if out.weights is not None:
            extras["recycle_weights"] = out.weights[:, n:]
        return MILOutput(
            logits=out.logits,
            embedding=out.embedding,
            scores=None if out.scores is None else out.scores[:, :n],
            weights=None if out.weights is None else out.weights[:, :n],
            instance_logits=None if out.instance_logits is None else out.instance_logits[:, :n],
            aux_loss=out.aux_loss,
            branch_of_class=out.branch_of_class,
            extras=extras,
        )


class MHIMv1(MHIM):
    """MHIM-MIL (ICCV 2023): attention-score masking, random (or low-score) large-scale masking,
    no recycle network; teacher and consistency loss as in v2. Defaults: the authors' CAMELYON
    AB-MIL script (beta_h 0.01 with random high masking, 50 % random masking, alpha 0.1)."""

    name = "mhim_v1"
    _defaults = {
        "masking": {"scoring": "attention", "beta_l": 0.5, "large_scale": "random"},
        "recycle": {"enabled": False},
    }
