"""Metrics with bootstrap confidence intervals, recomputed from a run's ``predictions.csv``.

Binary decisions use, per fold, the threshold the trainer chose on validation data
(``folds/<k>/result.json``), else Youden's J on that fold's validation rows (0.5 without any), or
the ``pred`` column when present; the test rows never choose a threshold. Intervals are
percentile bootstraps over test slides pooled across folds (``n_boot`` resamples, fixed seed,
:func:`histomil.evaluation.bootstrap_ci`). The metric functions here are fast numpy versions
(thousands of calls per report), equal to scikit-learn's (tested).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

BINARY_METRICS = ("auroc", "auprc", "accuracy", "f1", "sensitivity", "specificity")


@dataclass(frozen=True)
class MetricRow:
    """One metric: pooled test estimate with its CI, and the mean/sd over folds (``n_folds``
    folds where it is defined; ``fold_values`` per fold, NaN where undefined)."""

    name: str
    estimate: float
    ci_low: float
    ci_high: float
    fold_mean: float
    fold_sd: float
    n_folds: int
    fold_values: dict[str, float] = field(default_factory=dict)


def task_of(df: pd.DataFrame) -> str:
    """``survival``, ``multiclass`` or ``binary`` from the columns and labels present."""
    if {"risk", "time", "event"} <= set(df.columns):
        return "survival"
    prob_cols = [c for c in df.columns if c.startswith("prob_")]
    if len(prob_cols) > 2 or ("label" in df and df["label"].nunique() > 2):
        return "multiclass"
    return "binary"


def youden_threshold(y: np.ndarray, p: np.ndarray) -> float:
    """Youden's J threshold of validation predictions (:func:`histomil.evaluation.choose_threshold`)."""
    import warnings

    from histomil.evaluation import MetricWarning, choose_threshold

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MetricWarning)
        return float(choose_threshold(y, p, "youden"))


def decisions(df: pd.DataFrame, thresholds: dict[str, float] | None = None) -> pd.Series:
    """Binary predictions of the test rows (index-aligned). Per fold, the threshold the trainer
    chose on validation data (``thresholds[str(fold)]``), else Youden's J on the validation rows."""
    test = df[df["split"] == "test"]
    if "pred" in df.columns:
        return test["pred"].astype(int)
    out = pd.Series(0, index=test.index, dtype=int)
    for fold, rows in test.groupby("fold"):
        val = df[(df["fold"] == fold) & (df["split"] == "val")]
        thr = (thresholds or {}).get(str(fold))
        if thr is None:
            y_val, p_val = val["label"].to_numpy(int), val["prob"].to_numpy(float)
            thr = youden_threshold(y_val, p_val) if len(val) else 0.5
        out.loc[rows.index] = (rows["prob"].to_numpy(float) >= thr).astype(int)
    return out


def auroc(y: np.ndarray, p: np.ndarray) -> float:
    """Area under the ROC curve via the Mann-Whitney statistic (ties count half)."""
    from scipy.stats import rankdata

    y = np.asarray(y)
    n1, n0 = int((y == 1).sum()), int((y == 0).sum())
    if n1 == 0 or n0 == 0:
        return float("nan")
    ranks = rankdata(p)
    return float((ranks[y == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def average_precision(y: np.ndarray, p: np.ndarray) -> float:
    """Average precision (step-wise area under the PR curve, as scikit-learn defines it)."""
    y, p = np.asarray(y), np.asarray(p, dtype=np.float64)
    if not (y == 1).any():
        return float("nan")
    order = np.argsort(-p, kind="stable")
    ys, ps = y[order], p[order]
    last = np.r_[np.flatnonzero(np.diff(ps)), len(ps) - 1]  # last index of each distinct score
    tps = np.cumsum(ys == 1)[last].astype(np.float64)
    precision = tps / (last + 1)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def binary_metrics(y: np.ndarray, p: np.ndarray, yhat: np.ndarray) -> dict[str, float]:
    """AUROC, AUPRC (average precision), accuracy, F1, sensitivity, specificity."""
    both = len(np.unique(y)) == 2
    tp = float(((yhat == 1) & (y == 1)).sum())
    tn = float(((yhat == 0) & (y == 0)).sum())
    fp = float(((yhat == 1) & (y == 0)).sum())
    fn = float(((yhat == 0) & (y == 1)).sum())
    nan = float("nan")
    return {
        "auroc": auroc(y, p) if both else nan,
        "auprc": average_precision(y, p) if both else nan,
        "accuracy": (tp + tn) / len(y) if len(y) else nan,
        "f1": 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else nan,
        "sensitivity": tp / (tp + fn) if (tp + fn) else nan,
        "specificity": tn / (tn + fp) if (tn + fp) else nan,
    }


def multiclass_metrics(y: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """Macro one-vs-rest AUROC and AP over classes present, accuracy and macro F1 (argmax), named
    as :func:`histomil.evaluation.multiclass_metrics` names them. ``probs``: (N, C)."""
    y = np.asarray(y).astype(int)
    n_classes = probs.shape[1]
    present = [c for c in range(n_classes) if 0 < (y == c).sum() < len(y)]
    yhat = probs.argmax(1)
    f1s = []
    for c in range(n_classes):
        tp = float(((yhat == c) & (y == c)).sum())
        denom = float((yhat == c).sum() + (y == c).sum())
        f1s.append(2 * tp / denom if denom else 0.0)
    nan = float("nan")
    return {
        "auroc": float(np.mean([auroc(y == c, probs[:, c]) for c in present])) if present else nan,
        "auprc": float(
            np.mean([average_precision((y == c).astype(int), probs[:, c]) for c in present])
        )
        if present
        else nan,
        "accuracy": float((yhat == y).mean()) if len(y) else nan,
        "f1": float(np.mean(f1s)),
    }


def _c_index(event: np.ndarray, time: np.ndarray, risk: np.ndarray) -> float:
    from histomil.evaluation import concordance_index

    return concordance_index(time, risk, event)


def _task_arrays(df: pd.DataFrame, task: str, yhat: pd.Series | None) -> tuple[np.ndarray, ...]:
    """Row-aligned arrays the metric functions take; the first one stratifies the bootstrap."""
    if task == "survival":
        return (df["event"].to_numpy(int), df["time"].to_numpy(float), df["risk"].to_numpy(float))
    if task == "multiclass":
        cols = sorted((c for c in df.columns if c.startswith("prob_")), key=lambda c: c[5:])
        return (df["label"].to_numpy(int), df[cols].to_numpy(float))
    return (
        df["label"].to_numpy(int),
        df["prob"].to_numpy(float),
        yhat.loc[df.index].to_numpy(int),
    )


def _metric_fns(task: str) -> dict[str, Callable[..., float]]:
    """One function per metric of ``task``, each taking the arrays of :func:`_task_arrays`."""
    if task == "survival":
        return {"c_index": _c_index}
    if task == "multiclass":
        names = ("auroc", "auprc", "accuracy", "f1")
        return {n: (lambda y, pr, n=n: multiclass_metrics(y, pr)[n]) for n in names}
    return {n: (lambda y, p, yh, n=n: binary_metrics(y, p, yh)[n]) for n in BINARY_METRICS}


def metric_table(
    df: pd.DataFrame, n_boot: int = 1000, seed: int = 0, thresholds: dict[str, float] | None = None
) -> list[MetricRow]:
    """Pooled test metrics with 95% CIs from :func:`histomil.evaluation.bootstrap_ci` (resamples
    stratified by label, or by event status for survival), plus per-fold mean and sd."""
    import warnings

    from histomil.evaluation import MetricWarning, bootstrap_ci

    df = df.reset_index(drop=True)
    task = task_of(df)
    if "split" not in df.columns:
        df = df.assign(split="test")
    if "fold" not in df.columns:
        df = df.assign(fold=0)
    test = df[df["split"] == "test"]
    if test.empty:
        return []
    yhat = decisions(df, thresholds) if task == "binary" else None
    arrays = _task_arrays(test, task, yhat)
    groups = list(test.groupby("fold"))
    folds = [_task_arrays(rows, task, yhat) for _, rows in groups]
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MetricWarning)  # undefined metrics are NaN, shown as "-"
        for name, fn in _metric_fns(task).items():
            ci = bootstrap_ci(fn, *arrays, n=n_boot, seed=seed)
            every = np.asarray([fn(*a) for a in folds], dtype=np.float64)
            f = every[np.isfinite(every)]
            rows.append(
                MetricRow(
                    name, ci.estimate, ci.low, ci.high,
                    float(f.mean()) if len(f) else np.nan,
                    float(f.std(ddof=1)) if len(f) > 1 else np.nan,
                    len(f),
                    {str(k): float(v) for (k, _), v in zip(groups, every, strict=True)},
                )
            )  # fmt: skip
    return rows
