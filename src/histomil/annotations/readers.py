"""Read pathologist polygons (ASAP XML, QuPath GeoJSON) into shapely geometries in level-0 px.

Both readers return :class:`Annotations`: the union of lesion polygons and the union of
exclusion polygons (regions inside a lesion that are *not* lesion, CAMELYON16 group ``_2``).
Invalid polygons are repaired with ``shapely.make_valid`` (polygonal parts kept) and a warning
naming the file and the annotation; anything that cannot be used raises :class:`AnnotationError`
with the file name and the problem.
"""

from __future__ import annotations

import json
import logging
import math
import os
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import shapely
from shapely.geometry.base import BaseGeometry

log = logging.getLogger(__name__)

ANNOTATION_SUFFIXES = (".xml", ".geojson", ".json")


class AnnotationError(ValueError):
    """An annotation file that cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class AnnotationConfig:
    """Which group (ASAP XML) or class (GeoJSON) names mean lesion and exclusion.

    Names match case-insensitively. ``on_unknown``: ``"ignore"`` logs and skips polygons of any
    other group/class, ``"error"`` raises. GeoJSON features without a classification count as
    the class ``""`` (add ``""`` to ``lesion_classes`` to treat unclassified polygons as lesion).
    ``bounds_tolerance`` is the fraction of the slide size a vertex may lie outside the slide
    before it is an error (pathologists' strokes often end a few px past the edge).
    """

    lesion_groups: tuple[str, ...] = ("_0", "_1", "Tumor")
    exclusion_groups: tuple[str, ...] = ("_2", "Exclusion")
    lesion_classes: tuple[str, ...] = (
        "Tumor", "Tumour", "Lesion", "Metastasis", "Metastases", "Carcinoma", "Positive",
    )  # fmt: skip
    exclusion_classes: tuple[str, ...] = ("Exclusion", "Exclude", "Ignore", "Other")
    on_unknown: str = "ignore"
    bounds_tolerance: float = 0.01

    def __post_init__(self) -> None:
        if self.on_unknown not in ("ignore", "error"):
            raise ValueError(f"on_unknown must be 'ignore' or 'error', got {self.on_unknown!r}")


@dataclass(frozen=True)
class Annotations:
    """Lesion and exclusion geometries (level-0 px, may be empty) read from ``source``."""

    lesion: BaseGeometry
    exclusion: BaseGeometry
    source: Path | None = None
    n_lesion: int = 0
    n_exclusion: int = 0

    def region(self, padding: float = 0.0) -> BaseGeometry:
        """Labelled region: lesion grown by ``padding`` level-0 px, minus the exclusions.

        Only the lesion is padded (the paper simulates coarse *lesion* outlines); exclusions
        keep their drawn extent and are subtracted after padding.
        """
        if padding < 0:
            raise ValueError(f"padding must be >= 0 level-0 px, got {padding}")
        lesion = self.lesion
        if padding > 0 and not lesion.is_empty:
            lesion = shapely.buffer(lesion, padding, quad_segs=16)
        if self.exclusion.is_empty:
            return lesion
        return shapely.difference(lesion, self.exclusion)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(xmin, ymin, xmax, ymax) over lesion and exclusion."""
        return shapely.union(self.lesion, self.exclusion).bounds


def read_annotations(
    path: str | os.PathLike,
    config: AnnotationConfig = AnnotationConfig(),
    slide_size: tuple[int, int] | None = None,
) -> Annotations:
    """Read an ASAP XML or (QuPath) GeoJSON file; ``slide_size`` = level-0 (width, height)
    enables the out-of-slide check. Raises :class:`AnnotationError` on any unusable file."""
    path = Path(path)
    if not path.is_file():
        raise AnnotationError(f"annotation file {path} does not exist")
    raw = path.read_bytes()
    if not raw.strip():
        raise AnnotationError(f"annotation file {path} is empty")
    suffix = path.suffix.lower()
    if suffix == ".xml" or (suffix not in (".geojson", ".json") and raw.lstrip()[:1] == b"<"):
        items = _parse_asap_xml(path, raw)
        groups = (config.lesion_groups, config.exclusion_groups)
    elif suffix in (".geojson", ".json") or raw.lstrip()[:1] in (b"{", b"["):
        items = _parse_geojson(path, raw)
        groups = (config.lesion_classes, config.exclusion_classes)
    else:
        raise AnnotationError(
            f"annotation file {path}: unknown format (expected ASAP .xml or GeoJSON .geojson/.json)"
        )
    return _assemble(path, items, groups, config, slide_size)


def read_geojson_geometry(path: str | os.PathLike) -> BaseGeometry:
    """Union of every polygon in a GeoJSON file regardless of class (e.g. tissue polygons)."""
    path = Path(path)
    raw = path.read_bytes()
    if not raw.strip():
        raise AnnotationError(f"GeoJSON file {path} is empty")
    items = _parse_geojson(path, raw)
    polys = [_repair(path, name, geom) for name, _, geom in items]
    polys = [p for p in polys if p is not None]
    return shapely.union_all(polys) if polys else shapely.Polygon()


def find_annotation_file(directory: str | os.PathLike, slide_id: str) -> Path | None:
    """``<dir>/<slide_id>.xml|.geojson|.json`` (first that exists), else None."""
    for suffix in ANNOTATION_SUFFIXES:
        candidate = Path(directory) / f"{slide_id}{suffix}"
        if candidate.is_file():
            return candidate
    return None


# (name, group or class, geometry) per drawn polygon
_Item = tuple[str, str, BaseGeometry]


def _parse_asap_xml(path: Path, raw: bytes) -> list[_Item]:
    try:
        root = ET.fromstring(raw)
    except ET.ParseError as exc:
        raise AnnotationError(f"annotation file {path}: malformed XML ({exc})") from exc
    items: list[_Item] = []
    for i, ann in enumerate(root.iter("Annotation")):
        name = ann.get("Name") or f"Annotation {i}"
        group = ann.get("PartOfGroup") or ""
        kind = (ann.get("Type") or "Polygon").lower()
        if kind in ("dot", "pointset", "measurement"):
            log.info("%s: skipping %s annotation %r (not an area)", path, kind, name)
            continue
        points = []
        for c in ann.iter("Coordinate"):
            try:
                order = float(c.get("Order", len(points)))
                x = float(str(c.get("X")).replace(",", "."))
                y = float(str(c.get("Y")).replace(",", "."))
            except ValueError as exc:
                raise AnnotationError(
                    f"annotation file {path}: annotation {name!r} has a non-numeric coordinate "
                    f"({dict(c.attrib)})"
                ) from exc
            if not (math.isfinite(x) and math.isfinite(y)):
                raise AnnotationError(
                    f"annotation file {path}: annotation {name!r} has a non-finite coordinate "
                    f"({dict(c.attrib)})"
                )
            points.append((order, x, y))
        points.sort(key=lambda p: p[0])
        items.append((name, group, _polygon(path, name, [(x, y) for _, x, y in points])))
    if root.tag != "ASAP_Annotations" and not items:
        raise AnnotationError(
            f"annotation file {path}: not an ASAP annotation file (root element <{root.tag}>)"
        )
    return items


def _polygon(path: Path, name: str, xy: list[tuple[float, float]]) -> BaseGeometry:
    if len(xy) < 3:
        log.warning("%s: annotation %r has %d vertices; skipped", path, name, len(xy))
        return shapely.Polygon()
    return shapely.Polygon(xy)


def _parse_geojson(path: Path, raw: bytes) -> list[_Item]:
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AnnotationError(f"annotation file {path}: malformed JSON ({exc})") from exc
    if isinstance(data, dict) and data.get("type") == "FeatureCollection":
        features = data.get("features")
        if not isinstance(features, list):
            raise AnnotationError(f"annotation file {path}: FeatureCollection without 'features'")
    elif isinstance(data, dict) and data.get("type") == "Feature":
        features = [data]
    elif isinstance(data, list):  # QuPath exports a plain array of features by default
        features = data
    elif isinstance(data, dict) and "coordinates" in data:
        features = [{"type": "Feature", "geometry": data, "properties": {}}]
    else:
        raise AnnotationError(
            f"annotation file {path}: not GeoJSON (expected a Feature, FeatureCollection or "
            "a list of features)"
        )
    items: list[_Item] = []
    for i, feature in enumerate(features):
        if not isinstance(feature, dict) or not isinstance(feature.get("geometry"), dict):
            raise AnnotationError(f"annotation file {path}: feature {i} has no geometry object")
        props = feature.get("properties") or {}
        name = str(props.get("name") or feature.get("id") or f"feature {i}")
        try:
            geom = shapely.geometry.shape(feature["geometry"])
        except Exception as exc:  # shapely raises several types for bad coordinates
            raise AnnotationError(
                f"annotation file {path}: feature {name!r} has an unreadable geometry ({exc})"
            ) from exc
        if geom.geom_type not in ("Polygon", "MultiPolygon", "GeometryCollection"):
            log.info("%s: skipping %s feature %r (not an area)", path, geom.geom_type, name)
            continue
        items.append((name, _class_name(props), geom))
    return items


def _class_name(props: dict[str, Any]) -> str:
    cls = props.get("classification")
    if isinstance(cls, dict):
        return str(cls.get("name") or "")
    if isinstance(cls, str):
        return cls
    return str(props.get("class") or props.get("label") or "")


def _repair(path: Path, name: str, geom: BaseGeometry) -> BaseGeometry | None:
    if geom.is_empty:
        return None
    if not geom.is_valid:
        reason = shapely.is_valid_reason(geom)
        fixed = shapely.make_valid(geom)
        parts = [p for p in shapely.get_parts(fixed) if p.geom_type in ("Polygon", "MultiPolygon")]
        geom = shapely.union_all(parts) if parts else shapely.Polygon()
        log.warning(
            "%s: annotation %r was invalid (%s); repaired with make_valid (area %.0f px^2)",
            path, name, reason, geom.area,
        )  # fmt: skip
    elif geom.geom_type == "GeometryCollection":
        parts = [p for p in shapely.get_parts(geom) if p.geom_type in ("Polygon", "MultiPolygon")]
        geom = shapely.union_all(parts) if parts else shapely.Polygon()
    if geom.is_empty or geom.area <= 0:
        log.warning("%s: annotation %r has no area; skipped", path, name)
        return None
    return geom


def _assemble(
    path: Path,
    items: list[_Item],
    groups: tuple[tuple[str, ...], tuple[str, ...]],
    config: AnnotationConfig,
    slide_size: tuple[int, int] | None,
) -> Annotations:
    lesion_names = {g.casefold() for g in groups[0]}
    exclusion_names = {g.casefold() for g in groups[1]}
    lesion, exclusion, unknown = [], [], Counter()
    for name, group, geom in items:
        key = group.casefold()
        if key in lesion_names:
            target = lesion
        elif key in exclusion_names:
            target = exclusion
        else:
            unknown[group or "(unclassified)"] += 1
            continue
        fixed = _repair(path, name, geom)
        if fixed is not None:
            target.append(fixed)
    if unknown:
        found = ", ".join(f"{g!r} x{n}" for g, n in sorted(unknown.items()))
        message = (
            f"annotation file {path}: polygons in unknown group(s)/class(es) {found}; "
            f"lesion names are {list(groups[0])}, exclusion names {list(groups[1])}"
        )
        if config.on_unknown == "error":
            raise AnnotationError(message)
        log.info("%s (ignored)", message)
    if not lesion:
        found = ", ".join(sorted(unknown)) or "none"
        raise AnnotationError(
            f"annotation file {path}: no lesion polygons found (unknown groups/classes: {found}); "
            "check the file or configure the lesion group/class names"
        )
    result = Annotations(
        lesion=shapely.union_all(lesion),
        exclusion=shapely.union_all(exclusion) if exclusion else shapely.Polygon(),
        source=path,
        n_lesion=len(lesion),
        n_exclusion=len(exclusion),
    )
    if slide_size is not None:
        _check_bounds(path, result, slide_size, config.bounds_tolerance)
    return result


def _check_bounds(
    path: Path, ann: Annotations, slide_size: tuple[int, int], tolerance: float
) -> None:
    width, height = slide_size
    xmin, ymin, xmax, ymax = ann.bounds
    tol_x, tol_y = tolerance * width, tolerance * height
    if xmin < -tol_x or ymin < -tol_y or xmax > width + tol_x or ymax > height + tol_y:
        raise AnnotationError(
            f"annotation file {path}: coordinates outside the slide (polygon bounds x "
            f"{xmin:.0f}..{xmax:.0f}, y {ymin:.0f}..{ymax:.0f}; slide is {width} x {height} "
            "level-0 px). Is this the annotation of another slide, or not in level-0 pixels?"
        )
