"""Extraction from the real slide: shapes, labels copied, reruns, interruptions, precision, CLI."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from histomil.bags import load_bag
from histomil.executors import BatchError
from histomil.features import ExtractConfig, WeightsSpec, extract_dir, extract_slide
from histomil.features.patches import PatchDataset, PatchFileError, read_patch_file

SMALL = ExtractConfig(
    encoder="timm:resnet18",
    weights=WeightsSpec(random=True),
    batch_size=3,
    workers=0,
    precision="fp32",
    progress=False,
)


@pytest.fixture(autouse=True)
def _quiet_random_weights():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*RANDOM weights")
        yield


def _replace(config: ExtractConfig, **kw) -> ExtractConfig:
    from dataclasses import replace

    return replace(config, **kw)


def test_resnet50_trunc_features_from_real_slide(tmp_path, make_patch_file):
    patches = tmp_path / "patches"
    make_patch_file(patches, n=3, patch_size=224)
    config = _replace(SMALL, encoder="resnet50_trunc")
    rows = extract_dir(patches, tmp_path / "out", config)
    assert [r["status"] for r in rows] == ["done"]
    bag = load_bag(tmp_path / "out" / "bags" / "CMU-1-Small-Region.h5")
    assert bag.features.shape == (3, 1024) and np.isfinite(bag.features).all()
    assert bag.features.std() > 0  # real pixels, not a constant
    assert bag.attrs["encoder"] == "resnet50_trunc"
    assert bag.attrs["encoder_weights"] == "random"
    assert bag.attrs["precision"] == "fp32" and bag.attrs["feature_dim"] == 1024
    assert bag.attrs["patch_size"] == 224 and bag.attrs["slide_label"] == 1
    np.testing.assert_array_equal(bag.patch_labels, [0, 1, 0])
    np.testing.assert_allclose(bag.tissue, [0.5, 0.75, 1.0])
    status = pd.read_csv(tmp_path / "out" / "extract.csv")
    assert status["status"].tolist() == ["done"] and status["n_patches"].tolist() == [3]


def test_workers_give_the_same_features_and_rerun_skips(tmp_path, patch_dir):
    out0, out2 = tmp_path / "w0", tmp_path / "w2"
    extract_dir(patch_dir, out0, SMALL)
    extract_dir(patch_dir, out2, _replace(SMALL, workers=2, batch_size=2, export_pt=True))
    a = load_bag(out0 / "bags" / "CMU-1-Small-Region.h5")
    b = load_bag(out2 / "bags" / "CMU-1-Small-Region.h5")
    np.testing.assert_allclose(a.features, b.features, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(a.coords, b.coords)

    pt = load_bag(out2 / "pt_files" / "CMU-1-Small-Region.pt")
    assert pt.layout == "clam_pt"
    np.testing.assert_array_equal(pt.coords, b.coords)  # coords from the sibling bags/ file

    bag_file = out0 / "bags" / "CMU-1-Small-Region.h5"
    before = bag_file.stat().st_mtime_ns
    rows = extract_dir(patch_dir, out0, SMALL)
    assert rows[0]["status"] == "skipped" and bag_file.stat().st_mtime_ns == before


def test_interrupted_slide_leaves_no_bag_and_others_continue(
    tmp_path, make_patch_file, monkeypatch
):
    patches = tmp_path / "patches"
    make_patch_file(patches, n=6, patch_size=64, slide_id="a_broken")
    make_patch_file(patches, n=4, patch_size=64, slide_id="b_fine")
    original = PatchDataset.__getitem__

    def flaky(self, i):
        if self.coords.shape[0] == 6 and i == 4:  # mid-slide, after a batch was encoded
            raise OSError("disk went away")
        return original(self, i)

    monkeypatch.setattr(PatchDataset, "__getitem__", flaky)
    out = tmp_path / "out"
    with pytest.raises(BatchError, match="1 of 2 slide.*a_broken.*disk went away"):
        extract_dir(patches, out, SMALL)
    bags = sorted(p.name for p in (out / "bags").iterdir())
    assert bags == ["b_fine.h5"]  # no partial or temporary file for a_broken
    status = pd.read_csv(out / "extract.csv").set_index("slide_id")
    assert status.loc["a_broken", "status"] == "failed"
    assert "disk went away" in status.loc["a_broken", "error"]
    assert status.loc["b_fine", "status"] == "done"

    rows = extract_dir(patches, out, SMALL, skip_errors=True)  # no exception with --skip-errors
    assert {r["slide_id"]: r["status"] for r in rows} == {"a_broken": "failed", "b_fine": "skipped"}


def test_bf16_matches_fp32(tmp_path, patch_dir):
    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        pytest.skip("this CPU has no native bf16")
    extract_dir(patch_dir, tmp_path / "fp32", SMALL)
    extract_dir(patch_dir, tmp_path / "bf16", _replace(SMALL, precision="bf16"))
    a = load_bag(tmp_path / "fp32" / "bags" / "CMU-1-Small-Region.h5")
    b = load_bag(tmp_path / "bf16" / "bags" / "CMU-1-Small-Region.h5")
    assert b.attrs["precision"] == "bf16"
    cos = (a.features * b.features).sum(1) / (
        np.linalg.norm(a.features, axis=1) * np.linalg.norm(b.features, axis=1)
    )
    assert cos.min() >= 0.99, cos


def test_patch_file_problems_are_clear(tmp_path, patch_dir, real_slide):
    import h5py

    path = patch_dir / "CMU-1-Small-Region.h5"
    with h5py.File(path, "a") as f:
        f.attrs["slide_path"] = "/gone/CMU-1-Small-Region.svs"
    with pytest.raises(PatchFileError, match="not found; pass --slides"):
        read_patch_file(path)
    pf = read_patch_file(path, slides_dir=real_slide.parent)
    assert pf.slide_path.name == "CMU-1-Small-Region.svs"
    with h5py.File(path, "a") as f:
        del f.attrs["read_size"]
    with pytest.raises(PatchFileError, match="missing attribute.*read_size"):
        extract_slide(path, tmp_path / "out", SMALL)
    with pytest.raises(FileNotFoundError, match="run `histomil preprocess`"):
        extract_dir(tmp_path / "empty", tmp_path / "out", SMALL)


def test_cli_extract_and_missing_weights_error(tmp_path, patch_dir, monkeypatch):
    from typer.testing import CliRunner

    from histomil.cli import app

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    runner = CliRunner()
    args = ["extract", "--patches", str(patch_dir), "--out", str(tmp_path / "out")]
    args += ["--encoder", "timm:resnet18", "--workers", "0", "--batch-size", "6"]
    result = runner.invoke(app, args)
    assert result.exit_code == 1 and "--random-weights" in result.output

    result = runner.invoke(app, [*args, "--random-weights", "--precision", "fp32", "--float16"])
    assert result.exit_code == 0, result.output
    assert "1 done" in result.output
    bag = load_bag(tmp_path / "out" / "bags" / "CMU-1-Small-Region.h5")
    assert bag.attrs["feature_dtype"] == "float16" and bag.features.shape == (6, 512)
