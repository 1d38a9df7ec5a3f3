"""Regenerate the per-fold tables of the issue-15 reruns from finished run folders.

Usage (from the repository root, with histomil importable):

    python scripts/regime_tables.py folds RUN_DIR [RUN_DIR ...]
    python scripts/regime_tables.py localization NAME=RUN_DIR [NAME=RUN_DIR ...] [--alphas 1,5,75]

``folds``: one row per run with the test AUROC / AUPRC of every *finished* fold
(``folds/<k>/result.json``), mean (SD) over those folds, the selected epoch, the epochs run, and
from ``history.csv`` at the selected epoch: MHIM's ``teacher_drift`` and ``train_momentum`` and
the attention-threshold fallback count ``attn_fallback`` (training bags whose thresholded weights
were all suppressed) at the first and the selected epoch, when the runs threshold. Folds that did not
finish are listed as missing, never filled in.

``differences``: paired per-fold differences in test AUROC for ``A-B`` pairs of named runs
(``--pairs full-baseline,full-warm_start``): the value per fold (folds both runs finished), how
many folds A is better in, and the mean difference. Folds missing in either run are left out
and named.

``localization``: per run, mean over folds of the per-fold averages over annotated positive test
slides (patches ranked by raw attention scores) of IoU and Dice (lesion-relative top k) and of
the pointing game as the rank-induction paper defines it (top alpha % of all patches) and the
lesion-relative variant, with the per-fold values.

Markdown goes to stdout. Only finished folds are read; nothing is trained.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from histomil.evaluation.stats import fmt_mean_sd, mean_sd


def _mean_sd(values: list[float]) -> str:
    mean, sd, _ = mean_sd(values)
    return fmt_mean_sd(mean, sd, paren=True)


def fold_rows(run: Path) -> list[dict]:
    rows = []
    for res in sorted((run / "folds").glob("*/result.json"), key=lambda p: int(p.parent.name)):
        r = json.loads(res.read_text(encoding="utf-8"))
        hist = pd.read_csv(res.parent / "history.csv")
        at = hist[hist["epoch"] == r["best_epoch"]]
        row = {
            "fold": r["fold"],
            "auroc": r["test"]["auroc"],
            "auprc": r["test"]["auprc"],
            "best_epoch": r["best_epoch"],
            "epochs_run": r["epochs_run"],
        }
        for col in ("teacher_drift", "train_momentum", "attn_fallback"):
            if col in hist and len(at):
                row[col] = float(at[col].iloc[0])
        if "attn_fallback" in hist:
            row["fallback_first"] = float(hist["attn_fallback"].iloc[0])
        rows.append(row)
    return rows


def folds_table(runs: list[Path]) -> str:
    all_rows = {run: fold_rows(run) for run in runs}
    fallback = any("attn_fallback" in r for rows in all_rows.values() for r in rows)
    head = (
        "| run | folds | test AUROC mean (SD) | AUPRC mean (SD) | per-fold AUROC | best epoch "
        "| epochs run | teacher drift at best epoch | momentum/step |"
    )
    lines = [
        head + (" fallback bags, first epoch | fallback bags, best epoch |" if fallback else ""),
        "|---" * (11 if fallback else 9) + "|",
    ]
    for run, rows in all_rows.items():
        au = [r["auroc"] for r in rows]
        per = ", ".join(f"{r['fold']}: {r['auroc']:.3f}" for r in rows)
        drift = ", ".join(f"{r['teacher_drift']:.3f}" for r in rows if "teacher_drift" in r)
        mom = sorted({f"{r['train_momentum']:.5f}" for r in rows if "train_momentum" in r})
        lines.append(
            f"| {run.name} | {len(rows)} | {_mean_sd(au)} | {_mean_sd([r['auprc'] for r in rows])} "
            f"| {per} | {', '.join(str(r['best_epoch']) for r in rows)} "
            f"| {', '.join(str(r['epochs_run']) for r in rows)} | {drift or '-'} "
            f"| {', '.join(mom) or '-'} |"
            + (
                f" {_ints(rows, 'fallback_first')} | {_ints(rows, 'attn_fallback')} |"
                if fallback
                else ""
            )
        )
    return "\n".join(lines) + "\n"


def _ints(rows: list[dict], key: str) -> str:
    return ", ".join(str(int(r[key])) for r in rows if key in r) or "-"


def localization_table(named: list[tuple[str, Path]], alphas: list[float]) -> str:
    from histomil.experiments.attention import localization_rows

    metrics = ("iou", "dice", "pointing", "pointing_lesion")
    lines = [
        "| run | alpha (%) | folds | IoU | Dice | pointing (paper: top alpha % of all patches) "
        "| pointing_lesion (top alpha % of lesion count) | pointing per fold |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, run in named:
        rows = pd.DataFrame(localization_rows(name, run, alphas, "scores"))
        for a in alphas:
            sel = rows[rows.alpha == float(a)]
            cells = [_mean_sd(sel[m].tolist()) for m in metrics]
            per = ", ".join(f"{p:.3f}" for p in sel["pointing"])
            lines.append(f"| {name} | {a:g} | {len(sel)} | " + " | ".join(cells) + f" | {per} |")
    return "\n".join(lines) + "\n"


def differences_table(named: list[tuple[str, Path]], pairs: list[tuple[str, str]]) -> str:
    runs = dict(named)
    auroc = {name: {r["fold"]: r["auroc"] for r in fold_rows(run)} for name, run in named}
    lines = [
        "| comparison | folds | per fold (fold: difference) | folds better | mean difference |",
        "|---|---|---|---|---|",
    ]
    for a, b in pairs:
        if a not in runs or b not in runs:
            raise SystemExit(f"pair {a}-{b}: name the runs as NAME=RUN_DIR")
        folds = sorted(set(auroc[a]) & set(auroc[b]))
        diff = [auroc[a][k] - auroc[b][k] for k in folds]
        missing = sorted(set(auroc[a]) ^ set(auroc[b]))
        per = ", ".join(f"{k}: {d:+.3f}" for k, d in zip(folds, diff, strict=True))
        note = f" (fold(s) {', '.join(map(str, missing))} missing in one run)" if missing else ""
        better = sum(d > 0 for d in diff)
        mean = f"{sum(diff) / len(diff):+.3f}" if diff else "n/a"
        lines.append(
            f"| {a} - {b} | {len(folds)}{note} | {per} | {better} of {len(diff)} | {mean} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("folds")
    f.add_argument("runs", nargs="+", type=Path)
    loc = sub.add_parser("localization")
    loc.add_argument("runs", nargs="+", help="NAME=RUN_DIR")
    loc.add_argument("--alphas", default="1,5,10,20,50,75,100")
    dif = sub.add_parser("differences")
    dif.add_argument("runs", nargs="+", help="NAME=RUN_DIR")
    dif.add_argument("--pairs", required=True, help="A-B,C-D (run names)")
    args = parser.parse_args()
    if args.cmd == "folds":
        print(folds_table(args.runs))
    elif args.cmd == "differences":
        named = [(s.split("=", 1)[0], Path(s.split("=", 1)[1])) for s in args.runs]
        pairs = [tuple(p.split("-", 1)) for p in args.pairs.split(",")]
        print(differences_table(named, pairs))
    else:
        named = [(s.split("=", 1)[0], Path(s.split("=", 1)[1])) for s in args.runs]
        print(localization_table(named, [float(a) for a in args.alphas.split(",")]))


if __name__ == "__main__":
    main()
