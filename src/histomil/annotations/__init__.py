"""Expert annotations to patch labels: readers, overlaps, labels, attention targets, export.

Import from here: ``read_annotations``, ``AnnotationConfig``, ``Annotations``,
``AnnotationError``, ``patch_overlap``, ``patch_labels``, ``attention_target``. Submodules
``labelling`` (the batch job behind ``histomil label``) and ``qupath`` (GeoJSON export) are
imported on use.
"""

from histomil.annotations.overlap import (
    DEFAULT_MIN_OVERLAP,
    attention_target,
    patch_boxes,
    patch_labels,
    patch_overlap,
    region_overlap,
)
from histomil.annotations.readers import (
    AnnotationConfig,
    AnnotationError,
    Annotations,
    find_annotation_file,
    read_annotations,
    read_geojson_geometry,
)

__all__ = [
    "DEFAULT_MIN_OVERLAP",
    "AnnotationConfig",
    "AnnotationError",
    "Annotations",
    "attention_target",
    "find_annotation_file",
    "patch_boxes",
    "patch_labels",
    "patch_overlap",
    "read_annotations",
    "read_geojson_geometry",
    "region_overlap",
]
