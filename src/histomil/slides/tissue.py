"""Tissue segmentation on a thumbnail: a boolean mask plus tissue polygons in level-0 pixels.

Two methods:

- ``otsu`` (the rank-induction paper's method): grayscale three-class Otsu
  (:func:`skimage.filters.threshold_multiotsu`); tissue is everything darker than the brightest
  class boundary (and not near-white).
- ``saturation``: Otsu on HSV saturation with a floor, so faint, pale tissue is kept while white
  glass is not; blue/green ink (pen marks) and near-black pixels are removed.

Both then close small gaps, fill holes smaller than ``max_hole_um2`` and drop objects smaller
than ``min_area_um2`` (areas in um^2 at level 0, so they do not depend on the thumbnail size).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np
from shapely.geometry import MultiPolygon, Polygon, mapping

from histomil._io import atomic_write_text

METHODS = ("otsu", "saturation")


@dataclass(frozen=True)
class SegmentationConfig:
    """``white_level``: gray values above it are never tissue (0-1); the saturation threshold is
    Otsu's clipped to [``min_saturation``, ``max_saturation``]; areas in level-0 um^2 (converted with the thumbnail's mpp)."""

    method: str = "otsu"
    white_level: float = 0.9
    min_saturation: float = 0.04
    max_saturation: float = 0.08
    min_area_um2: float = 10_000.0  # just under one 224-px patch at 20x (12,544 um^2)
    max_hole_um2: float = 10_000.0
    closing_um: float = 8.0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown segmentation {self.method!r}; valid: {', '.join(METHODS)}")


def _raw_otsu(rgb: np.ndarray, config: SegmentationConfig) -> tuple[np.ndarray, np.ndarray]:
    """(tissue candidates, pixels to exclude after cleanup), both (h, w) bool."""
    from skimage.color import rgb2gray
    from skimage.filters import threshold_multiotsu

    gray = rgb2gray(rgb)
    near_white = gray >= config.white_level
    nothing = np.zeros(gray.shape, dtype=bool)
    if np.ptp(gray) < 0.02 or near_white.all():
        return nothing, nothing
    try:
        thresholds = threshold_multiotsu(gray, classes=3)
        high = thresholds[-1]
    except ValueError:  # too few distinct values for three classes
        from skimage.filters import threshold_otsu

        high = threshold_otsu(gray)
    return (gray < high) & ~near_white, nothing


def _raw_saturation(rgb: np.ndarray, config: SegmentationConfig) -> tuple[np.ndarray, np.ndarray]:
    from skimage.color import rgb2hsv
    from skimage.filters import threshold_otsu

    hsv = rgb2hsv(rgb)
    hue, sat, val = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    if np.ptp(sat) < 0.02:
        return np.zeros(sat.shape, dtype=bool), np.zeros(sat.shape, dtype=bool)
    # Otsu separates glass from tissue; capping it keeps pale tissue that Otsu would give away
    thr = float(np.clip(threshold_otsu(sat), config.min_saturation, config.max_saturation))
    # H&E is pink to purple (hue ~0.75-1 and 0-0.08); saturated blue/green/cyan is ink
    ink = (hue > 0.25) & (hue < 0.68) & (sat > 0.1)
    dark = val < 0.15
    exclude = ink | dark
    return (sat > thr) & ~exclude, exclude


def segment_tissue(
    rgb: np.ndarray, thumb_mpp: float | None = None, config: SegmentationConfig | None = None
) -> np.ndarray:
    """Tissue mask (h, w) bool of a thumbnail ``rgb`` (h, w, 3) uint8.

    ``thumb_mpp`` (um per thumbnail pixel) converts the area settings; without it the areas are
    taken as 0.1 % of the thumbnail (objects) and holes likewise.
    """
    from scipy import ndimage as ndi
    from skimage.morphology import disk

    config = config or SegmentationConfig()
    method = _raw_otsu if config.method == "otsu" else _raw_saturation
    raw, exclude = method(rgb, config)
    if not raw.any():
        return raw
    if thumb_mpp:
        px_area = thumb_mpp**2
        min_px = config.min_area_um2 / px_area
        hole_px = config.max_hole_um2 / px_area
        radius = int(round(config.closing_um / thumb_mpp))
    else:
        min_px = hole_px = 0.001 * raw.size
        radius = 1
    mask = raw
    if radius >= 1:
        mask = ndi.binary_closing(mask, structure=disk(min(radius, 10)), border_value=0)
    background = _remove_small(~mask, int(hole_px), keep_border=True)  # fill small holes
    mask = ~background
    if exclude.any():  # ink and its anti-aliased rim never count as tissue, even inside it
        mask &= ~ndi.binary_dilation(exclude, iterations=2)
    return _remove_small(mask, int(min_px))


def _remove_small(mask: np.ndarray, max_px: int, keep_border: bool = False) -> np.ndarray:
    """Drop connected components of ``mask`` with area <= ``max_px``; with ``keep_border``,
    components touching the image border are kept (the open background, when filling holes)."""
    from scipy import ndimage as ndi

    labels, n = ndi.label(mask, structure=None if keep_border else np.ones((3, 3)))
    if n == 0:
        return mask
    sizes = np.bincount(labels.ravel())
    small = sizes <= max_px
    small[0] = False
    if keep_border:
        edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
        small[edge] = False
    return mask & ~small[labels]


def mask_to_polygons(
    mask: np.ndarray, scale: tuple[float, float], simplify_px: float = 1.0
) -> MultiPolygon:
    """Tissue regions of ``mask`` (h, w) as polygons with holes, in level-0 px.

    ``scale`` = (level-0 px per mask px in x, in y). One polygon per connected component.
    """
    from skimage.measure import find_contours, label, regionprops

    polys: list[Polygon] = []
    labels = label(mask, connectivity=2)
    for region in regionprops(labels):
        r0, c0, _, _ = region.bbox
        comp = np.pad(region.image, 1)
        filled = np.pad(region.image_filled, 1)
        outer = _ring(find_contours(filled.astype(np.float32), 0.5), r0, c0, scale)
        if outer is None:
            continue
        holes_mask = filled & ~comp
        holes = []
        if holes_mask.any():
            hl = label(holes_mask, connectivity=1)
            for hole in regionprops(hl):
                hm = np.pad(hole.image, 1)
                h0, hc0, _, _ = hole.bbox
                ring = _ring(
                    find_contours(hm.astype(np.float32), 0.5), r0 + h0 - 1, c0 + hc0 - 1, scale
                )
                if ring is not None:
                    holes.append(ring)
        poly = Polygon(outer, holes).buffer(0)
        if simplify_px:
            poly = poly.simplify(simplify_px * max(scale), preserve_topology=True)
        polys.extend(_polygons(poly))
    return MultiPolygon(polys)


def _ring(contours, row0: int, col0: int, scale) -> np.ndarray | None:
    if not contours:
        return None
    c = max(contours, key=len)
    if len(c) < 4:
        return None
    # contour (row, col) in padded crop -> pixel-centre coords -> level-0 px
    x = (c[:, 1] - 1 + col0 + 0.5) * scale[0]
    y = (c[:, 0] - 1 + row0 + 0.5) * scale[1]
    return np.stack([x, y], 1)


def _polygons(geom) -> list[Polygon]:
    if isinstance(geom, Polygon):
        return [] if geom.is_empty else [geom]
    return [g for g in getattr(geom, "geoms", []) if isinstance(g, Polygon) and not g.is_empty]


def write_tissue_geojson(path: str | os.PathLike, polygons: MultiPolygon) -> None:
    """QuPath-readable GeoJSON: one ``annotation`` feature per tissue region, class ``Tissue``."""
    features = [
        {
            "type": "Feature",
            "geometry": mapping(poly),
            "properties": {
                "objectType": "annotation",
                "classification": {"name": "Tissue", "color": [80, 160, 80]},
                "area_px": round(poly.area, 1),
            },
        }
        for poly in polygons.geoms
    ]
    atomic_write_text(
        path, json.dumps({"type": "FeatureCollection", "features": features}, indent=1) + "\n"
    )
