"""Issue 14: ids and labels are never corrupted or guessed; inputs are validated before a run
writes anything; a failed first attempt can be corrected and rerun; resumes check inputs."""

from __future__ import annotations

import json
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from histomil._io import read_csv
from histomil.training import train
from histomil.training.config import config_from_dict

from ._tiny import tiny_cohort, tiny_config, write_tiny_bag

ODD_IDS = ["00008", "1.110", "1e5", "NA", "TCGA-XX-0001-01Z-00-DX1"]


def _nothing_written(run_dir: Path) -> bool:
    return not run_dir.exists() or not any(run_dir.iterdir())


def test_odd_slide_ids_survive_to_the_run_predictions(tmp_path):
    ids = [f"s{i:02d}" for i in range(19)] + ODD_IDS
    manifest = tiny_cohort(tmp_path / "c", ids=ids, splits=["train"] * 19 + ["test"] * 5)
    cfg = config_from_dict(tiny_config(manifest, split={"repeats": 1}))
    result = train(cfg, tmp_path / "run")
    text = (result.run_dir / "predictions.csv").read_text()
    for sid in ODD_IDS:
        assert f",{sid},test," in text, sid  # written exactly, not 8 / 1.11 / 100000.0 / ""
    preds = read_csv(result.run_dir / "predictions.csv")
    assert set(preds.loc[preds.split == "test", "slide_id"]) == set(ODD_IDS)
    assert set(result.predictions.loc[result.predictions.split == "test", "slide_id"]) == set(
        ODD_IDS
    )
    split = json.loads((result.run_dir / "folds" / "0" / "split.json").read_text())
    assert split["test"] == sorted(ODD_IDS)


@pytest.mark.parametrize("mapping", [{"normal": 0, "tumor": 1}, None])
def test_string_labels_with_a_mapping_or_the_usual_names(tmp_path, mapping):
    labels = ["tumor" if i % 2 else "normal" for i in range(24)]
    manifest = tiny_cohort(tmp_path / "c", labels=labels)
    data = {"labels": mapping} if mapping else {}
    cfg = config_from_dict(tiny_config(manifest, data=data, split={"repeats": 1}))
    result = train(cfg, tmp_path / "run")
    preds = result.predictions
    assert set(preds["label"]) == {0, 1}
    assert "prob" in preds.columns and "prob_2" not in preds.columns
    row = preds[preds.slide_id == "s19"].iloc[0]
    assert row["label"] == 1  # "tumor" -> 1


def test_mapping_keys_must_cover_every_label(tmp_path):
    labels = ["tumor" if i % 2 else "normal" for i in range(24)]
    labels[20] = "Tumour "  # not a key of the explicit mapping
    manifest = tiny_cohort(tmp_path / "c", labels=labels)
    cfg = config_from_dict(tiny_config(manifest, data={"labels": {"normal": 0, "tumor": 1}}))
    with pytest.raises(ValueError) as info:
        train(cfg, tmp_path / "run")
    msg = str(info.value)
    assert str(manifest) in msg and "line 22" in msg and "s20" in msg
    assert "normal (0), tumor (1)" in msg
    assert _nothing_written(tmp_path / "run")


def test_label_2_in_a_binary_cohort_is_an_error_before_anything_is_written(tmp_path):
    labels = [i % 2 for i in range(24)]
    labels[23] = 2  # a stray class, in a test row: n_classes must not come from the data
    manifest = tiny_cohort(tmp_path / "c", labels=labels)
    cfg = config_from_dict(tiny_config(manifest))
    with pytest.raises(ValueError) as info:
        train(cfg, tmp_path / "run")
    msg = str(info.value)
    assert str(manifest) in msg and "line 25 (slide s23): '2'" in msg
    assert "allowed values 0, 1" in msg and "data.n_classes" in msg
    assert _nothing_written(tmp_path / "run")


def test_n_classes_must_agree_with_the_mapping(tmp_path):
    manifest = tiny_cohort(tmp_path / "c")
    cfg = config_from_dict(tiny_config(manifest, data={"labels": {"0": 0, "1": 1}, "n_classes": 3}))
    with pytest.raises(ValueError, match="disagrees with data.labels"):
        train(cfg, tmp_path / "run")


def test_every_bag_problem_is_reported_at_once_and_nothing_is_written(tmp_path):
    manifest = tiny_cohort(tmp_path / "c")
    bags = tmp_path / "c" / "bags"
    (bags / "s03.h5").unlink()  # missing
    with h5py.File(bags / "s05.h5", "r+") as f:  # NaN features
        f["features"][0, 0] = np.nan
    write_tiny_bag(bags / "s07.h5", 1, seed=7, dim=12)  # other encoder
    cfg = config_from_dict(tiny_config(manifest))
    with pytest.raises(ValueError) as info:
        train(cfg, tmp_path / "run")
    msg = str(info.value)
    assert "s03" in msg and "no bag" in msg
    assert "s05.h5" in msg and "NaN" in msg
    assert "different feature dimensions" in msg and "s07.h5" in msg and "12-d" in msg
    assert _nothing_written(tmp_path / "run")


def test_a_wrong_manifest_path_writes_nothing_and_the_fix_reruns(tmp_path):
    manifest = tiny_cohort(tmp_path / "c")
    bad = config_from_dict(tiny_config(tmp_path / "c" / "nope.csv"))
    with pytest.raises(ValueError, match="does not exist"):
        train(bad, tmp_path / "run")
    assert not (tmp_path / "run" / "config.yaml").exists()
    result = train(config_from_dict(tiny_config(manifest, split={"repeats": 1})), tmp_path / "run")
    assert result.metrics["n_folds"] == 1


def test_when_every_fold_fails_no_metrics_are_left_and_a_corrected_config_reruns(
    tmp_path, monkeypatch
):
    from histomil.executors import BatchError
    from histomil.training import run as run_mod

    manifest = tiny_cohort(tmp_path / "c")

    def broken(**kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(run_mod, "run_fold", broken)
    with pytest.raises(BatchError, match="2 fold"):
        train(config_from_dict(tiny_config(manifest)), tmp_path / "run")
    assert not (tmp_path / "run" / "metrics.json").exists()
    assert not (tmp_path / "run" / "predictions.csv").exists()
    monkeypatch.undo()
    fixed = config_from_dict(tiny_config(manifest, train={"seed": 3}, split={"repeats": 1}))
    result = train(fixed, tmp_path / "run")  # zero finished folds: the folder is taken over
    assert result.metrics["n_folds"] == 1


def test_resume_refuses_when_a_bag_file_changed_naming_it(tmp_path):
    manifest = tiny_cohort(tmp_path / "c")
    cfg = config_from_dict(tiny_config(manifest))
    result = train(cfg, tmp_path / "run")
    (result.run_dir / "folds" / "1" / "result.json").unlink()  # interrupted fold 1
    write_tiny_bag(tmp_path / "c" / "bags" / "s04.h5", 0, seed=99)  # re-extracted
    with pytest.raises(ValueError) as info:
        train(cfg, tmp_path / "run")
    msg = str(info.value)
    assert "inputs.bag s04.content-sha256" in msg and "changed bag file(s): " in msg, msg
    assert str(tmp_path / "c" / "bags" / "s04.h5") in msg
    # unchanged inputs resume as before, even when a file was rewritten with the same content
    # (what a rerun of `histomil label` does: other bytes, same datasets)
    write_tiny_bag(tmp_path / "c" / "bags" / "s04.h5", 0, seed=4)
    time.sleep(1.1)  # HDF5 stores dataset creation times in seconds: the bytes now differ
    with h5py.File(tmp_path / "c" / "bags" / "s06.h5", "a") as f:
        labels = f["patch_labels"][()]
        del f["patch_labels"]
        f.create_dataset("patch_labels", data=labels, track_times=True)
    assert train(cfg, tmp_path / "run").metrics["n_folds"] == 2


def test_resume_refuses_when_the_manifest_changed_the_splits(tmp_path):
    manifest = tiny_cohort(tmp_path / "c")
    cfg = config_from_dict(tiny_config(manifest, split={"repeats": 1}))
    train(cfg, tmp_path / "run")
    text = manifest.read_text().replace("s17,1,train", "s17,1,test")
    manifest.write_text(text)
    with pytest.raises(ValueError, match="manifest|splits"):
        train(cfg, tmp_path / "run")
