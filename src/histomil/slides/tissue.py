"""Tissue segmentation on a low-resolution image: a boolean mask plus tissue polygons in level-0 px.

Two methods:

- ``saturation`` (default): Otsu on HSV saturation with a floor, so faint, pale tissue is kept
  while white glass is not; pen ink is removed: blue/green/cyan ink by hue, black ink and dust as
  dark, unsaturated pixels, each with its anti-aliased rim.
- ``otsu`` (the rank-induction paper's method): grayscale three-class Otsu
  (:func:`skimage.filters.threshold_multiotsu`); tissue is everything darker than the brightest
  class boundary (and not near-white). It cannot tell pen ink from tissue.

Both then close small gaps, fill holes smaller than ``max_hole_um2`` and drop objects smaller
than ``min_area_um2`` (areas in um^2 at level 0, so they do not depend on the image size).
Colour maths is done in float32 (not :func:`skimage.color.rgb2hsv`, which works in float64 and
computes hue everywhere) and hue only where a pixel is saturated enough to be ink.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np
from shapely.geometry import MultiPolygon, Polygon, mapping

from histomil._io import atomic_write_text
from histomil.slides import _morphology

METHODS = ("saturation", "otsu")
_GRAY = np.array([0.2125, 0.7154, 0.0721], dtype=np.float32)  # skimage.color.rgb2gray weights


@dataclass(frozen=True)
class SegmentationConfig:
    """``white_level``: gray values above it are never tissue (0-1); the saturation threshold is
    Otsu's clipped to [``min_saturation``, ``max_saturation``]; ink: hue in ``ink_hue`` with
    saturation above ``ink_saturation`` (blue/green/cyan), or value below ``black_value``, or value
    below ``gray_value`` with saturation below ``gray_saturation`` (black ink, dust); ink is grown
    by ``ink_rim_um`` to drop its anti-aliased rim. Ink is looked for in the image averaged over
    ``ink_smooth_um`` so that single dark nuclei, resolved at fine mask resolutions, never count
    as ink (a marker stroke is 100 um or wider). Areas in level-0 um^2."""

    method: str = "saturation"
    white_level: float = 0.9
    min_saturation: float = 0.04
    max_saturation: float = 0.08
    ink_hue: tuple[float, float] = (0.25, 0.68)
    ink_saturation: float = 0.1
    black_value: float = 0.15
    gray_value: float = 0.45
    gray_saturation: float = 0.3
    ink_rim_um: float = 16.0
    ink_smooth_um: float = 16.0
    min_area_um2: float = 10_000.0  # just under one 224-px patch at 20x (12,544 um^2)
    max_hole_um2: float = 10_000.0
    closing_um: float = 8.0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown segmentation {self.method!r}; valid: {', '.join(METHODS)}")


def _gray(rgb: np.ndarray) -> np.ndarray:
    """Luminance (h, w) float32 in [0, 1], as skimage's rgb2gray."""
    return (rgb.reshape(-1, 3) @ (_GRAY / 255.0)).reshape(rgb.shape[:2])


def otsu_thresholds(hist: np.ndarray, centres: np.ndarray, classes: int = 2) -> np.ndarray:
    """Otsu (``classes`` = 2) or three-class multi-Otsu thresholds of a histogram, as
    :func:`skimage.filters.threshold_multiotsu` defines them: the bin centres that maximise the
    between-class variance, class k being ``t[k-1] < x <= t[k]``.

    Hand-written (exhaustive over the 256 bins, vectorised) because skimage's first call imports
    its whole filters package (0.3-0.5 s per process), which dominated a slide's segmentation.
    """
    p = hist.astype(np.float64) / max(hist.sum(), 1)
    w = np.cumsum(p)  # weight of bins 0..i
    m = np.cumsum(p * centres)  # first moment of bins 0..i

    def term(w_: np.ndarray, m_: np.ndarray) -> np.ndarray:  # w * mu^2 of one class
        return np.divide(m_**2, w_, out=np.zeros_like(m_), where=w_ > 1e-12)

    if classes == 2:
        score = term(w, m) + term(1 - w, m[-1] - m)
        return centres[[int(np.argmax(score[:-1]))]]
    if classes != 3:
        raise ValueError("classes must be 2 or 3")
    i, j = np.triu_indices(len(p) - 1, k=1)  # class 1: bins <= i, class 2: i < bins <= j
    score = term(w[i], m[i]) + term(w[j] - w[i], m[j] - m[i]) + term(1 - w[j], m[-1] - m[j])
    best = int(np.argmax(score))
    return centres[[i[best], j[best]]]


def _histogram(values: np.ndarray, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    """256-bin histogram over [lo, hi] and bin centres (np.histogram's bins, via bincount: 3x
    faster)."""
    width = max(hi - lo, 1e-12) / 256
    idx = np.minimum(((values - lo) / width).astype(np.int32), 255).ravel()
    hist = np.bincount(np.maximum(idx, 0), minlength=256)
    return hist, lo + width * (np.arange(256) + 0.5)


def _raw_otsu(
    rgb: np.ndarray, config: SegmentationConfig, mpp: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(tissue candidates, pixels to exclude after cleanup), both (h, w) bool."""
    gray = _gray(rgb)
    near_white = gray >= config.white_level
    nothing = np.zeros(gray.shape, dtype=bool)
    if np.ptp(gray) < 0.02 or near_white.all():
        return nothing, nothing
    hist, centres = _histogram(gray, float(gray.min()), float(gray.max()))
    high = otsu_thresholds(hist, centres, 3 if np.count_nonzero(hist) >= 3 else 2)[-1]
    return (gray < high) & ~near_white, nothing


def hsv_value_saturation(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """HSV value and saturation, float32 (h, w) in [0, 1], and max - min (0-255) of ``rgb``."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    mx = np.maximum(np.maximum(r, g), b)  # faster than rgb.max(axis=2) over a 3-long axis
    delta = (mx - np.minimum(np.minimum(r, g), b)).astype(np.float32)
    mxf = mx.astype(np.float32)
    sat = np.divide(delta, mxf, out=np.zeros_like(delta), where=mx > 0)
    return mxf / 255.0, sat, delta


def _hue(rgb: np.ndarray, delta: np.ndarray, where: np.ndarray) -> np.ndarray:
    """HSV hue in [0, 1) (float32) of the pixels ``where`` (1-D, in raster order)."""
    px = rgb[where].astype(np.float32)
    r, g, b = px[:, 0], px[:, 1], px[:, 2]
    m, d = px.max(axis=1), np.maximum(delta[where], 1e-6)
    hue = np.where(m == r, ((g - b) / d) % 6, np.where(m == g, (b - r) / d + 2, (r - g) / d + 4))
    return hue / 6.0


def ink_mask(rgb: np.ndarray, config: SegmentationConfig | None = None, hsv=None) -> np.ndarray:
    """Pixels (h, w) bool that look like pen ink or dust rather than H&E: saturated blue, green or
    cyan (H&E is pink to purple: hue ~0.7-1 and 0-0.08), near-black, or dark and unsaturated.
    ``hsv``: :func:`hsv_value_saturation` of ``rgb`` when already computed."""
    config = config or SegmentationConfig()
    val, sat, delta = hsv if hsv is not None else hsv_value_saturation(rgb)
    coloured = sat > config.ink_saturation
    # hue < 2/3 + x/6 <=> G > R - x * delta among saturated pixels; H&E (pink to purple, R > G)
    # fails this cheap test, so hue is computed only for the few ink candidates
    x = (config.ink_hue[1] - 2 / 3) * 6
    coloured &= rgb[..., 1].astype(np.float32) > rgb[..., 0].astype(np.float32) - x * delta
    ink = np.zeros(sat.shape, dtype=bool)
    if coloured.any():
        hue = _hue(rgb, delta, coloured)
        lo, hi = config.ink_hue
        ink[coloured] = (hue > lo) & (hue < hi)
    dark = (val < config.black_value) | ((val < config.gray_value) & (sat < config.gray_saturation))
    return ink | dark


def _raw_saturation(
    rgb: np.ndarray, config: SegmentationConfig, mpp: float | None
) -> tuple[np.ndarray, np.ndarray]:
    hsv = hsv_value_saturation(rgb)
    sat = hsv[1]
    if np.ptp(sat) < 0.02:
        return np.zeros(sat.shape, dtype=bool), np.zeros(sat.shape, dtype=bool)
    smooth = int(round(config.ink_smooth_um / mpp)) if mpp else 3
    if smooth > 1:
        exclude = ink_mask(_morphology.box_mean(rgb, smooth), config)
    else:
        exclude = ink_mask(rgb, config, hsv)
    # Otsu separates glass from tissue; capping it keeps pale tissue that Otsu would give away
    otsu = float(otsu_thresholds(*_histogram(sat, 0.0, 1.0))[0])
    thr = float(np.clip(otsu, config.min_saturation, config.max_saturation))
    return (sat > thr) & ~exclude, exclude


def segment_tissue(
    rgb: np.ndarray, thumb_mpp: float | None = None, config: SegmentationConfig | None = None
) -> np.ndarray:
    """Tissue mask (h, w) bool of a low-resolution image ``rgb`` (h, w, 3) uint8 of the slide.

    ``thumb_mpp`` (um per image pixel) converts the area settings; without it the areas are
    taken as 0.1 % of the image (objects) and holes likewise.
    """
    config = config or SegmentationConfig()
    method = _raw_otsu if config.method == "otsu" else _raw_saturation
    raw, exclude = method(rgb, config, thumb_mpp)
    if not raw.any():
        return raw
    if thumb_mpp:
        px_area = thumb_mpp**2
        min_px = config.min_area_um2 / px_area
        hole_px = config.max_hole_um2 / px_area
        radius = int(round(config.closing_um / thumb_mpp))
        rim = int(np.clip(round(config.ink_rim_um / thumb_mpp), 1, 3))
    else:
        min_px = hole_px = 0.001 * raw.size
        radius, rim = 1, 2
    mask = _closing(raw, min(radius, 10)) if radius >= 1 else raw
    background = _remove_small(~mask, int(hole_px), keep_border=True)  # fill small holes
    mask = ~background
    if exclude.any():  # ink and its anti-aliased rim never count as tissue, even inside it
        mask &= ~_dilation(exclude, rim)
    return _remove_small(mask, int(min_px))


def _dilation(mask: np.ndarray, radius: int) -> np.ndarray:
    return _morphology.dilate(mask, radius)


def _closing(mask: np.ndarray, radius: int) -> np.ndarray:
    """Dilation then erosion; the image border is not eroded (outside repeats the edge)."""
    return _morphology.close(mask, radius)


def _remove_small(mask: np.ndarray, max_px: int, keep_border: bool = False) -> np.ndarray:
    return _morphology.remove_small(mask, max_px, keep_border)


def mask_to_polygons(
    mask: np.ndarray, scale: tuple[float, float], simplify_px: float = 1.0
) -> MultiPolygon:
    """Tissue regions of ``mask`` (h, w) as polygons with holes, in level-0 px.

    ``scale`` = (level-0 px per mask px in x, in y). One polygon per 8-connected component;
    holes are 4-connected background regions inside it. All rings come from one marching-squares
    pass over the mask (tissue fully connected, so a diagonal touch joins two regions); a ring
    around tissue is an outer ring, a ring around background a hole, which belongs to the
    smallest outer ring containing it.
    """
    from shapely import STRtree, points
    from skimage.measure import find_contours

    outers: list[np.ndarray] = []
    holes: list[np.ndarray] = []
    padded = np.pad(mask, 1).astype(np.float32)  # every ring closes
    for c in find_contours(padded, 0.5, fully_connected="high", positive_orientation="high"):
        if len(c) < 4:
            continue
        # (row, col) in the padded mask -> pixel-centre coords -> level-0 px
        ring = np.stack([(c[:, 1] - 0.5) * scale[0], (c[:, 0] - 0.5) * scale[1]], 1)
        (outers if _signed_area(c) > 0 else holes).append(ring)
    shells = [Polygon(r) for r in outers]
    inner: list[list[np.ndarray]] = [[] for _ in shells]
    if holes and shells:
        tree = STRtree(shells)
        hole_idx, shell_idx = tree.query(points([h[0] for h in holes]), predicate="within")
        area = np.array([s.area for s in shells])
        best: dict[int, int] = {}
        for h, s in zip(hole_idx.tolist(), shell_idx.tolist(), strict=True):
            if h not in best or area[s] < area[best[h]]:
                best[h] = s
        for h, s in best.items():
            inner[s].append(holes[h])
    polys: list[Polygon] = []
    for outer, rings in zip(outers, inner, strict=True):
        poly = Polygon(outer, rings).buffer(0)
        if simplify_px:
            poly = poly.simplify(simplify_px * max(scale), preserve_topology=True)
        polys.extend(_polygons(poly))
    return MultiPolygon(polys)


def _signed_area(c: np.ndarray) -> float:
    """Shoelace area of a closed (row, col) contour; > 0 for find_contours' rings around
    values above the level with ``positive_orientation='high'``."""
    r, q = c[:, 0], c[:, 1]
    return 0.5 * float(np.dot(q[1:], r[:-1]) - np.dot(q[:-1], r[1:]))


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
