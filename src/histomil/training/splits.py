"""Train/validation/test splits: Monte Carlo repeats or k-fold, stratified, grouped by case.

Every split is made on *groups* (``case_id`` when the manifest has it, else ``slide_id``) so
that no patient's slides end up on two sides; groups are stratified by their label (the maximum
slide label of the group; for survival the event indicator). When a stratum is too small to
stratify, the split falls back to a plain seeded shuffle (and says so in the log).

``split.test``:
- ``manifest``: the test set is the manifest's ``split == "test"`` rows, the same for every fold;
- a fraction: a stratified held-out share (Monte Carlo: redrawn per repeat; k-fold: one fixed
  held-out share, then k folds of train/validation over the rest);
- ``fold`` (k-fold only): each fold is the test set once; validation is drawn from the rest;
- ``none``: no test set.
``split.val``: ``fraction`` (``val_fraction`` of the remaining groups, per fold) or ``manifest``
(the ``split == "val"`` rows).
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from histomil.training.config import SplitConfig
from histomil.training.split_files import FoldSplit, read_split_folder

log = logging.getLogger(__name__)


def _groups(df: pd.DataFrame, task: str) -> pd.DataFrame:
    """One row per group: ``group``, ``stratum``."""
    g = df["case_id"].astype(str) if "case_id" in df.columns else df["slide_id"].astype(str)
    if "case_id" in df.columns:
        g = g.where(df["case_id"].notna(), df["slide_id"].astype(str))
    key = df["event"] if task == "survival" and "event" in df.columns else df["label"]
    table = pd.DataFrame({"group": g.values, "stratum": pd.to_numeric(key).fillna(0).values})
    return table.groupby("group", sort=True)["stratum"].max().reset_index()


def _holdout(groups: pd.DataFrame, fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Split groups into (rest, held) with ``fraction`` held out, stratified when possible."""
    from sklearn.model_selection import train_test_split

    names = groups["group"].tolist()
    n_held = max(1, int(round(fraction * len(names))))
    if n_held >= len(names):
        raise ValueError(f"cannot hold out {fraction:.0%} of {len(names)} group(s)")
    try:
        rest, held = train_test_split(
            names, test_size=n_held, random_state=seed, stratify=groups["stratum"].values
        )
    except ValueError:
        log.warning(
            "split: strata too small to stratify %d groups; using a plain shuffle", len(names)
        )
        rest, held = train_test_split(names, test_size=n_held, random_state=seed)
    return sorted(rest), sorted(held)


def _kfold(groups: pd.DataFrame, k: int, seed: int) -> list[list[str]]:
    """k disjoint parts of the groups, stratified when possible."""
    from sklearn.model_selection import KFold, StratifiedKFold

    names = np.array(groups["group"].tolist())
    if len(names) < k:
        raise ValueError(f"k-fold with k={k} needs at least {k} groups, got {len(names)}")
    try:
        splitter = StratifiedKFold(k, shuffle=True, random_state=seed)
        parts = [names[idx].tolist() for _, idx in splitter.split(names, groups["stratum"].values)]
    except ValueError:
        splitter = KFold(k, shuffle=True, random_state=seed)
        parts = [names[idx].tolist() for _, idx in splitter.split(names)]
    return [sorted(p) for p in parts]


def _slides(df: pd.DataFrame, groups: list[str]) -> tuple[str, ...]:
    key = df["case_id"].astype(str) if "case_id" in df.columns else df["slide_id"].astype(str)
    if "case_id" in df.columns:
        key = key.where(df["case_id"].notna(), df["slide_id"].astype(str))
    chosen = set(groups)
    return tuple(sorted(df.loc[key.isin(chosen), "slide_id"].astype(str)))


def _manifest_part(df: pd.DataFrame, name: str) -> pd.DataFrame:
    if "split" not in df.columns:
        raise ValueError(
            f"split uses the manifest's {name} rows but the manifest has no split column"
        )
    part = df[df["split"].astype(str).str.lower() == name]
    if part.empty:
        raise ValueError(f"the manifest has no rows with split == {name!r}")
    return part


def make_splits(df: pd.DataFrame, spec: SplitConfig, seed: int, task: str) -> list[FoldSplit]:
    """All folds of the run (deterministic for a given manifest, spec and seed)."""
    if spec.scheme == "files":  # CLAM splits_<k>.csv, fixed
        return read_split_folder(spec.dir or ".", df)
    if spec.test == "fold" and spec.scheme != "kfold":
        raise ValueError("split.test: fold needs split.scheme: kfold")
    if spec.val == "manifest" and spec.scheme == "kfold" and spec.test != "fold":
        # each fold's validation would be its k-fold part and the val rows would be dropped
        raise ValueError("split.val: manifest with split.scheme: kfold needs split.test: fold")
    fixed_test: pd.DataFrame | None = None
    pool = df
    if spec.test == "manifest":
        fixed_test = _manifest_part(df, "test")
        pool = df.drop(fixed_test.index)
    elif isinstance(spec.test, float) and spec.scheme == "kfold":
        rest, held = _holdout(_groups(df, task), spec.test, seed)
        fixed_test = df[df["slide_id"].astype(str).isin(_slides(df, held))]
        pool = df.drop(fixed_test.index)
    fixed_val: pd.DataFrame | None = None
    if spec.val == "manifest":
        fixed_val = _manifest_part(pool, "val")
        pool = pool.drop(fixed_val.index)
    folds: list[FoldSplit] = []
    test_ids = () if fixed_test is None else tuple(sorted(fixed_test["slide_id"].astype(str)))
    if spec.scheme == "monte_carlo":
        for r in range(spec.repeats):
            folds.append(_one(pool, spec, seed + r, task, r, test_ids, fixed_val))
        return folds
    parts = _kfold(_groups(pool, task), spec.k, seed)
    for i, part in enumerate(parts):
        held = _slides(pool, part)
        rest = pool[~pool["slide_id"].astype(str).isin(held)]
        if spec.test == "fold":
            val = _val(rest, spec, seed + i, task, fixed_val)
            train = _minus(rest, val)
            folds.append(FoldSplit(i, train, val, held))
        else:
            train = tuple(sorted(rest["slide_id"].astype(str)))
            folds.append(FoldSplit(i, train, held, test_ids))
    return folds


def _minus(df: pd.DataFrame, ids: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(sorted(set(df["slide_id"].astype(str)) - set(ids)))


def _val(pool, spec, seed, task, fixed_val) -> tuple[str, ...]:
    if fixed_val is not None:
        return tuple(sorted(fixed_val["slide_id"].astype(str)))
    _, held = _holdout(_groups(pool, task), spec.val_fraction, seed)
    return _slides(pool, held)


def _one(pool, spec, seed, task, fold, test_ids, fixed_val) -> FoldSplit:
    if isinstance(spec.test, float):
        _, held = _holdout(_groups(pool, task), spec.test, seed)
        test_ids = _slides(pool, held)
        pool = pool[~pool["slide_id"].astype(str).isin(test_ids)]
    val = _val(pool, spec, seed, task, fixed_val)
    return FoldSplit(fold, _minus(pool, val), val, test_ids)


def stratified_subsample(
    ids: list[str], labels: list[int], fraction: float, seed: int
) -> list[str]:
    """A stratified ``fraction`` of ``ids`` (at least one per class), seeded; order kept."""
    if fraction >= 1.0:
        return list(ids)
    rng = np.random.default_rng(seed)
    keep: set[str] = set()
    labels_arr = np.asarray(labels)
    ids_arr = np.asarray(ids)
    for c in np.unique(labels_arr):
        members = ids_arr[labels_arr == c]
        n = max(1, int(round(fraction * len(members))))
        keep.update(rng.choice(members, size=n, replace=False).tolist())
    return [i for i in ids if i in keep]
