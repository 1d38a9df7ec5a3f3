"""Annotation granularity (paper Figure 3) and annotated-slide fraction (paper Figure 4).

Granularity uses the trainer's ``data.padding_px`` (lesion patch labels dilated on the coords
grid by ``round(padding / patch_size_level0)`` patches, training slides only). The grid is in
level-0 pixels *at 40x* (0.25 um/px) like the paper; for slides at another resolution it is
scaled by ``0.25 / level0_mpp`` (``experiment.level0_mpp`` or the bag files' ``level0_mpp``).
"""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from histomil.experiments.common import Context, as_fractions, level0_mpp, tag
from histomil.experiments.methods import DISPLAY, REFERENCE, select_methods
from histomil.experiments.plots import Axes, Series, line_figure
from histomil.experiments.sweep import Point
from histomil.experiments.tables import (
    fmt_mean_sd,
    fmt_p,
    markdown_table,
    pvalue,
    summary_frame,
    write_outputs,
)

log = logging.getLogger(__name__)

PADDINGS = (0, 448, 896, 1344, 1792, 2240)
MPP_40X = 0.25
ANNOTATED = (0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0)
METRICS = ["auroc", "auprc"]


def _series(summ: pd.DataFrame, key: str, names: list[str], stars=None) -> list[Series]:
    out = []
    for name in names:
        sel = summ[summ.method == name].sort_values(key)
        out.append(
            Series(
                DISPLAY.get(name, name),
                sel[key].tolist(),
                sel.auroc_mean.tolist(),
                sel.auroc_sd.tolist(),
                (stars or {}).get(name, {}),
            )
        )
    return out


def granularity(ctx: Context) -> dict[str, Any]:
    """Lesion padding 0..2240 px (40x) for rank vs attention induction."""
    default = ["rank_induction", "attention_induction"]
    methods = select_methods(ctx.experiment, ctx.requested_methods(), default)
    paddings = [float(p) for p in ctx.grid(PADDINGS)]
    if any(p < 0 for p in paddings):
        raise ValueError("paddings must be >= 0")
    mpp = level0_mpp(ctx.base)
    if mpp is None:
        raise ValueError(
            "cannot scale the 40x paddings: the bag files record no level0_mpp; "
            "set experiment.level0_mpp in the config"
        )
    scale = MPP_40X / mpp
    points = [
        Point(
            f"{m.name}__pad{tag(p)}",
            {**m.overrides, "data": {"padding_px": p * scale}},
            {"method": m.name, "padding": p, "padding_px_level0": p * scale},
        )
        for m in methods
        for p in paddings
    ]
    _, rows = ctx.run(points)
    summ = summary_frame(rows, ["method", "padding"], METRICS)
    ref = ctx.experiment.get("reference", REFERENCE)
    others = [m.name for m in methods if m.name != ref]
    header = ["Padding (px at 40x)"] + [DISPLAY.get(m.name, m.name) for m in methods]
    header += [f"P {DISPLAY.get(ref, ref)} vs {DISPLAY.get(o, o)}" for o in others]
    table, pvals, stars = [], [], {}
    for p in paddings:
        cells = [f"{p:g}"]
        for m in methods:
            rec = summ[(summ.method == m.name) & (summ.padding == p)]
            cells.append(
                "n/a" if rec.empty else fmt_mean_sd(rec.auroc_mean.iloc[0], rec.auroc_sd.iloc[0])
            )
        for o in others:
            pv = pvalue(
                rows.loc[(rows.method == ref) & (rows.padding == p), "auroc"],
                rows.loc[(rows.method == o) & (rows.padding == p), "auroc"],
            )
            pvals.append({"padding": p, "method": o, "p_auroc": pv})
            stars.setdefault(o, {})[p] = fmt_p(pv).split(" ")[-1]
            cells.append(fmt_p(pv))
        table.append(cells)
    names = [m.name for m in methods]
    axes = Axes("lesion padding (level-0 px at 40x)", "AUROC (mean, sd bars)", "Granularity")
    line_figure(ctx.out / "granularity.png", [(_series(summ, "padding", names, stars), axes)])
    md = "# Annotation granularity: test AUROC, mean (SD)\n\n" + markdown_table(header, table)
    md += f"\nPaddings scaled by 0.25 / level0_mpp = {scale:.3f} for these slides.\n"
    summary = {
        "experiment": "granularity",
        "level0_mpp": mpp,
        "scale": scale,
        "summary": summ.to_dict(orient="records"),
        "pvalues": pvals,
    }
    write_outputs(ctx.out, rows, md, summary)
    return summary


def annotation_fraction(ctx: Context) -> dict[str, Any]:
    """Share of annotated positive training slides for rank induction, with the AB-MIL
    (0 % annotated) baseline; P-values against the baseline."""
    default = ["rank_induction"]
    methods = select_methods(ctx.experiment, ctx.requested_methods(), default)
    baseline_name = ctx.experiment.get("baseline", "abmil")
    (baseline,) = select_methods(ctx.experiment, [baseline_name], [baseline_name])
    fractions = as_fractions(ctx.grid(ANNOTATED), "annotated fraction")
    points = [
        Point(
            f"{baseline.name}__ann0",
            {**baseline.overrides, "data": {"annotated_fraction": 0.0}},
            {"method": baseline.name, "annotated": 0.0},
        )
    ]
    points += [
        Point(
            f"{m.name}__ann{tag(f)}",
            {**m.overrides, "data": {"annotated_fraction": f}},
            {"method": m.name, "annotated": f},
        )
        for m in methods
        for f in fractions
    ]
    _, rows = ctx.run(points)
    summ = summary_frame(rows, ["method", "annotated"], METRICS)
    base_vals = rows.loc[rows.method == baseline.name, "auroc"]
    header = ["Method", "Annotated positives", "AUROC, mean (SD)", "AUPRC, mean (SD)"]
    header += [f"P vs {DISPLAY.get(baseline.name, baseline.name)} (AUROC)"]
    table, pvals, stars = [], [], {}
    for _, rec in summ.iterrows():
        is_base = rec.method == baseline.name
        pv = float("nan")
        if not is_base:
            sel = rows.loc[(rows.method == rec.method) & (rows.annotated == rec.annotated)]
            pv = pvalue(sel["auroc"], base_vals)
            pvals.append({"method": rec.method, "annotated": rec.annotated, "p_auroc": pv})
            stars.setdefault(rec.method, {})[rec.annotated] = fmt_p(pv).split(" ")[-1]
        table.append(
            [
                DISPLAY.get(rec.method, rec.method),
                f"{rec.annotated:.0%}",
                fmt_mean_sd(rec.auroc_mean, rec.auroc_sd),
                fmt_mean_sd(rec.auprc_mean, rec.auprc_sd),
                "" if is_base else fmt_p(pv),
            ]
        )
    names = [baseline.name] + [m.name for m in methods]
    axes = Axes("annotated share of positive training slides", "AUROC (mean, sd bars)")
    line_figure(
        ctx.out / "annotation_fraction.png", [(_series(summ, "annotated", names, stars), axes)]
    )
    md = "# Annotated-slide fraction: test AUROC/AUPRC\n\n" + markdown_table(header, table)
    md += "\nP: two-sided Mann-Whitney U against the unannotated baseline.\n"
    summary = {
        "experiment": "annotation-fraction",
        "baseline": baseline.name,
        "summary": summ.to_dict(orient="records"),
        "pvalues": pvals,
    }
    write_outputs(ctx.out, rows, md, summary)
    return summary
