"""A 3-class cohort (e.g. normal / subtype A / subtype B) through ``train`` end to end."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pandas as pd
import pytest

from histomil.bags.io import write_bag
from histomil.training import train

from .test_run import write_config


@pytest.fixture(scope="module")
def three_class_cohort(tmp_path_factory):
    """Class 0 bags are background only; class 1 and 2 bags hold 10 % lesion patches shifted
    along one of two directions (two subtypes). Lesion patches are labelled."""
    out = tmp_path_factory.mktemp("mc")
    rng = np.random.default_rng(0)
    rows = []
    for split, per_class in (("train", 12), ("test", 6)):
        for label in (0, 1, 2):
            for i in range(per_class):
                n = int(rng.integers(80, 160))
                x = rng.normal(size=(n, 16)).astype(np.float32)
                lesion = np.zeros(n, dtype=np.int8)
                if label:
                    k = max(3, n // 10)
                    lesion[:k] = 1
                    x[:k, label - 1] += 3.0
                coords = np.stack([np.arange(n) % 20, np.arange(n) // 20], 1) * 448
                sid = f"{split}_{label}_{i:02d}"
                write_bag(
                    out / "bags" / f"{sid}.h5",
                    x,
                    coords.astype(np.int64),
                    patch_labels=lesion,
                    attrs={"patch_size_level0": 448},
                )
                rows.append({"slide_id": sid, "label": label, "split": split})
    pd.DataFrame(rows).to_csv(out / "manifest.csv", index=False)
    return out / "manifest.csv"


@pytest.mark.parametrize(
    ("model", "objective"), [("abmil", "bag"), ("clam_mb", "bag"), ("abmil", "rank_induction")]
)
def test_three_class_run_learns_and_writes_per_class_outputs(
    three_class_cohort, tmp_path, model, objective
):
    cfg = write_config(
        tmp_path / "exp",
        three_class_cohort,
        model={"name": model, "params": {}},
        objective={"name": objective, "params": {}},
        train={"max_epochs": 12, "warmup_epochs": 12, "patience": 12, "lr": 1e-3},
        split={"repeats": 1, "val_fraction": 0.25},
        data={"n_classes": 3},  # declared: never read off the labels
    )
    result = train(cfg, tmp_path / "run")
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    # macro one-vs-rest AUROC over the three classes, on the 18 test slides
    assert metrics["test"]["auroc"]["mean"] > 0.8, metrics["test"]
    assert metrics["test"]["accuracy"]["mean"] > 0.5
    preds = pd.read_csv(result.run_dir / "predictions.csv")
    prob_cols = ["prob_0", "prob_1", "prob_2"]
    np.testing.assert_allclose(preds[prob_cols].sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(preds["pred"], preds[prob_cols].to_numpy().argmax(axis=1))
    test_ids = preds.loc[preds.split == "test", "slide_id"]
    with h5py.File(result.run_dir / "attention" / "0" / f"{test_ids.iloc[0]}.h5") as f:
        assert f["attention"].shape == f["coords"].shape[:1]
