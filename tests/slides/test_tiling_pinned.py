"""Pinned patch reads: a pyramid read at level > 0 matches the downsampled level-0 crop.

The slide is written here so that every level is known exactly: level 0 is random 4 x 4 blocks
(plus a column ramp, so a shifted read never matches), level k the exact 2^k x 2^k block mean
of level 0, stored losslessly (deflate).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from histomil.slides.backends import open_slide
from histomil.slides.tiling import TileSpec, grid_coords, read_patch, read_patches

MPP0 = 0.5


def _down(a: np.ndarray, f: int) -> np.ndarray:
    """Exact f x f block mean (rounded) of an (H, W, 3) uint8 image."""
    h, w, c = a.shape
    blocks = a.reshape(h // f, f, w // f, f, c).astype(float)
    return np.round(blocks.mean(axis=(1, 3))).astype(np.uint8)


@pytest.fixture(scope="module")
def pyramid(tmp_path_factory) -> tuple[Path, np.ndarray]:
    import tifffile

    rng = np.random.default_rng(0)
    h0, w0 = 768, 1024
    base = rng.integers(0, 250, size=(h0 // 4, w0 // 4, 3)).astype(np.uint8)
    level0 = np.kron(base, np.ones((4, 4, 1), dtype=np.uint8))
    level0 = level0 + (np.arange(w0)[None, :, None] % 4).astype(np.uint8)
    path = tmp_path_factory.mktemp("pyramid") / "pyr.tif"
    with tifffile.TiffWriter(path) as tif:
        for i, ds in enumerate((1, 2, 4)):
            tif.write(
                level0 if ds == 1 else _down(level0, ds),
                tile=(128, 128),
                photometric="rgb",
                compression="zlib",
                resolution=(1e4 / MPP0 / ds, 1e4 / MPP0 / ds),
                resolutionunit="CENTIMETER",
                subfiletype=0 if i == 0 else 1,
                metadata=None,
            )
    return path, level0


@pytest.mark.parametrize("backend", ["openslide", "tiffslide"])
def test_read_patch_at_level_1_is_the_downsampled_level0_crop(pyramid, backend):
    path, level0 = pyramid
    slide = open_slide(path, backend=backend)
    spec = TileSpec.for_slide(slide, patch_size=64, target_mpp=1.0)
    assert (spec.read_level, spec.read_size, spec.patch_size_level0) == (1, 64, 128)
    for x, y in [(512, 256), (128, 384), (896, 640)]:
        patch = read_patch(slide, (x, y), spec)
        crop0 = slide.read_region((x, y), 0, (128, 128))
        np.testing.assert_array_equal(crop0, level0[y : y + 128, x : x + 128])
        np.testing.assert_array_equal(patch, _down(crop0, 2))
        # the read-level coordinates (x / 2, y / 2) are another region: the test can tell
        wrong = slide.read_region((x // 2, y // 2), 1, (64, 64))
        assert np.abs(patch.astype(int) - wrong).mean() > 20


def test_tile_spec_defaults_and_limits(pyramid):
    slide = open_slide(pyramid[0], backend="tiffslide")
    # defaults: 224 px at 0.5 um/px = level 0 of a 0.5 um/px slide, no resize
    assert TileSpec.for_slide(slide) == TileSpec(224, 0.5, 0.5, 0, 224, 224)
    assert TileSpec.for_slide(slide, patch_size=1, target_mpp=2.0).patch_size_level0 == 4
    assert TileSpec.for_slide(slide, patch_size=1, target_mpp=0.25).patch_size_level0 == 1
    with pytest.raises(ValueError, match="^patch_size must be >= 1, got 0$"):
        TileSpec.for_slide(slide, patch_size=0)
    with pytest.raises(ValueError, match="^target_mpp must be positive, got 0.0$"):
        TileSpec.for_slide(slide, target_mpp=0.0)


def test_read_patch_at_level_2_and_read_patches(pyramid):
    path, level0 = pyramid
    slide = open_slide(path, backend="tiffslide")
    spec = TileSpec.for_slide(slide, patch_size=32, target_mpp=2.0)
    assert (spec.read_level, spec.read_size, spec.patch_size_level0) == (2, 32, 128)
    coords = grid_coords(slide.dimensions, spec.patch_size_level0)
    assert coords.shape == (8 * 6, 2)
    patches = read_patches(slide, coords[[0, 9, 47]], spec)
    assert patches.shape == (3, 32, 32, 3) and patches.dtype == np.uint8
    for patch, (x, y) in zip(patches, coords[[0, 9, 47]], strict=True):
        np.testing.assert_array_equal(patch, _down(level0[y : y + 128, x : x + 128], 4))


def test_read_patch_resized_from_a_level_gt_0(pyramid):
    """read_size != patch_size: level 1 read (96 px) resized to 64 px matches the level-0 crop
    of the same 192 px area, resized the same way."""
    from PIL import Image

    path, level0 = pyramid
    slide = open_slide(path, backend="tiffslide")
    spec = TileSpec.for_slide(slide, patch_size=64, target_mpp=1.5)
    assert (spec.read_level, spec.read_size, spec.patch_size_level0) == (1, 96, 192)
    x, y = 384, 192
    patch = read_patch(slide, (x, y), spec)
    assert patch.shape == (64, 64, 3) and patch.dtype == np.uint8
    ref = np.asarray(
        Image.fromarray(_down(level0[y : y + 192, x : x + 192], 2)).resize(
            (64, 64), Image.Resampling.LANCZOS
        )
    )
    np.testing.assert_array_equal(patch, ref)


def test_magnification_convention_and_its_error():
    from histomil.slides.tiling import mpp_from_magnification

    assert [mpp_from_magnification(m) for m in (40, 20, 10, 1, 0.5)] == [0.25, 0.5, 1.0, 10.0, 20.0]
    for bad in (0, -20):
        with pytest.raises(ValueError) as err:
            mpp_from_magnification(bad)
        assert str(err.value) == f"magnification must be positive, got {bad}"


def test_tile_spec_attributes_written_to_patch_files():
    spec = TileSpec(patch_size=224, target_mpp=0.5, level0_mpp=1.0, read_level=0, read_size=112,
                    patch_size_level0=112)  # fmt: skip
    assert spec.as_attrs() == {
        "patch_size": 224, "target_mpp": 0.5, "level0_mpp": 1.0, "read_level": 0,
        "read_size": 112, "patch_size_level0": 112, "target_magnification": 20.0,
        "read_scale": 2.0, "upsampled": True,
    }  # fmt: skip
    fine = TileSpec(224, 0.5, 0.25, 1, 448, 448).as_attrs()
    assert (fine["read_scale"], fine["upsampled"]) == (0.5, False)


def test_tissue_fractions_of_no_patches():
    from histomil.slides.tiling import tissue_fractions

    got = tissue_fractions(np.ones((4, 4), bool), np.zeros((0, 2), np.int64), 16, (64, 64))
    assert got.shape == (0,) and got.dtype == np.float32


def test_tissue_fractions_on_a_wide_slide_by_hand():
    """A slide twice as wide as high (80 x 40 level-0 px, mask 8 x 4: one mask pixel = 10 x 10
    level-0 px): each axis scales by its own ratio."""
    from histomil.slides.tiling import tissue_fractions

    mask = np.zeros((4, 8), bool)
    mask[0, 7] = True  # top right
    mask[3, 0] = mask[3, 1] = True  # bottom left, two pixels
    coords = np.array([[70, 0], [0, 30], [5, 25], [65, 5], [30, 10]])
    got = tissue_fractions(mask, coords, 10, (80, 40))
    # [70, 0]: exactly the top-right pixel; [0, 30]: the bottom-left one; [5, 25]: its lower half
    # covers half of two tissue pixels -> 2 * 25 / 100; [65, 5]: a quarter of the top-right pixel
    assert got.tolist() == pytest.approx([1.0, 1.0, 0.5, 0.25, 0.0])
    assert got.dtype == np.float32  # (N,) float32, as patch files store it
    # patches hanging over the slide's edge: outside is not tissue, the area stays the patch's
    over = tissue_fractions(mask, np.array([[75, 0], [-5, 30], [0, 35], [70, -5]]), 10, (80, 40))
    assert over.tolist() == pytest.approx([0.5, 0.5, 0.5, 0.5])


def test_integral_image_counts_fit_their_type():
    from histomil.slides.tiling import _count_dtype

    assert _count_dtype(2**31 - 1) is np.int32  # the largest count int32 holds
    assert _count_dtype(2**31) is np.int64
    assert _count_dtype(0) is np.int32


def test_grid_coords_keeps_only_full_patches_one_row_or_column_included():
    # 19 px wide: one column (a second would end at 20); 29 px high: two rows (a third ends at 30)
    assert grid_coords((19, 29), 10).tolist() == [[0, 0], [0, 10]]
    assert grid_coords((29, 19), 10).tolist() == [[0, 0], [10, 0]]
    assert grid_coords((20, 10), 10).tolist() == [[0, 0], [10, 0]]  # edges exactly reached
    for dims in ((5, 5), (5, 50), (50, 5)):
        empty = grid_coords(dims, 10)
        assert empty.shape == (0, 2) and empty.dtype == np.int64
    assert grid_coords((19, 29), 10).dtype == np.int64


class _Scan:
    """What TileSpec.for_slide reads from a slide."""

    def __init__(self, mpp: float, downsamples: tuple[float, ...], path: str | None = None):
        self.mpp, self.level_downsamples = mpp, downsamples
        if path is not None:
            self.path = path

    def require_mpp(self) -> float:
        return self.mpp


def test_upsampling_warning_names_the_slide_and_the_resolutions():
    from histomil.slides.tiling import UpsamplingWarning

    with pytest.warns(UpsamplingWarning) as got:
        spec = TileSpec.for_slide(_Scan(2.0, (1.0,), "/scans/a b.svs"), 224, 0.5)
    assert str(got[0].message) == (
        "slide a b.svs: the target 0.5 um/px (20x) is finer than level 0 (2 um/px, 5x); patches "
        "are upsampled x4.00 from level 0 (no extra detail); ask for a resolution the scan has"
    )
    assert spec.upsampled and spec.read_scale == 4.0
    with pytest.warns(UpsamplingWarning, match=r"^slide \?: the target 0.25 um/px \(40x\)"):
        TileSpec.for_slide(_Scan(0.5, (1.0, 4.0)), 224, 0.25)  # a slide object without a path


def test_one_pixel_patches_read_one_pixel():
    """patch_size 1 at the scan's own resolution: one level-0 pixel, read as it is."""
    spec = TileSpec.for_slide(_Scan(0.5, (1.0, 2.0)), patch_size=1, target_mpp=0.5)
    assert (spec.read_level, spec.read_size, spec.patch_size_level0) == (0, 1, 1)
