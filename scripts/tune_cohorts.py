"""Choose a synthetic cohort's difficulty on separate tuning cohorts, from validation AUROC only.

Usage (from the repository root, with histomil importable):

    python scripts/tune_cohorts.py demo OUT [--points 0.4:0.6,1:1] [--seed 1] [--n-slides 16]
        [--size 2000x1500] [--folds 2] [--max-epochs 40] [--no-train]
    python scripts/tune_cohorts.py bags OUT [--signals 3,4,5] [--seed 1] [--folds 2]
        [--preset camelyon16-small] [--train 30,42]

``demo``: each point ``contrast:scale`` (``SlideSynthConfig.lesion_contrast`` /
``lesion_scale``) runs the demo's own steps (synthetic slides, preprocess, label, extract with the
seeded random ``resnet50_trunc``) on ``--n-slides`` slides made with ``--seed`` (default 1; the
demo uses seed 0, so the demo's own slides are never looked at), then trains AB-MIL with the
demo's training code (:func:`histomil.demo.training.train_method`: the full run's lr, warm-up and
patience, with ``--max-epochs`` and ``--folds``).

``bags``: per ``signal``, a ``histomil synth bags`` cohort of ``--preset`` with *only* a training
split (``--train POS,NEG`` slides, seed 1: no test slide is generated) and AB-MIL trained with
the training section of ``configs/synthetic/mhim-regime.yaml`` (cosine lr, 40 epochs, warm-up
10, patience 30, one thread), Monte Carlo validation of 20 %, ``split.test: none``.

Both print per fold the **validation** AUROC at the first epoch, at the trainer's selected epoch
and its maximum, the selected epoch and the epochs run (``demo`` also the patch-level feature
separation the demo prints). No test metric is read or computed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = ("fold", "val_auroc_first", "val_auroc_selected", "val_auroc_max", "selected", "epochs")
HEADER = "fold | val AUROC first epoch | val AUROC selected | val AUROC max | selected epoch | epochs run"


def validation_rows(run: Path) -> list[dict]:
    """Per fold, from ``history.csv`` and the selected epoch of ``result.json``: validation AUROC
    at the first epoch, at the selected epoch and its maximum; never the test metrics."""
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
                "selected": int(best),
                "epochs": int(hist["epoch"].max()),
            }
        )
    return rows


def _cells(row: dict) -> str:
    vals = [row.get(k, "") for k in COLUMNS]
    return " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in vals)


def tune_demo(args: argparse.Namespace) -> None:
    from histomil.demo.data import (
        feature_separation,
        step_extract,
        step_label,
        step_preprocess,
        step_synthetic_slides,
    )
    from histomil.demo.settings import FULL, DemoPaths
    from histomil.demo.training import train_method

    w, h = (int(v) for v in args.size.lower().split("x"))
    lines = [f"| contrast | scale | direction AUROC (patches) | {HEADER} |", "|---" * 9 + "|"]
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
        rows = (
            []
            if args.no_train
            else validation_rows(train_method("abmil", paths, settings, args.seed, workers=1))
        )
        for r in rows or [{}]:
            lines.append(f"| {contrast:g} | {scale:g} | {sep:.3f} | {_cells(r)} |")
        print("\n".join(lines), flush=True)


def tune_bags(args: argparse.Namespace) -> None:
    import yaml

    from histomil.synth.bags import generate_bags
    from histomil.training.config import config_from_dict
    from histomil.training.run import train

    regime = yaml.safe_load((ROOT / "configs/synthetic/mhim-regime.yaml").read_text())
    pos, neg = (int(v) for v in args.train.split(","))
    lines = [f"| preset | signal | {HEADER} |", "|---" * 8 + "|"]
    for signal in (float(s) for s in args.signals.split(",")):
        data = (args.out / f"{args.preset}_signal{signal:g}").resolve()
        if not (data / "manifest.csv").is_file():
            generate_bags(
                data, args.preset, seed=args.seed, signal=signal, splits=(("train", pos, neg),)
            )
        raw = {
            "data": {"manifest": str(data / "manifest.csv"), "bags": str(data / "bags")},
            "task": "classification",
            "model": {"name": "abmil"},
            "objective": {"name": "bag"},
            "train": regime["train"],
            "split": {"scheme": "monte_carlo", "repeats": args.folds, "test": "none"},
            "output": {"attention": False, "save_checkpoints": False},
        }
        run = data.parent / f"{data.name}_abmil"
        train(config_from_dict(raw), run)
        for r in validation_rows(run):
            lines.append(f"| {args.preset} | {signal:g} | {_cells(r)} |")
        print("\n".join(lines), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="what", required=True)
    demo = sub.add_parser("demo")
    demo.add_argument("out", type=Path)
    demo.add_argument("--points", default="0.4:0.6,1:1")
    demo.add_argument("--seed", type=int, default=1)
    demo.add_argument("--n-slides", type=int, default=16)
    demo.add_argument("--size", default="2000x1500")
    demo.add_argument("--folds", type=int, default=2)
    demo.add_argument("--max-epochs", type=int, default=40)
    demo.add_argument("--no-train", action="store_true")
    bags = sub.add_parser("bags")
    bags.add_argument("out", type=Path)
    bags.add_argument("--signals", default="3,4,5")
    bags.add_argument("--seed", type=int, default=1)
    bags.add_argument("--folds", type=int, default=2)
    bags.add_argument("--preset", default="camelyon16-small")
    bags.add_argument("--train", default="30,42")
    args = ap.parse_args()
    (tune_demo if args.what == "demo" else tune_bags)(args)


if __name__ == "__main__":
    main()
