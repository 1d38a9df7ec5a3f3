from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from histomil.slides import (
    MissingMppError,
    SlideError,
    TileSpec,
    available_backends,
    open_slide,
    read_patches,
)


def test_registry_order():
    assert available_backends()[:3] == ["openslide", "tiffslide", "pil"]


@pytest.mark.parametrize("backend", ["openslide", "tiffslide"])
def test_real_slide_metadata(real_slide: Path, backend: str):
    with open_slide(real_slide, backend=backend) as slide:
        assert slide.backend == backend
        assert slide.dimensions == (2220, 2967)
        assert slide.level_count == 1
        assert slide.mpp == pytest.approx(0.499)
        assert slide.magnification == pytest.approx(20)
        region = slide.read_region((0, 0), 0, (64, 32))
        assert region.shape == (32, 64, 3) and region.dtype == np.uint8
        # outside the image is white with every backend
        outside = slide.read_region((2200, 2950), 0, (64, 64))
        assert (outside[-10:, -10:] == 255).all()


def test_backends_read_identical_pixels(real_slide: Path):
    a = open_slide(real_slide, backend="openslide")
    b = open_slide(real_slide, backend="tiffslide")
    spec = TileSpec.for_slide(a)
    coords = np.array([[448, 896], [1120, 1344]])
    np.testing.assert_array_equal(read_patches(a, coords, spec), read_patches(b, coords, spec))


def test_slide_pickles_by_path(real_slide: Path):
    slide = open_slide(real_slide, mpp=0.5, backend="tiffslide")
    clone = pickle.loads(pickle.dumps(slide))
    assert clone.backend == "tiffslide" and clone.mpp == 0.5 and clone.metadata_mpp == 0.499
    np.testing.assert_array_equal(
        clone.read_region((100, 100), 0, (16, 16)), slide.read_region((100, 100), 0, (16, 16))
    )


def test_thumbnail_keeps_aspect(real_slide: Path):
    thumb = open_slide(real_slide).get_thumbnail(300)
    assert thumb.shape == (300, 224, 3)


def test_jpeg_needs_mpp(tmp_path: Path):
    path = tmp_path / "digest.jpg"
    Image.fromarray(np.full((50, 80, 3), 200, np.uint8)).save(path)
    slide = open_slide(path)
    assert slide.backend == "pil" and slide.dimensions == (80, 50) and slide.mpp is None
    with pytest.raises(MissingMppError, match=r"digest\.jpg.*--level0-mpp"):
        TileSpec.for_slide(slide)
    spec = TileSpec.for_slide(open_slide(path, mpp=0.25), patch_size=10)
    assert spec.patch_size_level0 == 20 and spec.read_size == 20


def test_corrupt_file_gives_clear_error(tmp_path: Path):
    path = tmp_path / "broken.svs"
    path.write_bytes(b"II*\x00" + b"\x13" * 200)
    with pytest.raises(SlideError, match=r"broken\.svs.*corrupt"):
        open_slide(path)


def test_missing_file_and_bad_backend(tmp_path: Path):
    with pytest.raises(SlideError, match="does not exist"):
        open_slide(tmp_path / "nope.svs")
    (tmp_path / "x.png").write_bytes(b"")
    with pytest.raises(ValueError, match="valid"):
        open_slide(tmp_path / "x.png", backend="bioformats")


@pytest.mark.parametrize(("length", "thumb"), [(5000, 300), (100000, 3), (300, 300), (10000, 1)])
def test_thumbnail_blocks_cover_both_axes(length: int, thumb: int):
    from histomil.slides.backends import _block_edges

    edges = _block_edges(length, thumb)
    assert edges[0][0][0] == 0 and edges[0][1][0] == 0
    assert edges[-1][0][1] == length and edges[-1][1][1] == thumb
    for (a_l, a_t), (b_l, b_t) in zip(edges, edges[1:], strict=False):
        assert a_l[1] == b_l[0] and a_t[1] == b_t[0] and b_t[1] > b_t[0]


def test_blockwise_thumbnail_matches_full_read(real_slide: Path):
    slide = open_slide(real_slide)
    full = slide.get_thumbnail(4000)  # larger than the slide: level 0 as is, read in blocks
    np.testing.assert_array_equal(full, slide.read_region((0, 0), 0, slide.dimensions))


def test_read_downsampled_reads_only_the_nearest_level(tmp_path: Path):
    """The segmentation image comes from the pyramid level within sqrt(2) of the wanted
    downsample, read once as is: no finer level is decoded and nothing is resampled."""
    from histomil.synth.slides import SlideSynthConfig, write_synthetic_slide

    cfg = SlideSynthConfig(size=(2048, 1536), mpp=2.0, min_level_side=256, artefacts=False)
    made = write_synthetic_slide(tmp_path / "p.tif", cfg, seed=1, positive=False)
    slide = open_slide(made.path, backend="openslide")
    assert slide.level_downsamples == (1.0, 2.0, 4.0, 8.0)
    levels = []
    reader_read = slide._reader.read_region

    def spy(location, level, size):
        levels.append((level, tuple(size)))
        return reader_read(location, level, size)

    slide._reader.read_region = spy
    img = slide.read_downsampled(7.0)
    assert levels == [(3, (256, 192))] and img.shape == (192, 256, 3)
    levels.clear()
    assert slide.read_downsampled(3.0).shape == (384, 512, 3) and levels == [(2, (512, 384))]
    levels.clear()  # between levels: the finer one is read (block by block) and resized
    assert max(slide.read_downsampled(12.0).shape) == round(2048 / 12)
    assert {lv for lv, _ in levels} == {3}
