"""Non-attention baselines: mean and max pooling of projected instance features.

``project``: Linear(D, 512) + ReLU + Dropout(0.25); a linear classifier is applied per instance
(``instance_logits`` (B, N, C)). ``mean``: the bag logits are the masked mean of the instance
logits (identical to classifying the mean embedding, because the classifier is linear).
``max``: the bag logits are the per-class maximum of the instance logits over the real
instances (mi-Net-style max pooling); its embedding is the feature-wise max of the instances.
Both have ``has_attention = False``: ``scores`` and ``weights`` are ``None`` (an objective that
ranks instances can use ``instance_logits``) and ``attention_threshold`` is rejected.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from histomil.models._common import check_dropout, projection
from histomil.models.base import MILModel, MILOutput


class _Pooling(MILModel):
    has_attention = False

    def __init__(
        self,
        in_dim: int,
        n_classes: int,
        hidden: int = 512,
        dropout: float = 0.25,
        attention_threshold: float = 0.0,
        threshold_at_eval: bool = True,
    ) -> None:
        if attention_threshold > 0:
            raise ValueError(
                f"{type(self).__name__} has no attention pooling; attention_threshold must be 0"
            )
        super().__init__(in_dim, n_classes, attention_threshold, threshold_at_eval)
        self.fc = projection(in_dim, hidden, check_dropout(dropout))
        self.classifier = nn.Linear(hidden, n_classes)


class MeanPooling(_Pooling):
    """Mean pooling: bag logits = mean instance logits."""

    def aggregate(
        self,
        h: Tensor,
        mask: Tensor | None,
        coords: Tensor | None = None,
        label: Tensor | None = None,
    ) -> MILOutput:
        """(B, N, H) -> MILOutput."""
        if mask is None:
            z = h.mean(dim=1)  # (B, H)
        else:
            m = mask.unsqueeze(-1).to(h.dtype)
            z = (h * m).sum(1) / m.sum(1).clamp_min(1)
        return MILOutput(logits=self.classifier(z), embedding=z, instance_logits=self.classifier(h))


class MaxPooling(_Pooling):
    """Max pooling: bag logits = per-class max of instance logits."""

    def aggregate(
        self,
        h: Tensor,
        mask: Tensor | None,
        coords: Tensor | None = None,
        label: Tensor | None = None,
    ) -> MILOutput:
        """(B, N, H) -> MILOutput."""
        inst = self.classifier(h)  # (B, N, C)
        if mask is not None:
            pad = ~mask.unsqueeze(-1)
            ranked, hm = inst.masked_fill(pad, float("-inf")), h.masked_fill(pad, float("-inf"))
        else:
            ranked, hm = inst, h
        logits = torch.nan_to_num(ranked.amax(dim=1), neginf=0.0)  # all-padding bags -> 0
        emb = torch.nan_to_num(hm.amax(dim=1), neginf=0.0)
        return MILOutput(logits=logits, embedding=emb, instance_logits=inst)
