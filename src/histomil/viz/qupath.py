"""QuPath GeoJSON export: one detection per patch with attention/prediction measurements, plus
tissue and lesion polygons as annotations.

Layout (QuPath >= 0.4 reads it through File > Import objects or drag and drop): a
``FeatureCollection`` whose features carry ``properties.objectType`` ("detection" or
"annotation"), ``properties.measurements`` as a name -> number object (``legacy_measurements``
writes the QuPath 0.2/0.3 list of ``{"name", "value"}`` instead) and an optional
``properties.classification`` ``{"name", "color"}``. Coordinates are level-0 pixels with the
origin at the top-left of the full-resolution image, which is QuPath's convention.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from histomil.viz._sources import (
    lesion_geometry,
    read_annotation_file,
    resolve_path,
    tissue_geometry,
)
from histomil.viz.attention import AttentionData, load_attention, percentile_rank

_NAMESPACE = uuid.UUID("5f1f7c1e-6a53-4d0c-9a0e-8f3b1c2d4e5a")
CLASS_COLORS = {
    "Tumor": [200, 0, 0],
    "Tissue": [80, 180, 80],
    "Exclusion": [120, 120, 120],
    "Lesion patch": [220, 60, 60],
    "Non-lesion patch": [60, 120, 220],
}


@dataclass(frozen=True)
class QuPathOptions:
    """What goes into the export besides the patch detections."""

    include_tissue: bool = True
    include_lesion: bool = True
    tissue_path: Path | None = None  # default: OUT/tissue/<slide_id>.geojson next to OUT/bags
    annotation_path: Path | None = None  # default: the annotation_path attribute
    attention_path: Path | None = None  # for a bag source
    patch_size_level0: int | None = None
    legacy_measurements: bool = False  # list of {"name", "value"} (QuPath 0.2/0.3)
    indent: int | None = None


def _feature_id(slide_id: str, kind: str, index: int) -> str:
    """Deterministic UUID so re-exports of the same slide give the same object ids."""
    return str(uuid.uuid5(_NAMESPACE, f"{slide_id}/{kind}/{index}"))


def _measurements(values: dict[str, float], legacy: bool) -> Any:
    clean = {k: float(v) for k, v in values.items() if v is not None and np.isfinite(v)}
    return [{"name": k, "value": v} for k, v in clean.items()] if legacy else clean


def _classification(name: str) -> dict[str, Any]:
    return {"name": name, "color": CLASS_COLORS.get(name, [128, 128, 128])}


def _slide_values(data: AttentionData) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, name in (("prob", "slide_prob"), ("label", "slide_label")):
        try:
            out[name] = float(data.attrs[key])
        except (KeyError, TypeError, ValueError):
            continue
    return out


def patch_features(data: AttentionData, legacy: bool = False) -> list[dict[str, Any]]:
    """One QuPath detection (square Polygon, level-0 px) per patch with its measurements."""
    ps = data.patch_size_level0
    pct = percentile_rank(data.attention)
    slide_values = _slide_values(data)
    features = []
    for i, (x, y) in enumerate(data.coords.tolist()):
        values = {"attention": data.attention[i], "attention_percentile": pct[i]}
        if data.scores is not None:
            values["attention_score"] = data.scores[i]
        if data.instance_prob is not None:
            values["instance_prob"] = data.instance_prob[i]
        if data.patch_labels is not None:
            values["patch_label"] = data.patch_labels[i]
        values.update(slide_values)
        props: dict[str, Any] = {
            "objectType": "detection",
            "name": f"patch {i}",
            "measurements": _measurements(values, legacy),
        }
        if data.patch_labels is not None and data.patch_labels[i] in (0, 1):
            props["classification"] = _classification(
                "Lesion patch" if data.patch_labels[i] == 1 else "Non-lesion patch"
            )
        ring = [[x, y], [x + ps, y], [x + ps, y + ps], [x, y + ps], [x, y]]
        features.append({
            "type": "Feature",
            "id": _feature_id(data.slide_id, "patch", i),
            "geometry": {"type": "Polygon", "coordinates": [ring]},
            "properties": props,
        })  # fmt: skip
    return features


def annotation_features(
    geom: Any, name: str, slide_id: str, legacy: bool = False, title: str | None = None
) -> list[dict[str, Any]]:
    """One QuPath annotation per polygon of ``geom`` (level-0 px), classified as ``name``."""
    from shapely.geometry import mapping

    if geom is None or geom.is_empty:
        return []
    geom = geom.simplify(0)  # drop collinear vertices (unions of patch squares have many)
    polys = [
        g for g in getattr(geom, "geoms", [geom]) if g.geom_type == "Polygon" and not g.is_empty
    ]
    out = []
    for i, poly in enumerate(polys):
        props = {
            "objectType": "annotation",
            "name": f"{title or name} {i + 1}",
            "classification": _classification(name),
            "measurements": _measurements({"area_px": poly.area}, legacy),
        }
        out.append({
            "type": "Feature",
            "id": _feature_id(slide_id, name, i),
            "geometry": mapping(poly),
            "properties": props,
        })  # fmt: skip
    return out


def qupath_collection(data: AttentionData, options: QuPathOptions | None = None) -> dict[str, Any]:
    """The FeatureCollection: tissue and lesion annotations first, then patch detections."""
    options = options or QuPathOptions()
    features: list[dict[str, Any]] = []
    if options.include_tissue:
        tissue = tissue_geometry(data, options.tissue_path)
        features += annotation_features(
            tissue, "Tissue", data.slide_id, options.legacy_measurements
        )
    if options.include_lesion:
        lesion, note = lesion_geometry(data, options.annotation_path)
        title = "Tumor (from patch labels)" if "patch" in note else "Tumor"
        features += annotation_features(
            lesion, "Tumor", data.slide_id, options.legacy_measurements, title
        )
        ann = read_annotation_file(resolve_path(data, "annotation_path", options.annotation_path))
        if ann is not None:
            features += annotation_features(
                ann.exclusion, "Exclusion", data.slide_id, options.legacy_measurements
            )
    features += patch_features(data, options.legacy_measurements)
    return {"type": "FeatureCollection", "features": features}


def export_qupath(
    source: str | os.PathLike,
    out: str | os.PathLike,
    options: QuPathOptions | None = None,
    *,
    slide_id: str | None = None,
    fold: str | int | None = None,
) -> Path:
    """Write the QuPath GeoJSON for one slide; ``source`` as in :func:`render_heatmap`."""
    from histomil._io import atomic_write_text

    options = options or QuPathOptions()
    data = load_attention(source, slide_id, fold, options.attention_path, options.patch_size_level0)
    collection = qupath_collection(data, options)
    atomic_write_text(out, json.dumps(collection, indent=options.indent) + "\n")
    return Path(out)
