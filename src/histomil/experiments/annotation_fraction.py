"""Annotated-slide fraction (the rank-induction paper's Figure 4): the share of annotated
positive training slides for rank induction, against an unannotated (0 %) baseline."""

from __future__ import annotations

from typing import Any

import pandas as pd

from histomil.experiments.common import Context, as_fractions, auroc_series, data_points
from histomil.experiments.methods import DISPLAY, Method
from histomil.experiments.plots import Axes, line_figure
from histomil.experiments.sweep import Point
from histomil.experiments.tables import (
    fmt_mean_sd,
    fmt_p,
    markdown_table,
    pvalue,
    summary_frame,
    write_outputs,
)

ANNOTATED = (0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0)
METRICS = ["auroc", "auprc"]


def points(baseline: Method, methods: list[Method], fractions: list[float]) -> list[Point]:
    """The baseline at 0 % annotated, then every method at every ``data.annotated_fraction``."""
    args = ("annotated_fraction", "annotated", "ann")
    return data_points([baseline], [0.0], *args) + data_points(methods, fractions, *args)


def table(rows: pd.DataFrame, summ: pd.DataFrame, baseline: str) -> tuple[str, list, dict]:
    """``table.md`` (AUROC/AUPRC per method and share, p-values against the baseline), the
    p-value records and the stars per (method, share) for the figure."""
    base_vals = rows.loc[rows.method == baseline, "auroc"]
    header = ["Method", "Annotated positives", "AUROC, mean (SD)", "AUPRC, mean (SD)"]
    header += [f"P vs {DISPLAY.get(baseline, baseline)} (AUROC)"]
    cells, pvals, stars = [], [], {}
    for _, rec in summ.iterrows():
        is_base = rec.method == baseline
        pv = float("nan")
        if not is_base:
            sel = rows.loc[(rows.method == rec.method) & (rows.annotated == rec.annotated)]
            pv = pvalue(sel["auroc"], base_vals)
            pvals.append({"method": rec.method, "annotated": rec.annotated, "p_auroc": pv})
            stars.setdefault(rec.method, {})[rec.annotated] = fmt_p(pv).split(" ")[-1]
        cells.append(
            [
                DISPLAY.get(rec.method, rec.method),
                f"{rec.annotated:.0%}",
                fmt_mean_sd(rec.auroc_mean, rec.auroc_sd),
                fmt_mean_sd(rec.auprc_mean, rec.auprc_sd),
                "" if is_base else fmt_p(pv),
            ]
        )
    md = "# Annotated-slide fraction: test AUROC/AUPRC\n\n" + markdown_table(header, cells)
    md += "\nP: two-sided Mann-Whitney U against the unannotated baseline.\n"
    return md, pvals, stars


def figure(path, summ: pd.DataFrame, names: list[str], stars: dict) -> None:
    """AUROC vs annotated share, baseline first, with stars against it."""
    axes = Axes("annotated share of positive training slides", "AUROC (mean, sd bars)")
    line_figure(path, [(auroc_series(summ, "annotated", names, stars), axes)])


def run(ctx: Context) -> dict[str, Any]:
    """Rank induction at each annotated share and the AB-MIL (``experiment.baseline``) at 0 %."""
    methods = ctx.methods(["rank_induction"])
    baseline_name = ctx.section.baseline or "abmil"
    (baseline,) = ctx.methods_named([baseline_name])
    fractions = as_fractions(ctx.grid(ANNOTATED), "annotated fraction")
    _, rows = ctx.run(points(baseline, methods, fractions))
    summ = summary_frame(rows, ["method", "annotated"], METRICS)
    md, pvals, stars = table(rows, summ, baseline.name)
    names = [baseline.name] + [m.name for m in methods]
    figure(ctx.out / "annotation_fraction.png", summ, names, stars)
    summary = {
        "experiment": "annotation-fraction",
        "baseline": baseline.name,
        "summary": summ.to_dict(orient="records"),
        "pvalues": pvals,
    }
    write_outputs(ctx.out, rows, md, summary)
    return summary
