"""Classification metrics and thresholds against hand computations and scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from histomil.evaluation import (
    MetricWarning,
    choose_threshold,
    classification_metrics,
    multiclass_metrics,
)

Y = np.array([0, 0, 0, 0, 1, 1, 1])
P = np.array([0.1, 0.2, 0.6, 0.3, 0.5, 0.8, 0.9])


def test_binary_metrics_by_hand():
    m = classification_metrics(Y, P, threshold=0.5)
    # predictions >= 0.5: [0, 0, 1, 0, 1, 1, 1] -> TP 3, FP 1, TN 3, FN 0
    assert m["accuracy"] == pytest.approx(6 / 7)
    assert m["sensitivity"] == pytest.approx(1.0)
    assert m["specificity"] == pytest.approx(3 / 4)
    assert m["f1"] == pytest.approx(2 * 3 / (2 * 3 + 1 + 0))
    # AUROC: 12 positive-negative pairs, one discordant (0.6 > 0.5)
    assert m["auroc"] == pytest.approx(11 / 12)
    assert m["auroc"] == pytest.approx(roc_auc_score(Y, P))
    assert m["auprc"] == pytest.approx(average_precision_score(Y, P))
    # AP by hand: ranks 0.9 (TP) 0.8 (TP) 0.6 (FP) 0.5 (TP): (1 + 1 + 3/4) / 3
    assert m["auprc"] == pytest.approx((1 + 1 + 0.75) / 3)
    assert (m["n"], m["n_positive"], m["threshold"]) == (7, 3, 0.5)


def test_threshold_is_inclusive():
    m = classification_metrics([0, 1], [0.4, 0.4], threshold=0.4)
    assert m["sensitivity"] == 1.0 and m["specificity"] == 0.0


def test_single_class_gives_nan_and_warning():
    with pytest.warns(MetricWarning):
        m = classification_metrics([1, 1, 1], [0.2, 0.7, 0.9], 0.5)
    assert np.isnan(m["auroc"]) and np.isnan(m["auprc"]) and np.isnan(m["specificity"])
    assert m["sensitivity"] == pytest.approx(2 / 3) and m["accuracy"] == pytest.approx(2 / 3)
    with pytest.warns(MetricWarning):
        m = classification_metrics([0, 0], [0.2, 0.7], 0.5)
    assert np.isnan(m["sensitivity"]) and m["specificity"] == 0.5


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="differ"):
        classification_metrics([0, 1], [0.5])
    with pytest.raises(ValueError, match="0/1"):
        classification_metrics([0, 2], [0.5, 0.5])
    with pytest.raises(ValueError, match="NaN"):
        classification_metrics([0, 1], [np.nan, 0.5])


def test_youden_threshold():
    t = choose_threshold(Y, P, "youden")
    # J is maximal (1 - 1/4 ... ) at 0.5: tpr 1, fpr 1/4 -> 0.75; at 0.8: tpr 2/3, fpr 0 -> 0.667
    assert t == pytest.approx(0.5)
    m = classification_metrics(Y, P, t)
    assert m["sensitivity"] + m["specificity"] - 1 == pytest.approx(0.75)
    # perfectly separable: threshold separates the classes
    t = choose_threshold([0, 0, 1, 1], [0.1, 0.3, 0.35, 0.9], "youden")
    assert 0.3 < t <= 0.35


def test_f1_and_fixed_threshold():
    t = choose_threshold(Y, P, "f1")
    f1 = classification_metrics(Y, P, t)["f1"]
    best = max(classification_metrics(Y, P, c)["f1"] for c in P)
    assert f1 == pytest.approx(best)
    assert choose_threshold(Y, P, "fixed") == 0.5 and choose_threshold(Y, P, 0.3) == 0.3
    with pytest.raises(ValueError, match="unknown threshold"):
        choose_threshold(Y, P, "best")
    with pytest.warns(MetricWarning):
        assert choose_threshold([1, 1], [0.2, 0.9]) == 0.5


def test_multiclass():
    y = np.array([0, 1, 2, 2, 1, 0])
    p = np.array(
        [[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7], [0.3, 0.4, 0.3], [0.1, 0.8, 0.1],
         [0.5, 0.2, 0.3]]
    )  # fmt: skip
    m = multiclass_metrics(y, p)
    assert m["auroc"] == pytest.approx(roc_auc_score(y, p, multi_class="ovr", average="macro"))
    assert m["accuracy"] == pytest.approx(5 / 6)
    ap = np.mean([average_precision_score(y == c, p[:, c]) for c in range(3)])
    assert m["auprc"] == pytest.approx(ap)
    with pytest.warns(MetricWarning):
        m = multiclass_metrics([0, 0, 1], p[:3])  # class 2 absent
    assert np.isfinite(m["auroc"])


def test_binary_metrics_equal_scikit_learn_and_f1_is_nan_when_undefined():
    from sklearn.metrics import accuracy_score, f1_score, recall_score

    from histomil.evaluation.metrics import binary_metrics

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 60)
    p = rng.random(60)
    pred = (p >= 0.6).astype(int)
    got = binary_metrics(y, p, pred)
    assert got["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert got["f1"] == pytest.approx(f1_score(y, pred))
    assert got["sensitivity"] == pytest.approx(recall_score(y, pred))
    assert got["specificity"] == pytest.approx(recall_score(y, pred, pos_label=0))
    # no positive label and no positive decision: F1 is 0/0, NaN like sensitivity (was 0.0)
    none = binary_metrics([0, 0, 0], [0.1, 0.2, 0.3], [0, 0, 0])
    assert np.isnan(none["f1"]) and np.isnan(none["sensitivity"]) and none["specificity"] == 1.0
    with pytest.raises(ValueError, match="differ in length"):
        binary_metrics([0, 1], [0.1, 0.9], [1])
