"""Model comparison (the rank-induction paper's Table 2): every method under the same splits."""

from __future__ import annotations

from typing import Any

import pandas as pd

from histomil.experiments.common import Context, metric_values
from histomil.experiments.methods import DISPLAY, REFERENCE, Method
from histomil.experiments.plots import Axes, Series, line_figure
from histomil.experiments.sweep import Point
from histomil.experiments.tables import (
    decorate,
    fmt_mean_sd,
    fmt_p,
    markdown_table,
    pvalue,
    rank_marks,
    summary_frame,
    write_outputs,
)

PAPER_METHODS = list(DISPLAY)
METRICS = ["auroc", "auprc"]


def points(methods: list[Method]) -> list[Point]:
    """One point per method (the base config with the method's model and objective)."""
    return [Point(m.name, m.overrides, {"method": m.name}) for m in methods]


def pvalues(rows: pd.DataFrame, ref: str, name: str) -> dict[str, float]:
    """Mann-Whitney U p-value of ``ref`` against ``name`` per metric (NaN for ``ref`` itself
    or when ``ref`` was not run)."""
    if name == ref or not (rows.method == ref).any():
        return {k: float("nan") for k in METRICS}
    return {
        k: pvalue(
            metric_values(rows, rows.method == ref, k), metric_values(rows, rows.method == name, k)
        )
        for k in METRICS
    }


def table(rows: pd.DataFrame, summ: pd.DataFrame, ref: str) -> tuple[str, list[dict[str, Any]]]:
    """``table.md`` (mean (sd), best bold, second underlined, p-values) and its statistics."""
    marks = {k: rank_marks(summ[f"{k}_mean"]) for k in METRICS}
    header = ["Method", "AUROC, mean (SD)", "AUPRC, mean (SD)"]
    header += [f"P vs {DISPLAY.get(ref, ref)} (AUROC)", "P (AUPRC)", "folds"]
    cells, stats = [], []
    for i, rec in summ.iterrows():
        name = rec["method"]
        ps = pvalues(rows, ref, name)
        row = [DISPLAY.get(name, name)]
        row += [
            decorate(fmt_mean_sd(rec[f"{k}_mean"], rec[f"{k}_sd"]), marks[k][i]) for k in METRICS
        ]
        row += ["" if name == ref else fmt_p(ps[k]) for k in METRICS] + [str(int(rec["n"]))]
        cells.append(row)
        stats.append({"method": name, **rec.to_dict(), **{f"p_{k}": ps[k] for k in METRICS}})
    md = "# Model comparison (test split)\n\n" + markdown_table(header, cells)
    md += "\n**bold**: best, <u>underlined</u>: second best; P: two-sided Mann-Whitney U.\n"
    return md, stats


def figure(path, rows: pd.DataFrame, names: list[str]) -> None:
    """Per-method AUROC and AUPRC (means with sd bars over folds), one panel each."""
    panels = []
    for k in METRICS:
        series = []
        for i, name in enumerate(names):
            sel = rows[rows.method == name]
            if len(sel):
                s = summary_frame(sel, ["method"], [k])
                series.append(
                    Series(DISPLAY.get(name, name), [i], [s[f"{k}_mean"][0]], [s[f"{k}_sd"][0]])
                )
        ticks = tuple(DISPLAY.get(n, n) for n in names)
        panels.append((series, Axes("", k.upper(), f"{k.upper()} per method", tick_labels=ticks)))
    line_figure(path, panels)


def run(ctx: Context) -> dict[str, Any]:
    """Train every method; Mann-Whitney U of the reference (rank induction) against each."""
    methods = ctx.methods(PAPER_METHODS)
    ref = ctx.section.reference or REFERENCE
    _, rows = ctx.run(points(methods))
    summ = summary_frame(rows, ["method"], METRICS)
    md, stats = table(rows, summ, ref)
    figure(ctx.out / "compare.png", rows, [m.name for m in methods])
    summary = {"experiment": "compare", "reference": ref, "methods": stats}
    write_outputs(ctx.out, rows, md, summary)
    return summary
