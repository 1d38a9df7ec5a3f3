"""Pinned fold data: survival time bins come from the training bags only (no test-data leak)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import yaml

from histomil.evaluation.survival import discretize, time_bins
from histomil.training.config import load_config
from histomil.training.fold import load_fold_data
from histomil.training.splits import FoldSplit


def test_survival_bins_are_fitted_on_training_bags_only(survival_cohort, tmp_path):
    """Issue 22 (2): train on the 20 shortest-lived cases, so bins fitted on all cases differ."""
    cfg = {
        "data": {"manifest": str(survival_cohort), "bags": str(survival_cohort.parent / "bags")},
        "task": "survival",
        "model": {"name": "abmil", "params": {}},
        "objective": {"name": "bag", "params": {}},
        "train": {"survival_bins": 4, "seed": 0},
        "split": {"scheme": "monte_carlo", "repeats": 1, "test": "manifest"},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    config = load_config(tmp_path / "config.yaml")
    df = pd.read_csv(survival_cohort, dtype={"slide_id": str, "case_id": str})
    per_case = df.groupby("case_id").agg(time=("time", "first"), event=("event", "first"))
    order = per_case.sort_values("time").index.tolist()
    slides = {c: sorted(df.loc[df["case_id"] == c, "slide_id"]) for c in order}
    train_cases, val_cases, test_cases = order[:20], order[20:40], order[40:]
    split = FoldSplit(
        0,
        tuple(s for c in train_cases for s in slides[c]),
        tuple(s for c in val_cases for s in slides[c]),
        tuple(s for c in test_cases for s in slides[c]),
    )
    data = load_fold_data(config, split, seed=0)
    assert sorted(b.slide_id for b in data.train) == sorted(train_cases)  # patient-level bags
    train = per_case.loc[train_cases]
    edges = time_bins(train["time"].to_numpy(), train["event"].to_numpy(), 4)
    leaky = time_bins(per_case["time"].to_numpy(), per_case["event"].to_numpy(), 4)
    for bags in (data.train, data.val, data.test):
        times = np.array([b.time for b in bags])
        assert [int(b.label) for b in bags] == discretize(times, edges).tolist()
    # the check can fail: bins over all cases would label the bags differently
    everyone = data.train + data.val + data.test
    times = np.array([b.time for b in everyone])
    assert discretize(times, edges).tolist() != discretize(times, leaky).tolist()
    # every val/test case outlives the training cases: all in the open last bin
    assert {int(b.label) for b in data.test} == {3}
