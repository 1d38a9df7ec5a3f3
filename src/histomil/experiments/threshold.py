"""Attention-threshold ablation (the rank-induction paper's Table 3): rank induction with
T in {0, .25, .5, 1, 2, 5}, AUROC, AUPRC and the summed attention on non-lesion patches of
positive test slides (read from the runs' attention files, :mod:`histomil.experiments.attention`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from histomil.evaluation import nonlesion_attention_sum
from histomil.experiments.attention import positive_test_slides
from histomil.experiments.common import Context, tag
from histomil.experiments.methods import DISPLAY, Method
from histomil.experiments.plots import Axes, Series, line_figure
from histomil.experiments.sweep import Point
from histomil.experiments.tables import (
    fmt_mean_sd,
    fmt_p,
    markdown_table,
    mean_sd,
    pvalue,
    summary_frame,
    write_outputs,
)

THRESHOLDS = (0.0, 0.25, 0.5, 1.0, 2.0, 5.0)
SLIDE_COLUMNS = ["point", "fold", "slide_id", "nonlesion_attention"]


def points(methods: list[Method], values: list[float]) -> list[Point]:
    """Every method with ``model.params.attention_threshold`` = T for every T."""
    out = []
    for m in methods:
        for t in values:
            over = m.overrides
            over["model"].setdefault("params", {})["attention_threshold"] = t
            out.append(Point(f"{m.name}__T{tag(t)}", over, {"method": m.name, "T": t}))
    return out


def nonlesion_slides(points: list[Point], runs: dict[str, Path]) -> pd.DataFrame:
    """Per positive test slide of every point and fold: the pooling weight on non-lesion patches."""
    per_slide = [
        {
            "point": point.name,
            "fold": s["fold"],
            "slide_id": s["slide_id"],
            "nonlesion_attention": nonlesion_attention_sum(s["values"], s["labels"]),
        }
        for point in points
        for s in positive_test_slides(runs[point.name], "attention")
    ]
    return pd.DataFrame(per_slide, columns=SLIDE_COLUMNS)


def _pvalues(rows: pd.DataFrame, rec: pd.Series, point: str, ref_t: float) -> dict[str, float]:
    ps = {}
    for k in ("auroc", "auprc"):
        ref = rows.loc[(rows.method == rec.method) & (rows["T"] == ref_t), k]
        ps[k] = math.nan if rec["T"] == ref_t else pvalue(ref, rows.loc[rows.point == point, k])
    return ps


def table(rows, summ, slides, ref_t) -> tuple[str, list[dict], list[dict]]:
    """``table.md``, the non-lesion attention per (method, T) and the p-values against T_ref."""
    header = ["Method", "T", "AUROC, mean (SD)", "AUPRC, mean (SD)"]
    header += [f"P vs T = {ref_t:g} (AUROC)", "P (AUPRC)"]
    header += ["Non-lesion attention sum, positive test slides, mean (SD)", "slides"]
    cells, nl, pvals = [], [], []
    for _, rec in summ.iterrows():
        point = f"{rec.method}__T{tag(rec['T'])}"
        mean, sd, n = mean_sd(slides.loc[slides.point == point, "nonlesion_attention"])
        nl.append({"method": rec.method, "T": rec["T"], "mean": mean, "sd": sd, "n_slides": n})
        ps = _pvalues(rows, rec, point, ref_t)
        pvals.append({"method": rec.method, "T": rec["T"], **{f"p_{k}": v for k, v in ps.items()}})
        is_ref = rec["T"] == ref_t
        cells.append(
            [
                DISPLAY.get(rec.method, rec.method),
                f"{rec['T']:g}",
                fmt_mean_sd(rec.auroc_mean, rec.auroc_sd),
                fmt_mean_sd(rec.auprc_mean, rec.auprc_sd),
                "" if is_ref else fmt_p(ps["auroc"]),
                "" if is_ref else fmt_p(ps["auprc"]),
                fmt_mean_sd(mean, sd),
                str(n),
            ]
        )
    md = "# Attention threshold T\n\n" + markdown_table(header, cells)
    md += "\nAUROC/AUPRC over folds; attention sum over positive test slides of all folds.\n"
    md += f"P: two-sided Mann-Whitney U of the per-fold values against T = {ref_t:g}.\n"
    return md, nl, pvals


def _series(frame: pd.DataFrame, names: list[str], mean: str, sd: str) -> list[Series]:
    return [
        Series(
            DISPLAY.get(n, n),
            frame[frame.method == n]["T"].tolist(),
            frame[frame.method == n][mean].tolist(),
            frame[frame.method == n][sd].tolist(),
        )
        for n in names
    ]


def figure(path, summ: pd.DataFrame, nl: list[dict], names: list[str]) -> None:
    """Three panels against T: AUROC, AUPRC and the non-lesion attention sum."""
    nl_frame = pd.DataFrame(nl)
    panels = [
        (
            _series(summ, names, f"{k}_mean", f"{k}_sd"),
            Axes("threshold T", k.upper(), categorical_x=True),
        )
        for k in ("auroc", "auprc")
    ]
    axes = Axes("threshold T", "non-lesion attention sum", categorical_x=True)
    panels.append((_series(nl_frame, names, "mean", "sd"), axes))
    line_figure(path, panels)


def run(ctx: Context) -> dict[str, Any]:
    """Train every T; p-values against ``experiment.reference_threshold`` (default 0)."""
    methods = ctx.methods(["rank_induction"])
    values = [float(t) for t in ctx.grid(THRESHOLDS)]
    if any(t < 0 for t in values):
        raise ValueError("thresholds T must be >= 0")
    pts = points(methods, values)
    runs, rows = ctx.run(pts)
    slides = nonlesion_slides(pts, runs)
    if not slides.empty:
        fold_mean = slides.groupby(["point", "fold"], as_index=False)["nonlesion_attention"].mean()
        rows = rows.merge(fold_mean, on=["point", "fold"], how="left")
    summ = summary_frame(rows, ["method", "T"], ["auroc", "auprc"])
    ref_t = float(ctx.section.reference_threshold or 0.0)
    md, nl, pvals = table(rows, summ, slides, ref_t)
    figure(ctx.out / "threshold.png", summ, nl, [m.name for m in methods])
    summary = {
        "experiment": "threshold",
        "reference_threshold": ref_t,
        "summary": summ.to_dict(orient="records"),
        "nonlesion_attention": nl,
        "pvalues": pvals,
    }
    slides.to_csv(ctx.out / "nonlesion_attention.csv", index=False)
    write_outputs(ctx.out, rows, md, summary)
    return summary
