"""The low-data regime (the rank-induction paper's Figure 2): training fraction x method."""

from __future__ import annotations

from typing import Any

import pandas as pd

from histomil.experiments.common import Context, as_fractions, data_points, metric_values
from histomil.experiments.compare import METRICS, PAPER_METHODS
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

FRACTIONS = (0.2, 0.4, 0.6, 0.8, 1.0)


def grid(ctx: Context) -> list[float]:
    """Training fractions (shares or percentages), all > 0."""
    fractions = as_fractions(ctx.grid(FRACTIONS), "training fraction")
    if any(f <= 0 for f in fractions):
        raise ValueError("training fractions must be > 0")
    return fractions


def points(methods: list[Method], fractions: list[float]) -> list[Point]:
    """Every method at every ``data.train_fraction``."""
    return data_points(methods, fractions, "train_fraction", "fraction", "frac")


def _cell(rows: pd.DataFrame, at: pd.DataFrame, marks: dict, m: Method, f: float, ref: str):
    """(table cell, p-value record or None) of method ``m`` at fraction ``f``."""
    rec = at[at.method == m.name]
    if rec.empty:
        return "n/a", None
    text = decorate(fmt_mean_sd(rec["auroc_mean"].iloc[0], rec["auroc_sd"].iloc[0]), marks[m.name])
    if m.name == ref:
        return text, None
    p = pvalue(
        metric_values(rows, (rows.method == ref) & (rows.fraction == f), "auroc"),
        metric_values(rows, (rows.method == m.name) & (rows.fraction == f), "auroc"),
    )
    return text + f" [{fmt_p(p)}]", {"fraction": f, "method": m.name, "p_auroc": p}


def table(rows, summ, methods, fractions, ref) -> tuple[str, list[dict[str, Any]]]:
    """``table.md``: AUROC mean (SD) per fraction and method with the reference's p-values."""
    header = ["Training fraction"] + [DISPLAY.get(m.name, m.name) for m in methods]
    cells, pvals = [], []
    for f in fractions:
        at = summ[summ.fraction == f].reset_index(drop=True)
        marks = dict(zip(at.method, rank_marks(at["auroc_mean"]), strict=True))
        line = [f"{f:.0%}"]
        for m in methods:
            text, p = _cell(rows, at, marks, m, f, ref)
            line.append(text)
            if p is not None:
                pvals.append(p)
        cells.append(line)
    md = "# Low-data regime: test AUROC, mean (SD) over folds\n\n" + markdown_table(header, cells)
    md += f"\n[P, stars]: Mann-Whitney U of {DISPLAY.get(ref, ref)} against the method.\n"
    return md, pvals


def figure(path, summ: pd.DataFrame, methods: list[Method], pvals: list[dict], ref: str) -> None:
    """AUROC vs fraction per method with sd bars and the reference's stars over each point."""
    series = []
    for m in methods:
        sel = summ[summ.method == m.name].sort_values("fraction")
        stars = {
            float(r["fraction"]): fmt_p(r["p_auroc"]).split(" ")[-1]
            for r in pvals
            if r["method"] == m.name
        }
        series.append(
            Series(
                DISPLAY.get(m.name, m.name),
                sel.fraction.tolist(),
                sel.auroc_mean.tolist(),
                sel.auroc_sd.tolist(),
                stars,
            )
        )
    axes = Axes("training fraction", "AUROC (mean, sd bars)", "Low-data regime")
    note = f"stars: Mann-Whitney U of {DISPLAY.get(ref, ref)} vs the method (* P<.05, ** <.001)"
    line_figure(path, [(series, axes)], note)


def run(ctx: Context) -> dict[str, Any]:
    """Train the methods on shares of each fold's training slides."""
    methods = ctx.methods(PAPER_METHODS)
    ref = ctx.section.reference or REFERENCE
    fractions = grid(ctx)
    _, rows = ctx.run(points(methods, fractions))
    summ = summary_frame(rows, ["method", "fraction"], METRICS)
    md, pvals = table(rows, summ, methods, fractions, ref)
    figure(ctx.out / "low_data.png", summ, methods, pvals, ref)
    summary = {
        "experiment": "low-data",
        "reference": ref,
        "summary": summ.to_dict(orient="records"),
        "pvalues": pvals,
    }
    write_outputs(ctx.out, rows, md, summary)
    return summary
