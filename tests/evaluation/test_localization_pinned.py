"""Pinned localization metrics against a brute force over every tie-breaking order (issue 22).

The reference ranks the known patches by attention with each permutation of the patches as
the tie-break, takes the top ``k`` (lesion-relative) or ``k_all`` (all patches), and averages
the intersection and the hit over all orders: exactly the documented "expectation over a
random order of ties".
"""

from __future__ import annotations

import math
from itertools import permutations

import numpy as np
import pytest

from histomil.evaluation.localization import (
    ALPHAS,
    localization_metrics,
    mean_localization,
    nonlesion_attention_sum,
)


def _brute(attention, labels, alpha):
    a = [float(x) for x, y in zip(attention, labels, strict=True) if y != -1]
    les = [y == 1 for y in labels if y != -1]
    n, n_les = len(a), sum(les)
    k = max(1, math.ceil(alpha / 100 * n_les - 1e-9))
    k_all = max(1, math.ceil(alpha / 100 * n - 1e-9))
    inter = hit = hit_all = 0.0
    orders = list(permutations(range(n)))
    for tie_break in orders:
        ranked = sorted(range(n), key=lambda i: (-a[i], tie_break[i]))
        i_k = sum(les[i] for i in ranked[:k])
        inter += i_k
        hit += i_k > 0
        hit_all += any(les[i] for i in ranked[:k_all])
    m = len(orders)
    i_mean = inter / m
    return {
        "k": k,
        "k_all": k_all,
        "iou": i_mean / (k + n_les - i_mean),
        "dice": 2 * i_mean / (k + n_les),
        "pointing": hit_all / m,
        "pointing_lesion": hit / m,
    }


CASES = [
    # attention, labels (1 lesion, 0 not, -1 unknown)
    ([0.9, 0.5, 0.5, 0.5, 0.1, 0.1], [0, 1, 0, 1, 1, 0]),
    ([0.3, 0.3, 0.3, 0.3, 0.3, 0.3], [0, 0, 1, 0, 0, 1]),
    ([0.2, 0.8, 0.8, 0.1, 0.7, 0.9, 0.0], [1, -1, 0, 1, 0, -1, 1]),
    ([0.6, 0.4, 0.4, 0.4, 0.2, 0.4], [1, 0, 1, 1, 0, 0]),
]


@pytest.mark.parametrize("attention,labels", CASES)
def test_localization_matches_the_brute_force_over_tie_orders(attention, labels):
    alphas = (1, 20, 34, 50, 67, 75, 100)
    got = localization_metrics(attention, labels, alphas)
    assert list(got) == list(alphas)
    for alpha in alphas:
        ref = _brute(attention, labels, alpha)
        assert got[alpha]["k"] == ref["k"] and got[alpha]["k_all"] == ref["k_all"], alpha
        for name in ("iou", "dice", "pointing", "pointing_lesion"):
            assert got[alpha][name] == pytest.approx(ref[name], abs=1e-12), (alpha, name)


def test_default_alphas_and_a_float_edge_of_k():
    got = localization_metrics([0.5, 0.4, 0.3, 0.2, 0.1], [1, 1, 1, 1, 1])
    assert tuple(got) == ALPHAS == (1, 5, 10, 20, 50, 75, 100)
    # 20 % of 5 lesions: 0.2 * 5 = 1.0000000000000002 in floating point, still k = 1
    assert got[20]["k"] == 1 and got[20]["iou"] == pytest.approx(0.2)
    assert got[100]["k"] == got[100]["k_all"] == 5


def test_errors_are_exact():
    with pytest.raises(ValueError, match=r"^attention \(3,\) and patch_labels \(2,\) differ"):
        localization_metrics([0.1, 0.2, 0.3], [1, 0])
    with pytest.raises(ValueError, match="^attention contains NaN or Inf$"):
        localization_metrics([0.1, np.nan], [1, 0])
    with pytest.raises(ValueError, match="^attention contains NaN or Inf$"):
        nonlesion_attention_sum([0.1, np.inf], [1, 0])
    with pytest.raises(ValueError, match=r"at least one annotated lesion patch \(label 1\)$"):
        localization_metrics([0.1, 0.2], [0, -1])
    for alpha in (0, 100.5, -5):
        with pytest.raises(ValueError, match=rf"^alpha must be in \(0, 100\], got {alpha}$"):
            localization_metrics([0.1, 0.2], [1, 0], alphas=(alpha,))
    with pytest.raises(ValueError, match="^no slides to average$"):
        mean_localization([])


def test_mean_localization_by_hand():
    a = localization_metrics([0.9, 0.1, 0.5], [1, 0, 0], alphas=(50, 100))
    b = localization_metrics([0.1, 0.9, 0.5], [1, 0, 0], alphas=(50, 100))
    mean = mean_localization(iter([a, b]))
    assert mean["n_slides"] == 2
    assert set(mean) == {50, 100, "n_slides"}
    for alpha in (50, 100):
        assert set(mean[alpha]) == {"iou", "dice", "pointing", "pointing_lesion"}
        for m in mean[alpha]:
            assert mean[alpha][m] == pytest.approx((a[alpha][m] + b[alpha][m]) / 2)
    # slide a: hit at the top; slide b: the lesion is last of 3
    assert mean[50]["iou"] == pytest.approx(0.5)
    assert mean[100]["pointing"] == pytest.approx(1.0)  # k_all = 3 reaches it


def test_nonlesion_attention_sum_ignores_lesion_and_unknown():
    w = [0.1, 0.2, 0.3, 0.4]
    assert nonlesion_attention_sum(w, [0, 1, -1, 0]) == pytest.approx(0.5)
    assert isinstance(nonlesion_attention_sum(w, [1, 1, 1, 1]), float)


# --- issue 22, mutation survivors of 2026-12-02 ---------------------------------------------


def test_a_large_slide_without_ties_matches_a_plain_sort():
    """2,000 distinct attention values: no tie to average over, so the top k is the sorted
    order. Large enough that numpy's partition does not sort the whole array by accident."""
    rng = np.random.default_rng(7)
    n = 2000
    attention = rng.permutation(n).astype(float) / n + rng.random(n) * 1e-6
    assert len(np.unique(attention)) == n
    labels = (rng.random(n) < 0.025).astype(int)  # ~50 lesions: k = 1 at alpha 1
    labels[rng.random(n) < 0.05] = -1
    alphas = (1, 5, 10, 20, 33, 50, 75, 100)
    got = localization_metrics(attention, labels, alphas)
    known = labels != -1
    a, les = attention[known], labels[known] == 1
    ranked = les[np.argsort(-a)]
    n_les = int(les.sum())
    for alpha in alphas:
        k = max(1, math.ceil(alpha / 100 * n_les - 1e-9))
        k_all = max(1, math.ceil(alpha / 100 * a.size - 1e-9))
        i_k = int(ranked[:k].sum())
        assert got[alpha]["k"] == k and got[alpha]["k_all"] == k_all
        assert got[alpha]["iou"] == pytest.approx(i_k / (k + n_les - i_k), abs=1e-12), alpha
        assert got[alpha]["dice"] == pytest.approx(2 * i_k / (k + n_les), abs=1e-12), alpha
        assert got[alpha]["pointing_lesion"] == float(i_k > 0)
        assert got[alpha]["pointing"] == float(ranked[:k_all].any())
    assert got[1]["k"] == 1
    # the first lesion patch is not at the top, so the pointing game changes with alpha
    first = int(np.argmax(ranked))
    assert 0 < first < ranked.size - 1
    assert got[100]["pointing"] == 1.0


def test_mean_of_one_slide_is_that_slide():
    one = localization_metrics([0.9, 0.1, 0.5, 0.3], [0, 1, 1, 0], alphas=(50, 100))
    mean = mean_localization([one])
    assert mean["n_slides"] == 1
    for alpha in (50, 100):
        assert mean[alpha] == {m: one[alpha][m] for m in mean[alpha]}
    # lesions at ranks 2 and 4 of 4. alpha 50: k = 1 misses, k_all = 2 reaches rank 2
    assert mean[50]["iou"] == 0.0 and mean[50]["pointing_lesion"] == 0.0
    assert mean[50]["pointing"] == 1.0
    assert mean[100]["iou"] == pytest.approx(1 / 3) and mean[100]["dice"] == 0.5


def test_a_missing_attention_value_is_refused_with_the_value_error():
    # None (a missing value) reads as NaN: the documented error, not numpy's TypeError
    with pytest.raises(ValueError, match="^attention contains NaN or Inf$"):
        localization_metrics([0.1, None, 0.3], [1, 0, 0])
    with pytest.raises(ValueError, match="^attention contains NaN or Inf$"):
        nonlesion_attention_sum([0.1, None], [0, 0])
