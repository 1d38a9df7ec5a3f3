from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import tifffile
from PIL import Image
from typer.testing import CliRunner

from histomil.cli import app
from histomil.executors import BatchError
from histomil.provenance import StaleOutputError
from histomil.slides import preprocess as pp
from histomil.slides.preprocess import PreprocessConfig, preprocess_slides


def _read(path: Path):
    with h5py.File(path, "r") as h5:
        return h5["coords"][:], h5["tissue"][:], dict(h5.attrs), dict(h5["coords"].attrs)


def test_real_slide(real_slide: Path, tmp_path: Path):
    """CMU-1-Small-Region: 2220 x 2967 px at 0.499 um/px = 9 x 13 = 117 full 224-px patches at
    20x; about a third of the area is tissue in one elongated strip, so patches touching it with
    >= 5 % tissue are roughly half the grid: we accept 50-95."""
    coords = {}
    for backend in ("openslide", "tiffslide"):
        out = tmp_path / backend
        table = preprocess_slides([real_slide], out, PreprocessConfig(backend=backend))
        assert table.loc[0, "status"] == "ok"
        c, tissue, attrs, cattrs = _read(out / "patches" / "CMU-1-Small-Region.h5")
        assert 50 <= len(c) <= 95
        assert attrs["level0_mpp"] == pytest.approx(0.499)
        assert attrs["target_magnification"] == pytest.approx(20)
        assert attrs["patch_size"] == 224 and attrs["patch_size_level0"] == 224
        assert attrs["read_level"] == 0 and attrs["read_size"] == 224
        assert cattrs["patch_level"] == 0 and cattrs["patch_size"] == 224
        assert (tissue >= 0.05).all() and c.dtype == np.int64
        coords[backend] = c
    np.testing.assert_array_equal(coords["openslide"], coords["tiffslide"])
    # the tissue polygons cover roughly a third of the slide (the real tissue strip)
    geo = json.loads((tmp_path / "openslide" / "tissue" / "CMU-1-Small-Region.geojson").read_text())
    from shapely.geometry import shape

    area = sum(shape(f["geometry"]).area for f in geo["features"]) / (2220 * 2967)
    assert 0.2 < area < 0.5
    assert (tmp_path / "openslide" / "thumbnails" / "CMU-1-Small-Region.png").is_file()


def test_synthetic_cohort_outputs(synth_cohort: Path, tmp_path: Path):
    table = preprocess_slides([synth_cohort], tmp_path, PreprocessConfig(patch_size=112))
    assert (table["status"] == "ok").all() and (table["n_patches"] > 5).all()
    for sid in table["slide_id"]:
        c, tissue, attrs, _ = _read(tmp_path / "patches" / f"{sid}.h5")
        assert (c % attrs["patch_size_level0"] == 0).all()
        assert list(c[:, 1]) == sorted(c[:, 1])  # raster order
        assert attrs["slide_id"] == sid and attrs["segmentation"] == "saturation"
        thumb = Image.open(tmp_path / "thumbnails" / f"{sid}.png")
        assert max(thumb.size) >= 500
    status = pd.read_csv(tmp_path / "preprocess.csv")
    assert list(status.columns)[:5] == ["slide_id", "status", "n_patches", "seconds", "error"]
    assert json.loads((tmp_path / "preprocess_config.json").read_text())["patch_size"] == 112


def test_non_pyramidal_stripped_tiff(tmp_path: Path):
    img = np.full((600, 800, 3), 240, np.uint8)
    img[100:500, 200:700] = (200, 110, 170)
    path = tmp_path / "flat.tif"
    tifffile.imwrite(
        path, img, photometric="rgb", resolution=(20000, 20000), resolutionunit="CENTIMETER"
    )
    table = preprocess_slides([path], tmp_path / "out", PreprocessConfig(patch_size=100))
    assert table.loc[0, "status"] == "ok"
    c, *_ = _read(tmp_path / "out" / "patches" / "flat.h5")
    assert len(c) == 4 * 5  # a 400 x 500 px block, 100-px patches, grid-aligned


def test_jpeg_needs_slide_mpp_and_manifest_mpp(tmp_path: Path):
    img = np.full((800, 800, 3), 240, np.uint8)
    img[200:600, 200:600] = (190, 100, 160)  # 200 x 200 um of tissue
    Image.fromarray(img).save(tmp_path / "dp.jpg", quality=95)
    table = preprocess_slides([tmp_path / "dp.jpg"], tmp_path / "a", skip_errors=True)
    assert table.loc[0, "status"] == "error"
    assert "MissingMppError" in table.loc[0, "error"] and "--level0-mpp" in table.loc[0, "error"]
    table = preprocess_slides([tmp_path / "dp.jpg"], tmp_path / "b", slide_mpp=0.5,
                              config=PreprocessConfig(patch_size=100))  # fmt: skip
    assert table.loc[0, "status"] == "ok" and table.loc[0, "n_patches"] == 16
    pd.DataFrame({"slide_path": ["dp.jpg"], "mpp": [0.5]}).to_csv(tmp_path / "m.csv", index=False)
    table = preprocess_slides(
        [tmp_path / "m.csv"], tmp_path / "c", PreprocessConfig(patch_size=100)
    )
    assert table.loc[0, "n_patches"] == 16


@pytest.mark.filterwarnings("ignore:Corrupt EXIF:UserWarning")
def test_empty_slide_and_corrupt_file(tmp_path: Path, synth_cohort: Path):
    Image.fromarray(np.full((500, 500, 3), 248, np.uint8)).save(tmp_path / "white.png")
    (tmp_path / "broken.tif").write_bytes(b"II*\x00garbage" * 10)
    good = synth_cohort.parent / "slides" / "synth_7_000.tif"
    inputs = [tmp_path / "white.png", tmp_path / "broken.tif", good]
    with pytest.raises(BatchError, match="broken"):
        preprocess_slides(inputs, tmp_path / "out", slide_mpp=0.5)
    status = pd.read_csv(tmp_path / "out" / "preprocess.csv").set_index("slide_id")
    assert status.loc["white", "status"] == "empty" and status.loc["white", "n_patches"] == 0
    assert status.loc["broken", "status"] == "error" and "corrupt" in status.loc["broken", "error"]
    assert status.loc["synth_7_000", "status"] == "ok"
    c, *_ = _read(tmp_path / "out" / "patches" / "white.h5")
    assert c.shape == (0, 2)


def test_rerun_after_interruption_finishes_the_rest(
    synth_cohort: Path, tmp_path: Path, monkeypatch
):
    calls = []
    real_task = pp._task

    def interrupted(**kwargs):
        calls.append(kwargs["slide"].slide_id)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the user pressed Ctrl-C during the second slide
        return real_task(**kwargs)

    monkeypatch.setattr(pp, "_task", interrupted)
    with pytest.raises(KeyboardInterrupt):
        preprocess_slides([synth_cohort], tmp_path)
    assert len(list((tmp_path / "patches").glob("*.h5"))) == 1
    assert not list((tmp_path / "patches").glob("*.part"))
    monkeypatch.setattr(pp, "_task", real_task)
    table = preprocess_slides([synth_cohort], tmp_path)
    assert table["status"].tolist() == ["skipped", "ok", "ok"]
    assert (table["n_patches"] > 0).all()
    assert len(pd.read_csv(tmp_path / "preprocess.csv")) == 3


def test_cli(tmp_path: Path):
    runner = CliRunner()
    res = runner.invoke(app, ["synth", "slides", "--out", str(tmp_path / "s"), "--n", "2",
                              "--seed", "1", "--size", "1200x900"])  # fmt: skip
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["preprocess", str(tmp_path / "s" / "manifest.csv"), "--out",
                              str(tmp_path / "p"), "--magnification", "10", "--patch-size", "112",
                              "--segmentation", "saturation"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "2 ok" in res.output
    with h5py.File(tmp_path / "p" / "patches" / "synth_1_000.h5") as h5:
        assert h5.attrs["target_mpp"] == 1.0 and h5.attrs["patch_size_level0"] == 224
    Image.fromarray(np.zeros((300, 300, 3), np.uint8)).save(tmp_path / "x.jpg")
    res = runner.invoke(app, ["preprocess", str(tmp_path / "x.jpg"), "--out", str(tmp_path / "q")])
    assert res.exit_code == 1 and "--level0-mpp" in res.output
    res = runner.invoke(app, ["preprocess", str(tmp_path / "x.jpg"), "--out", str(tmp_path / "q"),
                              "--mpp", "0.5", "--magnification", "20"])  # fmt: skip
    assert res.exit_code != 0


def test_rerun_with_other_settings_is_refused(synth_cohort: Path, tmp_path: Path):
    good = synth_cohort.parent / "slides" / "synth_7_001.tif"
    preprocess_slides([good], tmp_path)
    with pytest.raises(StaleOutputError, match="other inputs or settings.*patch_size: 224 -> 256"):
        preprocess_slides([good], tmp_path, PreprocessConfig(patch_size=256))


def test_segmentation_downsample_gives_16_mask_px_per_patch():
    # CAMELYON-size slide, 224-px patches at 20x from 0.25 um/px: 448 level-0 px per patch side
    assert pp.segmentation_downsample((40000, 30000), 448, 4096) == pytest.approx(28)
    # small slides keep at least 1024 mask px on the longest side (never finer than level 0)
    assert pp.segmentation_downsample((2220, 2967), 224, 4096) == pytest.approx(2967 / 1024)
    assert pp.segmentation_downsample((600, 400), 224, 4096) == 1.0
    # the cap bounds the image for huge slides with small patches
    assert pp.segmentation_downsample((200000, 100000), 64, 4096) == pytest.approx(200000 / 4096)


def test_preprocess_path_imports_no_torch():
    """`histomil preprocess` needs no deep-learning stack: importing the preprocess path (slides,
    annotations, the local executor) must not load torch or timm (0.7 GB, ~4 s)."""
    import subprocess
    import sys

    code = (
        "import sys, histomil.slides.preprocess, histomil.synth.slides, histomil.executors, "
        "histomil.annotations.labelling, histomil.annotations.qupath; "
        "print(sorted(m for m in ('torch', 'timm', 'torchvision') if m in sys.modules))"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


def test_preprocessing_a_slide_loads_no_torch(tmp_path):
    """Running preprocess (not only importing it) stays free of torch: the patch file's CLAM
    attributes come from `histomil.bags.layouts`, whose package must not pull in `Bag` (torch)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from histomil.synth.slides import SlideSynthConfig, write_synthetic_slide\n"
        "from histomil.slides.preprocess import PreprocessConfig, preprocess_slides\n"
        f"p = r'{tmp_path}' + '/s.tif'\n"
        "write_synthetic_slide(p, SlideSynthConfig(size=(800, 600)), 1, True)\n"
        f"preprocess_slides([p], r'{tmp_path}' + '/out', PreprocessConfig(patch_size=112))\n"
        "print(sorted(m for m in ('torch', 'timm', 'torchvision') if m in sys.modules))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == "[]"
