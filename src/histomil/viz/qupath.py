"""QuPath GeoJSON export: one detection per patch with attention/prediction measurements, plus
tissue and lesion polygons as annotations.

Layout (QuPath >= 0.4 reads it through File > Import objects or drag and drop): a
``FeatureCollection`` built by :mod:`histomil.annotations.qupath` (the one feature builder:
``objectType``, ``name``, ``classification`` with one colour per class, ``measurements``;
``legacy_measurements`` writes the QuPath 0.2/0.3 list of ``{"name", "value"}``). Coordinates
are level-0 pixels with the origin at the top-left of the full-resolution image.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from histomil.annotations import qupath as Q
from histomil.viz._sources import (
    lesion_geometry,
    read_annotation_file,
    resolve_path,
    tissue_geometry,
)
from histomil.viz.attention import AttentionData, load_attention, percentile_rank


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
        label = None if data.patch_labels is None else int(data.patch_labels[i])
        if label is not None:
            values["patch_label"] = label
        values.update(slide_values)
        features.append(
            Q.feature(
                Q.square(x, y, ps), "detection",
                class_name=Q.PATCH_CLASSES[label] if label in (0, 1) else None,
                values=values, name=f"patch {i}", fid=Q.feature_id(data.slide_id, "patch", i),
                legacy=legacy,
            )
        )  # fmt: skip
    return features


def qupath_collection(data: AttentionData, options: QuPathOptions | None = None) -> dict[str, Any]:
    """The FeatureCollection: tissue and lesion annotations first, then patch detections."""
    options = options or QuPathOptions()
    features: list[dict[str, Any]] = []
    if options.include_tissue:
        tissue = tissue_geometry(data, options.tissue_path)
        features += Q.polygon_features(
            tissue, "Tissue", slide_id=data.slide_id, legacy=options.legacy_measurements
        )
    if options.include_lesion:
        lesion, note = lesion_geometry(data, options.annotation_path)
        title = "Tumor (from patch labels)" if "patch" in note else "Tumor"
        features += Q.polygon_features(
            lesion, "Tumor", slide_id=data.slide_id, title=title, legacy=options.legacy_measurements
        )
        ann = read_annotation_file(resolve_path(data, "annotation_path", options.annotation_path))
        if ann is not None:
            features += Q.polygon_features(
                ann.exclusion,
                "Exclusion",
                slide_id=data.slide_id,
                legacy=options.legacy_measurements,
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
