"""Real CAMELYON16 polygons on a 224 px / 20x grid (448 level-0 px at 40x) over each file."""

from __future__ import annotations

import numpy as np
import pytest
import shapely

from histomil.annotations import (
    Annotations,
    patch_boxes,
    patch_labels,
    patch_overlap,
    read_annotations,
)

PATCH = 448
SLIDES = ("Tumor_009", "Tumor_014", "Tumor_081")
PADDINGS = (0, 448, 896, 1344, 1792, 2240)


def grid_over(ann: Annotations, margin: int = 2240) -> np.ndarray:
    """(N, 2) int64 patch grid covering the annotation's bounding box plus ``margin``."""
    x0, y0, x1, y1 = ann.bounds
    xs = np.arange(int(x0) - margin, int(x1) + margin, PATCH)
    ys = np.arange(int(y0) - margin, int(y1) + margin, PATCH)
    gx, gy = np.meshgrid(xs, ys)
    return np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.int64)


def brute_force(coords: np.ndarray, region) -> np.ndarray:
    """Reference: one polygon intersection per patch, no index, no shortcuts."""
    out = []
    for x, y in coords.tolist():
        square = shapely.box(x, y, x + PATCH, y + PATCH)
        out.append(square.intersection(region).area / PATCH**2)
    return np.array(out)


@pytest.fixture(scope="module")
def loaded(camelyon_annotations):
    out = {}
    for sid in SLIDES:
        xml = read_annotations(camelyon_annotations / f"{sid}.xml")
        geo = read_annotations(camelyon_annotations / f"{sid}.geojson")
        out[sid] = (xml, geo, grid_over(xml))
    return out


@pytest.mark.parametrize("sid", SLIDES)
def test_xml_and_geojson_give_identical_overlaps(loaded, sid):
    xml, geo, coords = loaded[sid]
    assert (xml.n_lesion, xml.n_exclusion) == (geo.n_lesion, geo.n_exclusion)
    a = patch_overlap(coords, PATCH, xml)
    b = patch_overlap(coords, PATCH, geo)
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)
    assert (a > 0.05).sum() > 0


def test_tumor_014_exclusions_are_subtracted(loaded):
    ann, _, coords = loaded["Tumor_014"]
    assert ann.n_exclusion == 6 and ann.n_lesion == 7
    with_excl = patch_overlap(coords, PATCH, ann)
    no_excl = patch_overlap(coords, PATCH, Annotations(ann.lesion, shapely.Polygon()))
    touched = shapely.intersects(ann.exclusion, patch_boxes(coords, PATCH))
    assert touched.sum() > 0
    assert np.all(with_excl[touched] < no_excl[touched])
    np.testing.assert_array_equal(with_excl[~touched], no_excl[~touched])
    assert with_excl.sum() < no_excl.sum()
    assert (patch_labels(with_excl) == 1).sum() <= (patch_labels(no_excl) == 1).sum()
    # the exclusions are smaller than a 448 px patch: a finer grid has patches fully inside
    small = 64
    x0, y0, x1, y1 = ann.exclusion.bounds
    gx, gy = np.meshgrid(np.arange(x0, x1, small), np.arange(y0, y1, small))
    fine = np.stack([gx.ravel(), gy.ravel()], axis=1)
    inside = shapely.contains(ann.exclusion, patch_boxes(fine, small))
    assert inside.sum() > 10
    assert np.all(patch_overlap(fine, small, ann)[inside] == 0)
    lesion_only = Annotations(ann.lesion, shapely.Polygon())
    assert np.all(patch_overlap(fine, small, lesion_only)[inside] == 1)


@pytest.mark.parametrize("sid", ("Tumor_014", "Tumor_081"))
def test_labelled_count_grows_with_padding(loaded, sid):
    ann, _, coords = loaded[sid]
    counts, previous = [], None
    for padding in PADDINGS:
        overlap = patch_overlap(coords, PATCH, ann, padding=padding)
        if previous is not None:
            assert np.all(overlap >= previous - 1e-9), "overlap must not shrink with padding"
        previous = overlap
        counts.append(int((patch_labels(overlap) == 1).sum()))
    assert counts == sorted(counts) and counts[-1] > counts[0], counts


@pytest.mark.parametrize(
    ("sid", "padding"), [("Tumor_009", 0), ("Tumor_014", 0), ("Tumor_014", 896)]
)
def test_matches_brute_force_reference(loaded, sid, padding):
    ann, _, coords = loaded[sid]
    overlap = patch_overlap(coords, PATCH, ann, padding=padding)
    rng = np.random.default_rng(0)
    partial = np.flatnonzero((overlap > 0) & (overlap < 1))
    full = np.flatnonzero(overlap == 1)
    empty = np.flatnonzero(overlap == 0)
    sample = np.concatenate(
        [rng.choice(idx, min(len(idx), n), replace=False) for idx, n in
         ((partial, 150), (full, 40), (empty, 40))]
    )  # fmt: skip
    assert len(partial) > 0
    expected = brute_force(coords[sample], ann.region(padding))
    np.testing.assert_allclose(overlap[sample], expected, rtol=0, atol=1e-6)


def test_camelyon_polygons_are_repaired_and_logged(camelyon_annotations, caplog):
    with caplog.at_level("WARNING", logger="histomil.annotations.readers"):
        ann = read_annotations(camelyon_annotations / "Tumor_009.xml")
    assert ann.lesion.is_valid
    assert any(
        "Tumor_009.xml" in r.getMessage() and "repaired" in r.getMessage() for r in caplog.records
    )
