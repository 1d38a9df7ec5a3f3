"""Localization metrics on hand-made slides."""

from __future__ import annotations

import numpy as np
import pytest

from histomil.evaluation import localization_metrics, mean_localization, nonlesion_attention_sum

#           lesion patches: indices 0..3 (L = 4); 6 non-lesion; one unknown
LABELS = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0, -1])


def test_perfect_ranking_scores_one_at_every_alpha():
    att = np.array([0.9, 0.8, 0.7, 0.6, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 5.0])  # unknown ignored
    res = localization_metrics(att, LABELS)
    assert res[100]["k"] == 4  # alpha 100 = number of lesion patches
    for alpha, r in res.items():
        k = r["k"]
        assert r["iou"] == pytest.approx(k / 4) and r["dice"] == pytest.approx(2 * k / (k + 4))
        assert r["pointing"] == 1.0, alpha
    assert res[100]["iou"] == 1.0 and res[100]["dice"] == 1.0


def test_worst_ranking_scores_zero():
    att = np.array([0.0, 0.0, 0.1, 0.1, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.0])
    res = localization_metrics(att, LABELS, alphas=(1, 50, 100))
    for r in res.values():
        assert r["iou"] == 0 and r["dice"] == 0 and r["pointing_lesion"] == 0
    # the paper's pointing game samples from all 10 known patches: the top 5 miss, all 10 hit
    assert res[1]["pointing"] == 0 and res[50]["pointing"] == 0 and res[100]["pointing"] == 1


def test_partial_ranking_by_hand():
    # top 4: indices 0 (lesion), 4 (non), 1 (lesion), 5 (non) -> I = 2, k = 4, L = 4
    att = np.array([0.9, 0.7, 0.1, 0.1, 0.8, 0.6, 0.0, 0.0, 0.0, 0.0, 0.0])
    r = localization_metrics(att, LABELS, alphas=(100, 50, 20))
    assert r[100]["iou"] == pytest.approx(2 / 6) and r[100]["dice"] == pytest.approx(0.5)
    assert r[50]["k"] == 2 and r[50]["iou"] == pytest.approx(1 / 5)  # top 2: 0, 4
    assert r[20]["k"] == 1 and r[20]["pointing"] == 1.0  # ceil(0.8) = 1


def test_ties_resolved_in_expectation():
    att = np.ones(11)  # uniform attention: 4 lesions among 10 known patches
    r = localization_metrics(att, LABELS, alphas=(25, 100))
    assert r[25]["k"] == 1 and r[25]["pointing_lesion"] == pytest.approx(0.4)
    assert r[25]["k_all"] == 3 and r[25]["pointing"] == pytest.approx(
        1 - 20 / 120
    )  # C(6,3)/C(10,3)
    assert r[100]["dice"] == pytest.approx(2 * 1.6 / 8)  # expected I = 4 * 4 / 10
    assert r[100]["pointing_lesion"] == pytest.approx(1 - (6 * 5 * 4 * 3) / (10 * 9 * 8 * 7))
    assert r[100]["pointing"] == 1.0
    # independent of patch order
    perm = np.random.default_rng(0).permutation(11)
    assert localization_metrics(att[perm], LABELS[perm], alphas=(100,)) == {100: r[100]}


def test_no_lesion_raises_and_mean():
    with pytest.raises(ValueError, match="lesion"):
        localization_metrics(np.ones(3), [0, 0, -1])
    a = localization_metrics([1.0, 0.0], [1, 0], alphas=(100,))
    b = localization_metrics([0.0, 1.0], [1, 0], alphas=(100,))
    m = mean_localization([a, b])
    assert m["n_slides"] == 2 and m[100]["pointing_lesion"] == 0.5 and m[100]["iou"] == 0.5
    assert m[100]["pointing"] == 1.0  # top 2 of 2 patches always holds the lesion


def test_nonlesion_attention_sum():
    w = np.array([0.5, 0.2, 0.2, 0.1])
    assert nonlesion_attention_sum(w, [1, 0, 0, -1]) == pytest.approx(0.4)
    assert nonlesion_attention_sum(w, [1, 1, 1, 1]) == 0.0


def test_pointing_game_samples_from_all_patches_by_hand():
    # 10 known patches ranked 0..9 by attention; lesions ranked 3rd and 10th (L = 2); the
    # unknown patch has the highest attention and is left out
    att = np.array([5.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0])
    labels = np.array([-1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1])
    r = localization_metrics(att, labels, alphas=(10, 20, 30, 100))
    # paper: k_all = ceil(alpha% * 10) = 1, 2, 3, 10 -> miss, miss, hit, hit
    assert [r[a]["k_all"] for a in (10, 20, 30, 100)] == [1, 2, 3, 10]
    assert [r[a]["pointing"] for a in (10, 20, 30, 100)] == [0.0, 0.0, 1.0, 1.0]
    # lesion-relative: k = ceil(alpha% * 2) = 1, 1, 1, 2 -> the top 2 never hold a lesion
    assert [r[a]["pointing_lesion"] for a in (10, 20, 30, 100)] == [0.0, 0.0, 0.0, 0.0]
    assert r[100]["iou"] == 0.0 and r[100]["dice"] == 0.0
