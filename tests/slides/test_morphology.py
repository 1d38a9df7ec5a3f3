"""The NumPy morphology of tissue masks gives exactly what scipy.ndimage gives (issue 20)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from scipy import ndimage as ndi

from histomil.slides import _morphology as M


def _masks():
    rng = np.random.default_rng(7)
    yield np.zeros((5, 6), bool)
    yield np.ones((4, 3), bool)
    yield np.eye(6, dtype=bool)  # diagonal chain: one 8-component, six 4-components
    yield np.eye(6, dtype=bool)[::-1]
    for p in (0.3, 0.5, 0.7):
        yield rng.random((41, 57)) < p
    blobs = ndi.gaussian_filter(rng.random((120, 90)), 3) > 0.5  # smooth, with holes
    yield blobs
    spiral = np.zeros((31, 31), bool)  # one long snake: many union-find rounds
    for i in range(0, 15, 2):
        spiral[i, i : 31 - i] = spiral[30 - i, i : 31 - i] = True
        spiral[i : 31 - i, 30 - i] = True
        spiral[i + 2 : 31 - i, i] = True
    yield spiral


@pytest.mark.parametrize("diagonal", [True, False])
def test_components_match_ndi_label(diagonal):
    structure = np.ones((3, 3)) if diagonal else None
    for mask in _masks():
        labels, n = ndi.label(mask, structure=structure)
        runs = M.components(mask, diagonal)
        assert runs.n == n
        ours = np.zeros(mask.shape, np.int64)
        for c in range(runs.n):
            ours[M.paint(mask.shape, runs, runs.component == c)] = c + 1
        np.testing.assert_array_equal(ours, labels)  # same numbering (raster order) too
        np.testing.assert_array_equal(runs.sizes, np.bincount(labels.ravel())[1:])


@pytest.mark.parametrize("keep_border", [False, True])
def test_remove_small_matches_the_scipy_version(keep_border):
    def reference(mask, max_px):
        labels, n = ndi.label(mask, structure=None if keep_border else np.ones((3, 3)))
        sizes = np.bincount(labels.ravel())
        small = sizes <= max_px
        small[0] = False
        if keep_border:
            edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
            small[edge] = False
        return mask & ~small[labels]

    for mask in _masks():
        for max_px in (0, 1, 3, 20, 500):
            np.testing.assert_array_equal(
                M.remove_small(mask, max_px, keep_border), reference(mask, max_px)
            )


def test_dilate_close_and_box_mean_match_ndi():
    rng = np.random.default_rng(3)
    for mask in _masks():
        for r in (0, 1, 2, 5, 10):
            size = 2 * r + 1
            grown = ndi.maximum_filter(mask.view(np.uint8), size=size, mode="constant", cval=0)
            np.testing.assert_array_equal(M.dilate(mask, r), grown.view(bool))
            closed = ndi.minimum_filter(grown, size=size, mode="nearest").view(bool)
            np.testing.assert_array_equal(M.close(mask, r), closed)
    for shape in ((37, 53, 3), (2, 9, 3), (9, 1, 3)):
        rgb = rng.integers(0, 256, shape).astype(np.uint8)
        for size in (1, 2, 3, 4, 7, 16):
            np.testing.assert_array_equal(
                M.box_mean(rgb, size), ndi.uniform_filter(rgb, size=(size, size, 1))
            )


def test_segmentation_and_polygons_import_no_scipy_ndimage():
    code = (
        "import sys, numpy as np\n"
        "from histomil.slides.tissue import segment_tissue, mask_to_polygons\n"
        "rgb = np.full((120, 160, 3), 240, np.uint8); rgb[30:90, 40:120] = (200, 120, 180)\n"
        "rgb[50:55, 60:65] = (30, 60, 160)\n"
        "mask = segment_tissue(rgb, 8.0)\n"
        "assert mask.any() and len(mask_to_polygons(mask, (32.0, 32.0)).geoms) == 1\n"
        "print(sorted(m for m in sys.modules if m.startswith(('scipy', 'pandas'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
