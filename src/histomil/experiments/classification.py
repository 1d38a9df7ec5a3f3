"""Model comparison (paper Table 2) and the low-data regime (paper Figure 2)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from histomil.experiments.common import Context, as_fractions, tag
from histomil.experiments.methods import DISPLAY, REFERENCE, select_methods
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
FRACTIONS = (0.2, 0.4, 0.6, 0.8, 1.0)


def _values(rows: pd.DataFrame, mask, metric: str) -> list[float]:
    return rows.loc[mask, metric].astype(float).tolist() if metric in rows else []


def compare(ctx: Context) -> dict[str, Any]:
    """Every method under the same splits: AUROC/AUPRC mean (sd), best bold, second underlined,
    Mann-Whitney U p-values of the reference (rank induction) against each method."""
    methods = select_methods(ctx.experiment, ctx.requested_methods(), PAPER_METHODS)
    ref = ctx.experiment.get("reference", REFERENCE)
    points = [Point(m.name, m.overrides, {"method": m.name}) for m in methods]
    _, rows = ctx.run(points)
    summ = summary_frame(rows, ["method"], METRICS)
    marks = {k: rank_marks(summ[f"{k}_mean"]) for k in METRICS}
    header = ["Method", "AUROC, mean (SD)", "AUPRC, mean (SD)"]
    header += [f"P vs {DISPLAY.get(ref, ref)} (AUROC)", "P (AUPRC)", "folds"]
    table, stats = [], []
    for i, rec in summ.iterrows():
        name = rec["method"]
        cells = [DISPLAY.get(name, name)]
        for k in METRICS:
            cells.append(decorate(fmt_mean_sd(rec[f"{k}_mean"], rec[f"{k}_sd"]), marks[k][i]))
        ps = {}
        for k in METRICS:
            ps[k] = (
                pvalue(_values(rows, rows.method == ref, k), _values(rows, rows.method == name, k))
                if name != ref and (rows.method == ref).any()
                else float("nan")
            )
        cells += ["" if name == ref else fmt_p(ps[k]) for k in METRICS] + [str(int(rec["n"]))]
        table.append(cells)
        stats.append({"method": name, **rec.to_dict(), **{f"p_{k}": ps[k] for k in METRICS}})
    md = "# Model comparison (test split)\n\n" + markdown_table(header, table)
    md += "\n**bold**: best, <u>underlined</u>: second best; P: two-sided Mann-Whitney U.\n"
    _strip(ctx, rows, [m.name for m in methods])
    summary = {"experiment": "compare", "reference": ref, "methods": stats}
    write_outputs(ctx.out, rows, md, summary)
    return summary


def _strip(ctx: Context, rows: pd.DataFrame, names: list[str]) -> None:
    """Per-fold AUROC and AUPRC per method (means with sd bars over folds)."""
    panels = []
    for k in METRICS:
        series = []
        for i, name in enumerate(names):
            sel = rows[rows.method == name]
            s = summary_frame(sel, ["method"], [k]) if len(sel) else None
            if s is not None:
                series.append(
                    Series(DISPLAY.get(name, name), [i], [s[f"{k}_mean"][0]], [s[f"{k}_sd"][0]])
                )
        ticks = tuple(DISPLAY.get(n, n) for n in names)
        panels.append((series, Axes("", k.upper(), f"{k.upper()} per method", tick_labels=ticks)))
    line_figure(ctx.out / "compare.png", panels)


def low_data(ctx: Context) -> dict[str, Any]:
    """Training fractions x methods; AUROC vs fraction with sd bars and stars of the
    reference against every other method at each fraction."""
    methods = select_methods(ctx.experiment, ctx.requested_methods(), PAPER_METHODS)
    ref = ctx.experiment.get("reference", REFERENCE)
    fractions = as_fractions(ctx.grid(FRACTIONS), "training fraction")
    if any(f <= 0 for f in fractions):
        raise ValueError("training fractions must be > 0")
    points = [
        Point(
            f"{m.name}__frac{tag(f)}",
            {**m.overrides, "data": {"train_fraction": f}},
            {"method": m.name, "fraction": f},
        )
        for m in methods
        for f in fractions
    ]
    _, rows = ctx.run(points)
    summ = summary_frame(rows, ["method", "fraction"], METRICS)
    header = ["Training fraction"] + [DISPLAY.get(m.name, m.name) for m in methods]
    table, pvals, series = [], [], []
    for f in fractions:
        at = summ[summ.fraction == f].reset_index(drop=True)
        marks = dict(zip(at.method, rank_marks(at["auroc_mean"]), strict=True))
        cells = [f"{f:.0%}"]
        for m in methods:
            rec = at[at.method == m.name]
            if rec.empty:
                cells.append("n/a")
                continue
            text = fmt_mean_sd(rec["auroc_mean"].iloc[0], rec["auroc_sd"].iloc[0])
            p = float("nan")
            if m.name != ref:
                p = pvalue(
                    _values(rows, (rows.method == ref) & (rows.fraction == f), "auroc"),
                    _values(rows, (rows.method == m.name) & (rows.fraction == f), "auroc"),
                )
                pvals.append({"fraction": f, "method": m.name, "p_auroc": p})
            cells.append(
                decorate(text, marks[m.name]) + ("" if m.name == ref else f" [{fmt_p(p)}]")
            )
        table.append(cells)
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
    line_figure(ctx.out / "low_data.png", [(series, axes)], note)
    md = "# Low-data regime: test AUROC, mean (SD) over folds\n\n" + markdown_table(header, table)
    md += f"\n[P, stars]: Mann-Whitney U of {DISPLAY.get(ref, ref)} against the method.\n"
    summary = {
        "experiment": "low-data",
        "reference": ref,
        "summary": summ.to_dict(orient="records"),
        "pvalues": pvals,
    }
    write_outputs(ctx.out, rows, md, summary)
    return summary
