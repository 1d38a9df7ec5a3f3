"""Metrics with bootstrap confidence intervals, recomputed from a run's ``predictions.csv``.

Binary decisions use, per fold, the threshold the trainer chose on validation data
(``folds/<k>/result.json``), else Youden's J on that fold's validation rows (0.5 without any), or
the ``pred`` column when present; the test rows never choose a threshold. Intervals are
percentile bootstraps over test slides pooled across folds (``n_boot`` resamples, fixed seed,
:func:`histomil.evaluation.bootstrap_cis`: each resample is scored once for every metric). The
metrics are :mod:`histomil.evaluation.metrics`' (scikit-learn).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd


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


def _task_arrays(df: pd.DataFrame, task: str, yhat: pd.Series | None) -> tuple[np.ndarray, ...]:
    """Row-aligned arrays the metric functions take; the first one stratifies the bootstrap."""
    if task == "survival":
        return (df["event"].to_numpy(int), df["time"].to_numpy(float), df["risk"].to_numpy(float))
    if task == "multiclass":
        from histomil.evaluation.metrics import prob_columns

        cols = prob_columns(df.columns)
        return (df["label"].to_numpy(int), df[cols].to_numpy(float))
    return (
        df["label"].to_numpy(int),
        df["prob"].to_numpy(float),
        yhat.loc[df.index].to_numpy(int),
    )


def _metrics_fn(task: str) -> Callable[..., dict[str, float]]:
    """Every metric of ``task`` by name, from the arrays of :func:`_task_arrays`."""
    from histomil.evaluation import concordance_index, multiclass_metrics
    from histomil.evaluation.metrics import binary_metrics

    if task == "survival":
        return lambda event, time, risk: {"c_index": concordance_index(time, risk, event)}
    if task == "multiclass":
        names = ("auroc", "auprc", "accuracy", "f1")
        return lambda y, probs: {n: multiclass_metrics(y, probs)[n] for n in names}
    return binary_metrics


def metric_table(
    df: pd.DataFrame, n_boot: int = 1000, seed: int = 0, thresholds: dict[str, float] | None = None
) -> list[MetricRow]:
    """Pooled test metrics with 95% CIs from :func:`histomil.evaluation.bootstrap_ci` (resamples
    stratified by label, or by event status for survival), plus per-fold mean and sd."""
    import warnings

    from histomil.evaluation import MetricWarning, bootstrap_cis, mean_sd

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
    metrics_fn = _metrics_fn(task)
    groups = list(test.groupby("fold"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MetricWarning)  # undefined metrics are NaN, shown as "-"
        cis = bootstrap_cis(metrics_fn, *_task_arrays(test, task, yhat), n=n_boot, seed=seed)
        per_fold = [metrics_fn(*_task_arrays(rows, task, yhat)) for _, rows in groups]
    rows = []
    for name, ci in cis.items():
        every = [float(f[name]) for f in per_fold]
        mean, sd, n = mean_sd(every)
        rows.append(
            MetricRow(
                name, ci.estimate, ci.low, ci.high, mean, sd, n,
                {str(k): v for (k, _), v in zip(groups, every, strict=True)},
            )
        )  # fmt: skip
    return rows
