"""Attention localization against annotated lesion patches (rank-induction paper, Fig. 5).

For one positive slide with ``L`` annotated lesion patches out of ``N`` patches, patches are
ranked by attention. IoU and Dice compare the top ``k = ceil(alpha / 100 * L)`` (at least 1) with
the lesion patches: IoU ``= I / (k + L - I)``, Dice ``= 2 I / (k + L)`` (so a perfect ranking
scores 1 for every alpha). The pointing game (``pointing``) follows the paper: it samples "from
all patches in the slide", i.e. it is a hit when any of the top ``k_all = ceil(alpha / 100 * N)``
(at least 1) is a lesion patch. ``pointing_lesion`` is the earlier variant of this package, a hit
among the lesion-relative top ``k`` (at alpha <= 100 / L that is "the top patch is a lesion").
Patches labelled -1 (unknown) are left out of everything (``N`` counts the known patches). Ties in attention are resolved in expectation over a random
order: the tied patches share the remaining slots, ``I`` is its expected value and the pointing
game is the probability of a hit (hypergeometric).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
from numpy.typing import ArrayLike

ALPHAS: tuple[int, ...] = (1, 5, 10, 20, 50, 75, 100)


def _inputs(attention: ArrayLike, patch_labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(attention, dtype=float).ravel()
    y = np.asarray(patch_labels).astype(int).ravel()
    if a.shape != y.shape:
        raise ValueError(f"attention {a.shape} and patch_labels {y.shape} differ in length")
    if not np.isfinite(a).all():
        raise ValueError("attention contains NaN or Inf")
    return a, y


def _top_k_hits(a: np.ndarray, lesion: np.ndarray, k: int) -> tuple[float, float]:
    """Expected number of lesion patches among the top ``k`` and the hit probability."""
    kth = np.partition(-a, k - 1)[k - 1] * -1.0  # k-th largest attention
    above = a > kth
    tie = a == kth
    slots = k - int(above.sum())
    hits_above = int((lesion & above).sum())
    tie_lesion, tie_total = int((lesion & tie).sum()), int(tie.sum())
    expected = hits_above + slots * tie_lesion / tie_total
    if hits_above > 0:
        p_hit = 1.0
    else:
        # P(at least one lesion among `slots` draws without replacement from the tie group)
        p_miss = math.comb(tie_total - tie_lesion, slots) / math.comb(tie_total, slots)
        p_hit = 1.0 - p_miss
    return expected, p_hit


def localization_metrics(
    attention: ArrayLike, patch_labels: ArrayLike, alphas: Sequence[float] = ALPHAS
) -> dict[float, dict[str, float]]:
    """Per alpha: ``{"k", "k_all", "iou", "dice", "pointing", "pointing_lesion"}`` for one slide.

    ``attention`` (N,) attention weights or scores (only the ranking matters), ``patch_labels``
    (N,) 1 lesion / 0 non-lesion / -1 unknown. Raises ``ValueError`` when the slide has no
    lesion patch (the metrics are defined only for annotated positive slides).
    """
    a, y = _inputs(attention, patch_labels)
    known = y != -1
    a, lesion = a[known], y[known] == 1
    n_lesion = int(lesion.sum())
    if n_lesion == 0:
        raise ValueError("localization needs at least one annotated lesion patch (label 1)")
    out: dict[float, dict[str, float]] = {}
    for alpha in alphas:
        if not 0 < alpha <= 100:
            raise ValueError(f"alpha must be in (0, 100], got {alpha}")
        k = max(1, math.ceil(alpha / 100.0 * n_lesion - 1e-9))
        hits, p_hit = _top_k_hits(a, lesion, k)
        k_all = max(1, math.ceil(alpha / 100.0 * a.size - 1e-9))
        out[alpha] = {
            "k": k,
            "k_all": k_all,
            "iou": hits / (k + n_lesion - hits),
            "dice": 2.0 * hits / (k + n_lesion),
            "pointing": _top_k_hits(a, lesion, k_all)[1],
            "pointing_lesion": p_hit,
        }
    return out


def mean_localization(per_slide: Iterable[dict[float, dict[str, float]]]) -> dict:
    """Average :func:`localization_metrics` results over slides: ``{alpha: {metric: mean}}``
    plus ``n_slides``; the pointing game mean is the hit rate (hits / (hits + misses))."""
    rows = list(per_slide)
    if not rows:
        raise ValueError("no slides to average")
    out: dict = {}
    for alpha in rows[0]:
        out[alpha] = {
            m: float(np.mean([r[alpha][m] for r in rows]))
            for m in ("iou", "dice", "pointing", "pointing_lesion")
        }
    out["n_slides"] = len(rows)
    return out


def nonlesion_attention_sum(weights: ArrayLike, patch_labels: ArrayLike) -> float:
    """Sum of pooling weights (N,) on non-lesion (label 0) patches; unknown (-1) ignored."""
    w, y = _inputs(weights, patch_labels)
    return float(w[y == 0].sum())
