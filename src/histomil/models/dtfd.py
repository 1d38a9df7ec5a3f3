"""DTFD-MIL (Zhang et al., CVPR 2022): double-tier feature distillation over pseudo-bags.

``project``: Linear(D, 512, bias=False) + ReLU (DTFD's DimReduction without residual blocks,
dropout 0 as in its code). Each bag's real instances are split at random into ``n_groups``
pseudo-bags (4, the authors' code default; fewer when the bag is smaller). Tier 1: gated
attention (dim 128) inside every pseudo-bag, a Linear(512, C) pseudo-bag classifier and
AFS distillation (the attention-weighted feature of each pseudo-bag, the paper's default).
Tier 2: gated attention over the distilled features and a Linear(512, C) bag classifier.

Contract decisions:

- ``scores`` (B, N, 1) are the raw tier-1 attention scores of each instance (within its
  pseudo-bag); ``weights`` are the effective pooling weights of the instances, tier-1 weight
  times the tier-2 weight of its pseudo-bag (they sum to one per bag). Attention thresholding
  applies to the tier-1 weights (K = pseudo-bag size); tier 2 is a plain softmax.
- ``aux_loss`` (with a ``label``): the tier-1 loss, cross-entropy (BCE for one-logit models)
  of every pseudo-bag's prediction against the slide label, averaged. DTFD trains
  ``tier1 + tier2``; ``bag_weight = 0.5`` makes the objective's combination the same up to a
  factor 1/2.
- The split is seeded: in training a generator seeded with ``seed`` advances with every
  forward pass (reproducible sequence of splits); in evaluation every bag uses a fresh
  generator seeded with ``seed``, so predictions are deterministic. The split depends on the
  instance order, so DTFD is not permutation invariant (as in the paper, whose splits are
  random).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from histomil.models._common import check_dropout
from histomil.models.base import MILModel, MILOutput, masked_softmax
from histomil.nn.attention import AttentionScorer, weighted_sum
from histomil.nn.projection import Projection


def pseudo_bag_index(n: int, groups: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Random split of ``n`` instances into ``min(groups, n)`` near-equal pseudo-bags.

    Returns ``index`` (G, L) into the instances and ``valid`` (G, L) bool (``array_split`` sizes).
    """
    g = min(groups, n)
    perm = torch.randperm(n, generator=generator)
    size, extra = divmod(n, g)
    length = size + (1 if extra else 0)
    sizes = torch.tensor([size + (1 if i < extra else 0) for i in range(g)])
    valid = torch.arange(length)[None, :] < sizes[:, None]  # (G, L)
    index = torch.zeros(g, length, dtype=torch.long)
    index[valid] = perm
    return index, valid


class _Regroup(torch.autograd.Function):
    """``h`` (R, H) -> pseudo-bag slots (S, H): slot ``j`` holds row ``slot_rows[j]``, or zeros
    where ``empty`` (a shorter pseudo-bag's padding).

    Hand-written because autograd's backward of ``h[index]`` is an accumulating scatter into a
    zero-filled (R, H) buffer, serial on the CPU (with the fused projection, this change made
    a DTFD training step at N = 8,000 5-9 % faster; ``benchmarks/README.md``, "Floors").
    Every row sits in at most one slot, so the backward is a gather too: each row reads its
    slot's gradient (``row_slots``), rows in no slot (padding instances) get zero.
    """

    @staticmethod
    def forward(ctx, h, slot_rows, empty_slots, row_slots, unplaced_rows):  # noqa: D102
        out = h.index_select(0, slot_rows)
        if empty_slots.numel():
            out.index_fill_(0, empty_slots, 0.0)
        ctx.save_for_backward(row_slots, unplaced_rows)
        return out

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        row_slots, unplaced_rows = ctx.saved_tensors
        gh = grad.index_select(0, row_slots)
        if unplaced_rows.numel():
            gh.index_fill_(0, unplaced_rows, 0.0)
        return gh, None, None, None, None


def regroup(h: Tensor, index: Tensor, valid: Tensor) -> Tensor:
    """``h[index]`` (G, L, H) for a split from :func:`pseudo_bag_index` (``index`` into the rows
    of ``h``, (G, L); ``valid`` (G, L)), with zeros in the invalid slots; the gradient as
    indexing's, computed by gathers (:class:`_Regroup`)."""
    g, length = index.shape
    flat_valid = valid.reshape(-1)
    slot_rows = torch.where(flat_valid, index.reshape(-1), 0)
    empty_slots = (~flat_valid).nonzero()[:, 0]
    placed = index.reshape(-1)[flat_valid]
    row_slots = torch.zeros(h.shape[0], dtype=torch.long, device=h.device)
    row_slots[placed] = flat_valid.nonzero()[:, 0]
    unplaced = torch.ones(h.shape[0], dtype=torch.bool, device=h.device)
    unplaced[placed] = False
    out = _Regroup.apply(h, slot_rows, empty_slots, row_slots, unplaced.nonzero()[:, 0])
    return out.view(g, length, h.shape[1])


class DTFD(MILModel):
    """DTFD-MIL with AFS tier-1 distillation."""

    permutation_invariant = False

    def __init__(
        self,
        in_dim: int,
        n_classes: int,
        hidden: int = 512,
        attn_dim: int = 128,
        n_groups: int = 4,
        dropout: float = 0.0,
        seed: int = 0,
        attention_threshold: float = 0.0,
        threshold_at_eval: bool = True,
    ) -> None:
        super().__init__(in_dim, n_classes, attention_threshold, threshold_at_eval)
        if n_groups < 1:
            raise ValueError(f"n_groups must be >= 1, got {n_groups}")
        self.n_groups, self.seed, self.bag_weight = int(n_groups), int(seed), 0.5
        self.fc = Projection(in_dim, hidden, check_dropout(dropout), bias=False)
        self.attention1 = AttentionScorer(hidden, attn_dim, 1, gated=True)
        self.classifier1 = nn.Linear(hidden, n_classes)
        self.attention2 = AttentionScorer(hidden, attn_dim, 1, gated=True)
        self.classifier2 = nn.Linear(hidden, n_classes)
        self._train_generator: torch.Generator | None = None

    def _generator(self) -> torch.Generator:
        if not self.training:
            return torch.Generator().manual_seed(self.seed)
        if self._train_generator is None:
            self._train_generator = torch.Generator().manual_seed(self.seed)
        return self._train_generator

    def _bag(self, h: Tensor, rows: Tensor | None, label: Tensor | None) -> tuple[Tensor, ...]:
        """One bag: ``h`` (n_rows, H) and its real ``rows`` (n,) (None: every row) -> logits
        (C,), z (H,), scores (n,), weights (n,) in the order of ``rows``, aux."""
        n = h.shape[0] if rows is None else rows.numel()
        index, valid = pseudo_bag_index(n, self.n_groups, self._generator())
        index, valid = index.to(h.device), valid.to(h.device)
        hg = regroup(h, index if rows is None else rows[index], valid)  # (G, L, H)
        s1 = self.attention1(hg)  # (G, L, 1)
        w1 = self.pool_weights(s1, valid)  # (G, L, 1)
        f = weighted_sum(hg, w1)[:, 0]  # (G, H) AFS distilled features
        s2 = self.attention2(f[None])  # (1, G, 1)
        w2 = masked_softmax(s2, None)[0]  # (G, 1)
        z = (w2 * f).sum(0)  # (H,)
        scores = h.new_zeros(n).index_put((index[valid],), s1[..., 0][valid])
        weights = h.new_zeros(n).index_put((index[valid],), (w1[..., 0] * w2)[valid])
        aux = h.new_zeros(())
        if label is not None:
            pseudo = self.classifier1(f)  # (G, C)
            if self.n_classes == 1:
                aux = F.binary_cross_entropy_with_logits(
                    pseudo[:, 0], label.to(pseudo.dtype).expand(pseudo.shape[0])
                )
            else:
                aux = F.cross_entropy(pseudo, label.long().expand(pseudo.shape[0]))
        return self.classifier2(z), z, scores, weights, aux

    def aggregate(
        self,
        h: Tensor,
        mask: Tensor | None,
        coords: Tensor | None = None,
        label: Tensor | None = None,
    ) -> MILOutput:
        """(B, N, H) -> MILOutput; with ``label`` (B,) also the tier-1 ``aux_loss``."""
        b, n, _ = h.shape
        scores, weights = h.new_zeros(b, n), h.new_zeros(b, n)
        logits, zs, auxes = [], [], []
        for i in range(b):
            keep = torch.arange(n, device=h.device) if mask is None else mask[i].nonzero()[:, 0]
            if keep.numel() == 0:  # an all-padding bag: zero embedding, no loss
                zs.append(h.new_zeros(h.shape[-1]))
                logits.append(self.classifier2(zs[-1]))
                auxes.append(h.new_zeros(()))
                continue
            # one bag: its rows as a view (no select, whose backward fills a zero (B, N, H))
            hi = h.reshape(n, -1) if b == 1 else h[i]
            rows = None if keep.numel() == n else keep
            li, zi, si, wi, ai = self._bag(hi, rows, None if label is None else label[i])
            scores = scores.index_put((torch.full_like(keep, i), keep), si)
            weights = weights.index_put((torch.full_like(keep, i), keep), wi)
            logits.append(li)
            zs.append(zi)
            auxes.append(ai)
        return MILOutput(
            logits=torch.stack(logits),
            embedding=torch.stack(zs),
            scores=scores.unsqueeze(-1),
            weights=weights.unsqueeze(-1),
            aux_loss=None if label is None else torch.stack(auxes).mean(),
        )
