"""Binary morphology, box means and connected components for tissue masks, in NumPy only.

Hand-written instead of :mod:`scipy.ndimage` because importing ``scipy.ndimage`` costs 0.3-0.7 s
per process with SciPy 1.17 (its array-API layer imports ``numpy.f2py`` and parses every
docstring): more than segmenting and tiling a CAMELYON-size slide, and paid by every
``histomil preprocess`` command and every worker process. The functions here match
``scipy.ndimage`` exactly on the inputs tissue masks use (``tests/slides/test_morphology.py``
compares them) and are O(pixels) or O(pixels x log(window)).

Connected components work on runs (maximal horizontal stretches of ``True`` in a row): two runs
in adjacent rows touch when their column ranges overlap (4-connectivity) or overlap after
widening by one column (8-connectivity); the run graph is reduced with a vectorised union-find
(hook every root onto the smallest root it touches, then pointer jumping).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _take(a: np.ndarray, axis: int, start: int, length: int) -> np.ndarray:
    idx = [slice(None)] * a.ndim
    idx[axis] = slice(start, start + length)
    return a[tuple(idx)]


def _sliding(p: np.ndarray, size: int, axis: int, op) -> np.ndarray:
    """``op`` (np.add, np.logical_or, ...) over every window of ``size`` along ``axis`` of the
    padded ``p``: n = len - size + 1 outputs, from windows of doubling length joined by the bits
    of ``size`` (O(len x log size); a cumulative sum along a non-contiguous axis is 4x slower)."""
    n = p.shape[axis] - size + 1
    out, offset, span, cur = None, 0, 1, p  # cur[i] = op over p[i : i + span]
    while True:
        if size & span:
            part = _take(cur, axis, offset, n)
            out = part if out is None else op(out, part)
            offset += span
        if span * 2 > size:
            return out
        m = cur.shape[axis] - span
        cur = op(_take(cur, axis, 0, m), _take(cur, axis, span, m))
        span *= 2


def _window_extreme(a: np.ndarray, size: int, axis: int, op, pad_value=None) -> np.ndarray:
    """Running ``op`` (np.logical_or: max, np.logical_and: min) over a centred window of odd
    ``size`` along ``axis``; outside is ``pad_value`` (None: the edge repeats, scipy's
    'nearest')."""
    r = size // 2
    if r == 0:
        return a.copy()
    pad = [(0, 0)] * a.ndim
    pad[axis] = (r, r)
    if pad_value is None:
        p = np.pad(a, pad, mode="edge")
    else:
        p = np.pad(a, pad, mode="constant", constant_values=pad_value)
    return _sliding(p, size, axis, op)


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation of ``mask`` (h, w) bool by a (2r+1)-square; outside counts as False
    (``ndi.maximum_filter(mode='constant', cval=0)``)."""
    size = 2 * int(radius) + 1
    out = _window_extreme(mask, size, 0, np.logical_or, False)
    return _window_extreme(out, size, 1, np.logical_or, False)


def close(mask: np.ndarray, radius: int) -> np.ndarray:
    """Dilation (outside False) then erosion (outside repeats the edge, so the image border is
    not eroded) by a (2r+1)-square."""
    size = 2 * int(radius) + 1
    grown = dilate(mask, radius)
    out = _window_extreme(grown, size, 0, np.logical_and)
    return _window_extreme(out, size, 1, np.logical_and)


def box_mean(rgb: np.ndarray, size: int) -> np.ndarray:
    """Mean of ``rgb`` (h, w, c) uint8 over a ``size`` x ``size`` box per channel, borders
    mirrored: ``ndi.uniform_filter(rgb, (size, size, 1))`` exactly (its window for even sizes,
    mode 'reflect', one axis after the other with the uint8 result truncated in between)."""
    out = rgb
    for axis in (0, 1):
        pad = [(0, 0)] * rgb.ndim
        pad[axis] = (size // 2, (size - 1) // 2)
        p = np.pad(out, pad, mode="symmetric").astype(np.uint32 if size > 256 else np.uint16)
        out = (_sliding(p, size, axis, np.add) // size).astype(np.uint8)
    return out


@dataclass(frozen=True)
class Runs:
    """Runs of ``True`` in a mask, raster order: ``row``, ``start``, ``end`` (exclusive) columns
    and the ``component`` (0..n-1, numbered in raster order of first pixel, as ndi.label)."""

    row: np.ndarray
    start: np.ndarray
    end: np.ndarray
    component: np.ndarray
    n: int

    @property
    def sizes(self) -> np.ndarray:
        """Pixels per component (n,)."""
        return np.bincount(self.component, weights=self.end - self.start, minlength=self.n)


def components(mask: np.ndarray, diagonal: bool = True) -> Runs:
    """Connected components of ``mask`` (h, w) bool: 8-connected with ``diagonal``, else 4."""
    h, w = mask.shape
    padded = np.zeros((h, w + 2), dtype=np.int8)
    padded[:, 1:-1] = mask
    step = np.diff(padded, axis=1)  # +1 where a run starts, -1 one past its end
    row, start = np.nonzero(step == 1)
    _, end = np.nonzero(step == -1)
    n = len(row)
    if n == 0:
        empty = np.zeros(0, dtype=np.int64)
        return Runs(empty, empty, empty, empty, 0)
    width = w + 3  # keys row * width + column never reach the next row
    k = 1 if diagonal else 0
    key_start, key_end = row * width + start, row * width + end
    # runs b of the next row touching run a: start_b < end_a + k and end_b > start_a - k
    lo = np.searchsorted(key_end, (row + 1) * width + start - k, side="right")
    hi = np.searchsorted(key_start, (row + 1) * width + end + k, side="left")
    count = np.maximum(hi - lo, 0)
    a = np.repeat(np.arange(n), count)
    b = np.repeat(lo, count) + (np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count))
    parent = np.arange(n)
    while len(a):
        ra, rb = parent[a], parent[b]
        small, big = np.minimum(ra, rb), np.maximum(ra, rb)
        moving = small != big
        if not moving.any():
            break
        np.minimum.at(parent, big[moving], small[moving])  # parent[i] <= i: never a cycle
        while True:  # pointer jumping until every run points at its root
            nxt = parent[parent]
            if np.array_equal(nxt, parent):
                break
            parent = nxt
        a, b = a[moving], b[moving]
    roots, component = np.unique(parent, return_inverse=True)
    return Runs(row, start, end, component.astype(np.int64), len(roots))


def paint(shape: tuple[int, int], runs: Runs, which: np.ndarray) -> np.ndarray:
    """Mask (h, w) bool of the runs whose ``which`` (bool per run) is True."""
    out = np.zeros(shape, dtype=bool)
    row, start, end = runs.row[which], runs.start[which], runs.end[which]
    length = end - start
    if length.sum() == 0:
        return out
    first = row * shape[1] + start
    offset = np.arange(length.sum()) - np.repeat(np.cumsum(length) - length, length)
    out.ravel()[np.repeat(first, length) + offset] = True
    return out


def remove_small(mask: np.ndarray, max_px: int, keep_border: bool = False) -> np.ndarray:
    """Drop connected components of ``mask`` with area <= ``max_px`` (8-connected; with
    ``keep_border`` 4-connected, and components touching the image border are kept: the open
    background, when filling holes)."""
    runs = components(mask, diagonal=not keep_border)
    if runs.n == 0:
        return mask
    small = runs.sizes <= max_px
    if keep_border:
        h, w = mask.shape
        edge = (runs.row == 0) | (runs.row == h - 1) | (runs.start == 0) | (runs.end == w)
        small[runs.component[edge]] = False
    drop = small[runs.component]
    if not drop.any():
        return mask
    return mask & ~paint(mask.shape, runs, drop)
