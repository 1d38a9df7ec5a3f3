"""The pairwise rank loss of rank induction (Kim et al., JMIR; RankNet-style).

Pairs are only (lesion i, non-lesion j): ``P_ij = sigmoid(sigma * (s_i - s_j - margin))`` and
the loss is the mean of ``-log P_ij`` over the pairs, computed with ``logsigmoid`` for numerical
stability. Unknown patches (label -1) never enter a pair.

Two options reproduce deviations of the authors' public code, for comparison only (both off):

- ``drop_margin``: the margin is never passed to their loss, so it is effectively 0.
- ``include_equal_pairs``: their default also trains on equal-label pairs with target 1/2 (and
  on both orientations of every lesion/non-lesion pair, the diagonal included): binary
  cross-entropy over the full (K, K) matrix of the sampled known patches.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _sample(index: Tensor, cap: int | None, generator: torch.Generator | None) -> Tensor:
    """At most ``cap`` entries of ``index`` (K,), uniformly without replacement."""
    if cap is None or index.numel() <= cap:
        return index
    perm = torch.randperm(index.numel(), generator=generator, device="cpu")[:cap]
    return index[perm.to(index.device)]


def rank_loss(
    scores: Tensor,
    labels: Tensor,
    sigma: float = 1.0,
    margin: float = 1.0,
    max_pos: int | None = 1024,
    max_neg: int | None = 1024,
    generator: torch.Generator | None = None,
    *,
    drop_margin: bool = False,
    include_equal_pairs: bool = False,
) -> Tensor:
    """Mean ``-log sigmoid(sigma * (s_i - s_j - margin))`` over lesion x non-lesion pairs.

    scores: (N,) raw attention scores (pre-softmax); labels: (N,) 1 lesion, 0 non-lesion,
    -1 unknown (ignored). At most ``max_pos`` lesion and ``max_neg`` non-lesion patches are
    sampled (``None`` disables a cap; ``generator`` makes the sampling reproducible). Returns a
    scalar; ``0 * scores.sum()`` (zero with a graph) when there is no valid pair.
    """
    scores = scores.reshape(-1).float()  # pair differences in float32, also under autocast
    labels = labels.reshape(-1).to(scores.device)
    if scores.shape != labels.shape:
        raise ValueError(f"scores {tuple(scores.shape)} and labels {tuple(labels.shape)} differ")
    pos = _sample(torch.nonzero(labels == 1).flatten(), max_pos, generator)
    neg = _sample(torch.nonzero(labels == 0).flatten(), max_neg, generator)
    if pos.numel() == 0 or neg.numel() == 0:
        return scores.sum() * 0.0
    m = 0.0 if drop_margin else float(margin)
    if include_equal_pairs:
        idx = torch.cat([pos, neg])
        s = scores[idx]
        y = labels[idx].to(s.dtype)
        logits = sigma * (s[:, None] - s[None, :] - m)  # (K, K)
        target = (1.0 + torch.sign(y[:, None] - y[None, :])) / 2.0  # 1, 1/2 or 0
        return F.binary_cross_entropy_with_logits(logits, target)
    diff = scores[pos][:, None] - scores[neg][None, :] - m  # (P, Q)
    return -F.logsigmoid(sigma * diff).mean()
