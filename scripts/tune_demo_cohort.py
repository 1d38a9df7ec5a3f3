"""Choose the demo cohort's difficulty on a separate tuning cohort, never on the demo's slides.

Usage (from the repository root, with histomil importable):

    python scripts/tune_demo_cohort.py OUT --points 1:1,0.5:1,0.35:0.7 [--seed 1] [--n-slides 16]
        [--size 2000x1500] [--folds 2] [--max-epochs 40] [--no-train]

Each point ``contrast:scale`` (``SlideSynthConfig.lesion_contrast`` / ``lesion_scale``) runs the
demo's own steps (synthetic slides, preprocess, label, extract with the seeded random
``resnet50_trunc``) on a cohort of ``--n-slides`` slides made with ``--seed`` (default 1; the
demo uses 0, so the demo's slides are never looked at), then trains AB-MIL with the demo's
training code (:func:`histomil.demo.training.train_method`, the full run's lr, warm-up and
patience, ``--max-epochs`` and ``--folds``). It prints, per point, the patch-level feature
separation of the demo (``direction_auroc``) and per fold the **validation** AUROC at epoch 1
and at the selected epoch and the selected epoch. Test metrics are not read.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pandas as pd

from histomil.demo.data import (
    feature_separation,
    step_extract,
    step_label,
    step_preprocess,
    step_synthetic_slides,
)
from histomil.demo.settings import FULL, DemoPaths
from histomil.demo.training import train_method


def validation_rows(run: Path) -> list[dict]:
    """Per fold: validation AUROC at the first epoch, at the trainer's selected epoch and its
    maximum, from ``history.csv``; never the test metrics."""
    import json

    rows = []
    for res in sorted((run / "folds").glob("*/result.json"), key=lambda p: int(p.parent.name)):
        best = json.loads(res.read_text(encoding="utf-8"))["best_epoch"]
        hist = pd.read_csv(res.parent / "history.csv")
        at = hist[hist["epoch"] == best]
        rows.append(
            {
                "fold": int(res.parent.name),
                "val_auroc_first": float(hist["val_auroc"].iloc[0]),
                "val_auroc_selected": float(at["val_auroc"].iloc[0]) if len(at) else float("nan"),
                "val_auroc_max": float(hist["val_auroc"].max()),
                "selected_epoch": int(best),
                "epochs_run": int(hist["epoch"].max()),
            }
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--points", default="1:1,0.5:1,0.35:0.7")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--n-slides", type=int, default=16)
    ap.add_argument("--size", default="2000x1500")
    ap.add_argument("--folds", type=int, default=2)
    ap.add_argument("--max-epochs", type=int, default=40)
    ap.add_argument("--no-train", action="store_true")
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.lower().split("x"))
    lines = [
        "| contrast | scale | direction AUROC (patches) | fold | val AUROC epoch 1 | "
        "val AUROC selected | val AUROC max | selected epoch | epochs run |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for point in args.points.split(","):
        contrast, scale = (float(v) for v in point.split(":"))
        settings = dataclasses.replace(
            FULL,
            n_slides=args.n_slides,
            slide_size=(w, h),
            folds=args.folds,
            max_epochs=args.max_epochs,
            lesion_contrast=contrast,
            lesion_scale=scale,
        )
        paths = DemoPaths((args.out / f"c{contrast:g}_s{scale:g}").resolve())
        paths.root.mkdir(parents=True, exist_ok=True)
        step_synthetic_slides(paths, False, args.seed, settings)
        step_preprocess(paths, None, 1, settings)
        step_label(paths, 1)
        step_extract(paths, args.seed)
        sep = feature_separation(paths).get("direction_auroc", float("nan"))
        folds = (
            []
            if args.no_train
            else validation_rows(train_method("abmil", paths, settings, args.seed, workers=1))
        )
        for r in folds or [{}]:
            cells = [
                r.get(k, "")
                for k in (
                    "fold",
                    "val_auroc_first",
                    "val_auroc_selected",
                    "val_auroc_max",
                    "selected_epoch",
                    "epochs_run",
                )
            ]
            cells = [f"{c:.3f}" if isinstance(c, float) else str(c) for c in cells]
            lines.append(f"| {contrast:g} | {scale:g} | {sep:.3f} | " + " | ".join(cells) + " |")
        print("\n".join(lines), flush=True)


if __name__ == "__main__":
    main()
