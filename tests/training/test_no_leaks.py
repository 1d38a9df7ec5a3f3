"""Issue 14: no test slide ever reaches training, validation, model selection, the threshold or
a teacher, through any path the config offers; reused folds must have identical splits."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from histomil.training import fold as fold_mod
from histomil.training import train
from histomil.training.config import config_from_dict

from ._tiny import tiny_cohort, tiny_config, write_tiny_bag

SPLITS = {
    "mc-manifest": {"scheme": "monte_carlo", "repeats": 2, "test": "manifest"},
    "mc-fraction": {"scheme": "monte_carlo", "repeats": 2, "test": 0.25},
    "mc-val-manifest": {"scheme": "monte_carlo", "repeats": 1, "test": 0.25, "val": "manifest"},
    "kfold-fold": {"scheme": "kfold", "k": 3, "test": "fold"},
    "kfold-fraction": {"scheme": "kfold", "k": 2, "test": 0.25},
    "kfold-manifest": {"scheme": "kfold", "k": 2, "test": "manifest"},
}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    """24 slides of 12 cases (two slides per case), 4 fixed val and 6 fixed test slides."""
    ids = [f"s{i:02d}" for i in range(24)]
    labels = [(i // 2) % 2 for i in range(24)]  # both slides of a case share the label
    splits = ["train"] * 14 + ["val"] * 4 + ["test"] * 6
    return tiny_cohort(
        tmp_path_factory.mktemp("leaks"), ids, labels, splits, [f"c{i // 2:02d}" for i in range(24)]
    )


@pytest.fixture
def spy(monkeypatch):
    """Record, for every fit (students and baselines), the fold's split and the bags fit saw."""
    calls: list[dict] = []
    current: list = []
    real_load, real_fit, real_threshold = (
        fold_mod.load_fold_data,
        fold_mod.fit,
        fold_mod.M.pick_threshold,
    )

    def load(config, split, seed):
        current.append(split)
        return real_load(config, split, seed)

    def fit(model, objective, train_bags, val_bags, *args, **kwargs):
        calls.append(
            {
                "split": current[-1],
                "train": {b.slide_id for b in train_bags},
                "val": {b.slide_id for b in val_bags},
            }
        )
        return real_fit(model, objective, train_bags, val_bags, *args, **kwargs)

    def threshold(labels, probs, how):
        calls[-1]["n_threshold"] = len(labels)
        return real_threshold(labels, probs, how)

    monkeypatch.setattr(fold_mod, "load_fold_data", load)
    monkeypatch.setattr(fold_mod, "fit", fit)
    monkeypatch.setattr(fold_mod.M, "pick_threshold", threshold)
    return calls


def _case(sid: str) -> str:
    return f"c{int(sid[1:]) // 2:02d}"


@pytest.mark.parametrize(
    ("split", "extra"),
    [
        *[(name, {}) for name in SPLITS],
        ("mc-manifest", {"data": {"train_fraction": 0.5}}),
        ("mc-fraction", {"objective": {"name": "mhim_v2", "baseline": "auto"}}),
    ],
)
def test_no_test_slide_reaches_any_choice(cohort, tmp_path, spy, split, extra):
    cfg = config_from_dict(tiny_config(cohort, split=SPLITS[split], **extra))
    result = train(cfg, tmp_path / "run")
    assert spy, "fit was never called"
    for call in spy:
        s = call["split"]
        test, test_cases = set(s.test), {_case(x) for x in s.test}
        assert not call["train"] & test and not call["val"] & test
        seen_cases = {_case(x) for x in call["train"] | call["val"]}
        assert not seen_cases & test_cases, "a patient on both sides"
        assert call["val"] == set(s.val)  # selection and threshold use exactly the val set
        assert call.get("n_threshold", len(s.val)) == len(s.val)
    if "objective" in extra:  # the baseline (teacher) was fit on the student's fold, once each
        assert len(spy) == 2 * cfg.split.n_folds
    for s in result.folds:
        rows = result.predictions[result.predictions.fold == s["fold"]]
        assert s["n_test"] == (rows.split == "test").sum()


@pytest.fixture(scope="module")
def teacher_run(cohort, tmp_path_factory) -> Path:
    """A finished baseline run (seed 0, Monte Carlo test fraction: test sets depend on seed)."""
    out = tmp_path_factory.mktemp("teacher") / "run"
    cfg = tiny_config(cohort, split=SPLITS["mc-fraction"])
    train(config_from_dict(cfg), out)
    return out


def _mhim(cohort: Path, teacher: Path | str, seed: int) -> dict:
    return tiny_config(
        cohort,
        split=SPLITS["mc-fraction"],
        train={"seed": seed},
        objective={"name": "mhim_v2", "baseline": str(teacher)},
    )


def test_teacher_from_a_run_with_other_splits_is_refused_naming_the_slides(
    cohort, teacher_run, tmp_path
):
    with pytest.raises(ValueError) as info:
        train(config_from_dict(_mhim(cohort, teacher_run, seed=7)), tmp_path / "student")
    msg = str(info.value)
    assert "baseline" in msg and "test slide(s) it trained or selected on: s" in msg
    assert not (tmp_path / "student").exists()


def test_teacher_with_identical_splits_is_used(cohort, teacher_run, tmp_path):
    result = train(config_from_dict(_mhim(cohort, teacher_run, seed=0)), tmp_path / "student")
    assert result.metrics["n_folds"] == 2 and not (tmp_path / "student" / "baseline").exists()
    prov = (tmp_path / "student" / "provenance.json").read_text()
    assert "baseline fold 0" in prov and "baseline fold 1" in prov


def test_teacher_checkpoint_without_a_split_record_is_refused(cohort, teacher_run, tmp_path):
    bare = tmp_path / "elsewhere" / "teacher.pt"
    bare.parent.mkdir()
    shutil.copy(teacher_run / "folds" / "0" / "checkpoint.pt", bare)
    with pytest.raises(ValueError, match="records no split"):
        train(config_from_dict(_mhim(cohort, bare, seed=0)), tmp_path / "student")


def test_experiment_reuse_needs_identical_inputs_and_splits(cohort, teacher_run, tmp_path):
    from histomil.experiments.sweep import find_identical_run

    experiment = tmp_path / "other_experiment"
    shutil.copytree(teacher_run, experiment / "runs" / "baseline")
    cfg = config_from_dict(tiny_config(cohort, split=SPLITS["mc-fraction"]))
    assert find_identical_run(cfg, [experiment]) == experiment / "runs" / "baseline"
    # same config, but one bag file was re-extracted since: never reused
    bag = cohort.parent / "bags" / "s02.h5"
    saved = bag.read_bytes()
    try:
        write_tiny_bag(bag, 0, seed=123)
        assert find_identical_run(cfg, [experiment]) is None
    finally:
        bag.write_bytes(saved)
    # a fold whose recorded split differs (e.g. the run was made from another manifest)
    split = experiment / "runs" / "baseline" / "folds" / "1" / "split.json"
    split.write_text(split.read_text().replace('"s00"', '"s99"', 1))
    assert find_identical_run(cfg, [experiment]) is None
