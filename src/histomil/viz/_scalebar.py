"""Scale bars in micrometres for slide images (heatmaps, thumbnails, patch montages).

The level-0 resolution comes from the opened slide (``Slide.mpp``) or the ``level0_mpp`` attribute
the patch/bag files store; it is never guessed: without it no bar is drawn and the figure says so.
"""

from __future__ import annotations

import math
from typing import Any

from histomil.viz._sources import _bag_attrs
from histomil.viz.attention import AttentionData

_NICE = (1.0, 2.0, 5.0)


def level0_mpp(data: AttentionData, slide: Any | None = None) -> float | None:
    """Level-0 um/px of the slide behind ``data``: the slide's, else the stored ``level0_mpp``."""
    candidates = [getattr(slide, "mpp", None) if slide is not None else None]
    candidates += [data.attrs.get("level0_mpp"), _bag_attrs(data).get("level0_mpp")]
    for value in candidates:
        try:
            mpp = float(value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(mpp) and mpp > 0:
            return mpp
    return None


def nice_length_um(span_um: float, fraction: float = 0.2) -> float:
    """The largest 1/2/5 x 10^k micrometres not longer than ``fraction`` of ``span_um``."""
    if not (span_um > 0 and math.isfinite(span_um)):
        raise ValueError(f"span must be a positive length in um, got {span_um}")
    target = span_um * fraction
    exp = math.floor(math.log10(target))
    best = _NICE[0] * 10.0**exp
    for m in _NICE:
        if m * 10.0**exp <= target * (1 + 1e-9):
            best = m * 10.0**exp
    return best


def length_label(um: float, micro: str = "\u00b5") -> str:
    """``500 µm``, ``2 mm`` (millimetres from 1000 um on); ``micro="u"`` for fonts without µ."""
    if um >= 1000:
        return f"{um / 1000:g} mm"
    return f"{um:g} {micro}m"


def add_scale_bar(ax: Any, image_width_px: int, um_per_image_px: float) -> Any:
    """Draw a white-boxed scale bar (about a fifth of the width) in the lower right of ``ax``,
    whose data coordinates are image pixels; returns the artist (an ``AnchoredSizeBar``)."""
    from matplotlib.font_manager import FontProperties
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    um = nice_length_um(image_width_px * um_per_image_px)
    bar = AnchoredSizeBar(
        ax.transData,
        um / um_per_image_px,
        length_label(um),
        "lower right",
        pad=0.35,
        borderpad=0.5,
        sep=3,
        color="black",
        frameon=True,
        size_vertical=max(1.0, image_width_px / 150),
        fontproperties=FontProperties(size=8),
    )
    bar.patch.set(facecolor="white", alpha=0.8, edgecolor="none")
    ax.add_artist(bar)
    return bar


def pil_font(size: int) -> Any:
    """matplotlib's DejaVu Sans (it has µ) at ``size`` px, else PIL's default font."""
    from PIL import ImageFont

    try:
        from matplotlib import font_manager

        return ImageFont.truetype(font_manager.findfont("DejaVu Sans"), size)
    except (ImportError, OSError, ValueError):
        return ImageFont.load_default()


def draw_pil_scale_bar(img: Any, um_per_px: float, fraction: float = 0.2) -> Any:
    """Draw a boxed micrometre scale bar in the lower right of a PIL image (in place)."""
    from PIL import ImageDraw

    um = nice_length_um(img.width * um_per_px, fraction)
    length = max(1, round(um / um_per_px))
    size = max(11, img.width // 55)
    font = pil_font(size)
    label = length_label(um)
    draw = ImageDraw.Draw(img)
    pad, thick = max(4, size // 2), max(2, size // 4)
    x1, y1 = img.width - 2 * pad, img.height - 2 * pad
    box = [x1 - length - pad, y1 - thick - size - 2 * pad, x1 + pad, y1 + pad]
    draw.rectangle(box, fill="white")
    draw.rectangle([x1 - length, y1 - thick, x1, y1], fill="black")
    draw.text((x1 - length / 2, y1 - thick - 3), label, fill="black", font=font, anchor="mb")
    return img
