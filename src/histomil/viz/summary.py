"""One-line text summaries of a run's ``metrics.json`` for terminals (CLI, demo).

Counts (``n``: test slides of a fold) are listed per fold as integers, once; averaging them over
folds gave lines like ``n 14.667``. The decision threshold is a setting chosen on validation data,
not a result, so it is left out of the metric list.
"""

from __future__ import annotations

import math
from typing import Any

NOT_RESULTS = frozenset({"threshold"})


def is_count(name: str) -> bool:
    """``n``, ``n_positive``, ``n_events``, ...: slide counts, never averaged over folds."""
    return name == "n" or name.startswith("n_")


def fold_counts(metrics: dict[str, Any], split: str = "test", key: str = "n") -> list[int]:
    """Integer ``key`` (slides) of every fold's ``split``, in fold order (missing folds skipped)."""
    out = []
    for fold in metrics.get("folds", []):
        value = (fold.get(split) or {}).get(key)
        if isinstance(value, (int, float)) and math.isfinite(value):
            out.append(int(value))
    return out


def metrics_summary(metrics: dict[str, Any], digits: int = 3) -> str:
    """``auroc 0.912 ± 0.040, auprc 0.880 ± 0.050 (mean ± sd over 3 folds; 44 test slides:
    15 (7 positive), 15 (8 positive), 14 (7 positive))``; empty without a test aggregate."""
    agg = metrics.get("test") or {}
    parts = []
    for name, value in sorted(agg.items()):
        if is_count(name) or name in NOT_RESULTS or not isinstance(value, dict):
            continue
        mean, sd = value.get("mean"), value.get("sd")
        if mean is None:
            continue
        parts.append(
            f"{name} {mean:.{digits}f}" + (f" ± {sd:.{digits}f}" if sd is not None else "")
        )
    if not parts:
        return ""
    n_folds = int(metrics.get("n_folds") or len(metrics.get("folds", [])))
    counts = fold_counts(metrics)
    where = f"mean ± sd over {n_folds} fold{'s' if n_folds != 1 else ''}"
    positives = fold_counts(metrics, key="n_positive")
    if counts:
        per_fold = [str(c) for c in counts]
        if len(positives) == len(counts):
            per_fold = [f"{c} ({p} positive)" for c, p in zip(counts, positives, strict=True)]
        if len(counts) > 1:
            where += f"; {sum(counts)} test slides: {', '.join(per_fold)}"
        else:
            where += f"; {counts[0]} test slides"
            where += f" ({positives[0]} positive)" if len(positives) == 1 else ""
    return ", ".join(parts) + f" ({where})"
