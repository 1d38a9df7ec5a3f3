"""histomil.slides: open slides, segment tissue, tile at a resolution (synthetic slides: histomil.synth)."""

from histomil.slides.backends import (
    MissingMppError,
    Slide,
    SlideError,
    available_backends,
    open_slide,
)
from histomil.slides.tiling import (
    TileSpec,
    UpsamplingWarning,
    grid_coords,
    mpp_from_magnification,
    read_patch,
    read_patches,
    tissue_fractions,
)

__all__ = [
    "MissingMppError",
    "Slide",
    "SlideError",
    "TileSpec",
    "UpsamplingWarning",
    "available_backends",
    "grid_coords",
    "mpp_from_magnification",
    "open_slide",
    "read_patch",
    "read_patches",
    "tissue_fractions",
]
