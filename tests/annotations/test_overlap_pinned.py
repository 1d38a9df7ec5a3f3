"""Pinned overlap, labels and attention targets: exact per-box intersections as the reference,
padding and exclusions, clipping, fallbacks and the exact error messages (issue 22)."""

from __future__ import annotations

import numpy as np
import pytest
import shapely

from histomil.annotations import Annotations, attention_target, patch_labels, patch_overlap
from histomil.annotations.overlap import DEFAULT_MIN_OVERLAP, patch_boxes, region_overlap


def _reference(coords, size, region):
    coords = np.asarray(coords, dtype=float).reshape(-1, 2)
    boxes = shapely.box(coords[:, 0], coords[:, 1], coords[:, 0] + size, coords[:, 1] + size)
    return shapely.area(shapely.intersection(boxes, region)) / size**2


def test_patch_boxes_are_level0_squares_from_the_top_left():
    boxes = patch_boxes([10, 20, 30.5, 40], 7.5)
    assert shapely.bounds(boxes).tolist() == [[10, 20, 17.5, 27.5], [30.5, 40, 38, 47.5]]


def test_overlap_with_padding_and_an_exclusion_hole_against_exact_areas():
    """Lesion 0..1000 grown by 30 px minus an excluded 200 px square in its middle, on a grid of
    73-px patches (not aligned with anything), including patches inside the hole."""
    lesion = shapely.box(0, 0, 1000, 1000)
    hole = shapely.box(400, 400, 600, 600)
    ann = Annotations(lesion, hole)
    gx, gy = np.meshgrid(np.arange(-150, 1150, 73), np.arange(-150, 1150, 73))
    coords = np.stack([gx.ravel(), gy.ravel()], axis=1)
    got = patch_overlap(coords, 73, ann, padding=30)
    region = shapely.difference(shapely.buffer(lesion, 30, quad_segs=16), hole)
    np.testing.assert_allclose(got, _reference(coords, 73, region), atol=1e-12)
    assert got.dtype == np.float64
    assert {0.0, 1.0} <= set(got.tolist()) and ((got > 0) & (got < 1)).sum() > 20
    assert not np.allclose(got, patch_overlap(coords, 73, ann))  # the padding matters


def test_a_region_inside_one_patch_and_flat_coords():
    region = shapely.box(10, 10, 30, 20)  # 200 px^2 inside the first 100-px patch
    got = region_overlap([0, 0, 100, 0, 5, 5], 100, region)
    np.testing.assert_allclose(got, [0.02, 0.0, 0.02])


def test_overlap_errors_and_empty_cases_are_exact():
    for size in (0, -4):
        with pytest.raises(ValueError, match=rf"^patch_size_level0 must be > 0, got {size}$"):
            region_overlap(np.array([[0, 0]]), size, shapely.box(0, 0, 1, 1))
    assert region_overlap(np.array([[0, 0]]), 10, None).tolist() == [0.0]
    # a region that touches no patch
    assert region_overlap(np.array([[0, 0]]), 10, shapely.box(50, 50, 60, 60)).tolist() == [0.0]


def test_patch_labels_bounds_and_default():
    assert DEFAULT_MIN_OVERLAP == 0.05
    overlap = [0.05, 0.06]
    assert patch_labels(overlap).tolist() == [0, 1]
    for bad in (-0.01, 1.0, 2.0):
        with pytest.raises(ValueError, match=rf"^min_overlap must be in \[0, 1\), got {bad}$"):
            patch_labels(overlap, min_overlap=bad)
    assert patch_labels([0.0, 0.5, 0.99], min_overlap=0.5).tolist() == [0, 0, 1]


def test_attention_target_clips_fractions_and_falls_back_without_tissue():
    region = shapely.box(0, 0, 200, 100)
    coords = np.array([[0, 0], [100, 0], [50, 0]])
    lesion_only = attention_target(coords, 100, region)
    np.testing.assert_allclose(lesion_only, [1 / 3, 1 / 3, 1 / 3])
    # an empty tissue polygon means "no tissue polygon": the lesion overlap alone
    np.testing.assert_allclose(
        attention_target(coords, 100, region, shapely.Polygon()), lesion_only
    )
    # fractions outside [0, 1] are clipped: 1.5 -> 1, -0.5 -> 0
    frac = np.array([1.5, 0.5, -0.5])
    np.testing.assert_allclose(
        attention_target(coords, 100, region, None, frac), [2 / 3, 1 / 3, 0.0]
    )
    # the tissue polygon wins over fractions when both are given
    tissue = shapely.box(0, 0, 100, 100)
    np.testing.assert_allclose(
        attention_target(coords, 100, region, tissue, frac), [2 / 3, 0.0, 1 / 3]
    )
    # tissue that misses the lesion: zeros (no NaN)
    away = shapely.box(500, 0, 600, 100)
    assert attention_target(coords, 100, region, away).tolist() == [0.0, 0.0, 0.0]
