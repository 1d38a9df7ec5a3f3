"""Find and open what a figure draws on: the slide, lesion annotations and tissue polygons.

Each helper returns ``(thing or None, note)`` so a missing slide or annotation never stops a
heatmap; the note says what was used or why nothing was.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from histomil.viz.attention import AttentionData


def _bag_attrs(data: AttentionData) -> dict[str, Any]:
    """Attributes of the bag the attention was computed on (slide/annotation paths live there)."""
    bag = data.attr_path("bag_path")
    if bag is None or not bag.is_file() or bag == data.source:
        return {}
    import h5py

    try:
        with h5py.File(bag, "r") as f:
            return {str(k): v.decode() if isinstance(v, bytes) else v for k, v in f.attrs.items()}
    except OSError:
        return {}


def resolve_path(data: AttentionData, key: str, override: str | Path | None) -> Path | None:
    """An explicit path, else the attention file's attribute, else the bag file's attribute."""
    if override is not None:
        return Path(override)
    found = data.attr_path(key)
    if found is not None:
        return found
    value = _bag_attrs(data).get(key)
    return Path(str(value)) if value not in (None, "", "None") else None


def open_slide_or_none(
    data: AttentionData, slide_path: str | Path | None = None
) -> tuple[Any | None, str]:
    """Open the slide through :func:`histomil.slides.open_slide`, or explain why not."""
    path = resolve_path(data, "slide_path", slide_path)
    if path is None:
        return None, "slide path unknown (no slide_path attribute; use --slide-path)"
    if not path.is_file():
        return None, f"slide file not available: {path}"
    try:
        from histomil.slides import open_slide
    except ImportError:
        return None, "slide reader (histomil.slides.open_slide) not available"
    mpp = data.attrs.get("level0_mpp") or _bag_attrs(data).get("level0_mpp")
    try:
        return open_slide(path, mpp=float(mpp) if mpp else None), f"slide: {path.name}"
    except Exception as exc:  # any backend failure -> blank canvas, with the reason
        return None, f"slide could not be opened ({type(exc).__name__}: {exc})"


def lesion_from_labels(data: AttentionData) -> Any | None:
    """Union of the squares of lesion-labelled patches (level-0 px), or None."""
    if data.patch_labels is None or not (data.patch_labels == 1).any():
        return None
    from shapely import box, union_all

    ps = data.patch_size_level0
    xy = data.coords[data.patch_labels == 1]
    return union_all([box(x, y, x + ps, y + ps) for x, y in xy])


def read_annotation_file(path: Path | None) -> Any | None:
    """:class:`histomil.annotations.Annotations` of ``path``, or None when absent/unreadable."""
    if path is None or not path.is_file():
        return None
    try:
        from histomil.annotations import read_annotations

        return read_annotations(path)
    except Exception:  # ImportError or AnnotationError: the caller falls back to patch labels
        return None


def lesion_geometry(
    data: AttentionData, annotation_path: str | Path | None = None
) -> tuple[Any | None, str]:
    """Lesion polygons from the annotation file, else from lesion patch labels, else None."""
    path = resolve_path(data, "annotation_path", annotation_path)
    ann = read_annotation_file(path)
    if ann is not None and not ann.lesion.is_empty:
        return ann.lesion, f"lesion outline: annotation {path.name}"
    geom = lesion_from_labels(data)
    if geom is not None:
        return geom, "lesion outline: lesion-labelled patches"
    return None, "no lesion annotation"


def tissue_geometry(data: AttentionData, tissue_path: str | Path | None = None) -> Any | None:
    """Tissue polygons (level-0 px) from ``OUT/tissue/<slide_id>.geojson`` next to the bags."""
    path = Path(tissue_path) if tissue_path is not None else None
    if path is None:
        bag = data.attr_path("bag_path")
        for base in [bag.parent.parent] if bag is not None else []:
            candidate = base / "tissue" / f"{data.slide_id}.geojson"
            if candidate.is_file():
                path = candidate
    if path is None or not path.is_file():
        return None
    from shapely import union_all
    from shapely.geometry import shape

    obj = json.loads(path.read_text(encoding="utf-8"))
    feats = obj.get("features", [obj]) if isinstance(obj, dict) else obj
    geoms = [shape(f.get("geometry", f)) for f in feats if isinstance(f, dict)]
    geoms = [g for g in geoms if not g.is_empty]
    return union_all(geoms) if geoms else None


def polygon_rings(geom: Any) -> list[np.ndarray]:
    """Exterior and interior rings of a (multi)polygon as (M, 2) arrays, for outlines."""
    if geom is None or geom.is_empty:
        return []
    polys = list(getattr(geom, "geoms", [geom]))
    rings: list[np.ndarray] = []
    for poly in polys:
        if poly.geom_type == "Polygon":
            rings.append(np.asarray(poly.exterior.coords))
            rings.extend(np.asarray(r.coords) for r in poly.interiors)
        elif hasattr(poly, "geoms"):
            rings.extend(polygon_rings(poly))
    return rings
