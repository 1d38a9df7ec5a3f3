"""Pinned classification metrics on fixed numbers, each recomputed by hand: AUROC by counting
pairs, AP from its definition, confusion-matrix rates, thresholds by brute force over the
candidate cut points."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest

from histomil.evaluation.metrics import (
    MetricWarning,
    binary_metrics,
    choose_threshold,
    classification_metrics,
    multiclass_metrics,
)

Y = np.array([0, 0, 1, 1, 0, 1, 0, 1, 1, 0])
P = np.array([0.1, 0.4, 0.6, 0.8, 0.2, 0.9, 0.65, 0.5, 0.7, 0.3])


def _auroc(y, p) -> float:
    pos, neg = p[y == 1], p[y == 0]
    return sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in pos for b in neg) / (
        len(pos) * len(neg)
    )


def _ap(y, p) -> float:
    """Average precision = mean over positives of the precision at their rank (no ties)."""
    order = np.argsort(-p)
    hits, total = 0, 0.0
    for rank, i in enumerate(order, start=1):
        if y[i]:
            hits += 1
            total += hits / rank
    return total / y.sum()


def _rates(y, p, t):
    pred = p >= t
    tp = int((pred & (y == 1)).sum())
    tn = int((~pred & (y == 0)).sum())
    fp = int((pred & (y == 0)).sum())
    fn = int((~pred & (y == 1)).sum())
    return tp, tn, fp, fn


@pytest.mark.parametrize("t", [0.5, 0.6, 0.66, 0.0])
def test_binary_metrics_by_hand(t):
    got = classification_metrics(Y, P, threshold=t)
    tp, tn, fp, fn = _rates(Y, P, t)
    assert got["auroc"] == pytest.approx(_auroc(Y, P))
    assert got["auprc"] == pytest.approx(_ap(Y, P))
    assert got["accuracy"] == pytest.approx((tp + tn) / 10)
    f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    assert got["f1"] == pytest.approx(f1)
    assert got["sensitivity"] == pytest.approx(tp / (tp + fn))
    assert got["specificity"] == pytest.approx(tn / (tn + fp))
    assert (got["threshold"], got["n"], got["n_positive"]) == (t, 10, 5)


def test_a_probability_equal_to_the_threshold_is_positive():
    got = classification_metrics([1, 0], [0.5, 0.49], threshold=0.5)
    assert got["sensitivity"] == 1.0 and got["specificity"] == 1.0 and got["accuracy"] == 1.0


def test_one_class_only_gives_nan_with_a_warning():
    with pytest.warns(MetricWarning, match=r"one class only \(0 positive, 3 negative\)"):
        got = classification_metrics([0, 0, 0], [0.2, 0.7, 0.4])
    assert np.isnan(got["auroc"]) and np.isnan(got["auprc"]) and np.isnan(got["sensitivity"])
    assert got["specificity"] == pytest.approx(2 / 3) and got["accuracy"] == pytest.approx(2 / 3)
    assert got["f1"] == 0.0
    with pytest.warns(MetricWarning):
        pos = classification_metrics([1, 1], [0.2, 0.7])
    assert np.isnan(pos["specificity"]) and pos["sensitivity"] == 0.5


def test_input_errors():
    with pytest.raises(ValueError, match=r"labels \(2,\) and probs \(3,\) differ"):
        classification_metrics([0, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="no predictions"):
        classification_metrics([], [])
    with pytest.raises(ValueError, match=r"must be 0/1, got values \[0.0, 2.0\]"):
        classification_metrics([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="NaN or Inf"):
        classification_metrics([0, 1], [0.1, np.nan])
    with pytest.raises(ValueError, match="unknown threshold method 'otsu'; valid: youden, f1"):
        choose_threshold(Y, P, "otsu")


def test_youden_threshold_by_brute_force():
    """The cut point (among the predicted probabilities) maximising sens + spec - 1; ties go
    to the highest cut (the first on the ROC curve)."""
    best, best_j = None, -np.inf
    for t in sorted(set(P.tolist()), reverse=True):
        tp, tn, fp, fn = _rates(Y, P, t)
        j = tp / (tp + fn) + tn / (tn + fp) - 1
        if j > best_j + 1e-12:
            best, best_j = t, j
    assert choose_threshold(Y, P, "youden") == pytest.approx(best)
    assert best == 0.5  # sens 1.0, spec 0.8 (the only maximum)


def test_f1_threshold_by_brute_force():
    best, best_f1 = None, -np.inf
    for t in sorted(set(P.tolist())):
        tp, _, fp, fn = _rates(Y, P, t)
        f1 = 2 * tp / (2 * tp + fp + fn)
        if f1 > best_f1 + 1e-12:
            best, best_f1 = t, f1
    assert choose_threshold(Y, P, "f1") == pytest.approx(best)
    assert best == 0.5  # all five positives, one false positive: F1 = 10/11


def test_fixed_thresholds_and_one_class():
    assert choose_threshold(Y, P, "fixed") == 0.5
    assert choose_threshold(Y, P, 0.27) == 0.27
    with pytest.warns(MetricWarning, match="one class only: using 0.5"):
        assert choose_threshold([1, 1], [0.2, 0.9], "youden") == 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert choose_threshold([1, 1], [0.2, 0.9], "fixed") == 0.5


def test_multiclass_metrics_by_hand():
    y = np.array([0, 1, 2, 2, 1, 0, 2])
    p = np.array(
        [
            [0.7, 0.2, 0.1],
            [0.2, 0.5, 0.3],
            [0.1, 0.3, 0.6],
            [0.3, 0.4, 0.3],
            [0.5, 0.3, 0.2],
            [0.6, 0.1, 0.3],
            [0.2, 0.2, 0.6],
        ]
    )
    got = multiclass_metrics(y, p)
    aurocs = [_auroc((y == c).astype(int), p[:, c]) for c in range(3)]
    assert got["auroc"] == pytest.approx(np.mean(aurocs))
    pred = [0, 1, 2, 1, 0, 0, 2]  # argmax, first on ties
    assert got["accuracy"] == pytest.approx(np.mean(np.array(pred) == y))
    f1s = []
    for c in range(3):
        tp = sum(1 for a, b in zip(pred, y, strict=True) if a == c and b == c)
        fp = sum(1 for a, b in zip(pred, y, strict=True) if a == c and b != c)
        fn = sum(1 for a, b in zip(pred, y, strict=True) if a != c and b == c)
        f1s.append(2 * tp / (2 * tp + fp + fn))
    assert got["f1"] == pytest.approx(np.mean(f1s))
    assert got["n"] == 7
    from sklearn.metrics import average_precision_score

    aps = [average_precision_score((y == c).astype(int), p[:, c]) for c in range(3)]
    assert got["auprc"] == pytest.approx(np.mean(aps))


def test_multiclass_skips_classes_without_both_sides_and_errors():
    y = np.array([0, 1, 0, 1])
    p = np.array([[0.8, 0.1, 0.1], [0.3, 0.6, 0.1], [0.5, 0.4, 0.1], [0.2, 0.2, 0.6]])
    with pytest.warns(MetricWarning, match=r"class\(es\) \[2\] lack positives"):
        got = multiclass_metrics(y, p)
    assert got["auroc"] == pytest.approx(np.mean([_auroc(y == 0, p[:, 0]), _auroc(y, p[:, 1])]))
    # class 2 is never true but predicted once: its F1 of 0 counts in the macro mean
    assert got["f1"] == pytest.approx((1.0 + 2 / 3 + 0.0) / 3)
    with pytest.warns(MetricWarning):
        none = multiclass_metrics([0, 0], [[0.9, 0.1], [0.6, 0.4]])
    assert np.isnan(none["auroc"]) and np.isnan(none["auprc"])
    with pytest.raises(ValueError, match=r"probs must be \(N, C\) with N = 2"):
        multiclass_metrics([0, 1], [0.2, 0.8])
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\), got 0..2"):
        multiclass_metrics([0, 2], [[0.5, 0.5], [0.5, 0.5]])
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\), got -1..1"):
        multiclass_metrics([-1, 1], [[0.5, 0.5], [0.5, 0.5]])


# --- issue 22, mutation survivors of 2026-12-01/02 ------------------------------------------


def _best_cut(y, p, score, lowest_on_ties):
    """The cut point among the probabilities maximising ``score(tp, tn, fp, fn)``."""
    cuts = sorted(set(p.tolist()), reverse=not lowest_on_ties)
    best, best_s = None, -np.inf
    for t in cuts:
        s = score(*_rates(y, p, t))
        if s > best_s + 1e-12:
            best, best_s = t, s
    return best


def _f1(tp, tn, fp, fn):
    return 2 * tp / (2 * tp + fp + fn)


def _youden(tp, tn, fp, fn):
    return tp / (tp + fn) + tn / (tn + fp) - 1


# Ranked from the highest probability, P positive / n negative:
#   A: n n P n n n n n P   the top cut has precision = recall = 0 (F1 0/0, set to 0); the best
#      F1 (2/5 at precision 1/3, recall 1/2) has precision + recall < 1, and beats the full-recall
#      cut (F1 4/11) only with the true denominator
#   B: P n n n P           the best F1 is at the highest cut
#   C: P P n n n P + 17 n  F1 and Youden disagree: F1 stops after two positives (0.8),
#                          Youden goes on to the third (J = 1 - 3/20)
THRESHOLD_CASES = {
    "A": (
        np.array([0, 0, 1, 0, 0, 0, 0, 0, 1]),
        np.array([0.95, 0.9, 0.85, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2]),
        0.85,
        0.85,
    ),
    "B": (np.array([1, 0, 0, 0, 1]), np.array([0.9, 0.8, 0.7, 0.6, 0.5]), 0.9, 0.9),
    "C": (
        np.array([1, 1, 0, 0, 0, 1] + [0] * 17),
        np.round(np.linspace(0.99, 0.11, 23), 2),
        0.95,
        0.79,
    ),
}


@pytest.mark.parametrize("case", sorted(THRESHOLD_CASES))
def test_f1_and_youden_thresholds_on_edge_rankings(case):
    y, p, want_f1, want_youden = THRESHOLD_CASES[case]
    assert len(set(p.tolist())) == p.size
    assert _best_cut(y, p, _f1, lowest_on_ties=True) == want_f1
    assert _best_cut(y, p, _youden, lowest_on_ties=False) == want_youden
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the 0/0 F1 of case A is handled, not warned about
        assert choose_threshold(y, p, "f1") == want_f1
        assert choose_threshold(y, p, "youden") == want_youden
    assert choose_threshold(y, p) == want_youden  # the default method


def test_f1_threshold_of_case_a_by_hand():
    y, p, _, _ = THRESHOLD_CASES["A"]
    assert _f1(*_rates(y, p, 0.85)) == pytest.approx(2 / 5)  # precision 1/3, recall 1/2
    assert _f1(*_rates(y, p, 0.2)) == pytest.approx(4 / 11)  # precision 2/9, recall 1
    y, p, _, _ = THRESHOLD_CASES["C"]
    assert _f1(*_rates(y, p, 0.95)) == pytest.approx(0.8)
    assert _youden(*_rates(y, p, 0.79)) == pytest.approx(1 - 3 / 20)
    assert _youden(*_rates(y, p, 0.95)) == pytest.approx(2 / 3)


def _only_metric_warnings(fn, *args):
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        out = fn(*args)
    assert [w.category for w in rec] == [MetricWarning], [str(w.message) for w in rec]
    if os.environ.get("HISTOMIL_MUTATION") != "1":  # mutmut's trampolines add a stack frame
        assert rec[0].filename == __file__
    return out, str(rec[0].message)


def test_one_class_warnings_are_exact_and_point_at_the_caller():
    got, msg = _only_metric_warnings(choose_threshold, [0, 0], [0.2, 0.9], "f1")
    assert got == 0.5 and msg == "threshold on one class only: using 0.5"
    got, msg = _only_metric_warnings(classification_metrics, [1, 1], [0.2, 0.9])
    assert msg == "AUROC/AUPRC undefined with one class only (2 positive, 0 negative)"
    got, msg = _only_metric_warnings(multiclass_metrics, [0, 0], [[0.9, 0.1], [0.6, 0.4]])
    assert msg == "class(es) [0, 1] lack positives or negatives: left out of macro AUROC/AP"
    # no class left: NaN, without numpy's "mean of empty slice" warning
    assert np.isnan(got["auroc"]) and np.isnan(got["auprc"])
    assert got["accuracy"] == 1.0 and got["n"] == 2


def test_binary_metrics_with_as_many_misses_as_hits():
    """tp = fn = 1 and tn = fp = 1: both classes are present, so AUROC/AP are defined."""
    got = binary_metrics([1, 1, 0, 0], [0.9, 0.2, 0.8, 0.1], [1, 0, 1, 0])
    assert got["auroc"] == pytest.approx(3 / 4)  # pairs: 0.9 > 0.8, 0.9 > 0.1, 0.2 > 0.1
    assert got["auprc"] == pytest.approx((1 + 2 / 3) / 2)  # ranks P n P n
    assert got == pytest.approx(
        {"auroc": 0.75, "auprc": 5 / 6, "accuracy": 0.5, "f1": 0.5}
        | {"sensitivity": 0.5, "specificity": 0.5}
    )
    # decisions as bools or floats count the same
    assert binary_metrics([1, 1, 0, 0], [0.9, 0.2, 0.8, 0.1], [True, False, True, False]) == got
    one_class = binary_metrics([1, 1], [0.3, 0.6], [1, 0])
    assert np.isnan(one_class["auroc"]) and np.isnan(one_class["auprc"])
    assert one_class["sensitivity"] == 0.5 and np.isnan(one_class["specificity"])


def test_input_errors_are_exact():
    with pytest.raises(ValueError, match=r"^labels \(2,\) and probs \(3,\) differ in length$"):
        classification_metrics([0, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match=r"^labels \(2,\) and pred \(1,\) differ in length$"):
        binary_metrics([0, 1], [0.1, 0.9], [1])
    with pytest.raises(ValueError, match="^no predictions to evaluate$"):
        binary_metrics([], [], [])
    with pytest.raises(
        ValueError, match=r"^binary labels must be 0/1, got values \[0.0, 1.0, 2.0, 3.0, 4.0\]$"
    ):
        classification_metrics([6, 5, 4, 3, 2, 1, 0], np.full(7, 0.5))
    with pytest.raises(ValueError, match="^probs contain NaN or Inf$"):
        classification_metrics([0, 1], [0.1, np.inf])
    with pytest.raises(ValueError, match="^probs contain NaN or Inf$"):
        choose_threshold([0, 1], [0.1, np.nan], "youden")
    with pytest.raises(
        ValueError, match=r"^unknown threshold method 'otsu'; valid: youden, f1, fixed$"
    ):
        choose_threshold(Y, P, "otsu")


def test_binary_inputs_accept_bool_and_column_labels():
    got = classification_metrics(np.array([[True], [False], [True]]), [[0.7], [0.4], [0.3]])
    assert got["n"] == 3 and got["n_positive"] == 1 + 1
    assert got["auroc"] == pytest.approx(0.5) and got["accuracy"] == pytest.approx(2 / 3)


def test_multiclass_single_positive_class_and_a_class_never_seen():
    """Class 1 has one positive (still in the macro AUROC/AP); class 3 is never true and
    never predicted: left out of AUROC/AP, but its F1 of 0 counts in the macro F1 over all
    C classes, without scikit-learn's zero-division warning."""
    y = np.array([0, 1, 2, 2, 0, 0])
    p = np.array(
        [
            [0.6, 0.2, 0.1, 0.1],
            [0.3, 0.4, 0.2, 0.1],
            [0.1, 0.3, 0.5, 0.1],
            [0.5, 0.1, 0.3, 0.1],
            [0.2, 0.5, 0.2, 0.1],
            [0.7, 0.1, 0.1, 0.1],
        ]
    )
    got, msg = _only_metric_warnings(multiclass_metrics, y, p)
    assert msg == "class(es) [3] lack positives or negatives: left out of macro AUROC/AP"
    aurocs = [_auroc((y == c).astype(int), p[:, c]) for c in range(3)]
    assert aurocs == pytest.approx([7 / 9, 4 / 5, 1.0])
    assert got["auroc"] == pytest.approx(np.mean(aurocs))
    aps = [_ap((y == c).astype(int), p[:, c]) for c in range(3)]
    assert got["auprc"] == pytest.approx(np.mean(aps))
    # predictions 0 1 2 0 1 0: class 0 F1 = 2*2/(4+1+1), class 1 = 2/(2+1), class 2 = 2/(2+1)
    assert got["accuracy"] == pytest.approx(4 / 6)
    assert got["f1"] == pytest.approx((4 / 6 + 2 / 3 + 2 / 3 + 0.0) / 4)
    assert got["n"] == 6


def test_f1_of_all_wrong_decisions_is_zero_and_a_missing_probability_is_refused():
    # one false positive and one false negative, no true positive: F1 = 0 / 2 = 0, not 0/0
    wrong = binary_metrics([1, 0], [0.3, 0.6], [0, 1])
    assert wrong["f1"] == 0.0 and wrong["accuracy"] == 0.0
    assert wrong["sensitivity"] == 0.0 and wrong["specificity"] == 0.0
    assert binary_metrics([1, 0, 0], [0.3, 0.6, 0.7], [0, 1, 1])["f1"] == 0.0  # fp = 2, fn = 1
    # a missing probability (None, as read from a sparse table) is NaN: the ValueError
    with pytest.raises(ValueError, match="^probs contain NaN or Inf$"):
        classification_metrics([0, 1], [0.2, None])


@pytest.mark.parametrize("seed", range(40))
def test_hand_written_auroc_and_average_precision_equal_scikit_learn(seed):
    """auroc() / average_precision() replace scikit-learn's in the bootstrap (speed): equal to
    it on random bags with many tied scores, a single positive or negative, and n = 2."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    from histomil.evaluation.metrics import auroc, average_precision

    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 60))
    y = rng.integers(0, 2, n)
    y[rng.choice(n, 2, replace=False)] = [0, 1]  # both classes
    if seed % 4 == 1:
        y[:] = 0
        y[rng.integers(n)] = 1  # one positive
    elif seed % 4 == 2:
        y[:] = 1
        y[rng.integers(n)] = 0  # one negative
    # seed % 4 == 3: scores rounded to a few levels, so most of them tie
    p = rng.random(n) if seed % 4 != 3 else np.round(rng.random(n) * 3) / 3
    assert auroc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert average_precision(y, p) == pytest.approx(average_precision_score(y, p), abs=1e-12)


def test_hand_written_ranking_metrics_by_hand():
    from histomil.evaluation.metrics import auroc, average_precision

    y = np.array([1, 0, 1, 0, 0])
    p = np.array([0.9, 0.9, 0.5, 0.3, 0.1])
    # pairs (pos, neg): (0.9, 0.9) tie = 1/2, (0.9, 0.3), (0.9, 0.1), (0.5, 0.3), (0.5, 0.1) = 1,
    # (0.5, 0.9) = 0  -> 4.5 / 6
    assert auroc(y, p) == pytest.approx(4.5 / 6)
    # thresholds 0.9 (tp 1 of 2 predicted: precision 1/2, recall 1/2), 0.5 (2 of 3, recall 1)
    assert average_precision(y, p) == pytest.approx(0.5 * 0.5 + 0.5 * 2 / 3)


@pytest.mark.parametrize("seed", range(10))
def test_multiclass_metrics_equal_scikit_learn(seed):
    from sklearn.metrics import accuracy_score, f1_score

    rng = np.random.default_rng(seed)
    n, c = int(rng.integers(3, 40)), int(rng.integers(2, 5))
    y = rng.integers(0, c, n)
    p = rng.dirichlet(np.ones(c), n)
    if seed % 2:
        p = np.round(p * 4) / 4  # ties, also in the argmax
    got = multiclass_metrics(y, p)
    pred = p.argmax(1)
    assert got["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert got["f1"] == pytest.approx(
        f1_score(y, pred, average="macro", labels=range(c), zero_division=0.0)
    )
    with pytest.raises(ValueError, match=r"^probs contain NaN or Inf$"):
        multiclass_metrics([0, 1], [[np.nan, 0.5], [0.5, 0.5]])
