"""Labelled patches as QuPath GeoJSON, so a pathologist can check them over the slide.

Layout follows QuPath >= 0.4 (which also reads it back with File > Import objects): a
``FeatureCollection``; each patch square is a feature with ``properties.objectType =
"detection"``, a ``classification`` (name + RGB colour) and ``measurements`` as a
``{name: number}`` object; the lesion, padded-lesion and exclusion polygons are annotations.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

from histomil._io import atomic_write_text
from histomil.annotations.readers import Annotations

PATCH_CLASSES = {
    1: ("Lesion patch", [220, 40, 40]),
    0: ("Non-lesion patch", [60, 160, 60]),
    -1: ("Unknown patch", [150, 150, 150]),
}


def labelled_patches_geojson(
    coords: np.ndarray,
    patch_size_level0: float,
    labels: np.ndarray,
    overlap: np.ndarray,
    annotations: Annotations | None = None,
    padding: float = 0.0,
) -> dict[str, Any]:
    """QuPath FeatureCollection: (N, 2) coords with (N,) labels and overlap as detections."""
    coords = np.asarray(coords).reshape(-1, 2)
    features: list[dict[str, Any]] = []
    if annotations is not None:
        features += _annotation_features(annotations.lesion, "Tumor", [200, 0, 0])
        if padding > 0:
            padded = annotations.region(padding)
            features += _annotation_features(padded, "Padded lesion", [255, 140, 0])
        features += _annotation_features(annotations.exclusion, "Exclusion", [0, 0, 200])
    s = float(patch_size_level0)
    for (x, y), label, ov in zip(
        coords.tolist(), np.asarray(labels).tolist(), overlap, strict=True
    ):
        name, color = PATCH_CLASSES[int(label)]
        measurements: dict[str, float] = {"label": int(label)}
        if np.isfinite(ov):  # unknown overlap (NaN) is left out: JSON has no NaN
            measurements["overlap"] = round(float(ov), 6)
        ring = [[x, y], [x + s, y], [x + s, y + s], [x, y + s], [x, y]]
        features.append(
            {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": [ring]},
                "properties": {
                    "objectType": "detection",
                    "classification": {"name": name, "color": color},
                    "measurements": measurements,
                },
            }
        )
    return {"type": "FeatureCollection", "features": features}


def write_labelled_patches(
    path: str | os.PathLike,
    coords: np.ndarray,
    patch_size_level0: float,
    labels: np.ndarray,
    overlap: np.ndarray,
    annotations: Annotations | None = None,
    padding: float = 0.0,
) -> None:
    """Write :func:`labelled_patches_geojson` atomically to ``path``."""
    collection = labelled_patches_geojson(
        coords, patch_size_level0, labels, overlap, annotations, padding
    )
    atomic_write_text(path, json.dumps(collection, separators=(",", ":")) + "\n")


def _annotation_features(geom: BaseGeometry, name: str, color: list[int]) -> list[dict]:
    if geom is None or geom.is_empty:
        return []
    parts = [p for p in shapely.get_parts(geom) if p.geom_type == "Polygon"]
    return [
        {
            "type": "Feature",
            "geometry": shapely.geometry.mapping(part),
            "properties": {
                "objectType": "annotation",
                "classification": {"name": name, "color": color},
            },
        }
        for part in parts
    ]
