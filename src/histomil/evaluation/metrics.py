"""Slide-level classification metrics and the validation-chosen decision threshold.

Convention: a slide is predicted positive when ``prob >= threshold``. Thresholds are chosen
on validation data only (:func:`choose_threshold`) and then applied to test predictions.
Undefined metrics (one class only) are NaN with a :class:`MetricWarning`, never a crash.
"""

from __future__ import annotations

import warnings

import numpy as np
from numpy.typing import ArrayLike

THRESHOLD_METHODS = ("youden", "f1", "fixed")


class MetricWarning(UserWarning):
    """A metric is undefined on these inputs (e.g. one class only) and was set to NaN."""


def _binary_inputs(labels: ArrayLike, probs: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels).astype(float).ravel()
    p = np.asarray(probs, dtype=float).ravel()
    if y.shape != p.shape:
        raise ValueError(f"labels {y.shape} and probs {p.shape} differ in length")
    if y.size == 0:
        raise ValueError("no predictions to evaluate")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError(f"binary labels must be 0/1, got values {sorted(set(y.tolist()))[:5]}")
    if not np.isfinite(p).all():
        raise ValueError("probs contain NaN or Inf")
    return y.astype(int), p


def choose_threshold(labels: ArrayLike, probs: ArrayLike, method: str | float = "youden") -> float:
    """Decision threshold from VALIDATION predictions (labels (N,), probs (N,)).

    ``youden`` maximises sensitivity + specificity - 1 on the ROC curve, ``f1`` maximises F1 on
    the precision-recall curve, ``fixed`` (or a number) returns 0.5 (or that number). With one
    class only, 0.5 is returned with a :class:`MetricWarning`.
    """
    from sklearn.metrics import precision_recall_curve, roc_curve

    if not isinstance(method, str):
        return float(method)
    if method not in THRESHOLD_METHODS:
        raise ValueError(
            f"unknown threshold method {method!r}; valid: {', '.join(THRESHOLD_METHODS)}"
        )
    y, p = _binary_inputs(labels, probs)
    if method == "fixed":
        return 0.5
    if y.min() == y.max():
        warnings.warn("threshold on one class only: using 0.5", MetricWarning, stacklevel=2)
        return 0.5
    if method == "youden":
        fpr, tpr, thr = roc_curve(y, p)
        j = tpr - fpr
        finite = np.isfinite(thr)
        best = np.flatnonzero(finite)[np.argmax(j[finite])]
        return float(thr[best])
    prec, rec, thr = precision_recall_curve(y, p)
    f1 = np.where(prec + rec > 0, 2 * prec * rec / np.maximum(prec + rec, 1e-12), 0.0)[:-1]
    return float(thr[int(np.argmax(f1))])


# AUROC and average precision of one binary ranking, written here because the bootstrap calls
# them thousands of times per report: scikit-learn 1.9 validates its inputs on every call
# (~2-3 ms for roc_auc_score + average_precision_score, 0.1 ms of arithmetic), which made one
# demo report take 40 s. Both equal scikit-learn's values (tests compare them on random inputs
# with ties); neither validates: callers pass _binary_inputs' output with both classes present.
def auroc(y: np.ndarray, p: np.ndarray) -> float:
    """Area under the ROC curve of scores ``p`` for 0/1 labels ``y`` (both classes present):
    the share of (positive, negative) pairs the scores order correctly, ties counting one half
    (the Mann-Whitney U over ``n_pos * n_neg``), which is the trapezoidal area scikit-learn
    computes."""
    pos = p[y == 1]
    neg = np.sort(p[y == 0])
    below = np.searchsorted(neg, pos, side="left")  # negatives scored lower than each positive
    not_above = np.searchsorted(neg, pos, side="right")  # ... lower or equal
    return float((below.sum() + not_above.sum()) / (2 * pos.size * neg.size))


def average_precision(y: np.ndarray, p: np.ndarray) -> float:
    """Average precision (scikit-learn's step-wise area under the precision-recall curve) of
    scores ``p`` for 0/1 labels ``y`` with at least one positive: the sum over distinct score
    thresholds, from the highest, of precision times the recall gained there."""
    order = np.argsort(-p, kind="stable")
    ranked = p[order]
    # the last position of each run of equal scores: one threshold per distinct score
    last = np.r_[np.flatnonzero(np.diff(ranked)), ranked.size - 1]
    tps = np.cumsum(y[order])[last]
    precision = tps / (last + 1)
    recall_gain = np.diff(tps, prepend=0) / tps[-1]
    return float(np.sum(recall_gain * precision))


def binary_metrics(labels: ArrayLike, probs: ArrayLike, pred: ArrayLike) -> dict[str, float]:
    """AUROC, AUPRC (average precision), accuracy, F1, sensitivity, specificity (binary).

    ``labels`` (N,) 0/1, ``probs`` (N,) positive-class probability, ``pred`` (N,) 0/1 decisions
    (per-fold thresholds may differ, so decisions come in rather than one threshold). NaN where
    undefined, without a warning (callers such as the bootstrap call it thousands of times).
    """
    y, p = _binary_inputs(labels, probs)
    yhat = np.asarray(pred).astype(int).ravel()
    if yhat.shape != y.shape:
        raise ValueError(f"labels {y.shape} and pred {yhat.shape} differ in length")
    # The decision metrics are ratios of confusion counts, counted here: scikit-learn's
    # f1_score/recall_score validate their inputs on every call (~1 ms each), too slow for
    # thousands of bootstrap resamples; the formulas are scikit-learn's (tested against it).
    tp = float(((yhat == 1) & (y == 1)).sum())
    tn = float(((yhat == 0) & (y == 0)).sum())
    fp = float(((yhat == 1) & (y == 0)).sum())
    fn = float(((yhat == 0) & (y == 1)).sum())
    both = bool(tp + fn) and bool(tn + fp)
    nan = float("nan")
    return {
        "auroc": auroc(y, p) if both else nan,
        "auprc": average_precision(y, p) if both else nan,
        "accuracy": (tp + tn) / y.size,
        "f1": 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else nan,
        "sensitivity": tp / (tp + fn) if (tp + fn) else nan,
        "specificity": tn / (tn + fp) if (tn + fp) else nan,
    }


def classification_metrics(labels: ArrayLike, probs: ArrayLike, threshold: float = 0.5) -> dict:
    """:func:`binary_metrics` of the decisions ``probs >= threshold``.

    ``labels`` (N,) 0/1, ``probs`` (N,) positive-class probability. Returns a dict of floats
    (NaN where undefined, with a :class:`MetricWarning` when AUROC/AUPRC are) plus
    ``threshold``, ``n`` and ``n_positive``.
    """
    y, p = _binary_inputs(labels, probs)
    out: dict = binary_metrics(y, p, (p >= threshold).astype(int))
    n_pos, n_neg = int(y.sum()), int((1 - y).sum())
    if not (n_pos and n_neg):
        warnings.warn(
            f"AUROC/AUPRC undefined with one class only ({n_pos} positive, {n_neg} negative)",
            MetricWarning,
            stacklevel=2,
        )
    out.update(threshold=float(threshold), n=int(y.size), n_positive=n_pos)
    return out


def prob_columns(columns) -> list[str]:
    """The ``prob_<c>`` columns of a predictions table in class order (``prob_2`` before
    ``prob_10``: a text sort would put ``prob_10`` after ``prob_1`` and hand every class from
    the 11th on the wrong column)."""
    cols = [c for c in columns if isinstance(c, str) and c.startswith("prob_") and c[5:].isdigit()]
    return sorted(cols, key=lambda c: int(c[5:]))


def multiclass_metrics(labels: ArrayLike, probs: ArrayLike) -> dict:
    """Macro one-vs-rest AUROC, macro average precision, accuracy and macro F1.

    ``labels`` (N,) int in [0, C), ``probs`` (N, C). Classes without both positives and
    negatives are left out of the macro AUROC/AP (with a :class:`MetricWarning`).
    """
    y = np.asarray(labels).astype(int).ravel()
    p = np.asarray(probs, dtype=float)
    if p.ndim != 2 or p.shape[0] != y.size:
        raise ValueError(f"probs must be (N, C) with N = {y.size}, got {p.shape}")
    if not np.isfinite(p).all():
        raise ValueError("probs contain NaN or Inf")
    n_classes = p.shape[1]
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        raise ValueError(f"labels must lie in [0, {n_classes}), got {y.min()}..{y.max()}")
    aurocs, aps, skipped = [], [], []
    for c in range(n_classes):
        yc = (y == c).astype(int)
        if 0 < yc.sum() < yc.size:
            aurocs.append(auroc(yc, p[:, c]))
            aps.append(average_precision(yc, p[:, c]))
        else:
            skipped.append(c)
    if skipped:
        warnings.warn(
            f"class(es) {skipped} lack positives or negatives: left out of macro AUROC/AP",
            MetricWarning,
            stacklevel=2,
        )
    pred = p.argmax(1)
    # macro F1 over every class (scikit-learn's f1_score(average="macro", zero_division=0)),
    # counted here for the same reason as auroc(): the bootstrap calls this thousands of times
    f1s = []
    for c in range(n_classes):
        tp = float(((pred == c) & (y == c)).sum())
        wrong = float(((pred == c) != (y == c)).sum())  # fp + fn
        f1s.append(2 * tp / (2 * tp + wrong) if (2 * tp + wrong) else 0.0)
    return {
        "auroc": float(np.mean(aurocs)) if aurocs else np.nan,
        "auprc": float(np.mean(aps)) if aps else np.nan,
        "accuracy": float(np.mean(pred == y)) if y.size else np.nan,
        "f1": float(np.mean(f1s)),
        "n": int(y.size),
    }
