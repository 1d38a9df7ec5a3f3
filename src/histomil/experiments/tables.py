"""Tables of sweep results: mean (sd) over folds, best/second-best marks, Mann-Whitney p-values.

Statistics come from :mod:`histomil.evaluation` (``mean_sd``: sd with ddof=1;
``mann_whitney``: two-sided scipy test; ``significance_stars``: the paper's levels).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from histomil._io import atomic_write_json, atomic_write_text
from histomil.evaluation import fmt_mean_sd as _fmt_mean_sd
from histomil.evaluation import mann_whitney, mean_sd, significance_stars


def fmt_mean_sd(mean: float, sd: float, digits: int = 3) -> str:
    """``"0.839 (0.050)"`` like the paper's tables: :func:`histomil.evaluation.fmt_mean_sd`
    in its ``paren`` style (``"n/a"`` when undefined)."""
    return _fmt_mean_sd(mean, sd, digits, paren=True)


def rank_marks(means: Sequence[float], higher_is_better: bool = True) -> list[str]:
    """``"best"``, ``"second"`` or ``""`` per value (ties share the mark; NaN never marked)."""
    m = np.asarray(means, dtype=float)
    finite = sorted({float(x) for x in m[np.isfinite(m)]}, reverse=higher_is_better)
    best = finite[0] if finite else None
    second = finite[1] if len(finite) > 1 else None
    return [
        "best" if best is not None and x == best else "second" if x == second else ""
        for x in m.tolist()
    ]


def decorate(text: str, mark: str) -> str:
    """Markdown: best bold, second best underlined."""
    if mark == "best":
        return f"**{text}**"
    if mark == "second":
        return f"<u>{text}</u>"
    return text


def summary_frame(rows: pd.DataFrame, by: list[str], metrics: list[str]) -> pd.DataFrame:
    """One row per group of ``by``: ``<metric>_mean``, ``<metric>_sd``, ``n`` (in order seen)."""
    out = []
    for key, group in rows.groupby(by, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        rec: dict[str, Any] = dict(zip(by, key, strict=True))
        for metric in metrics:
            mean, sd, n = mean_sd(group[metric]) if metric in group else (math.nan, math.nan, 0)
            rec[f"{metric}_mean"], rec[f"{metric}_sd"] = mean, sd
            rec["n"] = n
        out.append(rec)
    return pd.DataFrame(out)


def pvalue(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided Mann-Whitney U p-value of two sets of per-fold values (NaN when undefined)."""
    try:
        return mann_whitney(a, b).pvalue
    except ValueError:
        return math.nan


def fmt_p(p: float) -> str:
    """p-value with its stars, e.g. ``"0.012 *"``."""
    if not np.isfinite(p):
        return "n/a"
    return f"{p:.3g} {significance_stars(p)}"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub-flavoured markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_outputs(
    out_dir: str | os.PathLike, rows: pd.DataFrame, table_md: str, summary: dict[str, Any]
) -> None:
    """``results.csv`` (raw per-fold rows), ``table.md`` and ``summary.json``, atomically."""
    out = Path(out_dir)
    atomic_write_text(out / "results.csv", rows.to_csv(index=False))
    atomic_write_text(out / "table.md", table_md)
    atomic_write_json(out / "summary.json", _finite(summary))


def _finite(obj: Any) -> Any:
    """NaN/inf -> None so that summary.json is strict JSON."""
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    if isinstance(obj, float | np.floating) and not np.isfinite(obj):
        return None
    if isinstance(obj, np.generic):
        return obj.item()
    return obj
