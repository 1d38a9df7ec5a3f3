"""MHIM-v2 ablations in the shape of the MHIM paper's Tables 7-10, via ``mhim_v2`` params.

Every variant of a student model uses the same trained baseline (the ``baseline`` point, an
ordinary ``bag`` run of the student) as its teacher initialisation (``objective.baseline`` =
that run folder), so the baseline is trained once and is also the table's first row.

Variants (``--grid`` selects by name):

- Table 7 (modules): ``baseline``, ``rhsm`` (randomly-high-score masking only: no large-scale
  masking, no recycle network, alpha 0), ``rhsm_grn`` (+ random large-scale masking and the
  global recycle network), ``rhsm_cl`` (+ consistency loss), ``full`` (all, paper defaults).
- Table 8 (easy-instance assessment): ``attention_scoring`` (v1 attention scores) vs ``full``
  (class-aware instance probability).
- Table 9 (mining): ``rhsm_cl``, ``rhsm_cl_rsm`` (+ random large-scale masking, no GRN),
  ``rhsm_cl_lsm_grn`` (low-score masking + GRN), ``full`` (random + GRN).
- Table 10 (teacher): ``teacher_frozen`` (initialised, momentum 1: never updated),
  ``teacher_copy`` (momentum 0: copies the student after every step), ``teacher_cosine``
  (momentum cosine-scheduled to 1), ``no_student_init`` (student projection not initialised from
  the baseline), ``full`` (initialised + EMA momentum 0.9999). A teacher that is *not*
  initialised from the baseline is not expressible: the strategy always builds it from the
  baseline checkpoint.
- Control (not in the paper): ``warm_start``, the student initialised from the whole baseline
  and trained on full bags with ``beta_h = beta_l = alpha = 0`` (no mining, no recycle network,
  no consistency loss). It separates the gain of mining from the gain of training a
  warm-started model for more epochs.

When the shared ``mhim_params`` set ``rank.weight > 0`` (rank induction inside MHIM), the
baseline row is a ``rank_induction`` run with the same rank settings, so the teacher comes from
the rank-induction baseline (see :meth:`histomil.objectives.mhim.strategy.MHIM.baseline_objective`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from histomil.experiments.common import Context
from histomil.experiments.methods import DISPLAY, Method
from histomil.experiments.plots import Axes, Series, line_figure
from histomil.experiments.sweep import Point, deep_merge
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

_NO_LARGE = {"large_scale": "none"}
_OFF = {"enabled": False}
_NO_CL = {"alpha": 0.0}

VARIANTS: dict[str, dict[str, Any]] = {
    "rhsm": {"masking": _NO_LARGE, "recycle": _OFF, "consistency": _NO_CL},
    "rhsm_grn": {"masking": {"large_scale": "random"}, "consistency": _NO_CL},
    "rhsm_cl": {"masking": _NO_LARGE, "recycle": _OFF},
    "full": {},
    "attention_scoring": {"masking": {"scoring": "attention"}},
    "rhsm_cl_rsm": {"masking": {"large_scale": "random"}, "recycle": _OFF},
    "rhsm_cl_lsm_grn": {"masking": {"large_scale": "low"}},
    # fixed momenta: a shared `momentum_half_life_epochs` (mhim_params) must not replace them
    "teacher_frozen": {"teacher": {"momentum": 1.0, "momentum_half_life_epochs": None}},
    "teacher_copy": {"teacher": {"momentum": 0.0, "momentum_half_life_epochs": None}},
    "teacher_cosine": {"teacher": {"schedule": "cosine"}},
    "no_student_init": {"teacher": {"init_student": "none"}},
    # control: the student starts as the teacher (whole baseline) and trains on full bags with
    # no mining and no consistency loss, so a gain of `full` over it is the gain of mining, not
    # of re-training a warm-started model
    "warm_start": {
        "masking": {"beta_h": 0.0, "beta_l": 0.0},
        "recycle": _OFF,
        "consistency": _NO_CL,
        "teacher": {"init_student": "all"},
    },
}

TABLES: dict[str, tuple[str, list[str]]] = {
    "modules": (
        "Table 7: modules",
        ["baseline", "warm_start", "rhsm", "rhsm_grn", "rhsm_cl", "full"],
    ),
    "assessment": ("Table 8: easy-instance assessment", ["baseline", "attention_scoring", "full"]),
    "mining": (
        "Table 9: mining / masking strategies",
        ["baseline", "rhsm_cl", "rhsm_cl_rsm", "rhsm_cl_lsm_grn", "full"],
    ),
    "teacher": (
        "Table 10: teacher",
        ["baseline", "teacher_copy", "teacher_frozen", "teacher_cosine", "no_student_init", "full"],
    ),
}


def variant_names() -> list[str]:
    return ["baseline", *VARIANTS]


def chosen_variants(ctx: Context) -> list[str]:
    """The variants of ``--grid`` / ``experiment.variants`` (default: all), checked."""
    chosen = [str(v) for v in ctx.grid(variant_names())]
    unknown = sorted(set(chosen) - set(variant_names()))
    if unknown:
        raise ValueError(f"unknown MHIM variant(s) {unknown}; valid: {', '.join(variant_names())}")
    return chosen


def baseline_points(students: list[Method], base_objective: dict[str, Any]) -> list[Point]:
    """One ordinary run per student with ``base_objective`` (``MHIM.baseline_objective``): the
    table's first row and every variant's teacher."""
    return [
        Point(
            f"{s.name}__baseline",
            {**s.overrides, "objective": base_objective},
            {"student": s.name, "variant": "baseline"},
        )
        for s in students
    ]


def variant_points(
    students: list[Method], chosen: list[str], shared: dict[str, Any], runs: dict[str, Path]
) -> list[Point]:
    """Every chosen variant of every student, its teacher initialised from the baseline run."""
    points = []
    for s in students:
        for v in chosen:
            if v == "baseline":
                continue
            params = _merge(shared, VARIANTS[v])
            baseline = str(runs[f"{s.name}__baseline"])
            objective = {"name": "mhim_v2", "params": params, "baseline": baseline}
            points.append(
                Point(
                    f"{s.name}__{v}",
                    {**s.overrides, "objective": objective},
                    {"student": s.name, "variant": v},
                )
            )
    return points


def _student_rows(rows, summ, student: Method, present: list[str], key: str):
    """(table rows, statistics) of one student in one paper table."""
    sel = summ[(summ.student == student.name) & summ.variant.isin(present)].reset_index()
    marks = rank_marks(sel.auroc_mean)
    base = sel[sel.variant == "baseline"].auroc_mean
    base_mean = float(base.iloc[0]) if len(base) else float("nan")
    mine = rows.student == student.name
    cells, stats = [], []
    for i, rec in sel.iterrows():
        p = float("nan")
        if rec.variant != "baseline":
            p = pvalue(
                rows.loc[mine & (rows.variant == rec.variant), "auroc"],
                rows.loc[mine & (rows.variant == "baseline"), "auroc"],
            )
        stats.append({"table": key, **rec.drop("index").to_dict(), "p_auroc": p})
        cells.append(
            [
                DISPLAY.get(student.name, student.name),
                rec.variant,
                decorate(fmt_mean_sd(rec.auroc_mean, rec.auroc_sd), marks[i]),
                fmt_mean_sd(rec.auprc_mean, rec.auprc_sd),
                f"{rec.auroc_mean - base_mean:+.3f}",
                "" if rec.variant == "baseline" else fmt_p(p),
            ]
        )
    return cells, stats


def table(
    rows, summ, students: list[Method], chosen: list[str], baseline: str = "bag"
) -> tuple[str, list[dict]]:
    """``table.md``: one section per paper table holding a variant that was run; ``baseline``
    names the objective of the baseline rows (every variant's teacher)."""
    md, stats = "# MHIM-v2 ablation (test split)\n", []
    header = ["Student", "Variant", "AUROC, mean (SD)", "AUPRC, mean (SD)", "dAUROC", "P"]
    for key, (title, variants) in TABLES.items():
        present = [v for v in variants if v in chosen or v == "baseline"]
        specific = set(present) - {"baseline", "full"}
        if len(present) < 2 or (key != "modules" and not specific):
            continue  # would only repeat the baseline and full rows
        cells = []
        for s in students:
            more_cells, more_stats = _student_rows(rows, summ, s, present, key)
            cells += more_cells
            stats += more_stats
        md += f"\n## {title}\n\n" + markdown_table(header, cells)
    md += "\nP: two-sided Mann-Whitney U against the baseline; **bold** best per table.\n"
    if baseline != "bag":
        md += (
            f"Baseline: the student trained with `{baseline}` (the rank loss of every variant), "
            "which is also every variant's teacher.\n"
        )
    return md, stats


def figure(path, summ: pd.DataFrame, students: list[Method], chosen: list[str]) -> None:
    """AUROC per variant (x = the variant's position, named in the note) per student."""
    order = {v: i for i, v in enumerate(["baseline", *chosen])}
    series = [
        Series(
            DISPLAY.get(s.name, s.name),
            [order[v] for v in summ[summ.student == s.name].variant],
            summ[summ.student == s.name].auroc_mean.tolist(),
            summ[summ.student == s.name].auroc_sd.tolist(),
        )
        for s in students
    ]
    note = "x: " + ", ".join(f"{i}={v}" for v, i in order.items())
    line_figure(path, [(series, Axes("variant", "AUROC"))], note)


def run(ctx: Context) -> dict[str, Any]:
    """Baseline and MHIM-v2 variants for each student (default AB-MIL); AUROC/AUPRC mean (sd),
    difference to the baseline and Mann-Whitney U p-value against it, grouped by paper table."""
    students = ctx.methods(["abmil"])
    chosen = chosen_variants(ctx)
    shared = dict(ctx.section.mhim_params or {})
    from histomil.objectives import objective_class

    base_objective = objective_class("mhim_v2").baseline_objective(shared)
    runs, rows = ctx.run(baseline_points(students, base_objective))
    points = variant_points(students, chosen, shared, runs)
    if points:
        _, more = ctx.run(points)
        rows = pd.concat([rows, more], ignore_index=True)
    rows = rows[rows.variant.isin(["baseline", *chosen])]
    summ = summary_frame(rows, ["student", "variant"], ["auroc", "auprc"])
    md, stats = table(rows, summ, students, chosen, base_objective["name"])
    figure(ctx.out / "mhim_ablation.png", summ, students, chosen)
    summary = {"experiment": "mhim-ablation", "variants": chosen, "rows": stats}
    write_outputs(ctx.out, rows, md, summary)
    return summary


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    return deep_merge(base, over)
