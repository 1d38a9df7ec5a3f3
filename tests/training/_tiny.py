"""Tiny hand-made cohorts (8-d features, 20-40 patches) for fast end-to-end training tests."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from histomil.bags.io import write_bag


def write_tiny_bag(path: Path, label: int, seed: int, dim: int = 8) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 40))
    x = rng.normal(size=(n, dim)).astype(np.float32)
    lesion = np.zeros(n, dtype=np.int8)
    if label:
        lesion[: max(2, n // 5)] = 1
        x[lesion == 1, 0] += 3.0
    coords = np.stack([np.arange(n) % 8, np.arange(n) // 8], 1).astype(np.int64) * 256
    write_bag(path, x, coords, patch_labels=lesion, attrs={"patch_size_level0": 256})


def tiny_cohort(
    folder: Path,
    ids: Sequence[str] | None = None,
    labels: Sequence[Any] | None = None,
    splits: Sequence[str] | None = None,
    case_ids: Sequence[str] | None = None,
    dim: int = 8,
) -> Path:
    """Bags under ``folder/bags`` and ``folder/manifest.csv``; returns the manifest path.

    Default: 24 slides ``s00..s23``, alternating labels 0/1, the last 6 in the test split.
    """
    ids = list(ids) if ids is not None else [f"s{i:02d}" for i in range(24)]
    labels = list(labels) if labels is not None else [i % 2 for i in range(len(ids))]
    if splits is None:
        splits = ["train"] * (len(ids) - 6) + ["test"] * 6
    for i, (sid, label) in enumerate(zip(ids, labels, strict=True)):
        as_int = 1 if str(label).lower() in ("1", "tumor", "positive") else 0
        write_tiny_bag(folder / "bags" / f"{sid}.h5", as_int, seed=i, dim=dim)
    rows: dict[str, Any] = {"slide_id": ids, "label": labels, "split": list(splits)}
    if case_ids is not None:
        rows["case_id"] = list(case_ids)
    folder.mkdir(parents=True, exist_ok=True)
    # written by hand so ids and labels are exactly the text given (no pandas formatting)
    frame = pd.DataFrame(rows).astype(str)
    (folder / "manifest.csv").write_text(frame.to_csv(index=False))
    return folder / "manifest.csv"


def tiny_config(manifest: Path, **sections: Any) -> dict[str, Any]:
    """A raw config dict for a 2-epoch AB-MIL run on a tiny cohort (sections merged in)."""
    cfg: dict[str, Any] = {
        "data": {"manifest": str(manifest), "bags": str(manifest.parent / "bags")},
        "model": {"name": "abmil", "params": {"hidden": 16, "attn_dim": 8}},
        "objective": {"name": "bag", "params": {}},
        "train": {"max_epochs": 2, "warmup_epochs": 1, "patience": 1, "seed": 0, "threads": 1},
        "split": {"scheme": "monte_carlo", "repeats": 2, "val_fraction": 0.3, "test": "manifest"},
        "output": {"attention": False, "save_checkpoints": True},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    return cfg
