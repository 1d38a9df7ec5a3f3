"""One self-contained HTML report for a training run or an experiment directory.

A run (``predictions.csv`` present) gets: summary, metrics with bootstrap CIs recomputed from the
predictions, ROC and PR curves, heatmaps of the most and least confident positive and negative test
slides, training curves, per-slide predictions and the resolved configuration. An experiment
directory (``results.csv`` / ``table.md``) gets its tables and figures, a metrics line per run
found below it, and its configs. Every image is embedded; nothing is fetched when the file opens.
"""

from __future__ import annotations

import datetime as _dt
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from histomil._io import read_csv
from histomil.viz import _html as H
from histomil.viz._figures import (
    HISTORY_CAPTION,
    curves_png,
    figure_caption,
    history_figure,
    png_caption,
)
from histomil.viz._metrics import MetricRow, metric_table, task_of
from histomil.viz.attention import VizError
from histomil.viz.heatmap import HeatmapOptions, montage_path_for, render_heatmap

MAX_TABLE_ROWS = 500


@dataclass(frozen=True)
class ReportOptions:
    """Report knobs: bootstrap size/seed, heatmap look, and how many runs of an experiment."""

    n_boot: int = 1000
    seed: int = 0
    heatmaps: bool = True
    heatmap: HeatmapOptions = field(
        default_factory=lambda: HeatmapOptions(
            thumbnail_size=900, panel_inches=4.6, dpi=90, top_k=6
        )
    )
    max_runs: int = 40  # runs summarised inside an experiment directory
    title: str | None = None


def is_run_dir(path: Path) -> bool:
    return (path / "predictions.csv").is_file()


def is_experiment_dir(path: Path) -> bool:
    return (path / "results.csv").is_file() or (path / "table.md").is_file()


def _read_text(path: Path, limit: int = 200_000) -> str | None:
    if not path.is_file():
        return None
    text = path.read_text(encoding="utf-8", errors="replace")
    return text if len(text) <= limit else text[:limit] + "\n... (truncated)"


def fold_thresholds(run: Path) -> dict[str, float]:
    """Decision thresholds the trainer picked on validation data, per fold (``result.json``)."""
    import json

    out = {}
    for path in (run / "folds").glob("*/result.json"):
        try:
            thr = json.loads(path.read_text(encoding="utf-8")).get("threshold")
        except (OSError, ValueError):
            continue
        if isinstance(thr, (int, float)):
            out[path.parent.name] = float(thr)
    return out


def read_predictions(run: Path) -> pd.DataFrame:
    """``predictions.csv`` with the required columns checked."""
    df = read_csv(run / "predictions.csv")
    need = {"slide_id"} | ({"risk", "time", "event"} if "risk" in df else {"label"})
    missing = need - set(df.columns)
    if missing:
        raise VizError(f"{run / 'predictions.csv'}: missing columns {', '.join(sorted(missing))}")
    if "split" not in df:
        df["split"] = "test"
    if "fold" not in df:
        df["fold"] = 0
    return df


# -- run sections -----------------------------------------------------------------------------
def _metrics_section(rows: list[MetricRow], df: pd.DataFrame, n_boot: int) -> str:
    """Two tables, each with one kind of estimate and saying which: all test predictions
    pooled across folds (with a bootstrap CI), and the per-fold values with their mean +- sd."""
    if not rows:
        return '<p class="note">No test rows in predictions.csv: nothing to evaluate.</p>'
    n_test = int((df["split"] == "test").sum())
    pooled = H.table(
        ["metric", "pooled test estimate", "95% bootstrap CI"],
        [(r.name, r.estimate, f"[{H.fmt(r.ci_low)}, {H.fmt(r.ci_high)}]") for r in rows],
    )
    pooled_note = (
        f"All {n_test} test predictions of every fold pooled into one set; 95% percentile "
        f"bootstrap over slides ({n_boot} resamples)."
    )
    folds = sorted({k for r in rows for k in r.fold_values})
    per_fold = H.table(
        ["metric", "mean \u00b1 sd over folds", "folds", *(f"fold {k}" for k in folds)],
        [
            (r.name, f"{H.fmt(r.fold_mean)} \u00b1 {H.fmt(r.fold_sd)}", r.n_folds,
             *(r.fold_values.get(k, float("nan")) for k in folds))
            for r in rows
        ],
        scroll=len(folds) > 8,  # many folds (repeats): scroll instead of a page-wide table
    )  # fmt: skip
    note = (
        "Recomputed from predictions.csv. Decisions (accuracy, F1, sensitivity, specificity) use "
        "the threshold chosen per fold on validation data (the trainer's, else Youden's J on the "
        "validation rows), never on the test rows."
    )
    return (
        "<h3>Pooled over folds</h3>" + pooled + f'<p class="note">{H.esc(pooled_note)}</p>'
        "<h3>Per fold</h3>" + per_fold + '<p class="note">Each fold scored on its own test '
        "slides; mean and sample sd over folds (not pooled).</p>"
        f'<p class="note">{H.esc(note)}</p>'
    )


def pick_heatmap_slides(df: pd.DataFrame) -> list[tuple[str, pd.Series]]:
    """Most and least confident positive and negative test predictions (binary runs)."""
    test = df[df["split"] == "test"]
    if test.empty or task_of(df) != "binary":
        return []
    picks: list[tuple[str, pd.Series]] = []
    for label, name in ((1, "positive"), (0, "negative")):
        g = test[test["label"] == label]
        if g.empty:
            continue
        conf = g["prob"] if label == 1 else 1 - g["prob"]
        picks.append((f"most confident {name}", g.loc[conf.idxmax()]))
        if len(g) > 1:
            picks.append((f"least confident {name}", g.loc[conf.idxmin()]))
    return picks


def _heatmap_section(run: Path, df: pd.DataFrame, options: ReportOptions) -> str:
    if not (run / "attention").is_dir():
        return '<p class="note">The run saved no attention (no attention/ folder).</p>'
    parts: list[str] = []
    with tempfile.TemporaryDirectory(prefix="histomil-report-") as tmp:
        for i, (why, row) in enumerate(pick_heatmap_slides(df)):
            fold, sid = row["fold"], str(row["slide_id"])
            out = Path(tmp) / f"h{i}.png"
            try:
                render_heatmap(run, out, options.heatmap, slide_id=sid, fold=fold)
            except (VizError, OSError) as exc:
                parts.append(
                    f'<p class="note">{H.esc(why)}: {H.esc(sid)} - no heatmap ({H.esc(exc)})</p>'
                )
                continue
            caption = png_caption(out) or (
                f"{why.capitalize()} test slide {sid} (fold {fold}, label {row['label']}, "
                f"P(positive) {row['prob']:.3f})"
            )
            item = f"<h3>{H.esc(why.capitalize())}: {H.esc(sid)}</h3>"
            item += H.figure(out.read_bytes(), caption)
            montage = montage_path_for(out)
            if montage.is_file():
                item += H.figure(montage.read_bytes(), figure_caption(montage))
            parts.append(f"<div>{item}</div>")
    if not parts:
        return '<p class="note">No test slides with attention files to show.</p>'
    return '<div class="grid2">' + "".join(parts) + "</div>"


def _predictions_section(df: pd.DataFrame) -> str:
    cols = [
        c
        for c in ("fold", "slide_id", "label", "prob", "risk", "time", "event", "split")
        if c in df
    ]
    cols += [c for c in df.columns if c.startswith("prob_") and c not in cols]
    shown = df.sort_values(["split", "fold", "slide_id"], ascending=[True, True, True])
    rows = []
    for _, r in shown.head(MAX_TABLE_ROWS).iterrows():
        cells = []
        for c in cols:
            v = r[c]
            if c == "label" and v in (0, 1):
                cells.append(
                    H.RawHtml(f'<span class="{"pos" if v == 1 else "neg"}">{int(v)}</span>')
                )
            else:
                cells.append(v.item() if isinstance(v, np.generic) else v)
        rows.append(cells)
    more = len(df) - len(rows)
    note = f'<p class="note">{more} more rows in predictions.csv.</p>' if more > 0 else ""
    return H.table(cols, rows, scroll=True) + note


def _config_section(run: Path) -> str:
    parts = []
    for name in ("config.yaml", "metrics.json"):
        text = _read_text(run / name)
        if text is not None:
            opened = " open" if name == "config.yaml" else ""
            parts.append(
                f"<details{opened}><summary>{name}</summary><pre>{H.esc(text)}</pre></details>"
            )
    return "".join(parts) or '<p class="note">No config.yaml in the run directory.</p>'


def run_sections(run: Path, options: ReportOptions) -> list[tuple[str, str, str]]:
    """(anchor, title, html) sections for one training run."""
    df = read_predictions(run)
    rows = metric_table(df, options.n_boot, options.seed, fold_thresholds(run))
    test = df[df["split"] == "test"]
    cards = [("task", task_of(df)), ("folds", df["fold"].nunique()), ("test predictions", len(test)),
             ("slides", df["slide_id"].nunique())]  # fmt: skip
    cards += [(f"{r.name} (pooled test)", f"{H.fmt(r.estimate)}") for r in rows[:2]]
    summary = '<div class="cards">' + "".join(
        f'<div class="card"><div class="k">{H.esc(k)}</div><div class="v">{H.esc(v)}</div></div>'
        for k, v in cards
    ) + "</div>"  # fmt: skip
    sections = [("summary", "Summary", summary),
                ("metrics", "Metrics", _metrics_section(rows, df, options.n_boot))]  # fmt: skip
    curves = curves_png(df)
    if curves is not None:
        caption = (
            "ROC (left) and precision-recall (right) curves of the test predictions: one thin "
            "line per fold (its own test slides) and the thick line for all folds pooled; "
            "dashed: chance."
        )
        sections.append(("curves", "ROC and PR curves", H.figure(curves, caption)))
    if options.heatmaps:
        sections.append(("heatmaps", "Attention heatmaps", _heatmap_section(run, df, options)))
    history = history_figure(sorted((run / "folds").glob("*/history.csv")))
    if history is not None:
        sections.append(("history", "Training", H.figure(H.fig_png(history), HISTORY_CAPTION)))
    sections.append(("predictions", "Per-slide predictions", _predictions_section(df)))
    sections.append(("config", "Configuration", _config_section(run)))
    return sections


# -- experiment sections ----------------------------------------------------------------------
def find_runs(exp: Path, limit: int) -> list[Path]:
    """Training runs below ``exp``: folders with ``predictions.csv`` that are not the per-fold
    folders (``<run>/folds/<k>``) of a run, whose predictions are a part of the run's."""
    out = []
    for path in sorted(exp.rglob("predictions.csv")):
        run = path.parent
        if run == exp or (run.parent.name == "folds" and is_run_dir(run.parent.parent)):
            continue
        out.append(run)
    return out[:limit]


def _run_link(run: Path, out_dir: Path) -> object:
    """A relative link to ``run/report.html`` from the report's folder (text when none)."""
    target = run / "report.html"
    if not target.is_file():
        return "no report yet (histomil report RUN)"
    href = Path(os.path.relpath(target, out_dir)).as_posix()
    return H.RawHtml(f'<a href="{H.esc(href)}">{H.esc(run.name)} report</a>')


def _run_summary_rows(exp: Path, options: ReportOptions, out_dir: Path) -> list[list[object]]:
    out = []
    for run in find_runs(exp, options.max_runs):
        name, link = str(run.relative_to(exp)), _run_link(run, out_dir)
        try:
            df = read_predictions(run)
            n_boot = max(100, options.n_boot // 5)
            rows = metric_table(df, n_boot, options.seed, fold_thresholds(run))
        except (VizError, ValueError, KeyError) as exc:
            out.append([name, link, f"unreadable: {exc}", "", ""])
            continue
        for r in rows[:2]:
            out.append([name, link, r.name, r.estimate, f"[{H.fmt(r.ci_low)}, {H.fmt(r.ci_high)}]"])
    return out


_RUNS_NOTE = (
    "Each run's test predictions of all its folds pooled into one set, with a 95% bootstrap CI "
    "over slides. This is a different estimate from a mean \u00b1 sd over folds (as in a "
    "results table): the two need not agree. Open a run's report for its per-fold values."
)


def experiment_sections(
    exp: Path, options: ReportOptions, out_dir: Path | None = None
) -> list[tuple[str, str, str]]:
    """(anchor, title, html) sections for an experiment directory; links to run reports are
    relative to ``out_dir`` (the folder of the report being written, ``exp`` by default)."""
    out_dir = out_dir or exp
    sections = []
    table_md = _read_text(exp / "table.md")
    if table_md is not None:
        sections.append(("table", "Results table", H.markdown_html(table_md)))
    if (exp / "results.csv").is_file():
        res = read_csv(exp / "results.csv")
        rows = [
            [v.item() if isinstance(v, np.generic) else v for v in r]
            for r in res.head(MAX_TABLE_ROWS).itertuples(index=False)
        ]
        more = (
            f'<p class="note">{len(res) - len(rows)} more rows in results.csv.</p>'
            if len(res) > len(rows)
            else ""
        )
        body = H.table(list(res.columns), rows, scroll=True) + more
        if table_md is not None:  # the same numbers as the table above, unformatted
            body = f"<details><summary>results.csv (raw values)</summary>{body}</details>"
        sections.append(("results", "results.csv", body))
    figs = sorted(exp.glob("*.png"))
    if figs:
        body = (
            '<div class="grid2">'
            + "".join(H.figure(p.read_bytes(), figure_caption(p)) for p in figs)
            + "</div>"
        )
        sections.append(("figures", "Figures", body))
    runs = _run_summary_rows(exp, options, out_dir)
    if runs:
        headers = ["run", "run report", "metric", "pooled test estimate", "95% bootstrap CI"]
        body = H.table(headers, runs, scroll=True) + f'<p class="note">{H.esc(_RUNS_NOTE)}</p>'
        sections.append(("runs", "Runs (pooled over folds)", body))
    configs = (
        sorted(p for p in (exp / "configs").glob("*") if p.is_file())
        if (exp / "configs").is_dir()
        else []
    )
    if configs:
        body = "".join(
            f"<details><summary>{H.esc(p.name)}</summary><pre>{H.esc(_read_text(p) or '')}</pre></details>"
            for p in configs
        )
        sections.append(("configs", "Configs", body))
    return sections


def build_report(
    path: str | os.PathLike,
    out_html: str | os.PathLike | None = None,
    options: ReportOptions | None = None,
) -> Path:
    """Write ``<dir>/report.html`` (or ``out_html``) for a run or experiment directory; return it."""
    from histomil import __version__
    from histomil._io import atomic_write_text

    options = options or ReportOptions()
    root = Path(path)
    if not root.is_dir():
        raise VizError(f"{root}: not a directory")
    out = Path(out_html) if out_html is not None else root / "report.html"
    out_dir = out.resolve().parent
    if is_run_dir(root):
        kind, sections = "run", run_sections(root, options)
        if is_experiment_dir(root):
            sections += experiment_sections(root, options, out_dir)
    elif is_experiment_dir(root):
        kind, sections = "experiment", experiment_sections(root, options, out_dir)
    else:
        raise VizError(
            f"{root}: neither a run directory (predictions.csv) nor an experiment directory "
            "(results.csv or table.md)"
        )
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    title = options.title or f"histomil {kind} report: {root.resolve().name}"
    meta = (
        f"{H.esc(root.resolve())} &middot; generated {now} &middot; histomil {H.esc(__version__)}"
    )
    html_text = H.page(title, meta, sections, "Self-contained report: every figure is embedded.")
    atomic_write_text(out, html_text)
    return out
