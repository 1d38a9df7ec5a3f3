"""Montage of the top-k and bottom-k attention patches, read from the slide at the stored geometry."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from histomil.viz.attention import AttentionData, percentile_rank

PAD, HEADER_PX, CAPTION_PX = 6, 26, 20
_LESION_RGB = (214, 39, 40)


def montage_size(k: int, tile_px: int, rows: int = 2) -> tuple[int, int]:
    """Exact (w, h) px of a montage with ``rows`` rows of ``k`` tiles."""
    return k * tile_px + (k + 1) * PAD, rows * (HEADER_PX + tile_px + CAPTION_PX) + PAD


def tile_spec_for(data: AttentionData, slide: Any, patch_px: int) -> Any:
    """A TileSpec reproducing the stored level-0 patch geometry (``patch_size_level0`` is what the
    coords were cut with), read at the coarsest level that is still fine enough for ``patch_px``."""
    from histomil.slides import TileSpec

    ps0 = data.patch_size_level0
    patch_size = int(data.attrs.get("patch_size") or patch_px)
    ds = list(slide.level_downsamples)
    fine = [i for i, d in enumerate(ds) if d <= ps0 / max(patch_size, 1) + 1e-6]
    level = max(fine, key=lambda i: ds[i]) if fine else 0
    mpp0 = float(slide.mpp) if getattr(slide, "mpp", None) else float("nan")
    target_mpp = float(data.attrs.get("target_mpp") or (mpp0 * ps0 / patch_size))
    return TileSpec(patch_size, target_mpp, mpp0, level, max(1, round(ps0 / ds[level])), ps0)


def pick_top_bottom(attention: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the k highest (descending) and k lowest (ascending) attention, disjoint."""
    n = len(attention)
    k = max(0, min(k, n // 2 if n > 1 else n))
    order = np.argsort(-np.asarray(attention), kind="stable")
    return order[:k], order[::-1][:k] if n > 1 else order[:0]


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def _draw_scale(
    draw: Any, data: AttentionData, slide: Any, tile_px: int, w: int, font: Any
) -> None:
    """A micrometre scale bar at the right end of the first header row (none without mpp)."""
    from histomil.viz._scalebar import length_label, level0_mpp, nice_length_um, pil_font

    mpp = level0_mpp(data, slide)
    if mpp is None:
        return
    tile_um = data.patch_size_level0 * mpp  # a tile shows one whole patch
    um = nice_length_um(tile_um, fraction=0.5)
    length = max(1, round(um / tile_um * tile_px))
    x1, y = w - PAD, PAD + HEADER_PX - 8
    draw.rectangle([x1 - length, y, x1, y + 3], fill="black")
    label = length_label(um)
    draw.text((x1 - length - 6, y + 4), label, fill="black", font=pil_font(12), anchor="rs")


def render_montage(
    data: AttentionData,
    slide: Any,
    out_png: str | os.PathLike,
    k: int = 8,
    tile_px: int = 160,
) -> Path:
    """Write a 2-row montage (top-k, bottom-k attention) of patches read with ``read_patch``.

    Each tile is captioned with its attention weight and percentile; lesion-labelled patches get a
    red frame; a micrometre scale bar sits in the top right corner when the resolution is known. The image is ``montage_size(k, tile_px)`` px whatever the number of patches (empty
    slots stay white when the bag has fewer than 2k patches).
    """
    from PIL import Image, ImageDraw

    from histomil._io import atomic_path
    from histomil.slides import read_patch

    top, bottom = pick_top_bottom(data.attention, k)
    spec = tile_spec_for(data, slide, tile_px)
    pct = percentile_rank(data.attention)
    w, h = montage_size(k, tile_px)
    img = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(img)
    head, small = _font(15), _font(12)
    rows = ((f"Top {len(top)} attention", top), (f"Bottom {len(bottom)} attention", bottom))
    for r, (label, idx) in enumerate(rows):
        y0 = PAD + r * (HEADER_PX + tile_px + CAPTION_PX)
        draw.text((PAD, y0 + 4), f"{data.slide_id} - {label}", fill="black", font=head)
        for j, i in enumerate(idx):
            x = PAD + j * (tile_px + PAD)
            y = y0 + HEADER_PX
            patch = Image.fromarray(read_patch(slide, data.coords[i], spec))
            img.paste(patch.resize((tile_px, tile_px), Image.Resampling.LANCZOS), (x, y))
            if data.patch_labels is not None and data.patch_labels[i] == 1:
                draw.rectangle(
                    [x, y, x + tile_px - 1, y + tile_px - 1], outline=_LESION_RGB, width=4
                )
            caption = f"a={data.attention[i]:.3g}  p{pct[i]:.0f}"
            draw.text((x + 2, y + tile_px + 3), caption, fill="#333333", font=small)
    _draw_scale(draw, data, slide, tile_px, w, small)
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text(
        "Description",
        f"Patches of slide {data.slide_id} read from the slide: the top row the {len(top)} with "
        f"the highest attention, the bottom row the {len(bottom)} with the lowest; under each, "
        "its attention weight a and percentile p; red frame: lesion-labelled patch.",
    )
    with atomic_path(out_png) as tmp:
        img.save(tmp, format="PNG", pnginfo=info)
    return Path(out_png)
