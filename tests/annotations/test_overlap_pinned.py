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


# --- issue 22: the label-file helpers used by training/data.py ------------------------------


def _dilate_reference(labels, coords, radius, step):
    """Chebyshev distance on the floor-divided grid, patch by patch."""
    grid = [(x // step, y // step) for x, y in coords]  # Python's // floors, like the module
    lesion = [g for g, lab in zip(grid, labels, strict=True) if lab == 1]
    out = list(labels)
    for i, ((gx, gy), lab) in enumerate(zip(grid, labels, strict=True)):
        if lab == 0 and any(max(abs(gx - lx), abs(gy - ly)) <= radius for lx, ly in lesion):
            out[i] = 1
    return out


def test_dilate_labels_against_a_chebyshev_brute_force():
    import torch

    from histomil.annotations.overlap import dilate_labels

    rng = np.random.default_rng(4)
    step = 100
    # a 9 x 7 grid with an offset that is not a multiple of the step, negative coordinates
    # included (floor, not truncation, decides the cell), and every label kind
    xs, ys = np.meshgrid(np.arange(-4, 5) * step - 30, np.arange(-3, 4) * step + 17)
    coords = np.stack([xs.ravel(), ys.ravel()], axis=1)
    labels = rng.choice([0, 0, 0, 0, 0, 0, 0, -1], size=len(coords))
    labels[[5, 40]] = 1
    t_labels = torch.tensor(labels, dtype=torch.int8)
    t_coords = torch.tensor(coords)
    for radius in (1, 2, 3):
        got = dilate_labels(t_labels, t_coords, radius, step)
        want = _dilate_reference(labels.tolist(), coords.tolist(), radius, step)
        assert got.tolist() == want, radius
        assert got.dtype == torch.int8
    assert t_labels.tolist() == labels.tolist()  # the input is not changed in place
    one = dilate_labels(t_labels, t_coords, 1, step)
    assert 2 < int((one == 1).sum()) < 18  # some, not all, of the two 3 x 3 squares
    assert bool(((one == -1) == (t_labels == -1)).all())  # unknown stays unknown
    # radius 0 (or below) and a slide without a lesion return the labels as they are
    for radius in (0, -1):
        assert dilate_labels(t_labels, t_coords, radius, step) is t_labels
    no_lesion = torch.where(t_labels == 1, 0, t_labels).to(torch.int8)
    assert dilate_labels(no_lesion, t_coords, 2, step) is no_lesion


def test_dilate_labels_floor_divides_negative_coordinates():
    import torch

    from histomil.annotations.overlap import dilate_labels

    # x = -1 lies in cell -1 (floor), not cell 0 (truncation): 2 cells from the lesion at x 150
    labels = torch.tensor([1, 0, 0], dtype=torch.int8)
    coords = torch.tensor([[150, 0], [-1, 0], [50, 0]])
    assert dilate_labels(labels, coords, 1, 100).tolist() == [1, 0, 1]
    assert dilate_labels(labels, coords, 2, 100).tolist() == [1, 1, 1]


def test_attention_target_from_labels_by_hand():
    import torch

    from histomil.annotations.overlap import attention_target_from_labels

    labels = torch.tensor([1, 0, 1, -1, 1], dtype=torch.int8)
    overlap = torch.tensor([0.2, 0.9, float("nan"), 0.5, 0.6], dtype=torch.float64)
    got = attention_target_from_labels(labels, overlap)
    # lesion patches weighted by their overlap; NaN overlap counts 0; others 0
    assert got.dtype == torch.float32
    assert got.tolist() == pytest.approx([0.25, 0.0, 0.0, 0.0, 0.75])
    # without overlaps, or with overlaps that sum to 0 on the lesion: uniform over the lesion
    uniform = [1 / 3, 0.0, 1 / 3, 0.0, 1 / 3]
    assert attention_target_from_labels(labels, None).tolist() == pytest.approx(uniform)
    zero = torch.tensor([0.0, 0.9, float("nan"), 0.5, 0.0])
    assert attention_target_from_labels(labels, zero).tolist() == pytest.approx(uniform)
    assert attention_target_from_labels(labels.float(), None).dtype == torch.float32
    # no lesion patch (or no labels): no target
    assert attention_target_from_labels(torch.tensor([0, -1, 0]), None) is None
    assert attention_target_from_labels(None, overlap) is None


def test_patch_labels_read_a_missing_overlap_as_unknown():
    # None (a missing value) reads as NaN: unknown (-1), not numpy's TypeError on `None > x`
    assert patch_labels([0.5, None, 0.01]).tolist() == [1, -1, 0]


def test_attention_target_of_a_lesion_smaller_than_one_patch():
    # total lesion overlap 0.012 + 0.018 (< 1 patch): still normalised to sum 1, not zeros
    region = shapely.box(80, 10, 130, 16)  # 20 x 6 px in patch 0, 30 x 6 px in patch 1
    got = attention_target(np.array([[0, 0], [100, 0], [200, 0]]), 100, region)
    np.testing.assert_allclose(got, [20 * 6 / 300, 30 * 6 / 300, 0.0])


def test_overlap_far_from_the_slide_origin_against_exact_areas():
    """Patches deep inside a large slide (the piece grid starts at the patches, not at 0): a
    wavy lesion across a 6 x 4 block of 256-px patches at (80,000, 120,000), against shapely's
    area of each patch's intersection."""
    x0, y0, size = 80_000, 120_000, 256
    xs, ys = np.meshgrid(np.arange(6) * size + x0, np.arange(4) * size + y0)
    coords = np.stack([xs.ravel(), ys.ravel()], axis=1)
    t = np.linspace(0, 2 * np.pi, 60, endpoint=False)
    lesion = shapely.Polygon(
        np.stack([x0 + 700 + 500 * np.cos(t), y0 + 500 + 380 * np.sin(t) + 40 * np.sin(5 * t)], 1)
    )
    got = region_overlap(coords, size, lesion)
    boxes = patch_boxes(coords, size)
    want = shapely.area(shapely.intersection(boxes, lesion)) / size**2
    assert got == pytest.approx(want, abs=1e-9)
    assert 0 < (got > 0).sum() < len(got) and (got == 1.0).any()  # inside, boundary and outside


def test_one_patch_one_candidate_and_one_pixel_patches():
    inside = shapely.box(10, 10, 90, 90)
    assert region_overlap(np.array([[0, 0]]), 100, inside).tolist() == [pytest.approx(0.64)]
    # several patches, the region touches only the second: exactly one candidate
    got = region_overlap(np.array([[0, 0], [200, 0], [400, 0]]), 100, shapely.box(210, 10, 290, 90))
    assert got.tolist() == [0.0, pytest.approx(0.64), 0.0]
    assert region_overlap(np.array([[3, 4]]), 1, shapely.box(0, 0, 10, 10)).tolist() == [1.0]
