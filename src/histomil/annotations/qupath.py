"""QuPath GeoJSON: the one feature builder (used by ``histomil label --qupath`` and by
``histomil export-qupath`` through :mod:`histomil.viz.qupath`).

Layout follows what QuPath >= 0.4 writes and reads back (File > Import objects): a
``FeatureCollection`` whose features carry ``properties.objectType`` (``"detection"`` for patch
squares, ``"annotation"`` for polygons), an optional ``name``, a ``classification``
``{"name", "color": [r, g, b]}`` from :data:`CLASS_COLORS` (one colour per class name in every
export) and ``measurements`` as a ``{name: number}`` object (``legacy=True``: the QuPath 0.2/0.3
list of ``{"name", "value"}``). Coordinates are level-0 pixels, origin top-left. Measurement
names are listed in docs/annotations.md and docs/viz.md (``patch_label``, ``overlap``,
``attention``, ..., ``area_px`` on annotations).
"""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

import numpy as np
from shapely.geometry.base import BaseGeometry

from histomil._io import atomic_write_text
from histomil.annotations.readers import Annotations

CLASS_COLORS = {
    "Tumor": [200, 0, 0],
    "Padded lesion": [255, 140, 0],
    "Tissue": [80, 180, 80],
    "Exclusion": [120, 120, 120],
    "Lesion patch": [220, 60, 60],
    "Non-lesion patch": [60, 120, 220],
    "Unknown patch": [150, 150, 150],
}
PATCH_CLASSES = {1: "Lesion patch", 0: "Non-lesion patch", -1: "Unknown patch"}
_NAMESPACE = uuid.UUID("5f1f7c1e-6a53-4d0c-9a0e-8f3b1c2d4e5a")


def feature_id(slide_id: str, kind: str, index: int) -> str:
    """Deterministic UUID so re-exports of the same slide give the same object ids."""
    return str(uuid.uuid5(_NAMESPACE, f"{slide_id}/{kind}/{index}"))


def measurements(values: dict[str, Any], legacy: bool = False) -> Any:
    """Finite values as floats (JSON has no NaN: unknown values are left out)."""
    clean = {k: float(v) for k, v in values.items() if v is not None and np.isfinite(v)}
    return [{"name": k, "value": v} for k, v in clean.items()] if legacy else clean


def feature(
    geometry: dict[str, Any],
    object_type: str,
    *,
    class_name: str | None = None,
    values: dict[str, Any] | None = None,
    name: str | None = None,
    fid: str | None = None,
    legacy: bool = False,
) -> dict[str, Any]:
    """One QuPath feature; ``class_name`` gets its colour from :data:`CLASS_COLORS`."""
    props: dict[str, Any] = {"objectType": object_type}
    if name is not None:
        props["name"] = name
    if class_name is not None:
        props["classification"] = {
            "name": class_name,
            "color": CLASS_COLORS.get(class_name, [128, 128, 128]),
        }
    if values is not None:
        props["measurements"] = measurements(values, legacy)
    out: dict[str, Any] = {"type": "Feature"}
    if fid is not None:
        out["id"] = fid
    out.update(geometry=geometry, properties=props)
    return out


def square(x: float, y: float, size: float) -> dict[str, Any]:
    """A patch square (top-left ``x``, ``y``, side ``size``) as a GeoJSON Polygon."""
    ring = [[x, y], [x + size, y], [x + size, y + size], [x, y + size], [x, y]]
    return {"type": "Polygon", "coordinates": [ring]}


def polygon_features(
    geom: BaseGeometry | None,
    class_name: str,
    *,
    slide_id: str | None = None,
    title: str | None = None,
    legacy: bool = False,
) -> list[dict[str, Any]]:
    """One annotation per polygon of ``geom`` (level-0 px), named ``"<title> <i>"`` and
    measured by its ``area_px``; ids when ``slide_id`` is given."""
    from shapely.geometry import mapping

    if geom is None or geom.is_empty:
        return []
    geom = geom.simplify(0)  # drop collinear vertices (unions of patch squares have many)
    polys = [
        g for g in getattr(geom, "geoms", [geom]) if g.geom_type == "Polygon" and not g.is_empty
    ]
    return [
        feature(
            mapping(poly), "annotation", class_name=class_name, values={"area_px": poly.area},
            name=f"{title or class_name} {i + 1}",
            fid=None if slide_id is None else feature_id(slide_id, class_name, i), legacy=legacy,
        )
        for i, poly in enumerate(polys)
    ]  # fmt: skip


def labelled_patches_geojson(
    coords: np.ndarray,
    patch_size_level0: float,
    labels: np.ndarray,
    overlap: np.ndarray,
    annotations: Annotations | None = None,
    padding: float = 0.0,
) -> dict[str, Any]:
    """QuPath FeatureCollection: (N, 2) coords with (N,) labels and overlap as detections
    (measurements ``patch_label``, ``overlap``), after the lesion, padded-lesion and exclusion
    polygons."""
    coords = np.asarray(coords).reshape(-1, 2)
    features: list[dict[str, Any]] = []
    if annotations is not None:
        features += polygon_features(annotations.lesion, "Tumor")
        if padding > 0:
            features += polygon_features(annotations.region(padding), "Padded lesion")
        features += polygon_features(annotations.exclusion, "Exclusion")
    s = float(patch_size_level0)
    for (x, y), label, ov in zip(
        coords.tolist(), np.asarray(labels).tolist(), overlap, strict=True
    ):
        values = {"patch_label": int(label), "overlap": round(float(ov), 6)}
        features.append(
            feature(
                square(x, y, s), "detection", class_name=PATCH_CLASSES[int(label)], values=values
            )
        )
    return {"type": "FeatureCollection", "features": features}


def write_geojson(path: str | os.PathLike, collection: dict[str, Any]) -> None:
    """Write a FeatureCollection atomically, compact (patch detections make large files)."""
    atomic_write_text(path, json.dumps(collection, separators=(",", ":")) + "\n")
