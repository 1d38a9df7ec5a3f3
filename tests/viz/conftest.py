"""A tiny training run directory written by the tests: slide PNG, attention files, predictions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

PS0 = 128  # level-0 patch side
SLIDE_W, SLIDE_H = 1536, 1024
LESION = (640, 384, 1024, 768)  # x0, y0, x1, y1 in level-0 px


def write_slide_png(path: Path) -> Path:
    """Pink tissue ellipse with a dark purple lesion square on white."""
    from PIL import Image

    yy, xx = np.mgrid[0:SLIDE_H, 0:SLIDE_W]
    img = np.full((SLIDE_H, SLIDE_W, 3), 245, dtype=np.uint8)
    tissue = ((xx - 760) / 640.0) ** 2 + ((yy - 520) / 420.0) ** 2 < 1
    img[tissue] = (230, 160, 200)
    x0, y0, x1, y1 = LESION
    img[y0:y1, x0:x1] = (120, 40, 140)
    Image.fromarray(img).save(path)
    return path


def tissue_coords() -> np.ndarray:
    xs, ys = np.meshgrid(np.arange(0, SLIDE_W, PS0), np.arange(0, SLIDE_H, PS0))
    xy = np.stack([xs.ravel(), ys.ravel()], 1)
    cx, cy = xy[:, 0] + PS0 / 2, xy[:, 1] + PS0 / 2
    keep = ((cx - 760) / 640.0) ** 2 + ((cy - 520) / 420.0) ** 2 < 1
    return xy[keep].astype(np.int64)


def lesion_labels(coords: np.ndarray) -> np.ndarray:
    x0, y0, x1, y1 = LESION
    inside = (coords[:, 0] >= x0) & (coords[:, 0] < x1) & (coords[:, 1] >= y0) & (coords[:, 1] < y1)
    return inside.astype(np.int8)


def write_attention(
    path: Path,
    coords: np.ndarray,
    attrs: dict,
    *,
    positive: bool,
    seed: int,
    instance_prob: bool = True,
) -> None:
    import h5py

    rng = np.random.default_rng(seed)
    labels = lesion_labels(coords) if positive else np.zeros(len(coords), np.int8)
    scores = rng.normal(0, 1, len(coords)) + 3.0 * labels
    att = np.exp(scores) / np.exp(scores).sum()
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f["coords"] = coords
        f["attention"] = att.astype(np.float32)
        f["scores"] = scores.astype(np.float32)
        if instance_prob:
            f["instance_prob"] = (1 / (1 + np.exp(-(scores - 1)))).astype(np.float32)
        f["patch_labels"] = labels if positive else np.full(len(coords), 0, np.int8)
        for k, v in attrs.items():
            f.attrs[k] = v


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory) -> Path:
    """RUN/ with 2 folds x 4 test slides (+ val rows), one slide readable as a PNG."""
    root = tmp_path_factory.mktemp("run")
    slide_png = write_slide_png(root / "slide_pos0.png")
    coords = tissue_coords()
    rng = np.random.default_rng(0)
    rows = []
    for fold in (0, 1):
        for j in range(6):
            sid = f"slide_{'pos' if j % 2 == 0 else 'neg'}{fold * 6 + j}"
            label = int(j % 2 == 0)
            prob = float(np.clip(0.5 + (0.35 if label else -0.35) + rng.normal(0, 0.2), 0.01, 0.99))
            split = "test" if j < 4 else "val"
            rows.append((fold, sid, label, prob, split))
            slide_path = str(slide_png) if sid == "slide_pos0" else str(root / f"missing/{sid}.svs")
            attrs = {
                "slide_id": sid,
                "label": label,
                "prob": prob,
                "split": split,
                "model": "abmil",
                "bag_path": str(root / f"bags/{sid}.h5"),
                "slide_path": slide_path,
                "patch_size_level0": PS0,
            }
            write_attention(
                root / "attention" / str(fold) / f"{sid}.h5",
                coords,
                attrs,
                positive=bool(label),
                seed=fold * 10 + j,
                instance_prob=fold == 0,
            )
    lines = ["fold,slide_id,label,prob,split"] + [
        f"{f},{s},{y},{p:.6f},{sp}" for f, s, y, p, sp in rows
    ]
    (root / "predictions.csv").write_text("\n".join(lines) + "\n")
    (root / "config.yaml").write_text(
        "model:\n  name: abmil\n  dim: 128\nobjective: rank\nseed: 0\n"
    )
    metrics = {
        "folds": {"0": {"auroc": 0.9, "auprc": 0.88}, "1": {"auroc": 0.8, "auprc": 0.75}},
        "mean": {"auroc": 0.85, "auprc": 0.815},
        "sd": {"auroc": 0.07, "auprc": 0.09},
    }
    (root / "metrics.json").write_text(json.dumps(metrics))
    for fold in (0, 1):
        hist = root / "folds" / str(fold) / "history.csv"
        hist.parent.mkdir(parents=True, exist_ok=True)
        hist.write_text("epoch,train_loss,val_loss\n0,0.7,0.69\n1,0.5,0.55\n2,0.4,0.5\n")
    return root
