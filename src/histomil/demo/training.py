"""Demo training: one config per method on the same folds, and the comparison table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from histomil.demo.settings import METHOD_TITLES, METHODS, DemoPaths, DemoSettings
from histomil.evaluation.stats import fmt_mean_sd, mean_sd

TABLE_COLUMNS = ("auroc", "auprc", "pointing", "dice")
COLUMN_TITLES = {
    "auroc": "test AUROC",
    "auprc": "test AUPRC",
    "pointing": "top patch in lesion",
    "dice": "lesion Dice@100%",
}


def method_config(
    method: str, paths: DemoPaths, settings: DemoSettings, seed: int
) -> dict[str, Any]:
    """The training config (a plain dict, saved as YAML) of ``method``.

    Every method shares data, folds, seed, learning rate and schedule. Rank induction uses the paper's loss
    (sigma 1, margin 1, weight 1) and attention thresholding T = 1; MHIM-v2 uses the paper's
    defaults with its teacher (and the student's projection) initialised from the AB-MIL run's
    checkpoint of the same fold, so its baseline comes from the same splits.
    """
    model: dict[str, Any] = {"name": "abmil", "params": {}}
    objective: dict[str, Any] = {"name": "bag", "params": {}}
    if method == "rank_induction":
        model["params"] = {"attention_threshold": 1.0}
        objective = {
            "name": "rank_induction",
            "params": {"sigma": 1.0, "margin": 1.0, "weight": 1.0},
        }
    elif method == "mhim_v2":
        objective = {"name": "mhim_v2", "params": {}, "baseline": str(paths.run("abmil"))}
    elif method != "abmil":
        raise ValueError(f"unknown demo method {method!r}; valid: {', '.join(METHODS)}")
    return {
        "data": {"manifest": str(paths.manifest.resolve()), "bags": str(paths.bags.resolve())},
        "task": "classification",
        "model": model,
        "objective": objective,
        "train": {
            "lr": settings.lr,
            "weight_decay": 1.0e-5,
            "max_epochs": settings.max_epochs,
            "warmup_epochs": settings.warmup_epochs,
            "patience": settings.patience,
            "seed": seed,
            "threads": 1,
        },
        "split": {
            "scheme": "kfold",
            "k": settings.folds,
            "val_fraction": settings.val_fraction,
            "test": "fold",
        },
        "output": {"attention": True, "attention_splits": ["test"], "save_checkpoints": True},
    }


def write_config(config: dict[str, Any], path: Path) -> Path:
    """Save ``config`` as YAML (atomically) and return the path."""
    import yaml

    from histomil._io import atomic_write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, yaml.safe_dump(config, sort_keys=False))
    return path


def train_method(
    method: str, paths: DemoPaths, settings: DemoSettings, seed: int, workers: int = 2
) -> Path:
    """Train every fold of ``method`` (finished folds are skipped) and return the run folder."""
    from histomil.executors import ExecutorConfig
    from histomil.training import train

    config = method_config(method, paths, settings, seed)
    config_path = write_config(config, paths.results / "configs" / f"{method}.yaml")
    train(config_path, paths.run(method), executor=ExecutorConfig(workers=max(1, workers)))
    return paths.run(method)


def fold_localization(run: Path) -> dict[str, dict[str, float]]:
    """Per fold: mean pointing game (alpha 1 %) and Dice (alpha 100 %) over positive test slides
    with annotated lesion patches: the localization experiment's per-fold values
    (:func:`histomil.experiments.attention.localization_rows`). Patches are ranked by their
    raw attention scores (the softmax order): thresholded weights (rank induction, T = 1) are 0
    on most patches and would turn the ranking into ties."""
    from histomil.experiments.attention import localization_rows

    out: dict[str, dict[str, float]] = {}
    for row in localization_rows(run.name, run, (1, 100), "scores"):
        fold = out.setdefault(str(row["fold"]), {})
        if row["alpha"] == 1:
            fold["pointing"] = row["pointing_lesion"]  # the top patch (lesion-relative k)
        if row["alpha"] == 100:
            fold["dice"] = row["dice"]
    return out


def results_table(paths: DemoPaths) -> pd.DataFrame:
    """One row per method: mean and sd over folds of test AUROC/AUPRC (from ``metrics.json``)
    and attention localization (from attention files)."""
    import json

    rows = []
    for method in METHODS:
        run = paths.run(method)
        metrics = json.loads((run / "metrics.json").read_text())
        folds = metrics["folds"]
        loc = fold_localization(run)
        from histomil.viz.summary import fold_counts

        row: dict[str, Any] = {
            "method": method,
            "title": METHOD_TITLES[method],
            "folds": len(folds),
            # integers per fold, once (an average over folds read like "n 14.667")
            "test_slides_per_fold": " ".join(str(n) for n in fold_counts(metrics)),
        }
        for name in ("auroc", "auprc"):
            row[f"{name}_mean"], row[f"{name}_sd"], _ = mean_sd(
                [f["test"].get(name) for f in folds]
            )
        for name in ("pointing", "dice"):
            row[f"{name}_mean"], row[f"{name}_sd"], _ = mean_sd([v[name] for v in loc.values()])
        rows.append(row)
    return pd.DataFrame(rows)


def table_caption(table: pd.DataFrame) -> str:
    """What the numbers are: fold mean ± sd (not pooled), and the test slides of each fold."""
    folds = int(table["folds"].max()) if len(table) else 0
    counts = str(table["test_slides_per_fold"].iloc[0]) if "test_slides_per_fold" in table else ""
    text = f"Test metrics, mean ± sd over {folds} folds (not pooled)"
    if counts and (table["test_slides_per_fold"] == counts).all():
        per_fold = ", ".join(counts.split())
        text += f"; each fold scored on its own test slides ({per_fold})"
    return text


def table_markdown(table: pd.DataFrame, note: str) -> str:
    """The results table as markdown (the experiment report renders it)."""
    head = ["method", *(COLUMN_TITLES[c] for c in TABLE_COLUMNS), "folds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in table.itertuples():
        cells = [fmt_mean_sd(getattr(r, f"{c}_mean"), getattr(r, f"{c}_sd")) for c in TABLE_COLUMNS]
        lines.append("| " + " | ".join([r.title, *cells, str(r.folds)]) + " |")
    return f"**{table_caption(table)}**\n\n" + "\n".join(lines) + "\n\n" + note + "\n"


def write_results(paths: DemoPaths, table: pd.DataFrame, note: str) -> None:
    """``results.csv`` and ``table.md`` in the results folder (an experiment directory)."""
    from histomil._io import atomic_write_text

    atomic_write_text(paths.results / "results.csv", table.to_csv(index=False))
    atomic_write_text(paths.results / "table.md", table_markdown(table, note))
