"""Pixels of a synthetic H&E slide, rendered region by region at any pyramid downsample.

Nuclei are generated per fixed level-0 cell from a seed derived from (slide seed, cell x, cell y),
so every region, tile size and pyramid level sees the same nuclei. Levels fine enough to resolve
nuclei stamp them as soft discs; coarser levels blend stroma and nucleus colours by the expected
nuclear coverage. Lesions have denser, larger, darker nuclei on a more purple stroma.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image

CELL = 256  # level-0 px per nucleus-generation cell
BACKGROUND = np.array([243.0, 242.0, 245.0], dtype=np.float32)
PEN = np.array([40.0, 75.0, 150.0], dtype=np.float32)
INK = {  # colour, opacity of each kind of pen mark (add_pen_marks)
    "blue": ((40.0, 75.0, 150.0), 0.85),
    "green": ((45.0, 125.0, 85.0), 0.85),
    "black": ((40.0, 40.0, 46.0), 0.9),
    "dust": ((95.0, 90.0, 90.0), 0.9),
}


@dataclass(frozen=True)
class TissueClass:
    stroma: tuple[float, float, float]
    nucleus: tuple[float, float, float]
    coverage: float  # share of area covered by nuclei
    radius_um: float


NORMAL = TissueClass((236, 172, 204), (105, 70, 160), 0.18, 3.0)
LESION = TissueClass((206, 130, 190), (62, 30, 115), 0.5, 5.0)


def lesion_class(contrast: float = 1.0) -> TissueClass:
    """The lesion look at ``contrast`` between normal tissue (0) and :data:`LESION` (1): stroma
    and nucleus colours, nuclear coverage and nucleus size are blended linearly. Harder cohorts
    use contrast < 1 (lesion patches less distinct from normal ones)."""
    if contrast == 1.0:
        return LESION  # exact default values, so default slides stay byte-identical

    def mix(a: float, b: float) -> float:
        return a + contrast * (b - a)

    return TissueClass(
        tuple(mix(a, b) for a, b in zip(NORMAL.stroma, LESION.stroma, strict=True)),
        tuple(mix(a, b) for a, b in zip(NORMAL.nucleus, LESION.nucleus, strict=True)),
        mix(NORMAL.coverage, LESION.coverage),
        mix(NORMAL.radius_um, LESION.radius_um),
    )


@dataclass(frozen=True)
class RenderContext:
    """What the renderer needs about one slide: low-res maps (``factor`` level-0 px per pixel),
    a low-frequency stain field, the seed, the level-0 mpp and the look of lesion tissue."""

    maps: dict
    factor: int
    seed: int
    mpp: float
    lesion: TissueClass = LESION


def _crop_resize(arr: np.ndarray, box: tuple[float, float, float, float], size: tuple[int, int]):
    """Bilinear resample of ``box`` (x0, y0, x1, y1, map px) of a low-res map to ``size`` (w, h);
    the part of the box outside the map is 0."""
    w, h = size
    mh, mw = arr.shape
    bx0, by0, bx1, by1 = box
    sx, sy = w / (bx1 - bx0), h / (by1 - by0)  # output px per map px
    ow = min(w, int(np.floor((mw - bx0) * sx)))
    oh = min(h, int(np.floor((mh - by0) * sy)))
    out = np.zeros((h, w), dtype=np.float32)
    if ow <= 0 or oh <= 0:
        return out
    sub = (bx0, by0, bx0 + ow / sx, by0 + oh / sy)
    img = Image.fromarray(arr, mode="F").resize((ow, oh), Image.Resampling.BILINEAR, box=sub)
    out[:oh, :ow] = np.asarray(img)
    return out


def _map_box(ctx: RenderContext, x0: float, y0: float, x1: float, y1: float):
    f = ctx.factor
    return (x0 / f, y0 / f, x1 / f, y1 / f)


def _nuclei(ctx: RenderContext, x0: float, y0: float, x1: float, y1: float):
    """Nuclei (x, y, radius in level-0 px, lesion flag, shade) whose discs touch the box."""
    r_max = max(NORMAL.radius_um, ctx.lesion.radius_um) * 1.6 / ctx.mpp
    cx0, cy0 = int((x0 - r_max) // CELL), int((y0 - r_max) // CELL)
    cx1, cy1 = int((x1 + r_max) // CELL), int((y1 + r_max) // CELL)
    parts = [_cell_nuclei(ctx, cx, cy) for cy in range(cy0, cy1 + 1) for cx in range(cx0, cx1 + 1)]
    parts = [p for p in parts if len(p)]
    if not parts:
        return np.zeros((0, 5), dtype=np.float64)
    return np.concatenate(parts)


def _cell_nuclei(ctx: RenderContext, cx: int, cy: int) -> np.ndarray:
    tissue, lesion = ctx.maps["tissue"], ctx.maps["lesion"]
    f = ctx.factor
    my, mx = int(cy * CELL // f), int(cx * CELL // f)
    if not (0 <= my < tissue.shape[0] and 0 <= mx < tissue.shape[1]):
        return np.zeros((0, 5))
    # skip cells whose neighbourhood has no tissue at all (most of the background)
    span = max(1, CELL // f + 1)
    if tissue[max(0, my - 1) : my + span + 1, max(0, mx - 1) : mx + span + 1].max() < 0.05:
        return np.zeros((0, 5))
    rng = np.random.default_rng([ctx.seed, 7, cx + 1_000_000, cy + 1_000_000])
    counts = [
        c.coverage * CELL**2 / (np.pi * (c.radius_um / ctx.mpp) ** 2) for c in (NORMAL, ctx.lesion)
    ]
    n_max = max(counts)
    n = rng.poisson(n_max)
    xy = rng.uniform(0, CELL, (n, 2)) + (cx * CELL, cy * CELL)
    iy = np.clip((xy[:, 1] / f).astype(int), 0, tissue.shape[0] - 1)
    ix = np.clip((xy[:, 0] / f).astype(int), 0, tissue.shape[1] - 1)
    is_lesion = lesion[iy, ix] > 0.5
    keep_p = np.where(is_lesion, counts[1], counts[0]) / n_max
    keep = (rng.random(n) < keep_p) & (tissue[iy, ix] > 0.5)
    radius_um = np.where(is_lesion, ctx.lesion.radius_um, NORMAL.radius_um)
    radius = radius_um / ctx.mpp * np.clip(rng.normal(1.0, 0.18, n), 0.6, 1.5)
    shade = rng.uniform(0.65, 1.0, n)
    out = np.stack([xy[:, 0], xy[:, 1], radius, is_lesion, shade], 1)
    return out[keep]


@lru_cache(maxsize=64)
def _disc(radius_px: float) -> np.ndarray:
    """Soft disc alpha (2r+3, 2r+3), 1 inside, fading over ~1 px at the border."""
    r = int(np.ceil(radius_px)) + 1
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    d = np.sqrt(xx**2 + yy**2)
    return np.clip(radius_px + 0.5 - d, 0.0, 1.0).astype(np.float32)


def render_region(
    ctx: RenderContext, x0: int, y0: int, size: tuple[int, int], downsample: float
) -> np.ndarray:
    """RGB uint8 (h, w, 3) of the level-0 region starting at (x0, y0) seen at ``downsample``."""
    w, h = size
    x1, y1 = x0 + w * downsample, y0 + h * downsample
    box = _map_box(ctx, x0, y0, x1, y1)
    tissue = _crop_resize(ctx.maps["tissue"], box, size)
    faint = _crop_resize(ctx.maps["faint"], box, size)
    pen = _crop_resize(ctx.maps["pen"], box, size)
    inks = [
        (k, _crop_resize(ctx.maps[f"ink_{k}"], box, size)) for k in INK if f"ink_{k}" in ctx.maps
    ]
    inks = [(k, a) for k, a in inks if a.max() >= 0.02]
    if tissue.max() < 0.02 and faint.max() < 0.02 and pen.max() < 0.02 and not inks:
        return np.broadcast_to(BACKGROUND.astype(np.uint8), (h, w, 3)).copy()
    lesion = _crop_resize(ctx.maps["lesion"], box, size)
    stain = _crop_resize(ctx.maps["stain"], box, size)[..., None]
    t = np.clip((tissue - 0.5) * 6 + 0.5, 0, 1)[..., None]  # sharp but anti-aliased edge
    les = np.clip((lesion - 0.5) * 6 + 0.5, 0, 1)[..., None]
    stroma = (1 - les) * np.array(NORMAL.stroma, np.float32) + les * np.array(
        ctx.lesion.stroma, np.float32
    )
    stroma = stroma + stain * np.array([8.0, 14.0, 6.0], np.float32)
    rgb = _nuclei_layer(ctx, stroma, les, (x0, y0, x1, y1), size, downsample)
    rng = np.random.default_rng([ctx.seed, 11, int(x0), int(y0), int(downsample * 16)])
    rgb += rng.standard_normal((h, w, 1), dtype=np.float32) * 5.0
    img = BACKGROUND + (rgb - BACKGROUND) * t
    if faint.max() >= 0.02:
        fa = np.clip((faint - 0.5) * 6 + 0.5, 0, 1)[..., None] * (1 - t)
        pale = 0.3 * np.array(NORMAL.stroma, np.float32) + 0.7 * BACKGROUND
        img += (pale - img) * fa
    if pen.max() >= 0.02:
        pa = np.clip((pen - 0.5) * 6 + 0.5, 0, 1)[..., None] * 0.85
        img += (PEN - img) * pa
    for kind, amount in inks:
        colour, opacity = INK[kind]
        ia = np.clip((amount - 0.5) * 6 + 0.5, 0, 1)[..., None] * opacity
        img += (np.array(colour, np.float32) - img) * ia
    return np.clip(img, 0, 255).astype(np.uint8)


def _nuclei_layer(ctx, stroma, les, box, size, downsample) -> np.ndarray:
    w, h = size
    n_col = np.array(NORMAL.nucleus, np.float32)
    l_col = np.array(ctx.lesion.nucleus, np.float32)
    if NORMAL.radius_um / ctx.mpp / downsample < 1.5:
        # nuclei below ~3 px across: blend by the expected coverage instead of stamping
        cov = (1 - les) * NORMAL.coverage + les * ctx.lesion.coverage
        nuc = (1 - les) * n_col + les * l_col
        return stroma * (1 - 0.8 * cov) + nuc * 0.8 * cov
    alpha = np.zeros((h + 2, w + 2, 2), dtype=np.float32)  # 1 px margin for clipped stamps
    x0, y0 = box[0], box[1]
    for x, y, r, is_lesion, shade in _nuclei(ctx, *box):
        k = _disc(round(r / downsample * 2) / 2)
        half = k.shape[0] // 2
        cx, cy = int(round((x - x0) / downsample)) + 1, int(round((y - y0) / downsample)) + 1
        ya, yb, xa, xb = cy - half, cy + half + 1, cx - half, cx + half + 1
        ka, kb, kc, kd = max(0, -ya), k.shape[0] - max(0, yb - (h + 2)), max(0, -xa), k.shape[1]
        kd -= max(0, xb - (w + 2))
        if ka >= kb or kc >= kd:
            continue
        dst = alpha[max(ya, 0) : min(yb, h + 2), max(xa, 0) : min(xb, w + 2), int(is_lesion)]
        np.maximum(dst, k[ka:kb, kc:kd] * shade, out=dst)
    alpha = alpha[1:-1, 1:-1]
    a_n, a_l = alpha[..., :1], alpha[..., 1:]
    out = stroma * (1 - a_n) + n_col * a_n
    return out * (1 - a_l) + l_col * a_l
