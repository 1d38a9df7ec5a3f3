"""Pinned splits: every path of ``make_splits`` against an independent scikit-learn oracle.

The oracle rebuilds each fold from the documented rule (groups = cases, sorted; stratum = the
maximum slide label of a case, or the event for survival; StratifiedKFold / train_test_split with
the documented seeds) so a changed seed, stratum, group or fold assignment shows up as a
different set of slide ids.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import KFold, StratifiedKFold, train_test_split

from histomil.training.config import SplitConfig
from histomil.training.splits import FoldSplit, make_splits, stratified_subsample


def _mixed_manifest() -> pd.DataFrame:
    """12 cases of two slides: c0-c3 have one normal (0) and one tumour (1) slide, the rest are
    normal; c4-c5 have a missing case_id on their second slide (its own group then)."""
    rows = []
    for c in range(12):
        labels = (1, 0) if c in (0, 2) else (0, 1) if c in (1, 3) else (0, 0)
        for s, label in enumerate(labels):
            rows.append({"slide_id": f"c{c:02d}_s{s}", "case_id": f"c{c:02d}", "label": label})
    df = pd.DataFrame(rows)
    df.loc[df["slide_id"].isin(["c04_s1", "c05_s1"]), "case_id"] = np.nan
    return df


def _group_of(df: pd.DataFrame) -> pd.Series:
    if "case_id" not in df.columns:
        return pd.Series(df["slide_id"].astype(str).values, index=df["slide_id"].astype(str))
    g = df["case_id"].astype(object).where(df["case_id"].notna(), df["slide_id"])
    return pd.Series(g.astype(str).values, index=df["slide_id"].astype(str))


def _oracle_groups(df: pd.DataFrame, key: str = "label") -> tuple[np.ndarray, np.ndarray]:
    """Sorted group names and their strata = max of ``key`` over the group's slides."""
    g = _group_of(df)
    strata = df.assign(group=g.values).groupby("group")[key].max().sort_index()
    return strata.index.to_numpy(), strata.to_numpy()


def _slides_of(df: pd.DataFrame, groups) -> tuple[str, ...]:
    g = _group_of(df)
    return tuple(sorted(g.index[g.isin(set(groups))]))


def _holdout(df, fraction, seed, key="label"):
    names, strata = _oracle_groups(df, key)
    n_held = max(1, int(round(fraction * len(names))))
    _, held = train_test_split(list(names), test_size=n_held, random_state=seed, stratify=strata)
    return _slides_of(df, held)


def _kfold_parts(df, k, seed, key="label", stratified=True):
    names, strata = _oracle_groups(df, key)
    if stratified:
        split = StratifiedKFold(k, shuffle=True, random_state=seed).split(names, strata)
    else:
        split = KFold(k, shuffle=True, random_state=seed).split(names)
    return [_slides_of(df, names[idx]) for _, idx in split]


def _minus(df, *parts) -> tuple[str, ...]:
    drop = set().union(*map(set, parts))
    return tuple(sorted(set(df["slide_id"]) - drop))


def test_stratum_of_a_case_is_its_maximum_slide_label():
    """Issue 22 (5): c0-c3 (labels 0 and 1) are positive cases, so every k-fold part gets one."""
    df = _mixed_manifest()
    mixed = {"c00", "c01", "c02", "c03"}
    for seed in range(5):
        folds = make_splits(
            df, SplitConfig(scheme="kfold", k=4, test="none"), seed, "classification"
        )
        for fold in folds:
            assert len({s[:3] for s in fold.val} & mixed) == 1, (seed, fold.val)
        # and the parts are exactly StratifiedKFold's on (case, max label)
        assert [f.val for f in folds] == _kfold_parts(df, 4, seed)


def test_kfold_with_manifest_test_matches_stratified_kfold():
    df = _mixed_manifest()
    df["split"] = "train"
    df.loc[df["case_id"].isin(["c10", "c11"]), "split"] = "TEST"
    spec = SplitConfig(scheme="kfold", k=3, test="manifest")
    folds = make_splits(df, spec, seed=3, task="classification")
    test = tuple(sorted(df.loc[df["split"] == "TEST", "slide_id"]))
    pool = df[df["split"] != "TEST"]
    expected = [
        FoldSplit(i, _minus(pool, part), part, test)
        for i, part in enumerate(_kfold_parts(pool, 3, 3))
    ]
    assert folds == expected


def test_kfold_with_fold_as_test_draws_validation_from_the_rest():
    df = _mixed_manifest()
    spec = SplitConfig(scheme="kfold", k=4, val_fraction=0.25, test="fold")
    folds = make_splits(df, spec, seed=5, task="classification")
    assert len(folds) == 4
    for i, (fold, part) in enumerate(zip(folds, _kfold_parts(df, 4, 5), strict=True)):
        rest = df[~df["slide_id"].isin(part)]
        val = _holdout(rest, 0.25, 5 + i)
        assert fold == FoldSplit(i, _minus(rest, val), val, part)
    # every slide is a test slide exactly once
    tests = [s for f in folds for s in f.test]
    assert sorted(tests) == sorted(df["slide_id"])


def test_kfold_with_a_held_out_fraction_keeps_one_fixed_test_set():
    df = _mixed_manifest()
    spec = SplitConfig(scheme="kfold", k=3, test=0.25)
    folds = make_splits(df, spec, seed=2, task="classification")
    test = _holdout(df, 0.25, 2)
    assert len({_group_of(df)[s] for s in test}) == 4  # round(0.25 * 14 groups)
    pool = df[~df["slide_id"].isin(test)]
    expected = [
        FoldSplit(i, _minus(pool, part), part, test)
        for i, part in enumerate(_kfold_parts(pool, 3, 2))
    ]
    assert folds == expected


def test_fixed_validation_and_test_from_the_manifest():
    df = _mixed_manifest()
    df["split"] = "train"
    df.loc[df["case_id"] == "c11", "split"] = "test"
    df.loc[df["case_id"].isin(["c09", "c10"]), "split"] = "val"
    for spec in (
        SplitConfig(scheme="monte_carlo", repeats=2, val="manifest", test="manifest"),
        SplitConfig(scheme="kfold", k=2, val="manifest", test="fold"),
    ):
        folds = make_splits(df, spec, seed=0, task="classification")
        val = tuple(sorted(df.loc[df["split"] == "val", "slide_id"]))
        for fold in folds:
            assert fold.val == val
            assert not set(fold.train) & set(val)
        if spec.scheme == "monte_carlo":
            assert all(f.test == ("c11_s0", "c11_s1") for f in folds)
            assert all(f.train == _minus(df, val, ("c11_s0", "c11_s1")) for f in folds)
        else:
            pool = df[df["split"] != "val"]
            parts = _kfold_parts(pool, 2, 0)
            assert [f.test for f in folds] == parts
            assert [f.train for f in folds] == [_minus(pool, p) for p in parts]


def test_monte_carlo_with_a_test_fraction_redraws_per_repeat():
    df = _mixed_manifest()
    spec = SplitConfig(scheme="monte_carlo", repeats=3, val_fraction=0.3, test=0.2)
    folds = make_splits(df, spec, seed=10, task="classification")
    for r, fold in enumerate(folds):
        test = _holdout(df, 0.2, 10 + r)
        rest = df[~df["slide_id"].isin(test)]
        val = _holdout(rest, 0.3, 10 + r)
        assert fold == FoldSplit(r, _minus(rest, val), val, test)
    assert len({f.test for f in folds}) > 1


def test_survival_splits_stratify_by_the_event_of_a_case():
    df = _mixed_manifest()
    # events: positive for c00-c05 only on one slide; labels are irrelevant for survival
    df["event"] = [int(s.endswith("_s1") and int(s[1:3]) < 6) for s in df["slide_id"]]
    df["label"] = 0
    folds = make_splits(df, SplitConfig(scheme="kfold", k=3, test="none"), 4, "survival")
    assert [f.val for f in folds] == _kfold_parts(df, 3, 4, key="event")
    assert [f.val for f in folds] != _kfold_parts(df, 3, 4, key="label", stratified=False)


def test_kfold_falls_back_to_a_plain_shuffle_when_strata_are_too_small(caplog):
    df = pd.DataFrame({"slide_id": [f"s{i}" for i in range(4)], "label": [0, 1, 2, 3]})
    folds = make_splits(df, SplitConfig(scheme="kfold", k=2, test="none"), 0, "classification")
    assert [f.val for f in folds] == _kfold_parts(df, 2, 0, stratified=False)
    mc = make_splits(
        df, SplitConfig(scheme="monte_carlo", repeats=1, val_fraction=0.5, test="none"), 1, "x"
    )
    _, held = train_test_split([f"s{i}" for i in range(4)], test_size=2, random_state=1)
    assert mc[0].val == tuple(sorted(held))
    assert "split: strata too small to stratify 4 groups; using a plain shuffle" in caplog.messages


def test_split_errors():
    df = _mixed_manifest()
    with pytest.raises(ValueError, match="^split.test: fold needs split.scheme: kfold$"):
        make_splits(df, SplitConfig(scheme="monte_carlo", test="fold"), 0, "classification")
    with pytest.raises(ValueError, match="needs at least 20 groups, got 14"):
        make_splits(df, SplitConfig(scheme="kfold", k=20, test="none"), 0, "classification")
    with pytest.raises(ValueError, match="no split column"):
        make_splits(df, SplitConfig(test="manifest"), 0, "classification")
    with pytest.raises(ValueError, match="no rows with split == 'test'"):
        make_splits(df.assign(split="train"), SplitConfig(test="manifest"), 0, "classification")
    df_val = df.assign(split=["val"] * 4 + ["train"] * 20)
    for test in ("none", "manifest", 0.25):
        # the val rows were silently dropped and each fold validated on its k-fold part
        with pytest.raises(
            ValueError,
            match="^split.val: manifest with split.scheme: kfold needs split.test: fold$",
        ):
            make_splits(df_val, SplitConfig(scheme="kfold", k=2, val="manifest", test=test), 0, "x")
    with pytest.raises(ValueError, match="cannot hold out"):
        make_splits(df, SplitConfig(repeats=1, val_fraction=0.99, test="none"), 0, "classification")


def test_stratified_subsample_matches_a_hand_replay():
    ids = [f"s{i}" for i in range(23)]
    labels = [0] * 15 + [1] * 6 + [2] * 2
    sub = stratified_subsample(ids, labels, 0.34, seed=4)
    rng = np.random.default_rng(4)
    keep = set()
    for c, n in ((0, 5), (1, 2), (2, 1)):  # round(0.34 * count), at least one
        members = np.array([i for i, lab in zip(ids, labels, strict=True) if lab == c])
        keep |= set(rng.choice(members, size=n, replace=False).tolist())
    assert sub == [i for i in ids if i in keep]
    assert stratified_subsample(ids, labels, 1.0, seed=4) == ids


def test_stratified_subsample_keeps_everything_from_a_fraction_of_one_up():
    """Mutation survivor (``>= 1.0`` -> ``>= 2.0``): a fraction above 1 keeps every id instead of
    asking for more samples than a class has."""
    ids = ["b", "a", "c", "d"]
    assert stratified_subsample(ids, [1, 0, 1, 0], 1.5, seed=0) == ids


def test_monte_carlo_survival_test_fraction_is_stratified_by_the_event():
    """Mutation survivor (``_one``: the test holdout grouped with task ``None``): the per-repeat
    test share of a survival run is stratified by the event, like the validation share."""
    df = _mixed_manifest()
    df["event"] = [int(s.endswith("_s1") and int(s[1:3]) < 6) for s in df["slide_id"]]
    df["label"] = 0
    spec = SplitConfig(scheme="monte_carlo", repeats=3, val_fraction=0.3, test=0.3)
    folds = make_splits(df, spec, seed=1, task="survival")
    by_label = []
    for r, fold in enumerate(folds):
        test = _holdout(df, 0.3, 1 + r, key="event")
        rest = df[~df["slide_id"].isin(test)]
        val = _holdout(rest, 0.3, 1 + r, key="event")
        assert fold == FoldSplit(r, _minus(rest, val), val, test)
        by_label.append(_holdout(df, 0.3, 1 + r, key="label"))
    assert [f.test for f in folds] != by_label


def test_files_scheme_reads_the_folder_given_or_the_current_one(tmp_path, monkeypatch):
    from histomil.training.split_files import write_split_files

    folds = [FoldSplit(0, ("a", "b"), ("c",), ("d",)), FoldSplit(1, ("c", "d"), ("a",), ("b",))]
    write_split_files(folds, tmp_path)
    df = pd.DataFrame({"slide_id": list("abcd"), "label": [0, 1, 0, 1]})
    spec = SplitConfig(scheme="files", dir=str(tmp_path), test="fold")  # test is ignored
    assert make_splits(df, spec, 0, "classification") == folds
    monkeypatch.chdir(tmp_path)
    assert make_splits(df, SplitConfig(scheme="files"), 0, "classification") == folds


def test_a_tiny_fraction_still_holds_out_one_group():
    """Mutation survivor (``max(1, ...)`` -> ``max(2, ...)``): round(0.03 * 14 groups) = 0, so
    exactly one case is held out (by a plain shuffle: one group cannot hold both strata)."""
    df = _mixed_manifest()
    spec = SplitConfig(scheme="monte_carlo", repeats=2, val_fraction=0.03, test="none")
    names = list(_oracle_groups(df)[0])
    for r, fold in enumerate(make_splits(df, spec, 6, "classification")):
        _, held = train_test_split(names, test_size=1, random_state=6 + r)
        assert fold.val == _slides_of(df, held)
        assert len({_group_of(df)[s] for s in fold.val}) == 1


@pytest.mark.parametrize(
    "spec",
    [
        SplitConfig(scheme="kfold", k=3, test="none"),
        SplitConfig(scheme="kfold", k=3, test=0.25),
        SplitConfig(scheme="kfold", k=3, val_fraction=0.3, test="fold"),
        SplitConfig(scheme="monte_carlo", repeats=2, val_fraction=0.3, test=0.2),
    ],
)
def test_splits_do_not_depend_on_the_row_order_of_the_manifest(spec):
    """Groups are sorted by name before any draw, so a shuffled manifest gives the same folds."""
    df = _mixed_manifest()
    shuffled = df.sample(frac=1.0, random_state=3).reset_index(drop=True)
    assert shuffled["slide_id"].tolist() != df["slide_id"].tolist()
    assert make_splits(shuffled, spec, 8, "classification") == make_splits(
        df, spec, 8, "classification"
    )


def test_classification_ignores_an_event_column_and_survival_reads_nan_events_as_censored():
    df = _mixed_manifest()
    df["event"] = [1 - lab for lab in df["label"]]  # a different stratification if it were used
    spec = SplitConfig(scheme="kfold", k=3, test="none")
    folds = make_splits(df, spec, 4, "classification")
    assert [f.val for f in folds] == _kfold_parts(df, 3, 4, key="label")
    assert [f.val for f in folds] != _kfold_parts(df, 3, 4, key="event")
    # survival: a missing event counts as censored (0)
    surv = _mixed_manifest()
    surv["event"] = [
        1.0 if s in ("c06_s0", "c07_s1", "c08_s0", "c09_s0") else np.nan for s in surv["slide_id"]
    ]
    got = [f.val for f in make_splits(surv, spec, 4, "survival")]
    assert got == _kfold_parts(surv.assign(event=surv["event"].fillna(0)), 3, 4, key="event")
    assert got != _kfold_parts(surv.assign(event=surv["event"].fillna(1)), 3, 4, key="event")


def test_k_equal_to_the_number_of_groups_gives_one_group_per_fold():
    df = _mixed_manifest()  # 14 groups
    folds = make_splits(df, SplitConfig(scheme="kfold", k=14, test="none"), 1, "classification")
    assert [f.val for f in folds] == _kfold_parts(df, 14, 1, stratified=False)
    assert all(len({_group_of(df)[s] for s in f.val}) == 1 for f in folds)


def test_holdout_error_message_is_exact():
    df = _mixed_manifest()
    with pytest.raises(ValueError, match=r"^cannot hold out 97% of 14 group\(s\)$"):
        make_splits(df, SplitConfig(repeats=1, val_fraction=0.97, test="none"), 0, "x")


def test_kfold_survival_held_out_test_share_is_stratified_by_the_event():
    """Mutation survivor (``make_splits``: the k-fold held-out test share grouped with task
    ``None``, i.e. stratified by the label)."""
    df = _mixed_manifest()
    df["event"] = [int(s.endswith("_s1") and int(s[1:3]) < 6) for s in df["slide_id"]]
    df["label"] = 0
    seeds = range(3)
    got = [
        make_splits(df, SplitConfig(scheme="kfold", k=2, test=0.3), s, "survival") for s in seeds
    ]
    assert [f[0].test for f in got] == [_holdout(df, 0.3, s, key="event") for s in seeds]
    assert [f[0].test for f in got] != [_holdout(df, 0.3, s, key="label") for s in seeds]


def test_kfold_survival_validation_inside_a_fold_is_stratified_by_the_event():
    """Mutation survivor (``make_splits``: validation of ``test: fold`` drawn with task
    ``None``, i.e. stratified by the label)."""
    df = _mixed_manifest()
    df["event"] = [int(s.endswith("_s1") and int(s[1:3]) < 6) for s in df["slide_id"]]
    df["label"] = 0
    spec = SplitConfig(scheme="kfold", k=3, val_fraction=0.3, test="fold")
    folds = make_splits(df, spec, 2, "survival")
    by_label = []
    for i, (fold, part) in enumerate(zip(folds, _kfold_parts(df, 3, 2, key="event"), strict=True)):
        rest = df[~df["slide_id"].isin(part)]
        assert fold.val == _holdout(rest, 0.3, 2 + i, key="event")
        by_label.append(_holdout(rest, 0.3, 2 + i, key="label"))
    assert [f.val for f in folds] != by_label
