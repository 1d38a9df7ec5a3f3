"""scripts/regime_tables.py, which regenerates the per-fold tables of docs/mhim.md and
docs/experiments.md from run folders: values on hand-made runs."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[2]


def _script():
    spec = importlib.util.spec_from_file_location(
        "regime_tables", ROOT / "scripts" / "regime_tables.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(folder: Path, aurocs: dict[int, float], drift: float | None = None) -> Path:
    for fold, auroc in aurocs.items():
        d = folder / "folds" / str(fold)
        d.mkdir(parents=True)
        result = {"fold": fold, "best_epoch": 1, "epochs_run": 3,
                  "test": {"auroc": auroc, "auprc": auroc / 2}}  # fmt: skip
        (d / "result.json").write_text(json.dumps(result))
        hist = {"epoch": [0, 1, 2], "val_loss": [0.7, 0.5, 0.6]}
        if drift is not None:
            hist["teacher_drift"] = [0.0, drift, 2 * drift]
            hist["train_momentum"] = [0.9999] * 3
        pd.DataFrame(hist).to_csv(d / "history.csv", index=False)
    return folder


def test_folds_and_differences_tables(tmp_path):
    rt = _script()
    base = _run(tmp_path / "abmil__baseline", {0: 0.8, 1: 0.6, 2: 0.7})
    full = _run(tmp_path / "abmil__full", {0: 0.9, 1: 0.5}, drift=0.25)
    table = rt.folds_table([base, full])
    rows = [line for line in table.splitlines() if line.startswith("| abmil")]
    assert rows[0].startswith("| abmil__baseline | 3 | 0.700 (0.100) | 0.350 (0.050) | ")
    assert "0: 0.800, 1: 0.600, 2: 0.700" in rows[0] and "| - | - |" in rows[0]
    assert "| 0.250, 0.250 | 0.99990 |" in rows[1]  # drift at the selected epoch (1)
    diff = rt.differences_table([("baseline", base), ("full", full)], [("full", "baseline")])
    row = diff.splitlines()[2]
    assert row == (
        "| full - baseline | 2 (fold(s) 2 missing in one run) | 0: +0.100, 1: -0.100 "
        "| 1 of 2 | +0.000 |"
    )
