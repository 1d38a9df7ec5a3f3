from __future__ import annotations

import numpy as np
import pytest

from histomil.slides import TileSpec, grid_coords, mpp_from_magnification, tissue_fractions


class _FakeSlide:
    def __init__(self, mpp, downsamples):
        self.mpp = mpp
        self.level_downsamples = downsamples

    def require_mpp(self):
        return self.mpp


@pytest.mark.parametrize(
    ("mpp", "downsamples", "target", "level", "read_size", "size0"),
    [
        (0.25, (1.0, 2.0, 4.0), 0.5, 1, 224, 448),  # 40x pyramid -> read 20x level as is
        (0.2425, (1.0, 2.0, 4.0), 0.5, 1, 231, 462),  # CAMELYON 40x -> read level 1, downsample
        (0.5, (1.0, 4.0), 0.5, 0, 224, 224),
        (0.25, (1.0, 4.0), 0.5, 0, 448, 448),  # no 20x level: read level 0, never upsample
        (1.0, (1.0,), 0.5, 0, 112, 112),  # coarser than target: upsample level 0
    ],
)
def test_tilespec_level_choice(mpp, downsamples, target, level, read_size, size0):
    spec = TileSpec.for_slide(_FakeSlide(mpp, downsamples), 224, target)
    assert (spec.read_level, spec.read_size, spec.patch_size_level0) == (level, read_size, size0)
    assert spec.as_attrs()["target_magnification"] == pytest.approx(10 / target)


def test_magnification_convention():
    assert mpp_from_magnification(20) == 0.5
    assert mpp_from_magnification(40) == 0.25


def test_grid_is_raster_and_full_patches_only():
    coords = grid_coords((50, 25), 10)
    assert coords.shape == (10, 2)
    assert coords[:5, 1].tolist() == [0] * 5 and coords[:5, 0].tolist() == [0, 10, 20, 30, 40]
    assert grid_coords((5, 5), 10).shape == (0, 2)


def test_tissue_fractions_exact_on_fractional_boundaries():
    mask = np.zeros((4, 4), bool)
    mask[:, :2] = True  # left half of a 400 x 400 slide
    coords = np.array([[0, 0], [150, 0], [300, 300], [175, 50]])
    frac = tissue_fractions(mask, coords, 100, (400, 400))
    np.testing.assert_allclose(frac, [1.0, 0.5, 0.0, 0.25], atol=1e-6)
    # patch smaller than one mask pixel
    np.testing.assert_allclose(tissue_fractions(mask, np.array([[10, 10]]), 5, (400, 400)), [1])
