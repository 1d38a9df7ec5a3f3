"""The contract every MIL model follows: ``forward(features, mask=None, coords=None) -> MILOutput``.

Conventions (all models, all objectives):

- ``features`` is (N, D) for one bag or (B, N, D) for a padded batch; ``mask`` is (B, N) bool with
  ``True`` for real instances and ``False`` for padding. Outputs are always batched (B, ...).
- ``n_classes == 1`` means a binary task with one logit (BCE); ``n_classes >= 2`` means
  multi-class (CE) or, for survival, the number of discrete time bins (hazard logits).
- ``scores`` are the raw, pre-softmax attention scores, shape (B, N, R) with one column per
  attention branch R (R = 1 for single-branch models). ``branch_of_class[c]`` names the branch
  used for class ``c`` (for a binary one-logit model, class 1 is the positive class), so an
  objective ranks the branch of the positive class without knowing the model.
- ``weights`` are the normalised pooling weights actually used (after attention thresholding),
  same shape as ``scores``.
- A model is split into ``project`` (the first instance projection, which MHIM initialises from a
  baseline and applies before masking) and ``aggregate`` (everything after it).

What objectives may use of a model is declared on :class:`MILModel` with defaults (never read
with ``getattr``): ``project``/``aggregate``, ``classify`` (the bag classifier),
``class_aware_logits`` (a model's own per-instance class logits, or None), ``bag_weight`` (how
the slide loss and ``aux_loss`` combine), ``needs_coords``, ``has_attention``, ``in_dim``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor, nn

from histomil.nn.projection import Projection


@dataclass
class MILOutput:
    """What every MIL model returns (fields that a model does not have are ``None``)."""

    logits: Tensor  # (B, C)
    embedding: Tensor  # (B, E) bag representation
    scores: Tensor | None = None  # (B, N, R) raw attention scores, pre-softmax
    weights: Tensor | None = None  # (B, N, R) pooling weights used (after thresholding)
    instance_logits: Tensor | None = None  # (B, N, C) for models with an instance classifier
    aux_loss: Tensor | None = None  # scalar model-internal loss (CLAM clustering, DTFD tier 1)
    branch_of_class: tuple[int, ...] = (0,)
    extras: dict[str, Tensor] = field(default_factory=dict)  # model-specific diagnostics

    def branch(self, class_index: int = 1) -> int:
        """Branch index whose attention belongs to ``class_index`` (clamped for one branch)."""
        if len(self.branch_of_class) == 1:
            return self.branch_of_class[0]
        return self.branch_of_class[class_index]

    def class_scores(self, class_index: int = 1) -> Tensor | None:
        """Raw scores (B, N) of the branch of ``class_index``; None for models without attention."""
        if self.scores is None:
            return None
        return self.scores[..., self.branch(class_index)]

    def class_weights(self, class_index: int = 1) -> Tensor | None:
        """Pooling weights (B, N) of the branch of ``class_index``."""
        if self.weights is None:
            return None
        return self.weights[..., self.branch(class_index)]


def masked_softmax(scores: Tensor, mask: Tensor | None, dim: int = 1) -> Tensor:
    """Softmax over ``dim`` ignoring masked-out entries. scores (B, N, R), mask (B, N).

    Computed in at least float32 (bfloat16 scores under autocast are upcast: with thousands of
    instances, bfloat16 weights (8-bit mantissa) would round most of them to few values);
    float64 scores stay float64.
    """
    if scores.dtype != torch.float64:
        scores = scores.float()
    if mask is None:
        return torch.softmax(scores, dim=dim)
    m = mask.unsqueeze(-1) if mask.dim() < scores.dim() else mask
    filled = scores.masked_fill(~m, float("-inf"))
    # A bag whose instances are all masked would give NaN; keep it finite (all-zero weights).
    all_masked = (~m).all(dim=dim, keepdim=True)
    filled = filled.masked_fill(all_masked, 0.0)
    return torch.softmax(filled, dim=dim) * m


def threshold_attention(
    scores: Tensor, mask: Tensor | None, threshold: float, eps: float = 1e-8
) -> Tensor:
    """Attention thresholding of the rank-induction paper (Eq. 3-4).

    ``a~ = softmax(s)``; ``a^_k = max(a~_k - T / K, 0)``; ``a_k = a^_k / (sum a^ + eps)`` with K the
    number of real (unmasked) instances. scores (B, N, R) -> weights (B, N, R).

    When every weight is suppressed (only possible for ``T >= 1``, e.g. perfectly uniform
    attention with T = 1) we fall back to the plain softmax weights instead of pooling nothing:
    a zero bag embedding would make the prediction independent of the bag.
    """
    return _threshold(scores, mask, threshold, eps)[0]


def _threshold(
    scores: Tensor, mask: Tensor | None, threshold: float, eps: float = 1e-8
) -> tuple[Tensor, Tensor | None]:
    """:func:`threshold_attention` plus the fallback flags (B, R) (None when T = 0)."""
    weights = masked_softmax(scores, mask, dim=1)
    if threshold <= 0:
        return weights, None
    if mask is None:
        k = torch.full_like(weights[:, :1], scores.shape[1])
    else:
        k = mask.sum(dim=1, keepdim=True).unsqueeze(-1).to(weights.dtype).clamp_min(1)
    kept = torch.clamp(weights - threshold / k, min=0.0)
    total = kept.sum(dim=1, keepdim=True)
    thresholded = kept / (total + eps)
    return torch.where(total > 0, thresholded, weights), (total <= 0)[:, 0]


class MILModel(nn.Module):
    """Base class: subclasses implement :meth:`project` and :meth:`aggregate`.

    ``attention_threshold`` (T, 0 = off) and ``threshold_at_eval`` are the shared attention
    thresholding option; attention-pooling subclasses compute their weights with
    :meth:`pool_weights` so the option means the same thing for every model.
    """

    needs_coords: ClassVar[bool] = False
    permutation_invariant: ClassVar[bool] = True
    has_attention: ClassVar[bool] = True
    #: How an objective combines the slide loss with ``MILOutput.aux_loss``:
    #: ``bag_weight * slide + (1 - bag_weight) * aux``; None (default): ``slide + aux``.
    #: Models with an auxiliary loss set it (CLAM 0.7, DS-MIL and DTFD 0.5).
    bag_weight: float | None = None

    def __init__(
        self,
        in_dim: int,
        n_classes: int,
        attention_threshold: float = 0.0,
        threshold_at_eval: bool = True,
    ) -> None:
        super().__init__()
        if n_classes < 1:
            raise ValueError(f"n_classes must be >= 1, got {n_classes}")
        if attention_threshold < 0:
            raise ValueError(f"attention_threshold must be >= 0, got {attention_threshold}")
        self.in_dim = in_dim
        self.n_classes = n_classes
        self.attention_threshold = float(attention_threshold)
        self.threshold_at_eval = bool(threshold_at_eval)
        # bags whose thresholded weights were all suppressed (a device tensor while training;
        # None after the trainer's reset at each epoch start), see pool_weights
        self.fallback_events: Tensor | None = None

    # -- to implement -------------------------------------------------------------------------
    def project(self, x: Tensor, rows: Tensor | None = None) -> Tensor:
        """First instance projection: (B, N, D) -> (B, N, H); with ``rows`` (n,), of those
        instances only, (B, n, H), as ``project(x.index_select(1, rows))``.

        Every model keeps this layer as ``self.fc`` (MHIM initialises exactly it from a baseline).
        """
        if rows is None:
            return self.fc(x)
        if isinstance(self.fc, Projection):  # keeps x, not the selected copy, for backward
            return self.fc(x, rows)
        return self.fc(x.index_select(1, rows))

    def aggregate(
        self,
        h: Tensor,
        mask: Tensor | None,
        coords: Tensor | None = None,
        label: Tensor | None = None,
    ) -> MILOutput:
        """Everything after the projection: (B, N, H) -> MILOutput.

        ``label`` (B,) is given only in training, for label-dependent model-internal losses
        (CLAM's instance clustering, DTFD's tier-1 loss); without it ``aux_loss`` is None.
        """
        raise NotImplementedError

    # -- optional, with defaults -----------------------------------------------------------------
    def classify(self, embedding: Tensor) -> Tensor:
        """The bag classifier: bag embedding (..., E) -> logits (..., C).

        MHIM's class-aware instance probability applies it to attention-weighted instance
        embeddings. Default: the module ``self.classifier`` (AB-MIL, mean/max pooling,
        TransMIL, HIPT, CLAM-SB); models without one bag-level head (CLAM-MB, DTFD) raise a
        ValueError (use attention scoring with them, or override this method).
        """
        head = self._modules.get("classifier")
        if head is None:
            raise ValueError(
                f"{type(self).__name__} has no bag classifier (MILModel.classify); use "
                "scoring='attention' or give the model a bag classifier"
            )
        return head(embedding)

    def class_aware_logits(self, h: Tensor, out: MILOutput | None = None) -> Tensor | None:
        """Per-instance class logits (B, N, C) in the model's own form of MHIM's Eq. 6 for
        projected features ``h`` (B, N, H), or None (default): the objective then derives them
        from ``instance_logits`` or :meth:`classify` (see objectives/mhim/scoring.py). ``out``,
        when given, is this model's ``aggregate(h, None)`` (a model may reuse it)."""
        return None

    # -- shared ---------------------------------------------------------------------------------
    def pool_weights(self, scores: Tensor, mask: Tensor | None) -> Tensor:
        """Normalised pooling weights from raw scores (B, N, R), thresholded when enabled."""
        use_threshold = self.training or self.threshold_at_eval
        t = self.attention_threshold if use_threshold else 0.0
        weights, fallback = _threshold(scores, mask, t)
        if fallback is not None and self.training:
            # pooled sets (bags) whose weights were all suppressed, summed on the device (no
            # host sync); the trainer reads and resets ``fallback_events`` once per epoch
            n = fallback.any(dim=-1).sum()
            prev = self.fallback_events
            self.fallback_events = n if prev is None else prev + n
        return weights

    def forward(
        self,
        features: Tensor,
        mask: Tensor | None = None,
        coords: Tensor | None = None,
        label: Tensor | None = None,
    ) -> MILOutput:
        """features (N, D) or (B, N, D); mask (B, N) True = real; coords (B, N, 2); label (B,)."""
        x, mask, coords = batchify(features, mask, coords)
        if self.needs_coords and coords is None:
            raise ValueError(f"{type(self).__name__} needs patch coordinates (coords=...)")
        if label is not None:
            label = torch.as_tensor(label, device=x.device).reshape(-1)
        return self.aggregate(self.project(x), mask, coords, label)


def batchify(
    features: Tensor, mask: Tensor | None = None, coords: Tensor | None = None
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """(N, D) -> (1, N, D) (and coords (N, 2) -> (1, N, 2)); validates shapes."""
    if features.dim() == 2:
        features = features.unsqueeze(0)
        if coords is not None and coords.dim() == 2:
            coords = coords.unsqueeze(0)
        if mask is not None and mask.dim() == 1:
            mask = mask.unsqueeze(0)
    if features.dim() != 3:
        raise ValueError(f"features must be (N, D) or (B, N, D), got {tuple(features.shape)}")
    if features.shape[1] == 0:
        raise ValueError("empty bag: features have 0 instances")
    if mask is not None:
        if mask.shape != features.shape[:2]:
            raise ValueError(
                f"mask {tuple(mask.shape)} does not match features {tuple(features.shape)}"
            )
        mask = mask.to(torch.bool)
    return features, mask, coords
