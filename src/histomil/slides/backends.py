"""Slide readers behind one interface, and :func:`open_slide` which picks one.

Backends are tried in priority order (lower first): OpenSlide, then tiffslide, then PIL for plain
JPEG/PNG/TIFF images. Every reader returns RGB ``uint8`` arrays (H, W, 3); transparent pixels
(OpenSlide's outside-the-scan area) are composited on white. Locations are level-0 pixels.

The level-0 resolution (``mpp``, um/px) comes from the slide's metadata or from an explicit
override; it is never guessed. Tiling asks for it through :meth:`Slide.require_mpp`, which raises
:class:`MissingMppError` with instructions when it is unknown.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from histomil._io import slide_id_from_path

_INCH_UM = 25_400.0
_CM_UM = 10_000.0
_BLOCK = 2048  # level px per side read at once when a thumbnail is built from a large level


class SlideError(RuntimeError):
    """A slide that cannot be opened or read; the message names the file and what to do."""


class MissingMppError(SlideError):
    """The slide's level-0 resolution is unknown and was not given."""


@dataclass(frozen=True)
class BackendInfo:
    """A registered reader: ``opener(path) -> reader`` tried in ``priority`` order (low first)."""

    name: str
    priority: int
    opener: Callable[[Path], Any]
    suffixes: tuple[str, ...] | None = None  # None: try any file


_REGISTRY: dict[str, BackendInfo] = {}


def register_backend(info: BackendInfo) -> None:
    """Add (or replace) a backend in the registry."""
    _REGISTRY[info.name] = info


def available_backends() -> list[str]:
    """Names of the registered backends in the order :func:`open_slide` tries them."""
    _ensure_builtin()
    return [b.name for b in sorted(_REGISTRY.values(), key=lambda b: (b.priority, b.name))]


class Slide:
    """An opened slide: pyramid geometry, resolution, region reads and thumbnails.

    Do not construct directly; use :func:`open_slide`. Picklable by path: pickling stores the path,
    the backend name and the mpp override, and unpickling re-opens the file (so DataLoader workers
    each get their own handle).
    """

    def __init__(self, path: Path, backend: str, reader: Any, mpp_override: float | None) -> None:
        self.path = path
        self.backend = backend
        self._reader = reader
        self._mpp_override = mpp_override
        self.slide_id = slide_id_from_path(path)
        self.dimensions: tuple[int, int] = tuple(int(v) for v in reader.dimensions)
        self.level_dimensions: tuple[tuple[int, int], ...] = tuple(
            (int(w), int(h)) for w, h in reader.level_dimensions
        )
        self.level_count: int = len(self.level_dimensions)
        self.level_downsamples: tuple[float, ...] = tuple(
            float(d) for d in reader.level_downsamples
        )
        self.metadata_mpp: float | None = reader.mpp
        self.mpp: float | None = mpp_override if mpp_override is not None else reader.mpp
        power = reader.objective_power
        if power is None and self.mpp is not None:
            power = 10.0 / self.mpp  # 0.25 um/px ~ 40x, 0.5 um/px ~ 20x (the usual convention)
        self.magnification: float | None = None if power is None else float(power)

    # -- resolution -------------------------------------------------------------------------
    def require_mpp(self) -> float:
        """Level-0 um/px, or :class:`MissingMppError` explaining how to provide it."""
        if self.mpp is None or not np.isfinite(self.mpp) or self.mpp <= 0:
            raise MissingMppError(
                f"slide {self.path}: the level-0 resolution (microns per pixel) is not in the "
                f"file's metadata (backend {self.backend}). Give it explicitly: "
                "`histomil preprocess ... --level0-mpp 0.25` (0.25 for 40x, 0.5 for 20x), or an "
                "`mpp` column in the manifest CSV, or open_slide(path, mpp=...)."
            )
        return float(self.mpp)

    def level_mpp(self, level: int) -> float:
        """um/px at pyramid ``level`` (needs the level-0 mpp)."""
        return self.require_mpp() * self.level_downsamples[level]

    # -- pixels -----------------------------------------------------------------------------
    def read_region(
        self, location: tuple[int, int], level: int, size: tuple[int, int]
    ) -> np.ndarray:
        """RGB uint8 (H, W, 3) of ``size`` (w, h) px at ``level``, top-left at level-0 ``location``.

        Areas outside the image are white.
        """
        if not 0 <= level < self.level_count:
            raise ValueError(f"slide {self.path}: level {level} not in 0..{self.level_count - 1}")
        w, h = int(size[0]), int(size[1])
        if w <= 0 or h <= 0:
            raise ValueError(f"read_region size must be positive, got {size}")
        try:
            arr = self._reader.read_region((int(location[0]), int(location[1])), level, (w, h))
        except SlideError:
            raise
        except Exception as exc:
            others = [b for b in available_backends() if b not in (self.backend, "pil")]
            hint = " or ".join(f"--backend {b}" for b in others)
            raise SlideError(
                f"slide {self.path}: reading {size} px at {location} (level {level}) failed with "
                f"the {self.backend} backend: {exc}. The file may be truncated or corrupt; "
                + (f"try {hint}, or re-export the slide." if hint else "re-export the slide.")
            ) from exc
        return to_rgb(arr)

    def get_thumbnail(self, max_size: int | tuple[int, int] = 1024) -> np.ndarray:
        """RGB uint8 (h, w, 3) of the whole slide, longest side <= ``max_size`` (aspect kept).

        Reads the coarsest level still at least as large as the thumbnail, block by block, so
        memory stays bounded even for a non-pyramidal gigapixel file.
        """
        from PIL import Image

        mw, mh = (max_size, max_size) if isinstance(max_size, int) else max_size
        w0, h0 = self.dimensions
        scale = min(mw / w0, mh / h0, 1.0)
        tw, th = max(1, round(w0 * scale)), max(1, round(h0 * scale))
        level = self.level_for_downsample(1.0 / scale)
        lw, lh = self.level_dimensions[level]
        ds = self.level_downsamples[level]
        out = np.empty((th, tw, 3), dtype=np.uint8)
        ys = _block_edges(lh, th)
        xs = _block_edges(lw, tw)
        for (ly0, ly1), (ty0, ty1) in ys:
            for (lx0, lx1), (tx0, tx1) in xs:
                loc = (int(round(lx0 * ds)), int(round(ly0 * ds)))
                block = self.read_region(loc, level, (lx1 - lx0, ly1 - ly0))
                img = Image.fromarray(block).resize(
                    (tx1 - tx0, ty1 - ty0), Image.Resampling.BILINEAR
                )
                out[ty0:ty1, tx0:tx1] = np.asarray(img)
        return out

    def level_for_downsample(self, downsample: float) -> int:
        """The coarsest pyramid level whose downsample is <= ``downsample`` (level 0 if none)."""
        level = 0
        for i, d in enumerate(self.level_downsamples):
            if d <= downsample + 1e-6:
                level = i
        return level

    def read_downsampled(self, downsample: float, tolerance: float = 2**0.5) -> np.ndarray:
        """RGB uint8 (h, w, 3) of the whole slide at about ``downsample`` (level-0 px per pixel).

        A pyramid level within a factor ``tolerance`` of ``downsample`` is read as is (one read, no
        resampling, nothing finer is decoded); otherwise the next finer level is read block by
        block and resized (:meth:`get_thumbnail`). The true scale is ``dimensions / shape``.
        """
        downsample = max(1.0, float(downsample))
        level = self.level_for_downsample(downsample * tolerance)
        if self.level_downsamples[level] * tolerance >= downsample:
            lw, lh = self.level_dimensions[level]
            if max(lw, lh) <= 4 * _BLOCK:
                return self.read_region((0, 0), level, (lw, lh))
        w0, h0 = self.dimensions
        return self.get_thumbnail(max(1, round(max(w0, h0) / downsample)))

    # -- lifecycle --------------------------------------------------------------------------
    def close(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __reduce__(self):
        return (open_slide, (self.path, self._mpp_override, self.backend))

    def __repr__(self) -> str:
        return (
            f"Slide({self.slide_id!r}, backend={self.backend}, dims={self.dimensions}, "
            f"levels={self.level_count}, mpp={self.mpp})"
        )


def _block_edges(level_len: int, thumb_len: int) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Split a level axis into blocks of about ``_BLOCK`` px and the thumbnail axis accordingly;
    blocks are widened so each maps to at least one thumbnail pixel."""
    edges = []
    start_l = start_t = end_l = 0
    while start_l < level_len:
        end_l = min(level_len, max(end_l, start_l) + _BLOCK)
        end_t = thumb_len if end_l >= level_len else round(end_l * thumb_len / level_len)
        if end_t > start_t:
            edges.append(((start_l, end_l), (start_t, end_t)))
            start_l, start_t = end_l, end_t
        elif end_l >= level_len:  # the thumbnail is full: the last block takes the rest
            (prev_l, _), prev_t = edges.pop()
            edges.append(((prev_l, level_len), prev_t))
            break
    return edges


def to_rgb(arr: Any) -> np.ndarray:
    """Any RGB/RGBA/gray image (PIL or array) -> uint8 (H, W, 3), alpha composited on white."""
    a = np.asarray(arr)
    if a.dtype != np.uint8:
        a = np.clip(a, 0, 255).astype(np.uint8)
    if a.ndim == 2:
        return np.repeat(a[:, :, None], 3, axis=2)
    if a.shape[2] == 4:
        if a[:, :, 3].min() == 255:  # opaque (the usual case): no compositing arithmetic
            return np.ascontiguousarray(a[:, :, :3])
        alpha = a[:, :, 3:4].astype(np.uint16)
        rgb = (a[:, :, :3].astype(np.uint16) * alpha + 255 * (255 - alpha) + 127) // 255
        return rgb.astype(np.uint8)
    if a.shape[2] == 1:
        return np.repeat(a, 3, axis=2)
    return np.ascontiguousarray(a[:, :, :3])


def _float_or_none(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if np.isfinite(v) and v > 0 else None


def _mpp_from_tiff_tags(props: dict, prefix: str = "tiff.") -> float | None:
    """mpp from TIFF XResolution/ResolutionUnit (as OpenSlide exposes them), when meaningful."""
    res = _float_or_none(props.get(f"{prefix}XResolution"))
    unit = str(props.get(f"{prefix}ResolutionUnit", "")).lower()
    if res is None:
        return None
    if unit in ("centimeter", "3"):
        return _CM_UM / res
    if unit in ("inch", "2") and res > 1000:  # below that it is a screen dpi, not a scan
        return _INCH_UM / res
    return None


# -- OpenSlide -------------------------------------------------------------------------------
class _OpenSlideReader:
    def __init__(self, path: Path) -> None:
        import openslide

        self._s = openslide.OpenSlide(str(path))
        props = dict(self._s.properties)
        self.dimensions = self._s.dimensions
        self.level_dimensions = self._s.level_dimensions
        self.level_downsamples = self._s.level_downsamples
        self.mpp = _float_or_none(props.get("openslide.mpp-x")) or _mpp_from_tiff_tags(props)
        self.objective_power = _float_or_none(props.get("openslide.objective-power"))

    def read_region(self, location, level, size):
        return self._s.read_region(location, level, size)

    def close(self) -> None:
        self._s.close()


def _open_openslide(path: Path) -> _OpenSlideReader:
    return _OpenSlideReader(path)


# -- tiffslide -------------------------------------------------------------------------------
class _TiffSlideReader:
    def __init__(self, path: Path) -> None:
        import tiffslide

        self._s = tiffslide.TiffSlide(str(path))
        props = dict(self._s.properties)
        self.dimensions = self._s.dimensions
        self.level_dimensions = self._s.level_dimensions
        self.level_downsamples = self._s.level_downsamples
        self.mpp = _float_or_none(props.get("tiffslide.mpp-x"))
        self.objective_power = _float_or_none(props.get("tiffslide.objective-power"))

    def read_region(self, location, level, size):
        # tiffslide pads outside the image with black; clip the request and pad with white.
        ds = self.level_downsamples[level]
        lw, lh = self.level_dimensions[level]
        lx, ly = int(np.floor(location[0] / ds)), int(np.floor(location[1] / ds))
        w, h = size
        x0, y0, x1, y1 = max(lx, 0), max(ly, 0), min(lx + w, lw), min(ly + h, lh)
        if (x0, y0, x1, y1) == (lx, ly, lx + w, ly + h):
            return self._s.read_region(location, level, size, as_array=True)
        out = np.full((h, w, 3), 255, dtype=np.uint8)
        if x1 > x0 and y1 > y0:
            loc0 = (int(round(x0 * ds)), int(round(y0 * ds)))
            part = to_rgb(self._s.read_region(loc0, level, (x1 - x0, y1 - y0), as_array=True))
            out[y0 - ly : y1 - ly, x0 - lx : x1 - lx] = part
        return out

    def close(self) -> None:
        self._s.close()


def _open_tiffslide(path: Path) -> _TiffSlideReader:
    return _TiffSlideReader(path)


# -- PIL (plain images, e.g. DigestPath JPEGs) -----------------------------------------------
class _PILReader:
    """Single-level reader for images small enough to hold in memory."""

    def __init__(self, path: Path) -> None:
        from PIL import Image

        Image.MAX_IMAGE_PIXELS = None  # our own files; a pathology JPEG is legitimately large
        with Image.open(path) as img:
            self._arr = to_rgb(img.convert("RGBA") if img.mode in ("P", "LA", "RGBA") else img)
        h, w = self._arr.shape[:2]
        self.dimensions = (w, h)
        self.level_dimensions = ((w, h),)
        self.level_downsamples = (1.0,)
        self.mpp = None  # JPEG/PNG dpi fields are screen settings, not scan resolution
        self.objective_power = None

    def read_region(self, location, level, size):
        x, y = location
        w, h = size
        out = np.full((h, w, 3), 255, dtype=np.uint8)
        H, W = self._arr.shape[:2]
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, W), min(y + h, H)
        if x1 > x0 and y1 > y0:
            out[y0 - y : y1 - y, x0 - x : x1 - x] = self._arr[y0:y1, x0:x1]
        return out

    def close(self) -> None:
        self._arr = None


def _open_pil(path: Path) -> _PILReader:
    return _PILReader(path)


def _ensure_builtin() -> None:
    if "openslide" in _REGISTRY:
        return
    register_backend(BackendInfo("openslide", 10, _open_openslide))
    register_backend(BackendInfo("tiffslide", 20, _open_tiffslide))
    register_backend(
        BackendInfo("pil", 30, _open_pil, (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp"))
    )


def open_slide(
    path: str | os.PathLike, mpp: float | None = None, backend: str | None = None
) -> Slide:
    """Open a slide with the first backend that can read it (or the named ``backend``).

    ``mpp`` overrides the level-0 resolution from the metadata (um/px). Raises
    :class:`SlideError` naming the file when no backend can read it.
    """
    _ensure_builtin()
    path = Path(path)
    if not path.is_file():
        raise SlideError(f"slide {path} does not exist (or is not a file)")
    if mpp is not None and (_float_or_none(mpp) is None):
        raise ValueError(f"slide {path}: mpp override must be a positive number, got {mpp!r}")
    if backend is not None:
        if backend not in _REGISTRY:
            raise ValueError(f"unknown slide backend {backend!r}; valid: {available_backends()}")
        candidates = [_REGISTRY[backend]]
    else:
        suffix = path.suffix.lower()
        candidates = [
            _REGISTRY[n]
            for n in available_backends()
            if _REGISTRY[n].suffixes is None or suffix in _REGISTRY[n].suffixes
        ]
    errors = []
    for info in candidates:
        try:
            reader = info.opener(path)
        except ImportError as exc:
            errors.append(f"{info.name}: not installed ({exc})")
            continue
        except Exception as exc:  # each library raises its own types for unreadable files
            errors.append(f"{info.name}: {type(exc).__name__}: {exc}")
            continue
        return Slide(path, info.name, reader, None if mpp is None else float(mpp))
    raise SlideError(
        f"slide {path}: no backend could open it ({'; '.join(errors)}). The file is corrupt, "
        "truncated or not a slide format we read; check the file (e.g. re-copy it) or convert it "
        "to a tiled pyramidal TIFF."
    )
