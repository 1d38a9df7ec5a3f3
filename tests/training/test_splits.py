from __future__ import annotations

import pandas as pd
import pytest

from histomil.training.config import SplitConfig
from histomil.training.splits import make_splits, stratified_subsample


def _manifest(n_cases: int = 20) -> pd.DataFrame:
    rows = []
    for c in range(n_cases):
        for s in range(2):
            rows.append(
                {"slide_id": f"c{c}_s{s}", "case_id": f"c{c}", "label": c % 2, "split": "train"}
            )
    df = pd.DataFrame(rows)
    df.loc[df["case_id"].isin(["c0", "c1", "c2", "c3"]), "split"] = "test"
    return df


def _case(sid: str) -> str:
    return sid.split("_")[0]


@pytest.mark.parametrize(
    "spec",
    [
        SplitConfig(scheme="monte_carlo", repeats=3, val_fraction=0.25, test="manifest"),
        SplitConfig(scheme="monte_carlo", repeats=2, val_fraction=0.25, test=0.2),
        SplitConfig(scheme="kfold", k=4, test="manifest"),
        SplitConfig(scheme="kfold", k=4, val_fraction=0.25, test="fold"),
    ],
)
def test_splits_are_disjoint_grouped_and_deterministic(spec):
    df = _manifest()
    folds = make_splits(df, spec, seed=1, task="classification")
    assert len(folds) == spec.n_folds
    assert folds == make_splits(df, spec, seed=1, task="classification")
    for f in folds:
        parts = [set(f.train), set(f.val), set(f.test)]
        assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
        cases = [{_case(s) for s in p} for p in parts]
        assert not (cases[0] & cases[1]) and not (cases[0] & cases[2]) and not (cases[1] & cases[2])
        labels = df.set_index("slide_id").loc[list(f.val), "label"]
        assert set(labels) == {0, 1}  # stratified
    if spec.test == "manifest":
        assert all(set(f.test) == set(df.loc[df.split == "test", "slide_id"]) for f in folds)


def test_stratified_subsample():
    ids = [f"s{i}" for i in range(20)]
    labels = [i % 2 for i in range(20)]
    sub = stratified_subsample(ids, labels, 0.2, seed=0)
    assert len(sub) == 4 and sum(int(s[1:]) % 2 for s in sub) == 2
    assert sub == stratified_subsample(ids, labels, 0.2, seed=0)
