"""Synthetic H&E-like whole-slide images with lesion annotations, for tests, demos and benchmarks.

A slide is a tiled TIFF (JPEG or deflate) with the resolution in its TIFF tags (centimetre unit),
which OpenSlide's generic-tiff reader and tiffslide both turn into mpp. Pyramid layouts:
``multipage`` (levels as successive pages, read as a pyramid by both OpenSlide and tiffslide),
``subifd`` (levels as SubIFDs: tiffslide sees the pyramid, OpenSlide only level 0) and ``flat``
(level 0 only). Pixels are rendered tile by tile, so memory stays bounded for
CAMELYON-size slides. Positive slides carry lesions, written as ASAP XML and QuPath GeoJSON.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from histomil._io import atomic_path
from histomil.synth.slide_layout import (
    Layout,
    add_pen_marks,
    make_layout,
    rasterize_layout,
    write_annotation_geojson,
    write_asap_xml,
)
from histomil.synth.slide_render import RenderContext, lesion_class, render_region

LAYOUTS = ("multipage", "subifd", "flat")
COMPRESSIONS = ("jpeg", "deflate")
_CHUNK = 2048  # level px rendered at once along a tile row


@dataclass(frozen=True)
class SlideSynthConfig:
    """How synthetic slides look and are stored.

    ``size`` level-0 (width, height) px; ``mpp`` level-0 um/px; ``tile`` TIFF tile side;
    ``level_factor`` downsample between pyramid levels; ``min_level_side`` stop the pyramid once
    the longest side is at most this; ``artefacts`` allow a pen stroke and faint tissue;
    ``pen_marks`` adds blue/green/black ink strokes, marker dots and dust (:func:`add_pen_marks`,
    from a separate random stream, so the rest of the slide is the same as without).

    Difficulty (defaults keep the original look; see docs/synthetic.md): ``lesion_contrast``
    blends the lesion look from normal tissue (0) to the default lesion (1);
    ``lesion_scale`` multiplies lesion radii (0.5: about a quarter of the lesion area).
    """

    size: tuple[int, int] = (2000, 1500)
    mpp: float = 0.5
    layout: str = "multipage"
    compression: str = "jpeg"
    tile: int = 256
    level_factor: int = 2
    min_level_side: int = 1024
    artefacts: bool = True
    pen_marks: bool = False
    lesion_contrast: float = 1.0
    lesion_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ValueError(f"unknown layout {self.layout!r}; valid: {', '.join(LAYOUTS)}")
        if self.compression not in COMPRESSIONS:
            raise ValueError(f"unknown compression {self.compression!r}; valid: {COMPRESSIONS}")
        if not (0.0 <= self.lesion_contrast <= 1.0 and 0.0 < self.lesion_scale <= 2.0):
            raise ValueError(
                f"lesion_contrast must be in [0, 1] and lesion_scale in (0, 2], got "
                f"{self.lesion_contrast} and {self.lesion_scale}"
            )
        if min(self.size) < 64 or self.tile % 16 or self.level_factor < 2 or self.mpp <= 0:
            raise ValueError(f"invalid SlideSynthConfig {self}")


@dataclass(frozen=True)
class SynthSlide:
    """What :func:`write_synthetic_slide` produced."""

    slide_id: str
    path: Path
    label: int
    layout: Layout
    annotation_xml: Path | None
    annotation_geojson: Path | None


def level_downsamples(config: SlideSynthConfig) -> list[int]:
    """Pyramid downsamples (1, f, f^2, ...) until the longest side is <= ``min_level_side``."""
    if config.layout == "flat":
        return [1]
    out = [1]
    while max(config.size) / out[-1] > config.min_level_side:
        out.append(out[-1] * config.level_factor)
    return out


def _context(layout: Layout, config: SlideSynthConfig, seed: int) -> RenderContext:
    from scipy.ndimage import gaussian_filter

    factor = max(4, int(np.ceil(max(config.size) / 2048)))
    maps = rasterize_layout(layout, factor)
    rng = np.random.default_rng([seed, 3])
    stain = gaussian_filter(rng.normal(size=maps["tissue"].shape), 8)
    maps["stain"] = (stain / (np.abs(stain).max() + 1e-9)).astype(np.float32)
    lesion = lesion_class(config.lesion_contrast)
    return RenderContext(maps=maps, factor=factor, seed=seed, mpp=config.mpp, lesion=lesion)


def _tiles(ctx: RenderContext, shape: tuple[int, int], ds: int, tile: int) -> Iterator[np.ndarray]:
    """Tiles of one level in TIFF order (row-major), each (tile, tile, 3)."""
    h, w = shape
    for ty in range(0, h, tile):
        for cx in range(0, w, _CHUNK):
            cw = min(_CHUNK, w - cx)
            cw_full = int(np.ceil(cw / tile)) * tile
            band = render_region(ctx, cx * ds, ty * ds, (cw_full, tile), ds)
            for tx in range(0, cw_full, tile):
                yield band[:, tx : tx + tile]


def write_synthetic_slide(
    path: str | os.PathLike, config: SlideSynthConfig, seed: int, positive: bool
) -> SynthSlide:
    """Write one synthetic slide (and its annotations when ``positive``) next to ``path``.

    Deterministic for a given (config, seed, positive). Annotations go to ``<stem>.xml`` and
    ``<stem>.geojson`` in the same folder.
    """
    import tifffile

    path = Path(path)
    rng = np.random.default_rng([seed, 1])
    layout = make_layout(rng, config.size, positive, config.artefacts, config.lesion_scale)
    if config.pen_marks:
        layout = add_pen_marks(layout, np.random.default_rng([seed, 5]), config.mpp)
    ctx = _context(layout, config, seed)
    w0, h0 = config.size
    res0 = 1e4 / config.mpp  # px per cm
    downsamples = level_downsamples(config)
    compression = ("jpeg", {"level": 90}) if config.compression == "jpeg" else ("zlib", {})
    with atomic_path(path) as tmp, tifffile.TiffWriter(tmp, bigtiff=w0 * h0 > 2**31) as tif:
        for i, ds in enumerate(downsamples):
            shape = (int(np.ceil(h0 / ds)), int(np.ceil(w0 / ds)))
            kwargs = {}
            if config.layout == "subifd" and i == 0 and len(downsamples) > 1:
                kwargs["subifds"] = len(downsamples) - 1
            tif.write(
                _tiles(ctx, shape, ds, config.tile),
                shape=(*shape, 3),
                dtype=np.uint8,
                tile=(config.tile, config.tile),
                photometric="rgb",
                compression=compression[0],
                compressionargs=compression[1],
                resolution=(res0 / ds, res0 / ds),
                resolutionunit="CENTIMETER",
                subfiletype=0 if i == 0 else 1,
                description=f"histomil synthetic slide; level-0 mpp={config.mpp}"
                if i == 0
                else None,
                metadata=None,
                **kwargs,
            )
    xml = geo = None
    if positive:
        xml, geo = path.with_suffix(".xml"), path.with_suffix(".geojson")
        write_asap_xml(xml, layout.lesions, layout.exclusions)
        write_annotation_geojson(geo, layout.lesions, layout.exclusions)
    return SynthSlide(path.stem, path, int(positive), layout, xml, geo)


def parse_size(text: str | int | tuple[int, int]) -> tuple[int, int]:
    """``2000`` -> (2000, 1500) (4:3), ``"4000x3000"`` -> (4000, 3000)."""
    if isinstance(text, tuple):
        return int(text[0]), int(text[1])
    s = str(text).lower().strip()
    if "x" in s:
        w, h = s.split("x", 1)
        return int(w), int(h)
    return int(s), int(s) * 3 // 4


@contextlib.contextmanager
def _slide_bar(total: int, enabled: bool) -> Iterator[Callable[[str], None]]:
    """A rich bar over slides (slides x size, elapsed, remaining); yields ``advance(status)``."""
    if not enabled:
        yield lambda status: None
        return
    from histomil.executors import progress_bar

    bar, task = progress_bar("synthetic slides", total)
    with bar:
        yield lambda status: bar.update(task, advance=1, status=f"last: {status}")


def make_synthetic_slides(
    out: str | os.PathLike,
    n: int,
    seed: int = 0,
    config: SlideSynthConfig | None = None,
    positive_fraction: float = 0.5,
    progress: bool = True,
) -> Path:
    """Write ``n`` slides into ``out/slides`` plus ``out/manifest.csv`` and return the manifest.

    ``progress``: a rich progress bar over slides (seconds each at demo sizes).

    Manifest columns: ``slide_id,label,slide_path,annotation_path`` with paths relative to the
    manifest (annotation empty for negative slides). Slide ``i`` gets seed ``(seed, i)``; exactly
    ``round(n * positive_fraction)`` slides are positive, in a seeded random order.
    """
    import pandas as pd

    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not 0 <= positive_fraction <= 1:
        raise ValueError(f"positive_fraction must be in [0, 1], got {positive_fraction}")
    config = config or SlideSynthConfig()
    out = Path(out)
    n_pos = round(n * positive_fraction)
    labels = np.zeros(n, dtype=int)
    labels[np.random.default_rng([seed, 2]).permutation(n)[:n_pos]] = 1
    rows = []
    with _slide_bar(n, progress) as advance:
        for i in range(n):
            slide_id = f"synth_{seed}_{i:03d}"
            slide_seed = int(np.random.SeedSequence([seed, i]).generate_state(1)[0])
            made = write_synthetic_slide(
                out / "slides" / f"{slide_id}.tif", replace(config), slide_seed, bool(labels[i])
            )
            advance(f"{slide_id} ({'positive' if made.label else 'negative'})")
            rows.append(
                {
                    "slide_id": slide_id,
                    "label": made.label,
                    "slide_path": f"slides/{slide_id}.tif",
                    "annotation_path": f"slides/{slide_id}.xml" if made.annotation_xml else "",
                }
            )
    manifest = out / "manifest.csv"
    with atomic_path(manifest) as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)
    return manifest
