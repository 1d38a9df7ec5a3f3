"""Masked hard-instance mining: pure functions of (scores, ratios, generator).

MHIM-v2 (paper Sec. 3.3): instances are sorted by the teacher's score (high = easy).

1. *Randomly high-score masking* (RHSM): the top ``2 * beta_h`` share of the bag by score are
   candidates and ``ceil(beta_h * N)`` of them, chosen uniformly at random, are masked (dropped).
   Without ``random_high`` the top ``ceil(beta_h * N)`` are masked (plain HSM).
2. *Large-scale masking* of the ``N^ = N - n_h`` remaining instances: ``ceil(beta_l * N^)`` of
   them are masked, chosen at random (RSM, v2) or as the lowest scores (LSM). They are not lost:
   MHIM-v2's global recycle network summarises them. At least one instance is always kept.

``beta_h`` decays to 0 over training with :func:`cosine_decay`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

LARGE_SCALE = ("random", "low", "none")


@dataclass(frozen=True)
class MaskResult:
    """Indices into the bag (all 1-D long tensors, disjoint, union = all instances).

    ``keep``: kept instances in their original order (the student sees them);
    ``recycled``: masked by large-scale masking (input of the recycle network);
    ``high``: masked by high-score masking (dropped).
    """

    keep: Tensor
    recycled: Tensor
    high: Tensor


def cosine_decay(start: float, step: float, total: float, end: float = 0.0) -> float:
    """Cosine schedule from ``start`` (step 0) to ``end`` (step ``total``), clamped after.

    ``value = end + (start - end) * (1 + cos(pi * step / total)) / 2``.
    """
    if total <= 0:
        return float(end)
    t = min(max(step / total, 0.0), 1.0)
    return float(end + (start - end) * (1.0 + math.cos(math.pi * t)) / 2.0)


def high_score_counts(n: int, beta_h: float, random_high: bool = True) -> tuple[int, int]:
    """(number masked, number of candidates) of (randomly) high-score masking for ``n`` instances.

    masked = ``ceil(beta_h * n)``, candidates = ``ceil(2 * beta_h * n)`` (RHSM) or ``masked``
    (HSM); both capped so that at least one instance stays.
    """
    if not 0.0 <= beta_h < 1.0:
        raise ValueError(f"beta_h must be in [0, 1), got {beta_h}")
    if n <= 1 or beta_h <= 0:
        return 0, 0
    n_h = min(math.ceil(beta_h * n - 1e-9), n - 1)
    n_c = min(math.ceil(2 * beta_h * n - 1e-9), n) if random_high else n_h
    return n_h, max(n_c, n_h)


def mask_instances(
    scores: Tensor,
    beta_h: float,
    beta_l: float,
    generator: torch.Generator | None = None,
    *,
    random_high: bool = True,
    large_scale: str = "random",
) -> MaskResult:
    """Split a bag into kept / recycled / high-masked instances from teacher scores (N,).

    Higher score = easier instance. Ties are broken by index (stable sort), so the result only
    depends on ``scores``, the ratios and the generator state.
    """
    if large_scale not in LARGE_SCALE:
        raise ValueError(f"large_scale must be one of {LARGE_SCALE}, got {large_scale!r}")
    if not 0.0 <= beta_l < 1.0:
        raise ValueError(f"beta_l must be in [0, 1), got {beta_l}")
    scores = scores.detach().reshape(-1).float().cpu()
    n = scores.numel()
    if n == 0:
        raise ValueError("cannot mask an empty bag")
    order = torch.sort(scores, descending=True, stable=True).indices  # (N,) easiest first
    n_h, n_c = high_score_counts(n, beta_h, random_high)
    if n_h > 0:
        pick = torch.randperm(n_c, generator=generator)[:n_h] if n_c > n_h else torch.arange(n_h)
        high = order[:n_c][pick]
    else:
        high = order[:0]
    rest_flag = torch.ones(n, dtype=torch.bool)
    rest_flag[high] = False
    rest = torch.nonzero(rest_flag).flatten()  # (N^,) ascending index
    n_rest = rest.numel()
    n_l = 0 if large_scale == "none" or beta_l <= 0 else math.ceil(beta_l * n_rest - 1e-9)
    n_l = min(n_l, n_rest - 1)
    if n_l > 0 and large_scale == "random":
        recycled = rest[torch.randperm(n_rest, generator=generator)[:n_l]]
    elif n_l > 0:  # low-score masking: the n_l lowest scores of the rest
        recycled = rest[torch.sort(scores[rest], descending=False, stable=True).indices[:n_l]]
    else:
        recycled = rest[:0]
    keep_flag = rest_flag.clone()
    keep_flag[recycled] = False
    keep = torch.nonzero(keep_flag).flatten()
    return MaskResult(keep=keep, recycled=torch.sort(recycled).values, high=torch.sort(high).values)
