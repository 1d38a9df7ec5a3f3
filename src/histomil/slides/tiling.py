"""Patch geometry: which level to read, the non-overlapping grid, tissue fractions, patch reads.

A :class:`TileSpec` keeps three sizes apart: ``patch_size`` (px at the target resolution, what
an encoder sees), ``read_size`` (px read at ``read_level`` before resizing) and
``patch_size_level0`` (level-0 px a patch covers, the grid step). Coordinates are always level-0
x, y of a patch's top-left corner.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from histomil.slides.backends import Slide

_MPP_TOLERANCE = 0.02  # a level within 2 % of the target counts as the target resolution


class UpsamplingWarning(UserWarning):
    """The target resolution is finer than the slide's level 0: patches are enlarged pixels."""


def mpp_from_magnification(magnification: float) -> float:
    """The usual convention: 40x = 0.25 um/px, 20x = 0.5 um/px, 10x = 1.0 um/px."""
    if magnification <= 0:
        raise ValueError(f"magnification must be positive, got {magnification}")
    return 10.0 / magnification


@dataclass(frozen=True)
class TileSpec:
    """How patches are cut from one slide (see module docstring for the three sizes)."""

    patch_size: int
    target_mpp: float
    level0_mpp: float
    read_level: int
    read_size: int
    patch_size_level0: int

    @property
    def target_magnification(self) -> float:
        return 10.0 / self.target_mpp

    @property
    def read_scale(self) -> float:
        """``patch_size / read_size``: < 1 shrinks the read pixels, > 1 enlarges (upsamples)."""
        return self.patch_size / self.read_size

    @property
    def upsampled(self) -> bool:
        """True when patches are enlarged from coarser pixels than the target resolution."""
        return self.level0_mpp > self.target_mpp * (1 + _MPP_TOLERANCE)

    def as_attrs(self) -> dict:
        """Plain values for HDF5 attributes."""
        d = asdict(self)
        d["target_magnification"] = self.target_magnification
        d["read_scale"] = self.read_scale
        d["upsampled"] = self.upsampled
        return d

    @classmethod
    def for_slide(cls, slide: Slide, patch_size: int = 224, target_mpp: float = 0.5) -> TileSpec:
        """Pick the coarsest pyramid level that is still at least as fine as ``target_mpp``.

        Reading there and downsampling to ``patch_size`` never upsamples unless even level 0 is
        coarser than the target: then level 0 is read, upsampled, and an
        :class:`UpsamplingWarning` names the slide (once per call, i.e. once per slide). Needs the
        slide's mpp (raises :class:`~histomil.slides.backends.MissingMppError` otherwise).
        """
        if patch_size < 1:
            raise ValueError(f"patch_size must be >= 1, got {patch_size}")
        if target_mpp <= 0:
            raise ValueError(f"target_mpp must be positive, got {target_mpp}")
        mpp0 = slide.require_mpp()
        size0 = max(1, round(patch_size * target_mpp / mpp0))
        ds = slide.level_downsamples
        fine = [i for i in range(len(ds)) if mpp0 * ds[i] <= target_mpp * (1 + _MPP_TOLERANCE)]
        level = max(fine, key=lambda i: ds[i]) if fine else 0
        read_size = max(1, round(size0 / ds[level]))
        spec = cls(patch_size, float(target_mpp), mpp0, level, read_size, size0)
        if spec.upsampled:
            warnings.warn(
                f"slide {Path(str(getattr(slide, 'path', '?'))).name}: the target {target_mpp:g} um/px "
                f"({spec.target_magnification:g}x) is finer than level 0 ({mpp0:g} um/px, "
                f"{10.0 / mpp0:g}x); patches are upsampled x{spec.read_scale:.2f} from level 0 "
                "(no extra detail); ask for a resolution the scan has",
                UpsamplingWarning,
                stacklevel=2,
            )
        return spec


def grid_coords(dimensions: tuple[int, int], step: int) -> np.ndarray:
    """Level-0 top-left corners (N, 2) int64 of all full ``step`` x ``step`` patches, raster order
    (rows top to bottom, left to right within a row)."""
    w, h = dimensions
    xs = np.arange(0, w - step + 1, step, dtype=np.int64)
    ys = np.arange(0, h - step + 1, step, dtype=np.int64)
    if len(xs) == 0 or len(ys) == 0:
        return np.zeros((0, 2), dtype=np.int64)
    gy, gx = np.meshgrid(ys, xs, indexing="ij")
    return np.stack([gx.ravel(), gy.ravel()], axis=1)


def tissue_fractions(
    mask: np.ndarray, coords: np.ndarray, size0: int, dimensions: tuple[int, int]
) -> np.ndarray:
    """Fraction (N,) float32 of each level-0 square (``coords`` (N, 2), side ``size0``) covered by
    ``mask`` (h, w) bool, which spans the whole slide (``dimensions`` level-0 w, h).

    Exact for the piecewise-constant mask: the integral image is interpolated bilinearly at the
    patch corners, so patches smaller than a mask pixel are handled too. Vectorised, O(N).
    """
    if len(coords) == 0:
        return np.zeros(0, dtype=np.float32)
    mh, mw = mask.shape
    sx, sy = mw / dimensions[0], mh / dimensions[1]  # mask px per level-0 px
    integral = np.zeros((mh + 1, mw + 1), dtype=_count_dtype(mask.size))
    np.cumsum(mask, axis=0, dtype=integral.dtype, out=integral[1:, 1:])
    np.cumsum(integral[1:, 1:], axis=1, out=integral[1:, 1:])
    x0 = coords[:, 0] * sx
    y0 = coords[:, 1] * sy
    x1 = (coords[:, 0] + size0) * sx
    y1 = (coords[:, 1] + size0) * sy
    area = (x1 - x0) * (y1 - y0)
    s = (
        _bilinear(integral, x1, y1)
        - _bilinear(integral, x0, y1)
        - _bilinear(integral, x1, y0)
        + _bilinear(integral, x0, y0)
    )
    return np.clip(s / area, 0.0, 1.0).astype(np.float32)


def _count_dtype(n: int) -> type[np.signedinteger]:
    """The integer type that holds counts up to ``n`` (int32, half the memory of int64, for
    masks below 2**31 pixels)."""
    return np.int64 if n >= 2**31 else np.int32


def _bilinear(table: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    h, w = table.shape
    x = np.clip(x, 0, w - 1)
    y = np.clip(y, 0, h - 1)
    xi = np.minimum(np.floor(x).astype(np.int64), w - 2) if w > 1 else np.zeros_like(x, int)
    yi = np.minimum(np.floor(y).astype(np.int64), h - 2) if h > 1 else np.zeros_like(y, int)
    fx, fy = x - xi, y - yi
    x1, y1 = np.minimum(xi + 1, w - 1), np.minimum(yi + 1, h - 1)
    return (
        table[yi, xi] * (1 - fx) * (1 - fy)
        + table[yi, x1] * fx * (1 - fy)
        + table[y1, xi] * (1 - fx) * fy
        + table[y1, x1] * fx * fy
    )


def read_patch(slide: Slide, xy: Sequence[int], spec: TileSpec) -> np.ndarray:
    """RGB uint8 (patch_size, patch_size, 3) of the patch with level-0 top-left ``xy``.

    Reads ``read_size`` px at ``read_level`` and resizes with PIL (Lanczos) when they differ.
    """
    region = slide.read_region(
        (int(xy[0]), int(xy[1])), spec.read_level, (spec.read_size, spec.read_size)
    )
    if spec.read_size == spec.patch_size:
        return region
    from PIL import Image

    img = Image.fromarray(region).resize(
        (spec.patch_size, spec.patch_size), Image.Resampling.LANCZOS
    )
    return np.asarray(img)


def read_patches(slide: Slide, coords: np.ndarray, spec: TileSpec) -> np.ndarray:
    """RGB uint8 (N, patch_size, patch_size, 3) for level-0 ``coords`` (N, 2)."""
    out = np.empty((len(coords), spec.patch_size, spec.patch_size, 3), dtype=np.uint8)
    for i, xy in enumerate(np.asarray(coords)):
        out[i] = read_patch(slide, xy, spec)
    return out
