"""Attention-threshold ablation (paper Table 3) and attention localization (paper Figure 5).

Both read the runs' attention files ``RUN/attention/<fold>/<slide>.h5`` (``attention``: the
pooling weights actually used, after thresholding; ``scores``: raw scores; ``patch_labels``),
so the runs must export attention for the test split (``output.attention_splits``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from histomil.evaluation import (
    ALPHAS,
    localization_metrics,
    mean_localization,
    mean_sd,
    nonlesion_attention_sum,
)
from histomil.experiments.common import Context, tag
from histomil.experiments.methods import DISPLAY, select_methods
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

THRESHOLDS = (0.0, 0.25, 0.5, 1.0, 2.0, 5.0)
LOC_METRICS = ("iou", "dice", "pointing", "pointing_lesion")


def positive_test_slides(run_dir: Path, key: str = "attention") -> Iterator[dict[str, Any]]:
    """Annotated positive test slides of every fold: ``fold``, ``slide_id``, values, labels."""
    from histomil.viz.attention import read_attention_h5, run_attention_files

    for fold, path in run_attention_files(run_dir):
        arrays, attrs = read_attention_h5(path)
        if attrs.get("split") != "test" or int(attrs.get("label", 0)) == 0:
            continue
        if "patch_labels" not in arrays:
            continue
        name = key if key in arrays else ("attention" if "attention" in arrays else "scores")
        labels = arrays["patch_labels"]
        if not (labels == 1).any():
            continue
        yield {
            "fold": int(fold),
            "slide_id": str(attrs.get("slide_id", path.stem)),
            "values": np.asarray(arrays[name], dtype=float),
            "labels": labels,
        }


def threshold(ctx: Context) -> dict[str, Any]:
    """Rank induction with T in {0, .25, .5, 1, 2, 5}: AUROC, AUPRC and the summed attention
    on non-lesion patches of positive test slides (mean (sd) over slides of every fold)."""
    default = ["rank_induction"]
    methods = select_methods(ctx.experiment, ctx.requested_methods(), default)
    values = [float(t) for t in ctx.grid(THRESHOLDS)]
    if any(t < 0 for t in values):
        raise ValueError("thresholds T must be >= 0")
    points = []
    for m in methods:
        for t in values:
            over = m.overrides
            over["model"].setdefault("params", {})["attention_threshold"] = t
            points.append(Point(f"{m.name}__T{tag(t)}", over, {"method": m.name, "T": t}))
    runs, rows = ctx.run(points)
    per_slide = []
    for point in points:
        for s in positive_test_slides(runs[point.name], "attention"):
            per_slide.append(
                {
                    "point": point.name,
                    "fold": s["fold"],
                    "slide_id": s["slide_id"],
                    "nonlesion_attention": nonlesion_attention_sum(s["values"], s["labels"]),
                }
            )
    slides = pd.DataFrame(per_slide, columns=["point", "fold", "slide_id", "nonlesion_attention"])
    if not slides.empty:
        fold_mean = slides.groupby(["point", "fold"], as_index=False)["nonlesion_attention"].mean()
        rows = rows.merge(fold_mean, on=["point", "fold"], how="left")
    summ = summary_frame(rows, ["method", "T"], ["auroc", "auprc"])
    ref_t = float(ctx.experiment.get("reference_threshold", 0.0))
    header = ["Method", "T", "AUROC, mean (SD)", "AUPRC, mean (SD)"]
    header += [f"P vs T = {ref_t:g} (AUROC)", "P (AUPRC)"]
    header += ["Non-lesion attention sum, positive test slides, mean (SD)", "slides"]
    table, nl, pvals = [], [], []
    for _, rec in summ.iterrows():
        point = f"{rec.method}__T{tag(rec['T'])}"
        mean, sd, n = mean_sd(slides.loc[slides.point == point, "nonlesion_attention"])
        nl.append({"method": rec.method, "T": rec["T"], "mean": mean, "sd": sd, "n_slides": n})
        ps = {}
        for k in ("auroc", "auprc"):
            ref = rows.loc[(rows.method == rec.method) & (rows["T"] == ref_t), k]
            ps[k] = math.nan if rec["T"] == ref_t else pvalue(ref, rows.loc[rows.point == point, k])
        pvals.append({"method": rec.method, "T": rec["T"], **{f"p_{k}": v for k, v in ps.items()}})
        table.append(
            [
                DISPLAY.get(rec.method, rec.method),
                f"{rec['T']:g}",
                fmt_mean_sd(rec.auroc_mean, rec.auroc_sd),
                fmt_mean_sd(rec.auprc_mean, rec.auprc_sd),
                "" if rec["T"] == ref_t else fmt_p(ps["auroc"]),
                "" if rec["T"] == ref_t else fmt_p(ps["auprc"]),
                fmt_mean_sd(mean, sd),
                str(n),
            ]
        )
    nl_frame = pd.DataFrame(nl)
    panels = []
    for metric in ("auroc", "auprc"):
        series = [
            Series(
                DISPLAY.get(m.name, m.name),
                summ[summ.method == m.name]["T"].tolist(),
                summ[summ.method == m.name][f"{metric}_mean"].tolist(),
                summ[summ.method == m.name][f"{metric}_sd"].tolist(),
            )
            for m in methods
        ]
        panels.append((series, Axes("threshold T", metric.upper(), categorical_x=True)))
    panels.append(
        (
            [
                Series(
                    DISPLAY.get(m.name, m.name),
                    nl_frame[nl_frame.method == m.name]["T"].tolist(),
                    nl_frame[nl_frame.method == m.name]["mean"].tolist(),
                    nl_frame[nl_frame.method == m.name]["sd"].tolist(),
                )
                for m in methods
            ],
            Axes("threshold T", "non-lesion attention sum", categorical_x=True),
        )
    )
    line_figure(ctx.out / "threshold.png", panels)
    md = "# Attention threshold T\n\n" + markdown_table(header, table)
    md += "\nAUROC/AUPRC over folds; attention sum over positive test slides of all folds.\n"
    md += f"P: two-sided Mann-Whitney U of the per-fold values against T = {ref_t:g}.\n"
    summary = {
        "experiment": "threshold",
        "reference_threshold": ref_t,
        "summary": summ.to_dict(orient="records"),
        "nonlesion_attention": nl,
        "pvalues": pvals,
    }
    ctx.out.mkdir(parents=True, exist_ok=True)
    slides.to_csv(ctx.out / "nonlesion_attention.csv", index=False)
    write_outputs(ctx.out, rows, md, summary)
    return summary


def localization_rows(name: str, run_dir: Path, alphas, key: str) -> list[dict[str, Any]]:
    """Per fold and alpha: IoU, Dice and pointing game averaged over positive test slides."""
    by_fold: dict[int, list] = {}
    for s in positive_test_slides(run_dir, key):
        by_fold.setdefault(s["fold"], []).append(
            localization_metrics(s["values"], s["labels"], alphas)
        )
    rows = []
    for fold, per_slide in sorted(by_fold.items()):
        mean = mean_localization(per_slide)
        for alpha in alphas:
            rows.append(
                {"point": name, "method": name, "fold": fold, "alpha": float(alpha)}
                | {m: mean[alpha][m] for m in LOC_METRICS}
                | {"n_slides": mean["n_slides"]}
            )
    if not rows:
        raise ValueError(f"{run_dir}: no annotated positive test slide in the attention files")
    return rows


def localization(ctx: Context) -> dict[str, Any]:
    """IoU, Dice and pointing game vs alpha for existing runs (``--runs``) or trained methods.

    Patches are ranked by ``experiment.localization_key`` (default ``scores``: raw attention
    scores, which order patches like the pooling weights but keep thresholded-away patches
    apart instead of tying them at zero)."""
    alphas = [float(a) for a in ctx.grid(ALPHAS, key="alphas")]
    key = ctx.experiment.get("localization_key", "scores")
    runs: dict[str, Path] = {n: Path(p) for n, p in ctx.options.runs}
    if not runs:
        default = ["abmil", "attention_induction", "rank_induction"]
        methods = select_methods(ctx.experiment, ctx.requested_methods(), default)
        points = [Point(m.name, m.overrides, {"method": m.name}) for m in methods]
        runs, _ = ctx.run(points)
    rows = pd.DataFrame(
        [r for name, path in runs.items() for r in localization_rows(name, path, alphas, key)]
    )
    summ = summary_frame(rows, ["method", "alpha"], list(LOC_METRICS))
    names = list(runs)
    md = "# Attention localization (positive test slides)\n"
    panels = []
    for metric in LOC_METRICS:
        header = ["alpha (%)"] + [DISPLAY.get(n, n) for n in names]
        table = []
        for a in alphas:
            cells = [f"{a:g}"]
            for n in names:
                rec = summ[(summ.method == n) & (summ.alpha == a)]
                cells.append(
                    "n/a"
                    if rec.empty
                    else fmt_mean_sd(rec[f"{metric}_mean"].iloc[0], rec[f"{metric}_sd"].iloc[0])
                )
            table.append(cells)
        md += f"\n## {metric}, mean (SD) over folds\n\n" + markdown_table(header, table)
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
    md += (
        "\nIoU and Dice: top alpha % of the slide's lesion patches. pointing: the paper's pointing"
        " game, a hit when one of the top alpha % of *all* (known) patches is a lesion. "
        "pointing_lesion: a hit among the lesion-relative top k (this package's earlier "
        "definition).\n"
    )
    line_figure(ctx.out / "localization.png", panels)
    summary = {
        "experiment": "localization",
        "ranking": key,
        "runs": {n: str(p) for n, p in runs.items()},
        "summary": summ.replace({math.nan: None}).to_dict(orient="records"),
    }
    write_outputs(ctx.out, rows, md, summary)
    return summary
