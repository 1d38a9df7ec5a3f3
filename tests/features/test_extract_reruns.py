"""Extraction reruns: bags record their weights, patch file and slide; a change is refused
(naming old -> new) or re-extracted with ``overwrite``; empty slides are a status, not an error;
status rows are one line with tracebacks in a log; counts are integers."""

from __future__ import annotations

import warnings
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from histomil.bags import load_bag
from histomil.executors import BatchError
from histomil.features import ExtractConfig, WeightsSpec, extract_dir
from histomil.features.patches import PatchDataset
from histomil.provenance import StaleOutputError, read_h5

SMALL = ExtractConfig(
    encoder="timm:resnet18",
    weights=WeightsSpec(random=True),
    batch_size=3,
    workers=0,
    precision="fp32",
    progress=False,
)
BAG = "CMU-1-Small-Region.h5"


@pytest.fixture(autouse=True)
def _quiet_random_weights():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*RANDOM weights")
        yield


def _mtimes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted(folder.rglob("*")) if p.is_file()}


def test_new_weights_over_random_bags_are_refused_then_reextracted(tmp_path, patch_dir):
    """Found: `extract --weights r50.pth` over `--random-weights` bags printed `0 done,
    6 skipped` and kept the random features."""
    import timm
    import torch

    out = tmp_path / "out"
    extract_dir(patch_dir, out, SMALL)
    random_features = load_bag(out / "bags" / BAG).features
    ckpt = tmp_path / "r18.pth"
    torch.manual_seed(3)
    torch.save(timm.create_model("resnet18", num_classes=0).state_dict(), ckpt)
    trained = replace(SMALL, weights=WeightsSpec(path=ckpt))
    before = _mtimes(out)
    with pytest.raises(StaleOutputError) as info:
        extract_dir(patch_dir, out, trained)
    message = str(info.value)
    assert 'params.weights: "random" -> "file"' in message
    assert "inputs.weights: (not recorded) -> r18.pth" in message and "--overwrite" in message
    assert _mtimes(out) == before  # refused before writing anything
    rows = extract_dir(patch_dir, out, replace(trained, overwrite=True))
    assert [r["status"] for r in rows] == ["done"]
    bag = load_bag(out / "bags" / BAG)
    assert "sha256:" in bag.attrs["encoder_weights"]
    assert not np.allclose(bag.features, random_features)
    assert [r["status"] for r in extract_dir(patch_dir, out, trained)] == ["skipped"]


def test_bag_from_a_changed_patch_file_is_detected(tmp_path, make_patch_file):
    """Found: after re-running preprocess, the old 16-patch bags were kept beside a new
    6-patch patch file."""
    patches, out = tmp_path / "patches", tmp_path / "out"
    make_patch_file(patches, n=8, patch_size=64)
    extract_dir(patches, out, SMALL)
    assert [r["status"] for r in extract_dir(patches, out, SMALL)] == ["skipped"]
    make_patch_file(patches, n=5, patch_size=64)  # preprocess rerun with other settings
    with pytest.raises(
        StaleOutputError,
        match=r"inputs\.patch_file: CMU-1-Small-Region\.h5 \(\d+ bytes, \w{12}\) -> ",
    ):
        extract_dir(patches, out, SMALL)
    assert load_bag(out / "bags" / BAG).features.shape[0] == 8
    extract_dir(patches, out, replace(SMALL, overwrite=True))
    bag = load_bag(out / "bags" / BAG)
    assert bag.features.shape[0] == 5
    prov = read_h5(out / "bags" / BAG)
    assert prov["step"] == "extract" and prov["inputs"]["patch_file"]["name"] == BAG
    assert prov["inputs"]["slide"]["name"] == "CMU-1-Small-Region.svs"
    assert prov["params"]["weights"] == "random" and prov["params"]["weights_seed"] == 0


def test_other_random_seed_is_a_change(tmp_path, patch_dir):
    extract_dir(patch_dir, tmp_path / "out", SMALL)
    other = replace(SMALL, weights=WeightsSpec(random=True, seed=1))
    with pytest.raises(StaleOutputError, match=r"params\.weights_seed: 0 -> 1"):
        extract_dir(patch_dir, tmp_path / "out", other)


def test_empty_slides_are_skipped_not_errors(tmp_path, make_patch_file):
    """Found: slides preprocess marks `empty` were hard errors unless --skip-errors."""
    patches, out = tmp_path / "patches", tmp_path / "out"
    make_patch_file(patches, n=3, patch_size=64, slide_id="fine")
    empty = make_patch_file(patches, n=3, patch_size=64, slide_id="white")
    with h5py.File(empty, "a") as f:
        del f["coords"], f["tissue"], f["patch_labels"], f["overlap"]
        f["coords"] = np.zeros((0, 2), dtype=np.int64)
    rows = extract_dir(patches, out, SMALL)  # no --skip-errors needed
    assert {r["slide_id"]: r["status"] for r in rows} == {"fine": "done", "white": "empty"}
    assert sorted(p.name for p in (out / "bags").iterdir()) == ["fine.h5"]
    status = pd.read_csv(out / "extract.csv", dtype=str).set_index("slide_id")
    assert status.loc["white", "status"] == "empty" and status.loc["white", "n_patches"] == "0"
    assert "empty" in status.loc["white", "error"]


def test_failure_rows_are_one_line_with_traceback_log_and_integer_counts(
    tmp_path, make_patch_file, monkeypatch
):
    """Found: extract.csv stored whole tracebacks; counts must never read `12.0`."""
    patches, out = tmp_path / "patches", tmp_path / "out"
    make_patch_file(patches, n=6, patch_size=64, slide_id="a_broken")
    make_patch_file(patches, n=4, patch_size=64, slide_id="b_fine")
    original = PatchDataset.__getitem__

    def flaky(self, i):
        if self.coords.shape[0] == 6 and i == 4:
            raise OSError("disk went away")
        return original(self, i)

    monkeypatch.setattr(PatchDataset, "__getitem__", flaky)
    with pytest.raises(BatchError, match="extract_errors.log"):
        extract_dir(patches, out, SMALL)
    text = (out / "extract.csv").read_text()
    assert "Traceback" not in text and len(text.strip().splitlines()) == 3
    status = pd.read_csv(out / "extract.csv", dtype=str).set_index("slide_id")
    assert status.loc["a_broken", "error"] == "OSError: disk went away"
    assert status.loc["b_fine", "n_patches"] == "4"  # not 4.0 next to a failed row
    log = (out / "extract_errors.log").read_text()
    assert "=== a_broken ===" in log and "Traceback" in log and "disk went away" in log
    monkeypatch.undo()
    extract_dir(patches, out, SMALL)  # fixed: the rerun finishes and removes the stale log
    assert not (out / "extract_errors.log").exists()


def test_empty_or_unsupported_patch_folder_is_an_error(tmp_path):
    folder = tmp_path / "patches"
    folder.mkdir()
    (folder / "notes.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match=r"no patch files \(\*\.h5\) in .*patches.*notes"):
        extract_dir(folder, tmp_path / "out", SMALL)
    assert not (tmp_path / "out").exists()


def test_patch_file_from_another_version_of_its_slide_is_reported(tmp_path, patch_dir):
    from histomil.provenance import record, write_h5

    older = tmp_path / "CMU-1-Small-Region.svs"
    older.write_bytes(b"an older scan")
    with h5py.File(patch_dir / BAG, "a") as f:
        write_h5(f, record("preprocess", {}, {"slide": older}))
    with pytest.raises(StaleOutputError, match="made from another version of slide") as info:
        extract_dir(patch_dir, tmp_path / "out", SMALL)
    assert "(slide: CMU-1-Small-Region.svs (13 bytes" in str(info.value)
    assert "rerun preprocess with --overwrite" in str(info.value)
    assert not (tmp_path / "out").exists()
