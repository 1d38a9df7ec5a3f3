"""Metrics with bootstrap confidence intervals, recomputed from a run's ``predictions.csv``.

Binary decisions use, per fold, the threshold the trainer chose on validation data
(``folds/<k>/result.json``), else Youden's J on that fold's validation rows (0.5 without any), or
the ``pred`` column when present; the test rows never choose a threshold. Intervals are percentile bootstraps over test slides (pooled across
folds), ``n_boot`` resamples with a fixed seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

BINARY_METRICS = ("auroc", "auprc", "accuracy", "f1", "sensitivity", "specificity")


@dataclass(frozen=True)
class MetricRow:
    """One metric: pooled test estimate with its CI, and the mean/sd over folds."""

    name: str
    estimate: float
    ci_low: float
    ci_high: float
    fold_mean: float
    fold_sd: float
    n_folds: int


def task_of(df: pd.DataFrame) -> str:
    """``survival``, ``multiclass`` or ``binary`` from the columns and labels present."""
    if {"risk", "time", "event"} <= set(df.columns):
        return "survival"
    prob_cols = [c for c in df.columns if c.startswith("prob_")]
    if len(prob_cols) > 2 or ("label" in df and df["label"].nunique() > 2):
        return "multiclass"
    return "binary"


def youden_threshold(y: np.ndarray, p: np.ndarray) -> float:
    """Threshold maximising sensitivity + specificity - 1 (0.5 without both classes)."""
    if len(np.unique(y)) < 2:
        return 0.5
    from sklearn.metrics import roc_curve

    fpr, tpr, thr = roc_curve(y, p)
    j = int(np.argmax(tpr - fpr))
    return float(min(thr[j], 1.0))


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
    """Accuracy, macro F1 (argmax) and macro one-vs-rest AUROC. ``probs``: (N, C)."""
    from sklearn.metrics import f1_score, roc_auc_score

    yhat = probs.argmax(1)
    out = {
        "accuracy": float((yhat == y).mean()),
        "macro_f1": float(f1_score(y, yhat, average="macro")),
    }
    try:
        out["macro_auroc"] = float(
            roc_auc_score(
                y, probs, multi_class="ovr", average="macro", labels=range(probs.shape[1])
            )
        )
    except ValueError:
        out["macro_auroc"] = float("nan")
    return out


def concordance_index(time: np.ndarray, event: np.ndarray, risk: np.ndarray) -> float:
    """Harrell's C: among comparable pairs (earlier time had an event), share ordered by risk."""
    t, e, r = (np.asarray(a, dtype=np.float64) for a in (time, event, risk))
    earlier = (t[:, None] < t[None, :]) & (e[:, None] == 1)
    if not earlier.any():
        return float("nan")
    conc = (r[:, None] > r[None, :]) & earlier
    ties = (r[:, None] == r[None, :]) & earlier
    return float((conc.sum() + 0.5 * ties.sum()) / earlier.sum())


def _metric_dict(df: pd.DataFrame, task: str, yhat: pd.Series | None) -> dict[str, float]:
    if task == "survival":
        return {"c_index": concordance_index(df["time"], df["event"], df["risk"])}
    if task == "multiclass":
        cols = sorted((c for c in df.columns if c.startswith("prob_")), key=lambda c: c[5:])
        return multiclass_metrics(df["label"].to_numpy(int), df[cols].to_numpy(float))
    return binary_metrics(
        df["label"].to_numpy(int), df["prob"].to_numpy(float), yhat.loc[df.index].to_numpy(int)
    )


def metric_table(
    df: pd.DataFrame, n_boot: int = 1000, seed: int = 0, thresholds: dict[str, float] | None = None
) -> list[MetricRow]:
    """Pooled test metrics with percentile bootstrap 95% CIs, plus per-fold mean and sd."""
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
    point = _metric_dict(test, task, yhat)
    rng = np.random.default_rng(seed)
    boots: dict[str, list[float]] = {k: [] for k in point}
    idx = test.index.to_numpy()
    for _ in range(n_boot):
        sample = test.loc[rng.choice(idx, size=len(idx), replace=True)]
        for k, v in _metric_dict(sample, task, yhat).items():
            boots[k].append(v)
    per_fold = [_metric_dict(rows, task, yhat) for _, rows in test.groupby("fold")]
    rows = []
    for name, value in point.items():
        b = np.asarray(boots[name], dtype=np.float64)
        b = b[np.isfinite(b)]
        lo, hi = np.percentile(b, [2.5, 97.5]) if len(b) else (np.nan, np.nan)
        f = np.asarray([m[name] for m in per_fold], dtype=np.float64)
        f = f[np.isfinite(f)]
        rows.append(
            MetricRow(
                name, float(value), float(lo), float(hi),
                float(f.mean()) if len(f) else np.nan,
                float(f.std(ddof=1)) if len(f) > 1 else np.nan,
                len(f),
            )
        )  # fmt: skip
    return rows
