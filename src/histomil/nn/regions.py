"""Grouping patches into square regions of a patch grid by their coordinates (for HIPT)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class RegionLayout:
    """Instances laid out as padded regions.

    ``index`` (R, L) instance index per slot, ``valid`` (R, L) True for a filled slot, ``cell``
    (R, L) position of the slot's patch inside its region grid (row-major, 0..size*size-1).
    Regions are ordered by their grid position, so the layout does not depend on instance order.
    """

    index: Tensor
    valid: Tensor
    cell: Tensor


def group_regions(coords: Tensor, size: int, pitch: float | None = None) -> RegionLayout:
    """Group N patches (coords (N, 2), top-left level-0 x, y) into ``size`` x ``size`` regions."""
    pitch = _pitch(coords) if pitch is None else float(pitch)
    grid = torch.round(coords.double() / pitch).long()  # (N, 2) patch grid positions
    region = torch.div(grid, size, rounding_mode="floor")  # (N, 2)
    local = grid - region * size  # (N, 2) in [0, size)
    cell = local[:, 1] * size + local[:, 0]  # (N,)
    region = region - region.min(dim=0).values
    key = region[:, 1] * (int(region[:, 0].max()) + 1) + region[:, 0]  # row-major region key
    _, region_id = torch.unique(key, return_inverse=True)  # regions sorted by grid position
    # Inside a region, order slots by cell so the layout is independent of the input order.
    order = torch.argsort(region_id * (size * size) + cell, stable=True)
    rid = region_id[order]
    counts = torch.bincount(rid)
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(order.numel(), device=coords.device) - starts[rid]
    n_regions, length = counts.numel(), int(counts.max())
    index = torch.zeros(n_regions, length, dtype=torch.long, device=coords.device)
    valid = torch.zeros(n_regions, length, dtype=torch.bool, device=coords.device)
    cells = torch.zeros(n_regions, length, dtype=torch.long, device=coords.device)
    index[rid, slot] = order
    valid[rid, slot] = True
    cells[rid, slot] = cell[order]
    return RegionLayout(index=index, valid=valid, cell=cells)


def _pitch(coords: Tensor) -> float:
    """:func:`histomil.bags.io.grid_pitch` of the coords; 1.0 for a single position."""
    from histomil.bags.io import BagError, grid_pitch

    try:
        return float(grid_pitch(coords.detach().cpu()))
    except BagError:
        return 1.0
