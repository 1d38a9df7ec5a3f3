"""One-line text summaries of a run's ``metrics.json`` for terminals (CLI, demo).

Counts (``n``: test slides of a fold) are listed per fold as integers, once; averaging them over
folds gave lines like ``n 14.667``. The decision threshold is a setting chosen on validation data,
not a result, so it is left out of the metric list.
"""

from __future__ import annotations

import math
from typing import Any

COUNT_KEYS = frozenset({"n", "n_pos", "n_neg", "n_events"})
NOT_RESULTS = frozenset({"threshold"})


def fold_counts(metrics: dict[str, Any], split: str = "test", key: str = "n") -> list[int]:
    """Integer ``key`` (slides) of every fold's ``split``, in fold order (missing folds skipped)."""
    out = []
    for fold in metrics.get("folds", []):
        value = (fold.get(split) or {}).get(key)
        if isinstance(value, (int, float)) and math.isfinite(value):
            out.append(int(value))
    return out


def metrics_summary(metrics: dict[str, Any], digits: int = 3) -> str:
    """``auroc 0.912 ± 0.040, auprc 0.88 ± 0.05 (mean ± sd over 3 folds; 44 test slides:
    15, 15, 14)``; empty when there is no test aggregate."""
    agg = metrics.get("test") or {}
    parts = []
    for name, value in sorted(agg.items()):
        if name in COUNT_KEYS or name in NOT_RESULTS or not isinstance(value, dict):
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
    if counts:
        per_fold = ", ".join(str(c) for c in counts)
        where += (
            f"; {sum(counts)} test slides: {per_fold}"
            if len(counts) > 1
            else f"; {counts[0]} test slides"
        )
    return ", ".join(parts) + f" ({where})"
