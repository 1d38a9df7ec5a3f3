"""Label with an output folder: inputs are never written, reruns skip / refuse / relabel by
provenance (annotation, settings, patch file, bag), zero matching annotations is an error,
empty slides are a status, status rows are one line with integer counts."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from histomil.annotations.label_reruns import LABEL_ATTR
from histomil.annotations.labelling import LabelConfig, label_patches_dir
from histomil.executors import BatchError
from histomil.provenance import StaleOutputError
from tests.annotations.test_labelling import lesion_geojson, write_patch_file

IN_PLACE = "ignore:label without an output folder:DeprecationWarning"


@pytest.fixture()
def job(tmp_path: Path) -> Path:
    """JOB/patches (pos annotated, neg), JOB/annotations, JOB/bags/pos.h5, JOB/manifest.csv."""
    out = tmp_path / "JOB"
    for sid in ("pos", "neg"):
        write_patch_file(out / "patches" / f"{sid}.h5", sid)
    lesion_geojson(out / "annotations" / "pos.geojson")
    with h5py.File(out / "patches" / "pos.h5", "r") as f:
        coords = f["coords"][:]
    (out / "bags").mkdir()
    with h5py.File(out / "bags" / "pos.h5", "w") as f:
        f["features"] = np.ones((len(coords), 4), dtype=np.float32)
        f["coords"] = coords
        f.attrs["patch_size_level0"] = 100
    pd.DataFrame({"slide_id": ["pos", "neg"], "label": [1, 0]}).to_csv(
        out / "manifest.csv", index=False
    )
    return out


def _label(job: Path, out: Path | None, **kw) -> pd.DataFrame:
    return label_patches_dir(
        job / "patches", job / "annotations", job / "manifest.csv", out_dir=out, **kw
    ).set_index("slide_id")


def _mtimes(*folders: Path) -> dict[str, int]:
    return {
        str(p): p.stat().st_mtime_ns
        for folder in folders
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_output_folder_never_writes_inputs_and_reruns_skip(job: Path, tmp_path: Path):
    inputs = _mtimes(job)
    out = tmp_path / "labels"
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # no deprecation with out_dir
        table = _label(job, out)
    assert table["status"].to_dict() == {"pos": "ok", "neg": "ok"}
    assert _mtimes(job) == inputs  # patch files, bags and folders untouched
    assert sorted(p.name for p in out.iterdir()) == [
        "bags", "label.csv", "label_config.json", "neg.h5", "pos.h5"
    ]  # fmt: skip
    with h5py.File(out / "pos.h5", "r") as f:
        assert (f["patch_labels"][:] == 1).sum() == 6 and LABEL_ATTR in f.attrs
    with h5py.File(out / "bags" / "pos.h5", "r") as f:
        assert (f["patch_labels"][:] == 1).sum() == 6 and f["features"].shape == (36, 4)
    written = _mtimes(out)
    again = _label(job, out)
    assert set(again["status"]) == {"skipped"} and again.loc["pos", "n_lesion"] == 6
    assert {k: v for k, v in _mtimes(out).items() if k.endswith(".h5")} == {
        k: v for k, v in written.items() if k.endswith(".h5")
    }
    with pytest.raises(ValueError, match="never writes into its inputs"):
        _label(job, job / "patches")


def test_changed_annotation_is_refused_then_relabelled(job: Path, tmp_path: Path):
    out = tmp_path / "labels"
    _label(job, out)
    before = _mtimes(out)
    lesion_geojson(job / "annotations" / "pos.geojson", box=(0, 0, 450, 450))  # corrected
    with pytest.raises(StaleOutputError) as info:
        _label(job, out)
    message = str(info.value)
    assert "inputs.annotation: pos.geojson (" in message and "--overwrite" in message
    assert str(out / "pos.h5") in message and str(out / "bags" / "pos.h5") in message
    assert "neg.h5" not in message  # unchanged slides are not listed
    assert _mtimes(out) == before  # nothing written, not even label.csv
    table = _label(job, out, overwrite=True)
    assert table.loc["pos", "status"] == "ok" and table.loc["pos", "n_lesion"] == 25
    assert table.loc["neg", "status"] == "skipped"
    with h5py.File(out / "bags" / "pos.h5", "r") as f:
        assert (f["patch_labels"][:] == 1).sum() == 25


def test_changed_settings_patch_file_or_bag_are_refused(job: Path, tmp_path: Path):
    out = tmp_path / "labels"
    _label(job, out)
    with pytest.raises(StaleOutputError, match=r"params\.min_overlap: 0\.05 -> 0\.5"):
        _label(job, out, config=LabelConfig(min_overlap=0.5))
    with h5py.File(job / "bags" / "pos.h5", "a") as f:  # the bag was re-extracted
        f["features"][0] = 2.0
    with pytest.raises(StaleOutputError, match=r"inputs\.bag_file: pos\.h5 \(") as info:
        _label(job, out)
    assert str(out / "pos.h5 ") not in str(info.value)  # the labelled patch file is fine
    write_patch_file(job / "patches" / "neg.h5", "neg", n_side=5)  # preprocess rerun
    with pytest.raises(StaleOutputError, match=r"neg\.h5 .*inputs\.patch_file: neg\.h5 \("):
        _label(job, out)


@pytest.mark.filterwarnings(IN_PLACE)
def test_in_place_mode_is_deprecated_and_provenance_checked(job: Path):
    with pytest.warns(DeprecationWarning, match="pass out_dir"):
        _label(job, None)
    with h5py.File(job / "bags" / "pos.h5", "r") as f:
        assert (f["patch_labels"][:] == 1).sum() == 6 and LABEL_ATTR in f.attrs
    bag_time = (job / "bags" / "pos.h5").stat().st_mtime_ns
    assert set(_label(job, None)["status"]) == {"skipped"}
    assert (job / "bags" / "pos.h5").stat().st_mtime_ns == bag_time  # not rewritten
    lesion_geojson(job / "annotations" / "pos.geojson", box=(0, 0, 450, 450))
    with pytest.raises(StaleOutputError, match=r"bags/pos\.h5 was made with other inputs"):
        _label(job, None)


def test_no_matching_annotation_file_is_an_error(job: Path, tmp_path: Path):
    """Found: `label --annotations DIR` where no file matches printed `labelled 1/1 slide(s),
    0 lesion patches` with exit 0."""
    (job / "annotations" / "pos.geojson").rename(job / "annotations" / "slide-pos.geojson")
    out = tmp_path / "labels"
    with pytest.raises(FileNotFoundError) as info:
        _label(job, out)
    message = str(info.value)
    assert "no annotation file in" in message and "<slide_id>.xml|.geojson|.json" in message
    assert "slide-pos.geojson" in message  # what is there instead
    assert not out.exists()
    # every slide negative: no annotation expected, labelling is fine
    pd.DataFrame({"slide_id": ["pos", "neg"], "label": [0, 0]}).to_csv(
        job / "manifest.csv", index=False
    )
    assert set(_label(job, out)["status"]) == {"ok"}


def test_empty_slide_is_a_status_and_csv_rows_are_clean(job: Path, tmp_path: Path):
    """Empty slides are skipped and reported as such; one-line errors, integer counts."""
    with h5py.File(job / "patches" / "neg.h5", "a") as f:
        del f["coords"], f["tissue"]
        f["coords"] = np.zeros((0, 2), dtype=np.int64)
    write_patch_file(job / "patches" / "bad.h5", "bad")
    (job / "annotations" / "bad.xml").write_text("<ASAP_Annotations><oops")
    pd.DataFrame({"slide_id": ["pos", "neg", "bad"], "label": [1, 0, 1]}).to_csv(
        job / "manifest.csv", index=False
    )
    out = tmp_path / "labels"
    with pytest.raises(BatchError, match="1 of 3 slide.*label_errors.log"):
        _label(job, out)
    status = pd.read_csv(out / "label.csv", dtype=str).set_index("slide_id")
    assert status.loc["neg", "status"] == "empty" and status.loc["neg", "n_patches"] == "0"
    assert status.loc["pos", "slide_label"] == "1" and status.loc["pos", "n_lesion"] == "6"
    assert status.loc["bad", "status"] == "error" and "\n" not in status.loc["bad", "error"]
    assert "Traceback" in (out / "label_errors.log").read_text()
    with h5py.File(out / "neg.h5", "r") as f:
        assert f["patch_labels"].shape == (0,)
    table = _label(job, out, skip_errors=True)
    assert table.loc["neg", "status"] == "empty" and table.loc["pos", "status"] == "skipped"
    settings = json.loads((out / "label_config.json").read_text())
    assert settings["min_overlap"] == 0.05


def test_bag_extracted_from_the_labelled_copy_is_left_alone(job: Path, tmp_path: Path):
    """preprocess -> label --out L -> extract --patches L --out JOB -> label again: the bags in
    JOB/bags already carry L's labels, so they are neither copied nor refused."""
    from histomil.provenance import file_identity, record, write_h5

    out = tmp_path / "labels"
    (job / "bags" / "pos.h5").unlink()
    _label(job, out)
    with h5py.File(job / "bags" / "pos.h5", "w") as f:  # what extract from `out` writes
        f["features"] = np.ones((36, 4), dtype=np.float32)
        with h5py.File(out / "pos.h5", "r") as g:
            f["coords"] = g["coords"][:]
            f["patch_labels"] = g["patch_labels"][:]
        write_h5(f, record("extract", {}, {"patch_file": out / "pos.h5"}))
    assert read_identity(job / "bags" / "pos.h5") == file_identity(out / "pos.h5")
    table = _label(job, out)
    assert set(table["status"]) == {"skipped"} and not (out / "bags").exists()


def read_identity(bag: Path) -> dict:
    from histomil.provenance import read_h5

    return read_h5(bag)["inputs"]["patch_file"]
