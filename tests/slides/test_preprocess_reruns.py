"""Preprocess reruns: every setting and the slide file are recorded; a changed one is refused
(naming old -> new) or recomputed with ``overwrite``; nothing is written before the decision;
upsampling warns; empty or unsupported inputs are errors."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import h5py
import pytest

from histomil.provenance import StaleOutputError, read_h5
from histomil.slides import UpsamplingWarning
from histomil.slides.preprocess import PreprocessConfig, preprocess_slides

SMALL = PreprocessConfig(patch_size=112)


@pytest.fixture
def slide(synth_cohort: Path, tmp_path: Path) -> Path:
    """A private copy of one synthetic slide (1200 x 900 px at 0.5 um/px)."""
    target = tmp_path / "slides" / "s1.tif"
    target.parent.mkdir()
    shutil.copy(synth_cohort.parent / "slides" / "synth_7_001.tif", target)
    return target


def _attrs(out: Path, sid: str = "s1") -> tuple[int, dict]:
    with h5py.File(out / "patches" / f"{sid}.h5", "r") as h5:
        return int(h5["coords"].shape[0]), dict(h5.attrs)


def _mtimes(out: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted(out.rglob("*")) if p.is_file()}


def test_corrected_slide_mpp_is_refused_then_recomputed(slide: Path, tmp_path: Path):
    """Found: a rerun with a corrected --slide-mpp printed `1 skipped` and kept the grid."""
    out = tmp_path / "out"
    preprocess_slides([slide], out, SMALL, slide_mpp=0.5)
    _, before = _attrs(out)
    assert before["patch_size_level0"] == 112
    files = _mtimes(out)
    with pytest.raises(StaleOutputError, match=r"params\.slide_mpp: 0\.5 -> 0\.25.*--overwrite"):
        preprocess_slides([slide], out, SMALL, slide_mpp=0.25)
    assert _mtimes(out) == files  # refused before writing anything (csv, config, patches)
    table = preprocess_slides([slide], out, SMALL, slide_mpp=0.25, overwrite=True)
    assert table["status"].tolist() != ["skipped"]
    _, after = _attrs(out)
    assert after["patch_size_level0"] == 224 and after["level0_mpp"] == 0.25


def test_changed_min_tissue_is_refused_and_unchanged_rerun_skips(slide: Path, tmp_path: Path):
    """Found: after `preprocess --min-tissue 0.6` old outputs were kept beside new ones."""
    out = tmp_path / "out"
    preprocess_slides([slide], out, SMALL)
    n_before, _ = _attrs(out)
    again = preprocess_slides([slide], out, SMALL)
    assert again["status"].tolist() == ["skipped"] and again["n_patches"].tolist() == [n_before]
    strict = PreprocessConfig(patch_size=112, min_tissue=0.9)
    with pytest.raises(StaleOutputError, match=r"params\.min_tissue: 0\.05 -> 0\.9"):
        preprocess_slides([slide], out, strict)
    preprocess_slides([slide], out, strict, overwrite=True)
    n_after, attrs = _attrs(out)
    assert n_after < n_before and attrs["min_tissue"] == 0.9
    prov = read_h5(out / "patches" / "s1.h5")
    assert prov["step"] == "preprocess" and prov["params"]["min_tissue"] == 0.9
    assert prov["params"]["segmentation"]["method"] == strict.segmentation.method
    assert prov["inputs"]["slide"]["name"] == "s1.tif"


def test_replaced_slide_file_is_detected(slide: Path, synth_cohort: Path, tmp_path: Path):
    out = tmp_path / "out"
    preprocess_slides([slide], out, SMALL)
    shutil.copy(synth_cohort.parent / "slides" / "synth_7_000.tif", slide)  # same name
    with pytest.raises(
        StaleOutputError,
        match=r"inputs\.slide: s1\.tif \(\d+ bytes, \w{12}\) -> s1\.tif \(\d+ bytes",
    ):
        preprocess_slides([slide], out, SMALL)


def test_refusal_lists_every_slide_before_writing(synth_cohort: Path, tmp_path: Path):
    out = tmp_path / "out"
    slides = sorted((synth_cohort.parent / "slides").glob("*.tif"))[:2]
    preprocess_slides(slides, out, SMALL)
    files = _mtimes(out)
    with pytest.raises(StaleOutputError, match="2 of 2 slide") as info:
        preprocess_slides(slides, out, PreprocessConfig(patch_size=112, min_tissue=0.5))
    assert all(s.stem in str(info.value) for s in slides)
    assert _mtimes(out) == files


def test_upsampling_warns_once_per_slide_and_is_recorded(slide: Path, tmp_path: Path):
    """0.25 um/px asked of a 0.5 um/px slide (40x of a 20x scan): warned and recorded."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = preprocess_slides([slide], tmp_path / "out", PreprocessConfig(target_mpp=0.25))
    ups = [w for w in caught if issubclass(w.category, UpsamplingWarning)]
    assert len(ups) == 1
    text = str(ups[0].message)
    assert "s1.tif" in text and "0.25 um/px" in text and "upsampled x2.00" in text
    assert "\n" not in text
    assert "upsampled" in table.loc[0, "warning"]
    _, attrs = _attrs(tmp_path / "out")
    assert bool(attrs["upsampled"]) and attrs["read_scale"] == 2.0 and attrs["read_level"] == 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        preprocess_slides([slide], tmp_path / "native", SMALL)
    assert not [w for w in caught if issubclass(w.category, UpsamplingWarning)]
    _, attrs = _attrs(tmp_path / "native")
    assert not bool(attrs["upsampled"]) and attrs["read_scale"] == 1.0


def test_empty_folder_or_unsupported_files_are_errors(tmp_path: Path):
    """Found: an empty input folder or a folder of unsupported files exited 0 with 0 slides."""
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=r"no slide files in .*empty.*\.svs"):
        preprocess_slides([empty], tmp_path / "out")
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("x")
    (other / "scan.czi").write_bytes(b"x")
    with pytest.raises(FileNotFoundError, match=r"other.*notes\.txt.*accepted: \.svs"):
        preprocess_slides([other], tmp_path / "out")
    assert not (tmp_path / "out").exists()
