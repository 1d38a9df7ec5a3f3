"""Geometry of a synthetic slide image: tissue blobs, lesions, exclusions, artefacts; annotation files.

Shapes live in level-0 pixel coordinates as shapely geometries; :func:`rasterize_layout` turns them
into small float maps (one low-resolution pixel = ``factor`` level-0 px) that the renderer
upsamples tile by tile, so no full-resolution mask is ever held in memory.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from shapely import affinity
from shapely.geometry import LineString, Polygon, mapping
from shapely.ops import unary_union

from histomil._io import atomic_write_text


@dataclass(frozen=True)
class Layout:
    """Shapes of one synthetic slide (level-0 px). ``lesions`` are annotated; ``exclusions`` are
    normal islands inside lesions (CAMELYON group ``_2``) and are rendered as normal tissue."""

    width: int
    height: int
    tissue: list[Polygon]
    lesions: list[Polygon] = field(default_factory=list)
    exclusions: list[Polygon] = field(default_factory=list)
    faint: list[Polygon] = field(default_factory=list)
    pen: list[Polygon] = field(default_factory=list)
    ink: dict[str, list[Polygon]] = field(default_factory=dict)  # colour -> marks (add_pen_marks)


def _blob(rng: np.random.Generator, cx: float, cy: float, radius: float, n: int = 96) -> Polygon:
    """An irregular star-shaped polygon: radius modulated by a few random harmonics."""
    theta = np.linspace(0, 2 * np.pi, n, endpoint=False)
    r = np.ones(n)
    for k in range(2, 7):
        r += rng.uniform(0.02, 0.18) / (k - 1) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    r *= radius * rng.uniform(0.9, 1.1)
    aspect = rng.uniform(0.6, 1.0)
    poly = Polygon(np.stack([cx + r * np.cos(theta), cy + aspect * r * np.sin(theta)], 1))
    return affinity.rotate(poly, rng.uniform(0, 180), origin=(cx, cy)).buffer(0)


def make_layout(
    rng: np.random.Generator,
    size: tuple[int, int],
    positive: bool,
    artefacts: bool = True,
    lesion_scale: float = 1.0,
) -> Layout:
    """Random tissue (1-3 blobs), lesions inside tissue when ``positive`` (sometimes with an
    exclusion island), and, when ``artefacts``, maybe a faint-tissue blob and a pen stroke.
    ``lesion_scale`` multiplies lesion radii (the random draws are the same at any scale)."""
    w, h = size
    side = min(w, h)
    bounds = Polygon([(0, 0), (w, 0), (w, h), (0, h)]).buffer(-0.03 * side)
    tissue = []
    for _ in range(int(rng.integers(1, 4))):
        radius = side * rng.uniform(0.16, 0.3)
        cx, cy = rng.uniform(0.3 * w, 0.7 * w), rng.uniform(0.3 * h, 0.7 * h)
        blob = _blob(rng, cx, cy, radius).intersection(bounds)
        if not blob.is_empty:
            tissue.append(_largest(blob))
    lesions, exclusions = [], []
    if positive:
        for _ in range(int(rng.integers(1, 4))):
            host = tissue[int(rng.integers(len(tissue)))]
            inner = host.buffer(-0.05 * side)
            if inner.is_empty:
                inner = host
            cx, cy = _random_point_in(rng, inner)
            radius = np.sqrt(host.area / np.pi) * rng.uniform(0.12, 0.3) * lesion_scale
            lesion = _blob(rng, cx, cy, radius).intersection(host)
            if lesion.is_empty or lesion.area < 1:
                continue
            lesion = _largest(lesion)
            lesions.append(lesion)
            if rng.random() < 0.35 and lesion.area > 400:
                ex = _blob(rng, *lesion.centroid.coords[0], np.sqrt(lesion.area / np.pi) * 0.25)
                ex = ex.intersection(lesion.buffer(-2))
                if not ex.is_empty:
                    exclusions.append(_largest(ex))
    faint, pen = [], []
    if artefacts and rng.random() < 0.5:
        cx, cy = rng.uniform(0.1 * w, 0.9 * w), rng.uniform(0.1 * h, 0.9 * h)
        blob = _blob(rng, cx, cy, side * 0.08).intersection(bounds)
        if not blob.is_empty:
            faint.append(_largest(blob.difference(unary_union(tissue))))
    if artefacts and rng.random() < 0.5:
        pts = np.stack([rng.uniform(0.05, 0.95, 4) * w, rng.uniform(0.05, 0.95, 4) * h], 1)
        stroke = LineString(pts).buffer(max(2.0, 0.006 * side), cap_style="round")
        pen.append(_largest(stroke.intersection(bounds)))
    faint = [f for f in faint if not f.is_empty]
    pen = [p for p in pen if not p.is_empty]
    return Layout(w, h, tissue, lesions, exclusions, faint, pen)


INK_KINDS = ("blue", "green", "black", "dust")


def add_pen_marks(layout: Layout, rng: np.random.Generator, mpp: float) -> Layout:
    """Pen ink as on real glass: 1-3 strokes of blue, green or black marker (often across tissue),
    0-4 marker dots and 10-40 dust specks, as ``layout.ink[kind]`` polygons (level-0 px).

    Sizes are physical (``mpp`` level-0 um/px): strokes 100-300 um wide, dots 300-800 um across,
    dust 10-50 um, each capped relative to the slide so a small test slide is not all ink."""
    w, h = layout.width, layout.height
    side = min(w, h)
    bounds = Polygon([(0, 0), (w, 0), (w, h), (0, h)]).buffer(-0.01 * side)
    ink: dict[str, list[Polygon]] = {k: [] for k in INK_KINDS}
    colours = ("blue", "green", "black")
    for _ in range(int(rng.integers(1, 4))):
        n = int(rng.integers(2, 5))
        pts = np.stack([rng.uniform(0.05, 0.95, n) * w, rng.uniform(0.05, 0.95, n) * h], 1)
        half = min(rng.uniform(50, 150) / mpp, 0.03 * side)
        stroke = LineString(pts).buffer(half, cap_style="round").intersection(bounds)
        ink[colours[int(rng.integers(3))]].append(_largest(stroke))
    for _ in range(int(rng.integers(0, 5))):
        cx, cy = rng.uniform(0.08, 0.92) * w, rng.uniform(0.08, 0.92) * h
        dot = _blob(rng, cx, cy, min(rng.uniform(150, 400) / mpp, 0.06 * side), n=48)
        ink[colours[int(rng.integers(3))]].append(_largest(dot.intersection(bounds)))
    for _ in range(int(rng.integers(10, 41))):
        cx, cy = rng.uniform(0.02, 0.98) * w, rng.uniform(0.02, 0.98) * h
        radius = max(rng.uniform(5, 25) / mpp, 0.002 * side)  # >= 1-2 px of the render maps
        ink["dust"].append(_largest(_blob(rng, cx, cy, radius, n=24).intersection(bounds)))
    ink = {k: [p for p in v if not p.is_empty] for k, v in ink.items()}
    return replace(layout, ink={k: v for k, v in ink.items() if v})


def layout_masks(layout: Layout, shape: tuple[int, int]) -> dict[str, np.ndarray]:
    """Ground truth at (h, w) ``shape`` covering the whole slide, bool: ``ink`` (pen strokes, marker
    dots, dust) and ``tissue`` (tissue and faint tissue not under ink)."""
    from skimage.draw import polygon as draw_polygon

    sy, sx = shape[0] / layout.height, shape[1] / layout.width

    def raster(polys: list[Polygon]) -> np.ndarray:
        out = np.zeros(shape, dtype=bool)
        for poly in polys:
            for ring_i, ring in enumerate([poly.exterior, *poly.interiors]):
                xy = np.asarray(ring.coords)
                rr, cc = draw_polygon(xy[:, 1] * sy - 0.5, xy[:, 0] * sx - 0.5, shape)
                out[rr, cc] = ring_i == 0
        return out

    ink = raster(layout.pen + [p for v in layout.ink.values() for p in v])
    return {"ink": ink, "tissue": raster(layout.tissue + layout.faint) & ~ink}


def _largest(geom) -> Polygon:
    if isinstance(geom, Polygon):
        return geom
    polys = [g for g in getattr(geom, "geoms", []) if isinstance(g, Polygon)]
    return max(polys, key=lambda g: g.area) if polys else Polygon()


def _random_point_in(rng: np.random.Generator, poly: Polygon) -> tuple[float, float]:
    x0, y0, x1, y1 = poly.bounds
    from shapely.geometry import Point

    for _ in range(1000):
        x, y = rng.uniform(x0, x1), rng.uniform(y0, y1)
        if poly.contains(Point(x, y)):
            return x, y
    return poly.representative_point().coords[0]


def rasterize_layout(layout: Layout, factor: int) -> dict[str, np.ndarray]:
    """Float32 maps (h/factor, w/factor) in [0, 1] for ``tissue``, ``lesion``, ``faint``,
    ``pen`` and ``ink_<kind>`` per kind of pen mark; lightly blurred so bilinear upsampling gives smooth edges."""
    from scipy.ndimage import gaussian_filter
    from skimage.draw import polygon as draw_polygon

    shape = (int(np.ceil(layout.height / factor)), int(np.ceil(layout.width / factor)))

    def raster(polys: list[Polygon], minus: list[Polygon] = ()) -> np.ndarray:
        out = np.zeros(shape, dtype=np.float32)
        for value, group in ((1.0, polys), (0.0, minus)):
            for poly in group:
                for ring_i, ring in enumerate([poly.exterior, *poly.interiors]):
                    xy = np.asarray(ring.coords) / factor - 0.5
                    rr, cc = draw_polygon(xy[:, 1], xy[:, 0], shape)
                    out[rr, cc] = value if ring_i == 0 else 1.0 - value
        return gaussian_filter(out, 0.7)

    maps = {
        "tissue": raster(layout.tissue),
        "lesion": raster(layout.lesions, layout.exclusions),
        "faint": raster(layout.faint),
        "pen": raster(layout.pen),
    }
    maps.update({f"ink_{kind}": raster(polys) for kind, polys in layout.ink.items()})
    return maps


def write_asap_xml(path: Path, lesions: list[Polygon], exclusions: list[Polygon]) -> None:
    """CAMELYON-style ASAP XML: lesions in group ``Tumor``, exclusions in group ``_2``."""
    root = ET.Element("ASAP_Annotations")
    annotations = ET.SubElement(root, "Annotations")
    items = [(p, "Tumor", "#F4FA58") for p in lesions] + [(p, "_2", "#64FE2E") for p in exclusions]
    for i, (poly, group, color) in enumerate(items):
        ann = ET.SubElement(
            annotations,
            "Annotation",
            Name=f"Annotation {i}",
            Type="Polygon",
            PartOfGroup=group,
            Color=color,
        )
        coords = ET.SubElement(ann, "Coordinates")
        for order, (x, y) in enumerate(np.asarray(poly.exterior.coords)[:-1]):
            ET.SubElement(coords, "Coordinate", Order=str(order), X=f"{x:.2f}", Y=f"{y:.2f}")
    groups = ET.SubElement(root, "AnnotationGroups")
    for name, color in (("Tumor", "#F4FA58"), ("_2", "#64FE2E")):
        group = ET.SubElement(groups, "Group", Name=name, PartOfGroup="None", Color=color)
        ET.SubElement(group, "Attributes")
    ET.indent(root)
    atomic_write_text(path, ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n")


def write_annotation_geojson(path: Path, lesions: list[Polygon], exclusions: list[Polygon]) -> None:
    """QuPath-style GeoJSON FeatureCollection with ``Tumor`` and ``Exclusion`` annotations."""
    features = []
    for poly, name, rgb in [(p, "Tumor", [200, 0, 0]) for p in lesions] + [
        (p, "Exclusion", [0, 200, 0]) for p in exclusions
    ]:
        features.append(
            {
                "type": "Feature",
                "geometry": mapping(poly),
                "properties": {
                    "objectType": "annotation",
                    "classification": {"name": name, "color": rgb},
                },
            }
        )
    atomic_write_text(path, json.dumps({"type": "FeatureCollection", "features": features}) + "\n")
