"""Attention localization (the rank-induction paper's Figure 5): IoU, Dice and pointing game
vs alpha for existing runs (``--runs``) or trained methods.

Patches are ranked by ``experiment.localization_key`` (default ``scores``: raw attention scores,
which order patches like the pooling weights but keep thresholded-away patches apart instead of
tying them at zero); per-fold values come from
:func:`histomil.experiments.attention.localization_rows`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from histomil.evaluation import ALPHAS
from histomil.experiments.attention import LOC_METRICS, localization_rows
from histomil.experiments.common import Context
from histomil.experiments.methods import DISPLAY
from histomil.experiments.plots import Axes, Series, line_figure
from histomil.experiments.sweep import Point
from histomil.experiments.tables import fmt_mean_sd, markdown_table, summary_frame, write_outputs

DEFAULT_METHODS = ["abmil", "attention_induction", "rank_induction"]
NOTE = (
    "\nIoU and Dice: top alpha % of the slide's lesion patches. pointing: the paper's pointing"
    " game, a hit when one of the top alpha % of *all* (known) patches is a lesion. "
    "pointing_lesion: a hit among the lesion-relative top k (this package's earlier "
    "definition).\n"
)


def runs_to_score(ctx: Context) -> dict[str, Path]:
    """The ``--runs`` given, else the default methods trained as sweep points."""
    runs: dict[str, Path] = {n: Path(p) for n, p in ctx.options.runs}
    if not runs:
        methods = ctx.methods(DEFAULT_METHODS)
        runs, _ = ctx.run([Point(m.name, m.overrides, {"method": m.name}) for m in methods])
    return runs


def _metric_table(summ: pd.DataFrame, metric: str, names: list[str], alphas: list[float]) -> str:
    header = ["alpha (%)"] + [DISPLAY.get(n, n) for n in names]
    cells = []
    for a in alphas:
        line = [f"{a:g}"]
        for n in names:
            rec = summ[(summ.method == n) & (summ.alpha == a)]
            line.append(
                "n/a"
                if rec.empty
                else fmt_mean_sd(rec[f"{metric}_mean"].iloc[0], rec[f"{metric}_sd"].iloc[0])
            )
        cells.append(line)
    return f"\n## {metric}, mean (SD) over folds\n\n" + markdown_table(header, cells)


def table(summ: pd.DataFrame, names: list[str], alphas: list[float]) -> str:
    """``table.md``: one table per localization metric, alpha x run."""
    md = "# Attention localization (positive test slides)\n"
    md += "".join(_metric_table(summ, metric, names, alphas) for metric in LOC_METRICS)
    return md + NOTE


def figure(path, summ: pd.DataFrame, names: list[str]) -> None:
    """One panel per localization metric against alpha."""
    panels = []
    for metric in LOC_METRICS:
        series = [
            Series(
                DISPLAY.get(n, n),
                summ[summ.method == n].alpha.tolist(),
                summ[summ.method == n][f"{metric}_mean"].tolist(),
                summ[summ.method == n][f"{metric}_sd"].tolist(),
            )
            for n in names
        ]
        panels.append((series, Axes("alpha (%)", metric, categorical_x=True)))
    line_figure(path, panels)


def run(ctx: Context) -> dict[str, Any]:
    """Score the runs' attention against the annotated lesion patches of positive test slides."""
    alphas = [float(a) for a in ctx.grid(ALPHAS)]
    key = ctx.section.localization_key or "scores"
    runs = runs_to_score(ctx)
    rows = pd.DataFrame(
        [r for name, path in runs.items() for r in localization_rows(name, path, alphas, key)]
    )
    summ = summary_frame(rows, ["method", "alpha"], list(LOC_METRICS))
    names = list(runs)
    md = table(summ, names, alphas)
    figure(ctx.out / "localization.png", summ, names)
    summary = {
        "experiment": "localization",
        "ranking": key,
        "runs": {n: str(p) for n, p in runs.items()},
        "summary": summ.replace({math.nan: None}).to_dict(orient="records"),
    }
    write_outputs(ctx.out, rows, md, summary)
    return summary
