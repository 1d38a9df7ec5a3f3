"""Overlap, labels and attention targets on hand-made geometry with known answers."""

from __future__ import annotations

import numpy as np
import pytest
import shapely

from histomil.annotations import (
    Annotations,
    attention_target,
    patch_labels,
    patch_overlap,
    region_overlap,
)


def test_overlap_known_fractions():
    # lesion = [0, 150] x [0, 100]; patches of 100 px
    ann = Annotations(shapely.box(0, 0, 150, 100), shapely.Polygon())
    coords = np.array([[0, 0], [100, 0], [200, 0], [50, 50], [-100, -100]])
    overlap = patch_overlap(coords, 100, ann)
    np.testing.assert_allclose(overlap, [1.0, 0.5, 0.0, 0.5, 0.0])


def test_overlap_handles_empty_inputs():
    ann = Annotations(shapely.box(0, 0, 10, 10), shapely.Polygon())
    assert patch_overlap(np.zeros((0, 2)), 10, ann).shape == (0,)
    assert region_overlap(np.array([[0, 0]]), 10, shapely.Polygon()).tolist() == [0.0]
    with pytest.raises(ValueError, match="patch_size_level0"):
        region_overlap(np.array([[0, 0]]), 0, shapely.box(0, 0, 1, 1))


def test_many_small_polygons_spanning_piece_cells():
    # a ragged region (many circles) checked against per-patch intersections
    rng = np.random.default_rng(1)
    centres = rng.uniform(0, 5000, size=(60, 2))
    region = shapely.union_all(shapely.buffer(shapely.points(centres), rng.uniform(50, 400, 60)))
    gx, gy = np.meshgrid(np.arange(-300, 5300, 137), np.arange(-300, 5300, 137))
    coords = np.stack([gx.ravel(), gy.ravel()], axis=1)
    got = region_overlap(coords, 137, region)
    boxes = shapely.box(coords[:, 0], coords[:, 1], coords[:, 0] + 137, coords[:, 1] + 137)
    expected = shapely.area(shapely.intersection(boxes, region)) / 137**2
    np.testing.assert_allclose(got, expected, atol=1e-9)


def test_patch_labels_threshold_is_strict_and_nan_is_unknown():
    overlap = np.array([0.0, 0.05, 0.0500001, 1.0, np.nan])
    labels = patch_labels(overlap)
    assert labels.dtype == np.int8
    assert labels.tolist() == [0, 0, 1, 1, -1]
    assert patch_labels(overlap, min_overlap=0.0).tolist() == [0, 1, 1, 1, -1]
    with pytest.raises(ValueError, match="min_overlap"):
        patch_labels(overlap, min_overlap=1.0)


def test_attention_target_uses_tissue_polygons_or_fractions():
    region = shapely.box(0, 0, 200, 100)
    coords = np.array([[0, 0], [100, 0], [300, 0]])
    # without tissue information: proportional to lesion area
    np.testing.assert_allclose(attention_target(coords, 100, region), [0.5, 0.5, 0.0])
    # tissue polygon covers the left half of the first patch and all of the second
    tissue = shapely.box(50, 0, 400, 100)
    np.testing.assert_allclose(attention_target(coords, 100, region, tissue), [1 / 3, 2 / 3, 0])
    # tissue fractions instead of polygons
    frac = np.array([1.0, 0.25, 1.0])
    np.testing.assert_allclose(attention_target(coords, 100, region, None, frac), [0.8, 0.2, 0.0])
    # a region that misses every patch gives all zeros, not NaN
    far = shapely.box(10_000, 10_000, 10_100, 10_100)
    assert attention_target(coords, 100, far).tolist() == [0.0, 0.0, 0.0]
