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
    if not rows:
        return '<p class="note">No test rows in predictions.csv: nothing to evaluate.</p>'
    body = H.table(
        ["metric", "pooled test", "95% CI", "mean \u00b1 sd over folds (n)"],
        [
            (r.name, r.estimate, f"[{H.fmt(r.ci_low)}, {H.fmt(r.ci_high)}]",
             f"{H.fmt(r.fold_mean)} \u00b1 {H.fmt(r.fold_sd)} ({r.n_folds})")
            for r in rows
        ],
    )  # fmt: skip
    n_test = int((df["split"] == "test").sum())
    note = (
        f"Recomputed from predictions.csv over {n_test} test predictions pooled across folds; "
        f"95% percentile bootstrap over slides ({n_boot} resamples). Decisions (accuracy, F1, "
        "sensitivity, specificity) use the threshold chosen per fold on validation data "
        "(the trainer's, else Youden's J on the validation rows), never on the test rows."
    )
    return body + f'<p class="note">{H.esc(note)}</p>'


def _curves_png(df: pd.DataFrame) -> bytes | None:
    """ROC and PR curves of the test rows: one thin line per fold and the pooled curve."""
    test = df[df["split"] == "test"]
    if task_of(df) != "binary" or test["label"].nunique() < 2:
        return None
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from sklearn.metrics import precision_recall_curve, roc_curve

    from histomil.viz._metrics import auroc, average_precision

    fig = Figure(figsize=(10, 4.3))
    ax_roc, ax_pr = fig.subplots(1, 2)
    groups = [(f"fold {k}", g, 0.8, 0.45) for k, g in test.groupby("fold")]
    groups.append(("pooled", test, 2.2, 1.0))
    for name, g, lw, alpha in groups:
        y, p = g["label"].to_numpy(int), g["prob"].to_numpy(float)
        if len(np.unique(y)) < 2:
            continue
        fpr, tpr, _ = roc_curve(y, p)
        prec, rec, _ = precision_recall_curve(y, p)
        kw = {"lw": lw, "alpha": alpha, "color": "#1f2f4d" if name == "pooled" else None}
        ax_roc.plot(fpr, tpr, label=f"{name} (AUROC {auroc(y, p):.3f})", **kw)
        ax_pr.step(
            rec, prec, where="post", label=f"{name} (AP {average_precision(y, p):.3f})", **kw
        )
    ax_roc.plot([0, 1], [0, 1], ls="--", color="#999", lw=0.8)
    ax_pr.axhline(float(test["label"].mean()), ls="--", color="#999", lw=0.8)
    for ax, (xl, yl, title) in zip(
        (ax_roc, ax_pr),
        (
            ("false positive rate", "true positive rate", "ROC"),
            ("recall", "precision", "Precision-recall"),
        ),
        strict=True,
    ):
        ax.set(xlabel=xl, ylabel=yl, title=title, xlim=(-0.01, 1.01), ylim=(-0.01, 1.02))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7.5, loc="lower right" if ax is ax_roc else "lower left")
    fig.tight_layout()
    return H.fig_png(fig)


def _history_png(run: Path) -> bytes | None:
    files = sorted((run / "folds").glob("*/history.csv"))
    if not files:
        return None
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.4))
    ax = fig.subplots()
    for path in files[:20]:
        hist = read_csv(path)
        x = hist["epoch"] if "epoch" in hist else np.arange(len(hist))
        train = next((c for c in ("train_loss", "train_total") if c in hist), None)
        for col, ls in ((train, "-"), ("val_loss", "--")):
            if col in hist:
                ax.plot(x, hist[col], ls=ls, lw=1, label=f"fold {path.parent.name} {col}")
    ax.set(xlabel="epoch", ylabel="loss", title="Training history")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=4)
    fig.tight_layout()
    return H.fig_png(fig)


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
            caption = (
                f"{why}: {sid} (fold {fold}, label {row['label']}, P(positive) {row['prob']:.3f})"
            )
            item = f"<h3>{H.esc(why.capitalize())}: {H.esc(sid)}</h3>"
            item += H.figure(out.read_bytes(), caption)
            montage = montage_path_for(out)
            if montage.is_file():
                item += H.figure(montage.read_bytes(), f"{sid}: top and bottom attention patches")
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
    cards += [(r.name, f"{H.fmt(r.estimate)}") for r in rows[:2]]
    summary = '<div class="cards">' + "".join(
        f'<div class="card"><div class="k">{H.esc(k)}</div><div class="v">{H.esc(v)}</div></div>'
        for k, v in cards
    ) + "</div>"  # fmt: skip
    sections = [("summary", "Summary", summary),
                ("metrics", "Metrics", _metrics_section(rows, df, options.n_boot))]  # fmt: skip
    curves = _curves_png(df)
    if curves is not None:
        sections.append(("curves", "ROC and PR curves", H.figure(curves, "Test predictions")))
    if options.heatmaps:
        sections.append(("heatmaps", "Attention heatmaps", _heatmap_section(run, df, options)))
    history = _history_png(run)
    if history is not None:
        sections.append(("history", "Training", H.figure(history, "Loss per epoch and fold")))
    sections.append(("predictions", "Per-slide predictions", _predictions_section(df)))
    sections.append(("config", "Configuration", _config_section(run)))
    return sections


# -- experiment sections ----------------------------------------------------------------------
def _run_summary_rows(exp: Path, options: ReportOptions) -> list[list[object]]:
    runs = sorted(p.parent for p in exp.rglob("predictions.csv"))[: options.max_runs]
    out = []
    for run in runs:
        try:
            df = read_predictions(run)
            n_boot = max(100, options.n_boot // 5)
            rows = metric_table(df, n_boot, options.seed, fold_thresholds(run))
        except (VizError, ValueError, KeyError) as exc:
            out.append([str(run.relative_to(exp)), f"unreadable: {exc}", "", ""])
            continue
        for r in rows[:2]:
            out.append(
                [
                    str(run.relative_to(exp)),
                    r.name,
                    r.estimate,
                    f"[{H.fmt(r.ci_low)}, {H.fmt(r.ci_high)}]",
                ]
            )
    return out


def experiment_sections(exp: Path, options: ReportOptions) -> list[tuple[str, str, str]]:
    """(anchor, title, html) sections for an experiment directory."""
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
        sections.append(
            ("results", "results.csv", H.table(list(res.columns), rows, scroll=True) + more)
        )
    figs = sorted(exp.glob("*.png"))
    if figs:
        body = (
            '<div class="grid2">'
            + "".join(H.figure(p.read_bytes(), p.name) for p in figs)
            + "</div>"
        )
        sections.append(("figures", "Figures", body))
    runs = _run_summary_rows(exp, options)
    if runs:
        sections.append(
            ("runs", "Runs", H.table(["run", "metric", "pooled test", "95% CI"], runs, scroll=True))
        )
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
    if is_run_dir(root):
        kind, sections = "run", run_sections(root, options)
        if is_experiment_dir(root):
            sections += experiment_sections(root, options)
    elif is_experiment_dir(root):
        kind, sections = "experiment", experiment_sections(root, options)
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
    out = Path(out_html) if out_html is not None else root / "report.html"
    html_text = H.page(title, meta, sections, "Self-contained report: every figure is embedded.")
    atomic_write_text(out, html_text)
    return out
