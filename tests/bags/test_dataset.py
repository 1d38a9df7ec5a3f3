"""find_bag and load_cohort over our, CLAM and TRIDENT folders; manifest problems reported."""

from __future__ import annotations

import logging

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from histomil.bags import BagError, bag_to_float32, find_bag, load_cohort, write_bag


def _write(path, n=5, d=4, **kw):
    rng = np.random.default_rng(len(str(path)))
    return write_bag(
        path, rng.normal(size=(n, d)).astype(np.float32), np.zeros((n, 2), np.int64), **kw
    )


def test_find_bag_in_each_layout(tmp_path):
    _write(tmp_path / "bags" / "ours.h5")
    (tmp_path / "pt_files").mkdir()
    torch.save(torch.zeros(3, 4), tmp_path / "pt_files" / "clam.pt")
    trident = tmp_path / "20x_256px" / "features_conch"
    trident.mkdir(parents=True)
    with h5py.File(trident / "tri.h5", "w") as f:
        f["features"] = np.ones((2, 4), np.float32)
        f["coords"] = np.zeros((2, 2), np.int64)
    assert find_bag(tmp_path, "ours") == tmp_path / "bags" / "ours.h5"
    assert find_bag(tmp_path / "bags", "ours") == tmp_path / "bags" / "ours.h5"
    assert find_bag(tmp_path, "clam") == tmp_path / "pt_files" / "clam.pt"
    assert find_bag(tmp_path, "tri") == trident / "tri.h5"
    with pytest.raises(BagError, match="no bag for slide ghost"):
        find_bag(tmp_path, "ghost")


def test_load_cohort_builds_bags_with_labels_and_survival(tmp_path):
    labels = np.array([1, 0, -1, 0, 0], np.int8)
    _write(tmp_path / "a.h5", patch_labels=labels, overlap=np.zeros(5, np.float32))
    _write(tmp_path / "b.h5")
    manifest = pd.DataFrame(
        {
            "slide_id": ["a", "b"],
            "label": [1, 0],
            "case_id": ["p1", "p2"],
            "time": [3.5, 10.0],
            "event": [1, 0],
        }
    )
    cohort = load_cohort(manifest, tmp_path)
    assert list(cohort) == ["a", "b"]
    a = cohort["a"]
    assert a.features.dtype == torch.float32 and a.features.shape == (5, 4)
    assert a.label == 1 and a.case_id == "p1" and a.time == 3.5 and a.event == 1
    assert a.has_lesion_labels and a.patch_labels.tolist() == labels.tolist()
    assert cohort["b"].patch_labels is None and cohort["b"].label == 0

    half = load_cohort(manifest, tmp_path, half=True)
    assert half["a"].features.dtype == torch.float16
    full = bag_to_float32(half["a"])
    assert full.features.dtype == torch.float32
    torch.testing.assert_close(full.features, a.features, atol=1e-2, rtol=1e-2)


def test_load_cohort_reports_all_missing_and_warns_on_extra(tmp_path, caplog):
    _write(tmp_path / "a.h5")
    _write(tmp_path / "orphan.h5")
    manifest = pd.DataFrame({"slide_id": ["a", "m1", "m2"], "label": [0, 1, 0]})
    with pytest.raises(BagError, match=r"2 manifest slide\(s\) have no bag.*m1, m2"):
        load_cohort(manifest, tmp_path)
    with caplog.at_level(logging.WARNING):
        load_cohort(manifest.iloc[:1], tmp_path)
    assert "orphan" in caplog.text


def test_load_cohort_rejects_duplicate_ids(tmp_path):
    _write(tmp_path / "a.h5")
    manifest = pd.DataFrame({"slide_id": ["a", "a"], "label": [0, 1]})
    with pytest.raises(BagError, match="duplicate slide_id.*a"):
        load_cohort(manifest, tmp_path)


def test_bags_folder_missing_is_a_clear_error(tmp_path):
    with pytest.raises(BagError, match="does not exist"):
        load_cohort(pd.DataFrame({"slide_id": ["a"], "label": [0]}), tmp_path / "none")


def test_same_slide_under_two_trident_encoders_is_ambiguous(tmp_path):
    for enc in ("features_uni_v1", "features_conch_v1"):
        folder = tmp_path / "20x_256px_0px_overlap" / enc
        folder.mkdir(parents=True)
        with h5py.File(folder / "s1.h5", "w") as f:
            f["features"] = np.ones((2, 4), np.float32)
            f["coords"] = np.zeros((2, 2), np.int64)
    manifest = pd.DataFrame({"slide_id": ["s1"], "label": [1]})
    with pytest.raises(BagError, match="point --bags at the features_<encoder> folder"):
        load_cohort(manifest, tmp_path)
    cohort = load_cohort(manifest, tmp_path / "20x_256px_0px_overlap" / "features_uni_v1")
    assert cohort["s1"].features.shape == (2, 4) and cohort["s1"].label == 1


def test_load_cohort_reads_clam_h5_files(tmp_path):
    (tmp_path / "h5_files").mkdir()
    with h5py.File(tmp_path / "h5_files" / "normal_001.h5", "w") as f:
        f["features"] = np.full((3, 1024), 0.5, np.float32)
        f["coords"] = np.arange(6, dtype=np.int64).reshape(3, 2)
    cohort = load_cohort(pd.DataFrame({"slide_id": ["normal_001"], "label": [0]}), tmp_path)
    bag = cohort["normal_001"]
    assert bag.features.shape == (3, 1024) and bag.coords.tolist() == [[0, 1], [2, 3], [4, 5]]


@pytest.mark.parametrize("stream", [False, True])
def test_load_cohort_reports_every_bad_bag_and_mixed_dimensions_at_once(tmp_path, stream):
    for sid in ("a", "b", "c"):
        _write(tmp_path / f"{sid}.h5")
    _write(tmp_path / "wide.h5", d=6)  # another encoder's features
    with h5py.File(tmp_path / "empty.h5", "w") as f:
        f["features"] = np.zeros((0, 4), np.float32)
    with h5py.File(tmp_path / "nan.h5", "w") as f:
        f["features"] = np.full((3, 4), np.nan, np.float32)
    ids = ["a", "b", "c", "wide", "empty"] + ([] if stream else ["nan"])
    manifest = pd.DataFrame({"slide_id": ids, "label": [0] * len(ids)})
    with pytest.raises(BagError) as info:
        load_cohort(manifest, tmp_path, stream=stream)
    msg = str(info.value)
    assert "empty.h5" in msg
    assert "different feature dimensions" in msg and "6-d: " in msg and "wide.h5" in msg
    if not stream:
        assert "nan.h5" in msg and "NaN" in msg


def test_check_bags_lists_every_problem_without_raising(tmp_path):
    from histomil.bags.dataset import check_bags

    _write(tmp_path / "a.h5")
    _write(tmp_path / "wide.h5", d=6)
    manifest = pd.DataFrame({"slide_id": ["a", "wide", "gone"], "label": [0, 1, 0]})
    paths, problems = check_bags(manifest, tmp_path)
    assert set(paths) == {"a", "wide"}
    assert len(problems) == 2 and "gone" in problems[0] and "wide.h5" in problems[1]
