"""Annotation granularity (the rank-induction paper's Figure 3): lesion padding per method.

Granularity uses the trainer's ``data.padding_px`` (lesion patch labels dilated on the coords
grid by ``round(padding / patch_size_level0)`` patches, training slides only). The grid is in
level-0 pixels *at 40x* (0.25 um/px) like the paper; for slides at another resolution it is
scaled by ``0.25 / level0_mpp`` (``experiment.level0_mpp`` or the bag files' ``level0_mpp``).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from histomil.experiments.common import Context, auroc_series, level0_mpp, tag
from histomil.experiments.methods import DISPLAY, REFERENCE, Method
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

PADDINGS = (0, 448, 896, 1344, 1792, 2240)
MPP_40X = 0.25
METRICS = ["auroc", "auprc"]
DEFAULT_METHODS = ["rank_induction", "attention_induction"]


def scale_to_level0(ctx: Context) -> tuple[float, float]:
    """(level-0 mpp of the slides, factor from px at 40x to their level-0 px)."""
    mpp = level0_mpp(ctx.base)
    if mpp is None:
        raise ValueError(
            "cannot scale the 40x paddings: the bag files record no level0_mpp; "
            "set experiment.level0_mpp in the config"
        )
    return mpp, MPP_40X / mpp


def points(methods: list[Method], paddings: list[float], scale: float) -> list[Point]:
    """Every method at every padding (``data.padding_px`` in the slides' level-0 px)."""
    return [
        Point(
            f"{m.name}__pad{tag(p)}",
            {**m.overrides, "data": {"padding_px": p * scale}},
            {"method": m.name, "padding": p, "padding_px_level0": p * scale},
        )
        for m in methods
        for p in paddings
    ]


def table(rows, summ, methods, paddings, ref, scale) -> tuple[str, list[dict], dict]:
    """``table.md`` (AUROC per padding, p-values of the reference against the others), the
    p-value records and the stars per (method, padding) for the figure."""
    others = [m.name for m in methods if m.name != ref]
    header = ["Padding (px at 40x)"] + [DISPLAY.get(m.name, m.name) for m in methods]
    header += [f"P {DISPLAY.get(ref, ref)} vs {DISPLAY.get(o, o)}" for o in others]
    cells, pvals, stars = [], [], {}
    for p in paddings:
        line = [f"{p:g}"]
        for m in methods:
            rec = summ[(summ.method == m.name) & (summ.padding == p)]
            line.append(
                "n/a" if rec.empty else fmt_mean_sd(rec.auroc_mean.iloc[0], rec.auroc_sd.iloc[0])
            )
        for o in others:
            pv = pvalue(
                rows.loc[(rows.method == ref) & (rows.padding == p), "auroc"],
                rows.loc[(rows.method == o) & (rows.padding == p), "auroc"],
            )
            pvals.append({"padding": p, "method": o, "p_auroc": pv})
            stars.setdefault(o, {})[p] = fmt_p(pv).split(" ")[-1]
            line.append(fmt_p(pv))
        cells.append(line)
    md = "# Annotation granularity: test AUROC, mean (SD)\n\n" + markdown_table(header, cells)
    md += f"\nPaddings scaled by 0.25 / level0_mpp = {scale:.3f} for these slides.\n"
    return md, pvals, stars


def figure(path, summ: pd.DataFrame, names: list[str], stars: dict) -> None:
    """AUROC vs padding per method, with the reference's stars."""
    axes = Axes("lesion padding (level-0 px at 40x)", "AUROC (mean, sd bars)", "Granularity")
    line_figure(path, [(auroc_series(summ, "padding", names, stars), axes)])


def run(ctx: Context) -> dict[str, Any]:
    """Lesion padding 0..2240 px (40x) for rank vs attention induction."""
    methods = ctx.methods(DEFAULT_METHODS)
    paddings = [float(p) for p in ctx.grid(PADDINGS)]
    if any(p < 0 for p in paddings):
        raise ValueError("paddings must be >= 0")
    mpp, scale = scale_to_level0(ctx)
    _, rows = ctx.run(points(methods, paddings, scale))
    summ = summary_frame(rows, ["method", "padding"], METRICS)
    ref = ctx.section.reference or REFERENCE
    md, pvals, stars = table(rows, summ, methods, paddings, ref, scale)
    figure(ctx.out / "granularity.png", summ, [m.name for m in methods], stars)
    summary = {
        "experiment": "granularity",
        "level0_mpp": mpp,
        "scale": scale,
        "summary": summ.to_dict(orient="records"),
        "pvalues": pvals,
    }
    write_outputs(ctx.out, rows, md, summary)
    return summary
