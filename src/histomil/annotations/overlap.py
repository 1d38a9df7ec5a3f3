"""Per-patch overlap with annotated regions, patch labels and attention-induction targets.

The overlap of a patch is the fraction of its level-0 square covered by a region (lesion grown
by the padding, minus exclusions). It is computed in three vectorised steps with shapely 2:
an STRtree query finds the patches that touch the region at all; a prepared ``contains``
marks the patches fully inside (overlap 1); only the patches on the region's boundary get an
exact intersection, against small pieces of the region (the region cut on a coarse grid) so
each intersection involves a few dozen vertices instead of thousands.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

from histomil.annotations.readers import Annotations

DEFAULT_MIN_OVERLAP = 0.05  # the rank-induction authors: intersection area / patch area > 0.05
_PIECE_PATCHES = 8  # side of the grid cells cutting the region, in patches


def patch_boxes(coords: np.ndarray, patch_size_level0: float) -> np.ndarray:
    """Patch squares as shapely boxes; ``coords`` (N, 2) level-0 top-left x, y -> (N,) boxes."""
    coords = np.asarray(coords, dtype=np.float64).reshape(-1, 2)
    x, y = coords[:, 0], coords[:, 1]
    return shapely.box(x, y, x + patch_size_level0, y + patch_size_level0)


def region_overlap(
    coords: np.ndarray, patch_size_level0: float, region: BaseGeometry
) -> np.ndarray:
    """Fraction of each patch square covered by ``region``: (N, 2) coords -> (N,) float64."""
    if patch_size_level0 <= 0:
        raise ValueError(f"patch_size_level0 must be > 0, got {patch_size_level0}")
    coords = np.asarray(coords).reshape(-1, 2)
    overlap = np.zeros(len(coords), dtype=np.float64)
    if region is None or region.is_empty or len(coords) == 0:
        return overlap
    boxes = patch_boxes(coords, patch_size_level0)
    tree = shapely.STRtree(boxes)
    candidates = np.unique(tree.query(region, predicate="intersects"))
    if len(candidates) == 0:
        return overlap
    shapely.prepare(region)
    inside = shapely.contains(region, boxes[candidates])
    overlap[candidates[inside]] = 1.0
    boundary = candidates[~inside]
    if len(boundary):
        area = _boundary_areas(boxes[boundary], region, patch_size_level0)
        overlap[boundary] = np.clip(area / float(patch_size_level0) ** 2, 0.0, 1.0)
    return overlap


def patch_overlap(
    coords: np.ndarray,
    patch_size_level0: float,
    annotations: Annotations,
    padding: float = 0.0,
) -> np.ndarray:
    """Fraction of each patch covered by (lesion grown by ``padding`` px) minus exclusions.

    ``coords`` (N, 2) level-0 top-left corners -> (N,) float64 in [0, 1].
    """
    return region_overlap(coords, patch_size_level0, annotations.region(padding))


def patch_labels(overlap: np.ndarray, min_overlap: float = DEFAULT_MIN_OVERLAP) -> np.ndarray:
    """(N,) overlap -> (N,) int8 labels: 1 where ``overlap > min_overlap``, else 0.

    The default 0.05 follows the rank-induction authors' code ("intersection area / patch
    area > 0.05"). NaN overlap (unknown) gives -1.
    """
    if not 0.0 <= min_overlap < 1.0:
        raise ValueError(f"min_overlap must be in [0, 1), got {min_overlap}")
    overlap = np.asarray(overlap, dtype=np.float64)
    labels = (overlap > min_overlap).astype(np.int8)
    labels[np.isnan(overlap)] = -1
    return labels


def attention_target(
    coords: np.ndarray,
    patch_size_level0: float,
    region: BaseGeometry,
    tissue: BaseGeometry | None = None,
    tissue_fraction: np.ndarray | None = None,
) -> np.ndarray:
    """Attention-induction target (Koga et al.): per patch, lesion area that is also tissue,
    normalised to sum 1 over the slide. (N, 2) coords -> (N,) float64.

    With ``tissue`` polygons the area is exact (region ∩ tissue ∩ patch); otherwise the lesion
    overlap is multiplied by the patch's ``tissue_fraction`` (N,). All zeros when no patch
    contains annotated tissue.
    """
    if tissue is not None and not tissue.is_empty:
        weight = region_overlap(coords, patch_size_level0, shapely.intersection(region, tissue))
    else:
        weight = region_overlap(coords, patch_size_level0, region)
        if tissue_fraction is not None:
            weight = weight * np.clip(np.asarray(tissue_fraction, dtype=np.float64), 0.0, 1.0)
    total = weight.sum()
    return weight / total if total > 0 else np.zeros_like(weight)


def attention_target_from_labels(labels: Any, overlap: Any | None = None) -> Any | None:
    """The attention target of a bag whose file stores patch labels but no target: lesion
    patches weighted by their overlap where known, else uniform; sum 1. Torch tensors (N,)
    -> (N,) float32, or None without a lesion patch (the geometric version is
    :func:`attention_target`)."""
    import torch

    if labels is None or not bool((labels == 1).any()):
        return None
    lesion = (labels == 1).float()
    w = lesion * torch.nan_to_num(overlap.float()) if overlap is not None else lesion
    if float(w.sum()) <= 0:
        w = lesion
    return w / w.sum()


def dilate_labels(labels: Any, coords: Any, radius: int, step: int) -> Any:
    """Simulated coarse annotation: unannotated-negative patches within ``radius`` grid steps
    (Chebyshev distance, a square structuring element) of a lesion patch become lesion.
    Torch labels (N,) and coords (N, 2) -> labels (N,); unknown (-1) stays unknown."""
    import torch

    if radius <= 0 or not bool((labels == 1).any()):
        return labels
    grid = torch.div(coords.long(), step, rounding_mode="floor")  # (N, 2)
    lesion = grid[labels == 1]  # (L, 2)
    dist = torch.cdist(grid.float(), lesion.float(), p=float("inf")).min(dim=1).values  # (N,)
    out = labels.clone()
    out[(dist <= radius) & (labels == 0)] = 1
    return out


def _boundary_areas(boxes: np.ndarray, region: BaseGeometry, patch: float) -> np.ndarray:
    """Exact intersection area of each box with ``region``, via small pieces of the region."""
    pieces = _cut(region, boxes, patch * _PIECE_PATCHES)
    tree = shapely.STRtree(pieces)
    box_idx, piece_idx = tree.query(boxes, predicate="intersects")
    areas = shapely.area(shapely.intersection(boxes[box_idx], pieces[piece_idx]))
    return np.bincount(box_idx, weights=areas, minlength=len(boxes))


def _cut(region: BaseGeometry, boxes: np.ndarray, cell: float) -> np.ndarray:
    """The region's polygonal parts cut by a grid of ``cell`` px, only where ``boxes`` lie.

    Pieces are disjoint (they share only edges), so areas over pieces add up exactly.
    """
    bx = shapely.bounds(boxes)  # (M, 4)
    x0, y0 = bx[:, 0].min(), bx[:, 1].min()
    ix = np.floor((bx[:, [0, 2]] - x0) / cell).astype(np.int64)  # first and last cell column
    iy = np.floor((bx[:, [1, 3]] - y0) / cell).astype(np.int64)
    cells = set()
    for (c0, c1), (r0, r1) in zip(ix, iy, strict=True):
        for c in range(c0, c1 + 1):
            for r in range(r0, r1 + 1):
                cells.add((c, r))
    cells_arr = np.array(sorted(cells), dtype=np.float64)
    grid = shapely.box(
        x0 + cells_arr[:, 0] * cell,
        y0 + cells_arr[:, 1] * cell,
        x0 + (cells_arr[:, 0] + 1) * cell,
        y0 + (cells_arr[:, 1] + 1) * cell,
    )
    pieces = shapely.intersection(region, grid)
    pieces = pieces[~shapely.is_empty(pieces)]
    return pieces
