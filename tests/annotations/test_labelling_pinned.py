"""Pinned `label_slide` outputs (issue 22): on a 6 x 6 grid of 100 px patches with the lesion
box (0, 0)-(250, 200), every label, overlap and attention target is stated by hand."""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from histomil import executors
from histomil.annotations import labelling as lab
from histomil.annotations.label_reruns import plan_slide
from histomil.annotations.labelling import LabelConfig, SlideJob, label_slide, write_labels
from histomil.annotations.readers import AnnotationError
from histomil.executors import ExecutorConfig
from tests.annotations.test_labelling import lesion_geojson, write_patch_file

# overlap of the patch at grid (ix, iy): x share [1, 1, 0.5, 0, 0, 0] times y share [1, 1, 0...]
XS = [1.0, 1.0, 0.5, 0.0, 0.0, 0.0]
YS = [1.0, 1.0, 0.0, 0.0, 0.0, 0.0]
OVERLAP = np.array([XS[i % 6] * YS[i // 6] for i in range(36)])  # coords ravel x fastest


def _job(tmp_path: Path, label: int = 1, annotated: bool = True, bag=None, **kw) -> SlideJob:
    patch = tmp_path / "patches" / "s.h5"
    if not patch.exists():
        write_patch_file(patch, "s")
    ann = None
    if annotated:
        ann = tmp_path / "annotations" / "s.geojson"
        lesion_geojson(ann)
    return SlideJob(
        "s",
        patch,
        label,
        annotation_path=ann,
        bag_file=bag,
        output_file=tmp_path / "out" / "s.h5",
        bag_output=None if bag is None else tmp_path / "out" / "bags" / "s.h5",
        **kw,
    )


def _read(path: Path) -> tuple[dict, dict]:
    with h5py.File(path, "r") as f:
        return {k: f[k][:] for k in f}, dict(f.attrs)


def test_annotated_positive_slide_by_hand(tmp_path):
    job = _job(tmp_path)
    row = label_slide(job, LabelConfig())
    assert row == {
        "slide_id": "s",
        "status": "ok",
        "n_patches": 36,
        "n_lesion": 6,
        "slide_label": 1,
        "annotated": True,
        "error": "",
    }
    data, attrs = _read(tmp_path / "out" / "s.h5")
    assert data["patch_labels"].dtype == np.int8
    assert data["patch_labels"].tolist() == (OVERLAP > 0.05).astype(int).tolist()
    assert data["overlap"].dtype == np.float32
    np.testing.assert_allclose(data["overlap"], OVERLAP, rtol=1e-6)
    # tissue fraction 0.5 everywhere: target = overlap * 0.5 / sum(overlap * 0.5) = overlap / 5
    assert data["attn_target"].dtype == np.float32
    np.testing.assert_allclose(data["attn_target"], OVERLAP / 5.0, rtol=1e-6)
    assert attrs["slide_label"] == 1 and bool(attrs["annotated"]) is True
    assert attrs["label_min_overlap"] == 0.05 and attrs["label_padding_px"] == 0.0
    assert attrs["annotation_path"] == str(job.annotation_path.absolute())
    assert attrs["slide_id"] == "s"  # the patch file's own attributes are kept
    # the input is not written
    assert "patch_labels" not in _read(job.patch_file)[0]


def test_min_overlap_and_padding_in_pixels_and_micrometres(tmp_path):
    job = _job(tmp_path)
    label_slide(job, LabelConfig(min_overlap=0.5))
    data, _ = _read(tmp_path / "out" / "s.h5")
    assert data["patch_labels"].tolist() == (OVERLAP > 0.5).astype(int).tolist()
    assert int(data["patch_labels"].sum()) == 4
    attrs = {"level0_mpp": 0.25}
    assert lab._padding_px(job, LabelConfig(padding_um=12.5), attrs) == 50.0
    assert lab._padding_px(job, LabelConfig(padding_px=7), attrs) == 7.0
    assert lab._padding_px(job, LabelConfig(), attrs) == 0.0
    assert lab._padding_px(job, LabelConfig(padding_um=1.0), {"level0_mpp": "0.5"}) == 2.0
    msg = (
        f"slide s: --padding-um needs the level-0 mpp, missing in {job.patch_file}; use "
        "--padding-px or rerun preprocess with a known mpp"
    )
    for bad in ({}, {"level0_mpp": float("nan")}, {"level0_mpp": 0.0}, {"level0_mpp": -1.0}):
        with pytest.raises(ValueError) as err:
            lab._padding_px(job, LabelConfig(padding_um=1.0), bad)
        assert str(err.value) == msg
    # the padded region: 100 px of padding makes the lesion cover the 4 x 3 patches around it
    padded = _job(tmp_path / "p")
    label_slide(padded, LabelConfig(padding_um=25.0))  # 25 um / 0.25 mpp = 100 px
    data, attrs = _read(tmp_path / "p" / "out" / "s.h5")
    assert attrs["label_padding_px"] == 100.0
    # x from -100 to 350, y from -100 to 300: full for ix <= 2, iy <= 1; halves at ix 3 / iy 2
    # (the rounded corner only touches patches outside that 4 x 3 block and (3, 2))
    lab1 = data["patch_labels"].reshape(6, 6)
    assert lab1[:3, :4].all() and not lab1[3:, :].any() and not lab1[:, 4:].any()
    np.testing.assert_allclose(data["overlap"].reshape(6, 6)[:2, :3], 1.0)
    np.testing.assert_allclose(data["overlap"].reshape(6, 6)[:2, 3], 0.5, rtol=1e-6)
    np.testing.assert_allclose(data["overlap"].reshape(6, 6)[2, :2], 1.0, rtol=1e-6)
    assert 0.5 < data["overlap"].reshape(6, 6)[2, 2] < 1.0  # the rounded corner


def test_negative_and_unannotated_slides(tmp_path):
    neg = _job(tmp_path / "n", label=0, annotated=False)
    assert label_slide(neg, LabelConfig())["n_lesion"] == 0
    data, attrs = _read(tmp_path / "n" / "out" / "s.h5")
    assert data["patch_labels"].tolist() == [0] * 36 and data["patch_labels"].dtype == np.int8
    assert data["overlap"].tolist() == [0.0] * 36 and data["overlap"].dtype == np.float32
    assert data["attn_target"].tolist() == [0.0] * 36 and data["attn_target"].dtype == np.float32
    assert attrs["slide_label"] == 0 and bool(attrs["annotated"]) is False
    assert attrs["annotation_path"] == ""
    unk = _job(tmp_path / "u", label=1, annotated=False)
    row = label_slide(unk, LabelConfig())
    assert row["status"] == "ok" and row["annotated"] is False and row["n_lesion"] == 0
    data, _ = _read(tmp_path / "u" / "out" / "s.h5")
    assert data["patch_labels"].tolist() == [-1] * 36 and data["patch_labels"].dtype == np.int8
    assert np.isnan(data["overlap"]).all() and data["overlap"].dtype == np.float32
    assert data["attn_target"].tolist() == [0.0] * 36
    assert data["attn_target"].dtype == np.float32


def test_negative_slide_with_an_annotation_is_an_error(tmp_path):
    job = _job(tmp_path, label=0)
    with pytest.raises(AnnotationError) as err:
        label_slide(job, LabelConfig())
    assert str(err.value) == (
        f"slide s is labelled negative but has annotation file {job.annotation_path}; fix the "
        "label or remove the file"
    )


def test_slide_errors(tmp_path):
    job = _job(tmp_path)
    bad = SlideJob("s", job.patch_file, 1, problem="no annotation file x.xml")
    with pytest.raises(ValueError) as err:
        label_slide(bad, LabelConfig())
    assert str(err.value) == "no annotation file x.xml"
    with h5py.File(job.patch_file, "a") as f:
        del f.attrs["patch_size_level0"]
    with pytest.raises(ValueError) as err:
        label_slide(job, LabelConfig())
    assert str(err.value) == (
        f"patch file {job.patch_file} lacks the 'patch_size_level0' attribute"
    )
    with h5py.File(job.patch_file, "a") as f:
        del f["coords"]
    with pytest.raises(ValueError) as err:
        label_slide(job, LabelConfig())
    assert str(err.value) == f"patch file {job.patch_file} has no 'coords' dataset"


def test_empty_slide(tmp_path):
    patch = tmp_path / "patches" / "s.h5"
    patch.parent.mkdir(parents=True)
    with h5py.File(patch, "w") as f:
        f.create_dataset("coords", data=np.zeros((0, 2), dtype=np.int64))
        f.attrs["patch_size_level0"] = 100
    job = _job(tmp_path)
    assert label_slide(job, LabelConfig()) == {
        "slide_id": "s",
        "status": "empty",
        "n_patches": 0,
        "n_lesion": 0,
        "slide_label": 1,
        "annotated": True,
        "error": "",
    }
    data, _ = _read(tmp_path / "out" / "s.h5")
    assert {k: (v.shape, v.dtype) for k, v in data.items() if k != "coords"} == {
        "patch_labels": ((0,), np.int8),
        "overlap": ((0,), np.float32),
        "attn_target": ((0,), np.float32),
    }
    # and a rerun skips it with the same status
    row = label_slide(job, LabelConfig())
    assert row["status"] == "empty" and row["n_patches"] == 0


def test_rerun_is_skipped_with_the_stored_counts(tmp_path):
    job = _job(tmp_path)
    label_slide(job, LabelConfig())
    assert label_slide(job, LabelConfig()) == {
        "slide_id": "s",
        "status": "skipped",
        "n_patches": 36,
        "n_lesion": 6,
        "slide_label": 1,
        "annotated": True,
        "error": "",
    }


def test_bag_on_another_grid_is_labelled_on_its_own_coords(tmp_path):
    coords = write_patch_file(tmp_path / "tmp.h5", "x")
    order = np.array([7, 0, 35, 2])  # a subset in another order
    bag = tmp_path / "bags" / "s.h5"
    bag.parent.mkdir(parents=True)
    with h5py.File(bag, "w") as f:
        f["features"] = np.ones((4, 3), dtype=np.float32)
        f["coords"] = coords[order]
        f.attrs["patch_size_level0"] = 100
    job = _job(tmp_path, bag=bag)
    label_slide(job, LabelConfig())
    data, attrs = _read(tmp_path / "out" / "bags" / "s.h5")
    np.testing.assert_allclose(data["overlap"], OVERLAP[order], rtol=1e-6)
    assert data["patch_labels"].tolist() == [1, 1, 0, 1]
    # the bag has no tissue fractions: target = overlap / sum = [1, 1, 0, 0.5] / 2.5
    np.testing.assert_allclose(data["attn_target"], [0.4, 0.4, 0.0, 0.2], rtol=1e-6)
    assert attrs["slide_label"] == 1 and attrs["label_padding_px"] == 0.0


def _bag_on_patch_grid(tmp_path):
    """A patch file s.h5 and a bag of 36 ones-features on its coordinates; the bag's path."""
    coords = write_patch_file(tmp_path / "patches" / "s.h5", "s")
    bag = tmp_path / "bags" / "s.h5"
    bag.parent.mkdir(parents=True)
    with h5py.File(bag, "w") as f:
        f["features"] = np.ones((36, 3), dtype=np.float32)
        f["coords"] = coords
    return bag


def test_bag_on_the_same_grid_gets_the_patch_values(tmp_path):
    bag = _bag_on_patch_grid(tmp_path)
    with h5py.File(bag, "a") as f:
        f["tissue"] = np.linspace(0.0, 1.0, 36).astype(np.float32)  # ignored: same grid
    job = _job(tmp_path, bag=bag)
    label_slide(job, LabelConfig())
    data, _ = _read(tmp_path / "out" / "bags" / "s.h5")
    np.testing.assert_allclose(data["attn_target"], OVERLAP / 5.0, rtol=1e-6)
    # the bag has no patch_size_level0 attribute: the patch file's is used


def test_bag_with_another_patch_size_is_recomputed(tmp_path):
    bag = _bag_on_patch_grid(tmp_path)
    with h5py.File(bag, "a") as f:
        f.attrs["patch_size_level0"] = 50
    label_slide(_job(tmp_path, bag=bag), LabelConfig())
    data, _ = _read(tmp_path / "out" / "bags" / "s.h5")
    # 50 px patches at the same corners: (0|100|200, 0|100) inside the lesion box
    want = np.array([(1.0 if i % 6 <= 2 and i // 6 <= 1 else 0.0) for i in range(36)])
    np.testing.assert_allclose(data["overlap"], want)


def test_bag_without_coords(tmp_path):
    bag = tmp_path / "bags" / "s.h5"
    bag.parent.mkdir(parents=True)
    with h5py.File(bag, "w") as f:
        f["features"] = np.ones((36, 3), dtype=np.float32)
    job = _job(tmp_path, bag=bag)
    with pytest.raises(ValueError) as err:
        label_slide(job, LabelConfig(), plan_slide(job, LabelConfig(), overwrite=False))
    assert str(err.value) == f"bag file {bag} has no 'coords' dataset"


def test_write_labels_checks_lengths_and_replaces(tmp_path):
    path = tmp_path / "p.h5"
    write_patch_file(path, "p")
    values = {
        "patch_labels": np.ones(36, dtype=np.int8),
        "overlap": np.full(36, 0.25, dtype=np.float32),
        "attn_target": np.full(36, 1 / 36, dtype=np.float32),
    }
    write_labels(path, values, {"k": 3})  # no target: back into the file itself
    data, attrs = _read(path)
    assert data["patch_labels"].tolist() == [1] * 36 and attrs["k"] == 3
    values["overlap"] = np.zeros(36, dtype=np.float32)
    write_labels(path, values, {"k": 4}, tmp_path / "q.h5")
    assert _read(tmp_path / "q.h5")[0]["overlap"].tolist() == [0.0] * 36
    assert _read(path)[0]["overlap"].tolist() == [0.25] * 36
    values["attn_target"] = np.zeros(35, dtype=np.float32)
    with pytest.raises(ValueError) as err:
        write_labels(path, values, {}, tmp_path / "r.h5")
    assert str(err.value) == f"{path}: attn_target has 35 rows, coords 36"
    assert not (tmp_path / "r.h5").exists()
    # a file without coords takes any length
    other = tmp_path / "n.h5"
    with h5py.File(other, "w") as f:
        f["x"] = np.zeros(2)
    write_labels(other, values, {})
    assert len(_read(other)[0]["attn_target"]) == 35


def test_slide_size_from_attributes(tmp_path, caplog):
    assert lab._slide_size({"level0_width": 10, "level0_height": 20}) == (10, 20)
    assert lab._slide_size({"slide_width": 11.0, "slide_height": 21}) == (11, 21)
    assert lab._slide_size({"level0_width": 10, "slide_width": 5, "slide_height": 6}) == (5, 6)
    assert lab._slide_size({"level0_dimensions": [30, 40]}) == (30, 40)
    assert lab._slide_size({"slide_dimensions": (31, 41)}) == (31, 41)
    assert lab._slide_size({"level0_dimensions": [1, 2, 3], "slide_dimensions": [5, 6]}) == (5, 6)
    assert lab._slide_size({}) is None
    assert lab._slide_size({"slide_path": ""}) is None
    assert lab._slide_size({"slide_path": str(tmp_path / "missing.svs")}) is None
    # no size attribute: the slide itself (a 96 x 64 tiled TIFF) is opened for it
    import tifffile

    tif = tmp_path / "small.tif"
    tifffile.imwrite(tif, np.zeros((64, 96, 3), np.uint8), photometric="rgb", tile=(32, 32))
    assert lab._slide_size({"slide_path": str(tif)}) == (96, 64)
    assert lab._slide_size({"slide_path": tif}) == (96, 64)  # a Path attribute works too
    broken = tmp_path / "broken.svs"
    broken.write_bytes(b"not a slide")
    with caplog.at_level("INFO", logger=lab.log.name):
        # a missing file is not tried (no log line); an unreadable one is, and says why
        assert lab._slide_size({"slide_path": str(tmp_path / "missing.svs")}) is None
        assert lab._slide_size({"slide_path": str(broken)}) is None
    (record,) = [r for r in caplog.records if r.name == lab.log.name]
    message = record.getMessage()
    assert message.startswith(f"cannot open {broken} for its size (")
    assert message.endswith("); bounds check skipped")
    assert f"(slide {broken}: no backend could open it (" in message  # the reader's error


def test_label_dir_settings_table_and_errors(tmp_path):
    job = tmp_path / "JOB"
    for sid in ("pos", "neg"):
        write_patch_file(job / "patches" / f"{sid}.h5", sid)
    lesion_geojson(job / "annotations" / "pos.geojson")
    pd.DataFrame({"slide_id": ["pos", "neg"], "label": [1, 0]}).to_csv(
        job / "manifest.csv", index=False
    )
    with pytest.raises(ValueError) as err:
        lab.label_patches_dir(job / "patches", job / "annotations", out_dir=job / "patches")
    assert str(err.value) == (
        f"--out {job / 'patches'} is the patches folder; label never writes into its inputs, "
        "choose another folder"
    )
    out = tmp_path / "OUT"
    table = lab.label_patches_dir(
        job / "patches", job / "annotations", job / "manifest.csv", out_dir=out
    )
    assert list(table.columns) == list(lab.STATUS_COLUMNS)
    assert table["slide_id"].tolist() == ["neg", "pos"] or table["slide_id"].tolist() == [
        "pos",
        "neg",
    ]
    t = table.set_index("slide_id")
    assert t.loc["pos", "n_lesion"] == 6 and t.loc["neg", "n_lesion"] == 0
    for column in ("n_patches", "n_lesion", "slide_label"):
        assert str(table[column].dtype) == "Int64"
    settings = json.loads((out / "label_config.json").read_text())
    assert settings["annotations"] == str(job / "annotations")
    assert settings["manifest"] == str(job / "manifest.csv")
    assert settings["min_overlap"] == 0.05
    csv = pd.read_csv(out / "label.csv")
    assert csv.set_index("slide_id").loc["pos", "n_patches"] == 36
    # a failing slide: BatchError naming the first failure, unless skip_errors
    (job / "annotations" / "pos.geojson").write_text("{broken")
    out2 = tmp_path / "OUT2"
    with pytest.raises(Exception) as err:
        lab.label_patches_dir(
            job / "patches", job / "annotations", job / "manifest.csv", out_dir=out2
        )
    msg = str(err.value)
    assert msg.startswith(f"1 of 2 slide(s) failed to label (see {out2 / 'label.csv'}, ")
    assert f"tracebacks in {out2 / lab.ERROR_LOG}); first: pos: " in msg
    assert msg.endswith("Fix them or pass --skip-errors.")
    table = lab.label_patches_dir(
        job / "patches",
        job / "annotations",
        job / "manifest.csv",
        out_dir=tmp_path / "OUT3",
        skip_errors=True,
    ).set_index("slide_id")
    assert table.loc["pos", "status"] == "error" and table.loc["neg", "status"] == "ok"
    assert (tmp_path / "OUT3" / lab.ERROR_LOG).read_text().count("pos") >= 1


def test_bag_on_another_grid_uses_its_own_tissue_fractions(tmp_path):
    """A bag that keeps another subset of patches is labelled on its own coordinates with its
    own ``tissue`` fractions: target = overlap * tissue / sum."""
    coords = write_patch_file(tmp_path / "tmp.h5", "x")
    order = np.array([7, 0, 35, 2])
    bag = tmp_path / "bags" / "s.h5"
    bag.parent.mkdir(parents=True)
    with h5py.File(bag, "w") as f:
        f["features"] = np.ones((4, 3), dtype=np.float32)
        f["coords"] = coords[order]
        f["tissue"] = np.array([0.5, 1.0, 1.0, 0.25], dtype=np.float32)
        f.attrs["patch_size_level0"] = 100
    label_slide(_job(tmp_path, bag=bag), LabelConfig())
    data, _ = _read(tmp_path / "out" / "bags" / "s.h5")
    # overlap [1, 1, 0, 0.5] x tissue [0.5, 1, 1, 0.25] = [0.5, 1, 0, 0.125], sum 1.625
    np.testing.assert_allclose(data["attn_target"], np.array([0.5, 1, 0, 0.125]) / 1.625, rtol=1e-6)


def test_skipped_row_of_a_file_without_the_annotated_attribute(tmp_path):
    """A labelled file written before ``annotated`` was recorded counts as not annotated."""
    job = _job(tmp_path)
    label_slide(job, LabelConfig())
    with h5py.File(job.patch_target, "a") as f:
        del f.attrs["annotated"]
    row = lab._skipped_row(job)
    assert row["status"] == "skipped" and row["annotated"] is False


def test_in_place_labelling_warns_at_the_caller(tmp_path):
    job = tmp_path / "JOB"
    write_patch_file(job / "patches" / "neg.h5", "neg")
    (job / "annotations").mkdir(parents=True)
    pd.DataFrame({"slide_id": ["neg"], "label": [0]}).to_csv(job / "manifest.csv", index=False)
    message = (
        "label without an output folder writes into the patch files and bags it reads (bags "
        "extracted from them then count as made from another patch file); pass out_dir "
        "(--out DIR) to write labelled copies there"
    )
    with pytest.warns(DeprecationWarning) as record:
        lab.label_patches_dir(job / "patches", job / "annotations", job / "manifest.csv")
    (warning,) = [w for w in record if w.category is DeprecationWarning]
    assert str(warning.message) == message
    # stacklevel points at the caller, not at histomil; under mutation testing mutmut's
    # trampoline is the frame between the caller and the function
    if os.environ.get("HISTOMIL_MUTATION") == "1":
        assert Path(warning.filename).name == "trampoline.py"
    else:
        assert warning.filename == __file__


def test_patch_tissue_fractions_weight_the_attention_target(tmp_path):
    """Non-uniform tissue fractions in the patch file: target = overlap * tissue / sum (a
    uniform fraction cancels in the normalisation and would not show that it is used)."""
    job = _job(tmp_path)
    tissue = np.where(np.arange(36) % 6 == 0, 1.0, 0.25).astype(np.float32)  # column 0 full
    with h5py.File(job.patch_file, "a") as f:
        del f["tissue"]
        f["tissue"] = tissue
    label_slide(job, LabelConfig())
    data, _ = _read(tmp_path / "out" / "s.h5")
    weight = OVERLAP * tissue
    np.testing.assert_allclose(data["attn_target"], weight / weight.sum(), rtol=1e-6)


def test_tissue_polygons_decide_the_attention_target(tmp_path):
    """With the slide's tissue polygons the target is the exact area of lesion ∩ tissue ∩ patch
    (the patch file's uniform fractions of 0.5 would give the plain overlap): tissue is the
    first column of patches only, so the two lesion patches there share the target."""
    tissue = tmp_path / "tissue" / "s.geojson"
    lesion_geojson(tissue, box=(0, 0, 100, 600))
    job = _job(tmp_path, tissue_file=tissue)
    label_slide(job, LabelConfig())
    data, _ = _read(tmp_path / "out" / "s.h5")
    expected = np.zeros(36)
    expected[[0, 6]] = 0.5
    np.testing.assert_allclose(data["attn_target"], expected, atol=1e-7)
    np.testing.assert_allclose(data["overlap"], OVERLAP, atol=1e-7)  # labels ignore tissue


def _batch(tmp_path: Path, broken: str) -> Path:
    """JOB/patches with pos (annotated) and neg, plus ``a_<broken>`` sorted before both."""
    job = tmp_path / "JOB"
    for sid in ("pos", "neg"):
        write_patch_file(job / "patches" / f"{sid}.h5", sid)
    lesion_geojson(job / "annotations" / "pos.geojson")
    ids, labels = ["pos", "neg"], [1, 0]
    if broken == "corrupt":  # in the manifest, but its patch file is not HDF5
        (job / "patches" / "a_corrupt.h5").write_bytes(b"not an hdf5 file")
        ids, labels = [*ids, "a_corrupt"], [*labels, 0]
    else:  # a patch file without a manifest row: a planning problem
        write_patch_file(job / "patches" / "a_missing.h5", "a_missing")
    pd.DataFrame({"slide_id": ids, "label": labels}).to_csv(job / "manifest.csv", index=False)
    return job


@pytest.mark.parametrize("broken", ["missing", "corrupt"])
def test_a_broken_first_slide_does_not_stop_the_batch(tmp_path, broken, monkeypatch):
    job = _batch(tmp_path, broken)
    chosen, seen = ExecutorConfig(workers=1), []

    def run_tasks(tasks, config=None, **kw):
        seen.append((config, kw.get("description")))
        return executors.run_tasks(tasks, config, **kw)

    monkeypatch.setattr(lab, "run_tasks", run_tasks)
    out = tmp_path / "runs" / "OUT"  # created with its parents
    table = lab.label_patches_dir(
        job / "patches", job / "annotations", job / "manifest.csv", out_dir=out,
        skip_errors=True, executor=chosen,
    ).set_index("slide_id")  # fmt: skip
    assert seen == [(chosen, "label")]  # the caller's executor runs the slides, bar "label"
    assert table.loc["pos", ["status", "n_patches", "n_lesion"]].tolist() == ["ok", 36, 6]
    assert table.loc["neg", ["status", "n_patches", "n_lesion"]].tolist() == ["ok", 36, 0]
    bad = table.loc[f"a_{broken}"]
    assert bad["status"] == "error"
    assert pd.isna(bad["n_patches"]) and pd.isna(bad["n_lesion"])  # unknown, not 0 patches
    written = pd.read_csv(out / "label.csv").set_index("slide_id")
    assert pd.isna(written.loc[f"a_{broken}", "n_patches"])


def test_every_stale_slide_is_named_before_anything_is_written(tmp_path):
    job = _batch(tmp_path, "missing")
    (job / "patches" / "a_missing.h5").unlink()
    out = tmp_path / "OUT"
    args = (job / "patches", job / "annotations", job / "manifest.csv")
    lab.label_patches_dir(*args, out_dir=out)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    with pytest.raises(lab.StaleOutputError) as err:
        lab.label_patches_dir(*args, LabelConfig(min_overlap=0.9), out_dir=out)
    lines = str(err.value).splitlines()
    assert lines[0] == (
        f"2 slide(s) already have labels in {out} made from other inputs or settings; "
        "nothing was written:"
    )
    assert len(lines) == 3 and any("neg" in x for x in lines) and any("pos" in x for x in lines)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


def test_an_annotation_that_covers_no_patch_is_reported(tmp_path, caplog):
    """A positive slide's lesion polygon away from every patch (e.g. drawn on another slide or
    level) labels nothing: the run warns with the slide and the file, and only then."""
    job = _job(tmp_path)
    with caplog.at_level("WARNING", logger=lab.log.name):
        assert label_slide(job, LabelConfig())["n_lesion"] == 6
    assert not [r for r in caplog.records if r.name == lab.log.name]
    away = _job(tmp_path / "away")
    lesion_geojson(away.annotation_path, (2_000, 2_000, 2_100, 2_100))
    caplog.clear()
    with caplog.at_level("WARNING", logger=lab.log.name):
        row = label_slide(away, LabelConfig())
    assert row["status"] == "ok" and row["n_lesion"] == 0
    (record,) = [r for r in caplog.records if r.name == lab.log.name]
    assert record.levelname == "WARNING"
    assert record.getMessage() == (
        f"slide s: annotation {away.annotation_path} covers no patch; attention target is all 0"
    )
    data, _ = _read(tmp_path / "away" / "out" / "s.h5")
    assert data["attn_target"].tolist() == [0.0] * 36 and data["patch_labels"].tolist() == [0] * 36


def test_label_slide_without_a_plan_decides_without_overwriting(tmp_path):
    """Called without a plan (the API), a slide labelled with other settings is refused, not
    relabelled: the existing output stays as it was."""
    job = _job(tmp_path)
    label_slide(job, LabelConfig())
    before = job.patch_target.read_bytes()
    assert label_slide(job, LabelConfig())["status"] == "skipped"  # same settings
    with pytest.raises(lab.StaleOutputError, match="was made with other inputs or settings"):
        label_slide(job, LabelConfig(min_overlap=0.5))
    assert job.patch_target.read_bytes() == before


def test_padding_in_micrometres_needs_the_slides_mpp(tmp_path):
    job = _job(tmp_path)
    with h5py.File(job.patch_file, "a") as f:
        del f.attrs["level0_mpp"]
    with pytest.raises(ValueError) as err:
        label_slide(job, LabelConfig(padding_um=10.0))
    assert str(err.value) == (
        f"slide s: --padding-um needs the level-0 mpp, missing in {job.patch_file}; use "
        "--padding-px or rerun preprocess with a known mpp"
    )
    assert not job.patch_target.exists()


def test_annotation_outside_the_slide_size_in_the_patch_file_is_refused(tmp_path):
    """The patch file's level-0 size bounds the annotation (no slide needed to check it)."""
    job = _job(tmp_path)
    lesion_geojson(job.annotation_path, (2_000, 2_000, 2_100, 2_100))
    with h5py.File(job.patch_file, "a") as f:
        f.attrs["level0_width"], f.attrs["level0_height"] = 1_000, 900
    with pytest.raises(lab.AnnotationError) as err:
        label_slide(job, LabelConfig())
    assert "coordinates outside the slide" in str(err.value) and "1000 x 900" in str(err.value)
    assert not job.patch_target.exists()
