"""Geometry of a synthetic feature-bag slide: tissue patch grid, blob-shaped lesions, patch overlaps.

Lesions are star-shaped blobs ``rho <= r(theta)`` in level-0 pixels; a patch's overlap is the
share of an ``S x S`` grid of sample points inside the union of blobs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

_SAMPLES = 8  # sample points per patch side for overlap fractions
_HARMONICS = np.arange(1, 7)


@dataclass(frozen=True)
class Blob:
    """A star-shaped region: centre (level-0 px), base radius and boundary harmonics (H,)."""

    cx: float
    cy: float
    radius: float
    amp: np.ndarray  # (H,) relative amplitude of cos(h * theta + phase)
    phase: np.ndarray  # (H,)
    jitter: float = 0.0  # absolute boundary offset (px) added by annotation noise
    jitter_amp: np.ndarray | None = None  # (H,)
    jitter_phase: np.ndarray | None = None  # (H,)

    def boundary(self, theta: np.ndarray) -> np.ndarray:
        """Radius (px) at angles ``theta`` (any shape)."""
        t = theta[..., None] * _HARMONICS
        r = self.radius * (1.0 + (self.amp * np.cos(t + self.phase)).sum(-1))
        if self.jitter and self.jitter_amp is not None:
            r = r + self.jitter * (self.jitter_amp * np.cos(t + self.jitter_phase)).sum(-1)
        return np.maximum(r, 0.0)

    def max_radius(self) -> float:
        extra = self.jitter * float(np.abs(self.jitter_amp).sum()) if self.jitter else 0.0
        return self.radius * (1.0 + float(np.abs(self.amp).sum())) + extra

    def polygon(self, n: int = 64) -> np.ndarray:
        """(n + 1, 2) closed ring of boundary vertices (level-0 px)."""
        theta = np.linspace(0.0, 2 * np.pi, n, endpoint=False)
        r = self.boundary(theta)
        ring = np.stack([self.cx + r * np.cos(theta), self.cy + r * np.sin(theta)], 1)
        return np.concatenate([ring, ring[:1]])


def tissue_grid(
    n: int, patch_px: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lay ``n`` patches out as blob-shaped tissue on a grid.

    Returns ``coords`` (n, 2) int64 level-0 x, y of top-left corners, ``cells`` (n, 2) int64
    column/row, and ``tissue`` (n,) float32 tissue fraction (lower on the tissue border).
    """
    aspect = float(np.exp(rng.uniform(-0.4, 0.4)))
    side = np.sqrt(n / 0.55)
    w, h = int(np.ceil(side * aspect)) + 2, int(np.ceil(side / aspect)) + 2
    low = rng.standard_normal((max(2, h // 10 + 2), max(2, w // 10 + 2)))
    field_ = ndimage.zoom(low, (h / low.shape[0], w / low.shape[1]), order=3)[:h, :w]
    yy, xx = np.mgrid[0:h, 0:w]
    field_ = field_ - 2.5 * (((xx - w / 2) / (w / 2)) ** 2 + ((yy - h / 2) / (h / 2)) ** 2)
    flat = np.argsort(-field_, axis=None, kind="stable")[:n]
    rows, cols = np.unravel_index(np.sort(flat), (h, w))
    mask = np.zeros((h, w), bool)
    mask[rows, cols] = True
    padded = np.pad(mask, 1)
    neighbours = (
        padded[:-2, 1:-1].astype(int) + padded[2:, 1:-1] + padded[1:-1, :-2] + padded[1:-1, 2:]
    )[rows, cols]
    tissue = np.where(
        neighbours == 4, rng.uniform(0.85, 1.0, n), rng.uniform(0.05, 0.85, n)
    ).astype(np.float32)
    origin = rng.integers(20, 60, size=2) * patch_px
    cells = np.stack([cols, rows], 1).astype(np.int64)
    coords = cells * patch_px + origin
    return coords.astype(np.int64), cells, tissue


def random_blob(
    cx: float, cy: float, area_px: float, irregularity: float, rng: np.random.Generator
) -> Blob:
    """A blob of roughly ``area_px`` level-0 square pixels centred at (cx, cy)."""
    amp = rng.uniform(0.0, irregularity, _HARMONICS.size) / _HARMONICS
    amp[0] = 0.0  # the first harmonic would only shift the centre
    phase = rng.uniform(0.0, 2 * np.pi, _HARMONICS.size)
    return Blob(cx, cy, float(np.sqrt(area_px / np.pi)), amp, phase)


def jittered(blob: Blob, jitter_px: float, rng: np.random.Generator) -> Blob:
    """The same blob with a smooth random boundary offset of sd about ``jitter_px``."""
    if jitter_px <= 0:
        return blob
    amp = rng.standard_normal(_HARMONICS.size) / np.sqrt(_HARMONICS.size / 2)
    phase = rng.uniform(0.0, 2 * np.pi, _HARMONICS.size)
    return Blob(blob.cx, blob.cy, blob.radius, blob.amp, blob.phase, jitter_px, amp, phase)


def overlap_fraction(coords: np.ndarray, patch_px: int, blobs: list[Blob]) -> np.ndarray:
    """(N,) float32 share of each patch (coords (N, 2) top-left) inside the union of ``blobs``."""
    n = coords.shape[0]
    inside = np.zeros((n, _SAMPLES * _SAMPLES), bool)
    offs = (np.arange(_SAMPLES) + 0.5) * patch_px / _SAMPLES
    ox, oy = np.meshgrid(offs, offs)
    ox, oy = ox.ravel(), oy.ravel()
    for blob in blobs:
        reach = blob.max_radius() + patch_px
        cand = np.flatnonzero(
            (np.abs(coords[:, 0] + patch_px / 2 - blob.cx) <= reach)
            & (np.abs(coords[:, 1] + patch_px / 2 - blob.cy) <= reach)
        )
        if cand.size == 0:
            continue
        dx = coords[cand, 0, None] + ox - blob.cx  # (n_cand, S*S)
        dy = coords[cand, 1, None] + oy - blob.cy
        inside[cand] |= np.hypot(dx, dy) <= blob.boundary(np.arctan2(dy, dx))
    return inside.mean(1).astype(np.float32)


def place_blobs(
    coords: np.ndarray,
    patch_px: int,
    total_patches: float,
    n_blobs: int,
    irregularity: float,
    rng: np.random.Generator,
) -> list[Blob]:
    """``n_blobs`` blobs centred on random tissue patches, splitting ``total_patches`` of area."""
    if n_blobs <= 0 or total_patches <= 0:
        return []
    shares = rng.dirichlet(np.ones(n_blobs)) if n_blobs > 1 else np.ones(1)
    centres = coords[rng.choice(coords.shape[0], size=n_blobs, replace=True)]
    jitter = rng.uniform(0.0, patch_px, size=(n_blobs, 2))
    blobs = []
    for (x, y), (jx, jy), share in zip(centres, jitter, shares, strict=True):
        area = max(share * total_patches, 0.5) * patch_px**2
        blobs.append(random_blob(float(x + jx), float(y + jy), area, irregularity, rng))
    return blobs


def voronoi_regions(cells: np.ndarray, n_regions: int, rng: np.random.Generator) -> np.ndarray:
    """(N,) int64 region index of each cell: nearest of ``n_regions`` random seed cells."""
    seeds = cells[rng.choice(cells.shape[0], size=min(n_regions, cells.shape[0]), replace=False)]
    d = ((cells[:, None, :] - seeds[None, :, :]) ** 2).sum(-1)
    return d.argmin(1).astype(np.int64)


def geojson_polygons(blobs: list[Blob], name: str = "Tumor") -> dict:
    """QuPath-style GeoJSON FeatureCollection of the blobs' polygons (level-0 px)."""
    features = [
        {
            "type": "Feature",
            "geometry": {"type": "Polygon", "coordinates": [np.round(b.polygon(), 1).tolist()]},
            "properties": {"objectType": "annotation", "classification": {"name": name}},
        }
        for b in blobs
    ]
    return {"type": "FeatureCollection", "features": features}
