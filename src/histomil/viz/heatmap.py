"""Attention heatmaps: coloured patch squares at their level-0 coords over the slide thumbnail.

Works from stored coordinates and attention only (no re-segmentation). When the slide file is not
available the squares are drawn on a blank canvas sized from the coordinates and the figure says so.
A montage of the top-k / bottom-k attention patches is written next to the heatmap when the slide
can be read (see :func:`histomil.viz.montage.render_montage`).
"""

from __future__ import annotations

import os
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from histomil.viz._scalebar import add_scale_bar, level0_mpp
from histomil.viz._sources import lesion_geometry, open_slide_or_none, polygon_rings
from histomil.viz.attention import AttentionData, VizError, load_attention, percentile_rank

SCALES = ("raw", "percentile")
_HEADER_IN, _CBAR_IN, _FOOTER_IN = 0.75, 0.85, 0.5


@dataclass(frozen=True)
class HeatmapOptions:
    """How a heatmap is drawn and where its inputs come from (None = from the file attributes)."""

    scale: str = "percentile"  # raw: attention weights min..max; percentile: rank 0..100
    cmap: str = "turbo"
    alpha: float = 0.55  # overlay opacity over the slide thumbnail
    thumbnail_size: int = 1400  # longest side (px) of the canvas the squares are painted on
    panel_inches: float = 5.5
    dpi: int = 100
    top_k: int = 8  # patches per montage row; 0 = no montage
    montage_tile_px: int = 160
    slide_path: Path | None = None
    annotation_path: Path | None = None
    attention_path: Path | None = None  # attention array for a bag source (CLAM/TRIDENT/histomil)
    patch_size_level0: int | None = None

    def __post_init__(self) -> None:
        if self.scale not in SCALES:
            raise VizError(f"unknown scale {self.scale!r}; valid: {', '.join(SCALES)}")
        if not 0.0 <= self.alpha <= 1.0:
            raise VizError(f"alpha must be in [0, 1], got {self.alpha}")
        if self.thumbnail_size < 16 or self.dpi < 10 or self.panel_inches <= 0:
            raise VizError("thumbnail_size >= 16, dpi >= 10 and panel_inches > 0 are required")


@dataclass(frozen=True)
class Canvas:
    """The background image and the level-0 -> canvas mapping: ``(x - ox) * sx``."""

    image: np.ndarray  # (H, W, 3) uint8
    sx: float
    sy: float
    has_slide: bool
    note: str
    ox: float = 0.0  # level-0 x of the canvas' left edge (blank canvases crop to the patches)
    oy: float = 0.0


def montage_path_for(out_png: str | os.PathLike) -> Path:
    """Where :func:`render_heatmap` writes the montage for a heatmap ``out_png``."""
    out = Path(out_png)
    return out.with_name(f"{out.stem}_montage.png")


def default_heatmap_path(source: Path, data: AttentionData) -> Path:
    """``RUN/heatmaps/<slide>_fold<k>.png`` for a run, else ``heatmaps/<slide>.png`` beside the file."""
    if source.is_dir():
        return source / "heatmaps" / f"{data.slide_id}_fold{data.fold}.png"
    return source.parent / "heatmaps" / f"{data.slide_id}.png"


def build_canvas(data: AttentionData, slide: Any | None, note: str, max_size: int) -> Canvas:
    """Slide thumbnail, or a blank canvas around the patches (one patch of margin) without one."""
    if slide is not None:
        thumb = np.asarray(slide.get_thumbnail(max_size))[:, :, :3].astype(np.uint8)
        w0, h0 = slide.dimensions
        return Canvas(thumb, thumb.shape[1] / w0, thumb.shape[0] / h0, True, note)
    ps = data.patch_size_level0
    ox, oy = (max(0, int(v) - ps) for v in data.coords.min(0))
    w0 = int(data.coords[:, 0].max()) + 2 * ps - ox
    h0 = int(data.coords[:, 1].max()) + 2 * ps - oy
    s = max_size / max(w0, h0)
    w, h = max(1, round(w0 * s)), max(1, round(h0 * s))
    blank = np.full((h, w, 3), 236, dtype=np.uint8)
    return Canvas(blank, s, s, False, note + " (blank canvas)", float(ox), float(oy))


def paint_values(canvas: Canvas, data: AttentionData, rgb: np.ndarray) -> np.ndarray:
    """(H, W) float coverage mask and colours painted into a copy: returns (H, W, 4) RGBA float."""
    h, w = canvas.image.shape[:2]
    out = np.zeros((h, w, 4), dtype=np.float32)
    ps = data.patch_size_level0
    x = data.coords[:, 0] - canvas.ox
    y = data.coords[:, 1] - canvas.oy
    # rounding both edges tiles a patch grid exactly (no gaps, no overlaps); >= 1 px each
    xs0 = np.round(x * canvas.sx).astype(np.int64)
    ys0 = np.round(y * canvas.sy).astype(np.int64)
    xs1 = np.maximum(xs0 + 1, np.round((x + ps) * canvas.sx).astype(np.int64))
    ys1 = np.maximum(ys0 + 1, np.round((y + ps) * canvas.sy).astype(np.int64))
    xs0, xs1 = np.clip(xs0, 0, w), np.clip(xs1, 0, w)
    ys0, ys1 = np.clip(ys0, 0, h), np.clip(ys1, 0, h)
    hs, ws = ys1 - ys0, xs1 - xs0
    rgba = np.concatenate([np.asarray(rgb, np.float32), np.ones((len(rgb), 1), np.float32)], 1)
    if hs.max(initial=0) * ws.max(initial=0) <= data.n_patches:
        # many small squares (big slides): one vectorised write per pixel offset in a square;
        # later patches overwrite earlier ones, like the per-patch loop below
        for dy in range(int(hs.max())):
            for dx in range(int(ws.max())):
                keep = (dy < hs) & (dx < ws)
                out[ys0[keep] + dy, xs0[keep] + dx] = rgba[keep]
        return out
    for i in range(data.n_patches):
        out[ys0[i] : ys1[i], xs0[i] : xs1[i]] = rgba[i]
    return out


def composite(canvas: Canvas, layer: np.ndarray, alpha: float) -> np.ndarray:
    """Blend painted squares over the background (opaque on a blank canvas)."""
    a = layer[:, :, 3:4] * (alpha if canvas.has_slide else 1.0)
    base = canvas.image.astype(np.float32) / 255.0
    return np.clip(base * (1 - a) + layer[:, :, :3] * a, 0, 1)


ZERO_RGB = (0.80, 0.80, 0.80)  # weight 0 after thresholding: grey, outside the colour maps


@dataclass(frozen=True)
class Panel:
    """One coloured panel: per-patch ``values`` under ``norm``; values below ``norm.vmin`` are
    patches whose attention weight is exactly 0 (thresholded) and get :data:`ZERO_RGB`."""

    title: str
    values: np.ndarray  # (N,)
    vmin: float
    vmax: float
    label: str
    n_zero: int = 0  # thresholded patches drawn in ZERO_RGB (the colour bar's "under" end)


def _attention_panel(data: AttentionData, scale: str) -> Panel:
    """With attention thresholding on most weights are exactly 0: ranking or colouring them on
    the same scale as the kept patches paints nearly everything at the bottom of the colour map.
    Zero weights are therefore shown in grey (below the scale) and the kept patches span it."""
    att = np.asarray(data.attention, dtype=np.float64)
    zero = att <= 0
    n_zero = int(zero.sum()) if (~zero).any() else 0
    if scale == "percentile":
        if n_zero:
            values = np.full(len(att), -1.0)
            values[~zero] = percentile_rank(att[~zero])
            label = "attention percentile among weights > 0 (grey: weight 0)"
            return Panel("attention", values, 0.0, 100.0, label, n_zero)
        return Panel("attention", percentile_rank(att), 0.0, 100.0, "attention percentile")
    lo = float(np.min(att[~zero])) if n_zero else float(np.min(att))
    hi = float(np.max(att))
    hi = hi if hi > lo else lo + 1e-12
    if n_zero:
        values = np.where(zero, lo - 1.0, att)
        return Panel("attention", values, lo, hi, "attention weight (grey: weight 0)", n_zero)
    return Panel("attention", att, lo, hi, "attention weight (raw)")


def _panels(data: AttentionData, scale: str) -> list[Panel]:
    """Attention (thresholded zeros apart) and, when stored, instance probability."""
    panels = [_attention_panel(data, scale)]
    if data.instance_prob is not None:
        panels.append(
            Panel("instance probability", data.instance_prob, 0.0, 1.0, "instance probability")
        )
    return panels


def figure_size_px(n_panels: int, aspect: float, options: HeatmapOptions) -> tuple[int, int]:
    """Exact PNG size (w, h) of a heatmap with ``n_panels`` image panels of ``aspect`` = h / w."""
    w_in, h_in = _figure_inches(n_panels, aspect, options)
    return round(w_in * options.dpi), round(h_in * options.dpi)


def _figure_inches(n_panels: int, aspect: float, options: HeatmapOptions) -> tuple[float, float]:
    img_h = options.panel_inches * min(max(aspect, 0.25), 2.0)
    w_px = round(n_panels * options.panel_inches * options.dpi)
    h_px = round((_HEADER_IN + img_h + _CBAR_IN + _FOOTER_IN) * options.dpi)
    return w_px / options.dpi, h_px / options.dpi  # whole pixels, so the PNG size is exact


def _method(attrs: dict[str, Any]) -> str | None:
    """``abmil + rank_induction`` (the objective is left out when it is the plain ``bag`` loss)."""
    model, objective = (attrs.get(k) for k in ("model", "objective"))
    if model is None or str(model) in ("", "nan", "None"):
        return None
    if objective is None or str(objective) in ("", "nan", "None", "bag"):
        return str(model)
    return f"{model} + {objective}"


def _title(data: AttentionData) -> str:
    a = {**data.attrs, "method": _method(data.attrs)}
    parts = [data.slide_id]
    for key, fmt in (
        ("method", "{}"),
        ("split", "{}"),
        ("label", "label {}"),
        ("prob", "P={:.3f}"),
    ):
        value = a.get(key, a.get("slide_label")) if key == "label" else a.get(key)
        if value is not None and str(value) not in ("", "nan", "None"):
            try:
                parts.append(fmt.format(float(value) if key == "prob" else value))
            except (TypeError, ValueError):
                parts.append(str(value))
    if data.fold is not None:
        parts.insert(1, f"fold {data.fold}")
    return "  ·  ".join(parts)


def draw_heatmap(
    data: AttentionData,
    canvas: Canvas,
    lesion: Any | None,
    notes: list[str],
    options: HeatmapOptions,
    mpp: float | None = None,
) -> Any:
    """Build the matplotlib figure (slide panel when there is one, attention, instance prob);
    ``mpp`` (level-0 um/px) adds a scale bar to every panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.patheffects as pe
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    panels = _panels(data, options.scale)
    images: list[tuple[str, np.ndarray, Any]] = []
    if canvas.has_slide:
        images.append(("slide", canvas.image, None))
    for panel in panels:
        cmap = colormaps[options.cmap].with_extremes(under=ZERO_RGB)
        norm = Normalize(vmin=panel.vmin, vmax=panel.vmax)
        rgb = cmap(norm(np.asarray(panel.values, dtype=np.float64)))[:, :3]
        layer = paint_values(canvas, data, rgb)
        bar = (ScalarMappable(norm=norm, cmap=cmap), panel.label, "min" if panel.n_zero else None)
        images.append((panel.title, composite(canvas, layer, options.alpha), bar))
    h, w = canvas.image.shape[:2]
    aspect = h / w
    w_in, h_in = _figure_inches(len(images), aspect, options)
    fig = Figure(figsize=(w_in, h_in), dpi=options.dpi, facecolor="white")
    img_h = h_in - _HEADER_IN - _CBAR_IN - _FOOTER_IN
    title_text = "\n".join(textwrap.wrap(_title(data), max(20, int(w_in * 72 / 7.0)))[:2])
    fig.text(0.5, 1 - 0.3 / h_in, title_text, ha="center", va="center", fontsize=11, weight="bold")
    rings = [(r - (canvas.ox, canvas.oy)) * (canvas.sx, canvas.sy) for r in polygon_rings(lesion)]
    for i, (title, img, bar) in enumerate(images):
        left = i / len(images)
        box = [left + 0.01, (_CBAR_IN + _FOOTER_IN) / h_in, 1 / len(images) - 0.02, img_h / h_in]
        ax = fig.add_axes(box)
        ax.imshow(img, interpolation="nearest", aspect="equal")
        ax.set_xlim(-0.5, w - 0.5)
        ax.set_ylim(h - 0.5, -0.5)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(title, fontsize=10, pad=3)
        if mpp is not None:
            add_scale_bar(ax, w, mpp / canvas.sx)
        if not canvas.has_slide:
            ax.text(0.01, 0.99, "no slide image: blank canvas", transform=ax.transAxes,
                    ha="left", va="top", fontsize=8, color="#555")  # fmt: skip
        for ring in rings:
            ax.plot(ring[:, 0], ring[:, 1], color="black", lw=1.3,
                    path_effects=[pe.Stroke(linewidth=3, foreground="white"), pe.Normal()])  # fmt: skip
        if bar is not None:
            cax = fig.add_axes([left + 0.06 / len(images) + 0.01, (_FOOTER_IN + 0.45) / h_in,
                                0.88 / len(images) - 0.02, 0.16 / h_in])  # fmt: skip
            cb = fig.colorbar(bar[0], cax=cax, orientation="horizontal", extend=bar[2] or "neither")
            cb.set_label(bar[1], fontsize=9)
            cb.ax.tick_params(labelsize=8)
    note = "\n".join(textwrap.wrap(" | ".join(notes), int(w_in * 72 / 4.4))[:3])
    fig.text(0.01, 0.24 / h_in, note, ha="left", va="center", fontsize=7.5, color="#444")
    return fig


def heatmap_caption(
    data: AttentionData, has_slide: bool, lesion_note: str | None, scale: str, mpp: float | None
) -> str:
    """What the heatmap PNG shows, stored in it as its ``Description`` (the report's caption)."""
    how = {
        "percentile": "colour = percentile rank of the attention weight among the slide's patches",
        "raw": "colour = attention weight",
    }[scale]
    n_zero = _attention_panel(data, scale).n_zero
    parts = [f"Attention heatmap of slide {_title(data)}."]
    parts.append(
        ("Panels: the slide thumbnail, then " if has_slide else "Panels (no slide image): ")
        + f"attention per patch ({how}"
        + (f"; grey = weight 0 after attention thresholding, {n_zero} patches" if n_zero else "")
        + ")"
        + (
            ", then the model's instance probability per patch"
            if data.instance_prob is not None
            else ""
        )
        + "."
    )
    if lesion_note:  # "lesion outline: annotation X.xml" or "...: lesion-labelled patches"
        parts.append(f"Black outline: {lesion_note.split(': ', 1)[-1]}.")
    parts.append("Scale bars in micrometres." if mpp else "No scale bar (resolution unknown).")
    return " ".join(parts)


def render_heatmap(
    source: str | os.PathLike,
    out_png: str | os.PathLike | None = None,
    options: HeatmapOptions | None = None,
    *,
    slide_id: str | None = None,
    fold: str | int | None = None,
) -> Path:
    """Write a heatmap PNG (and ``<out>_montage.png`` when the slide is readable); return its path.

    ``source``: a run directory (with ``slide_id``, optional ``fold``), one attention file, or a
    bag file (any layout) with ``options.attention_path``.
    """
    from histomil._io import atomic_path

    options = options or HeatmapOptions()
    source = Path(source)
    data = load_attention(source, slide_id, fold, options.attention_path, options.patch_size_level0)
    if data.n_patches == 0:
        raise VizError(f"{data.source}: the bag has no patches; nothing to draw")
    out = Path(out_png) if out_png is not None else default_heatmap_path(source, data)
    slide, slide_note = open_slide_or_none(data, options.slide_path)
    try:
        canvas = build_canvas(data, slide, slide_note, options.thumbnail_size)
        lesion, lesion_note = lesion_geometry(data, options.annotation_path)
        mpp = level0_mpp(data, slide)
        notes = [canvas.note, lesion_note, f"{data.n_patches} patches", f"scale: {options.scale}"]
        n_zero = _attention_panel(data, options.scale).n_zero
        if n_zero:
            notes.append(
                f"attention thresholding: {n_zero} of {data.n_patches} patches have weight 0 "
                "(grey, below the colour scale)"
            )
        if mpp is None:
            notes.append("no scale bar: level-0 resolution (level0_mpp) unknown")
        fig = draw_heatmap(data, canvas, lesion, notes, options, mpp)
        caption = heatmap_caption(
            data, canvas.has_slide, lesion_note if lesion is not None else None, options.scale, mpp
        )
        with atomic_path(out) as tmp:
            fig.savefig(tmp, format="png", dpi=options.dpi, metadata={"Description": caption})
        if slide is not None and options.top_k > 0:
            from histomil.viz.montage import render_montage

            render_montage(
                data, slide, montage_path_for(out), options.top_k, options.montage_tile_px
            )
    finally:
        if slide is not None and hasattr(slide, "close"):
            slide.close()
    return out
