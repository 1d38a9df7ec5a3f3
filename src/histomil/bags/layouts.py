"""Where other tools look for our files, and the geometry attributes they read on ``coords``.

- CLAM (mahmoodlab/CLAM, commit 53e2409): ``create_patches_fp.py`` writes ``patches/<id>.h5`` whose
  ``coords`` dataset carries ``patch_size``, ``patch_level``, ``downsample``,
  ``downsampled_level_dim``, ``level_dim``, ``name``, ``save_path``
  (``wsi_core/WholeSlideImage.py``, ``process_contour``); ``Whole_Slide_Bag_FP`` reads
  ``patch_level``/``patch_size`` from them. ``extract_features_fp.py`` writes
  ``h5_files/<id>.h5`` (``features``, ``coords``) and ``pt_files/<id>.pt`` (the bare tensor);
  ``Generic_MIL_Dataset`` reads ``pt_files/<id>.pt`` or ``h5_files/<id>.h5``.
- TRIDENT (mahmoodlab/TRIDENT, commit a91fa84): ``features_<encoder>/<id>.h5`` with ``features``
  (attrs ``name``, ``savetodir``, ``encoder``) and ``coords`` whose attributes are copied from its
  patch file (``IO.coords_to_h5``): ``patch_size`` (px at the target magnification),
  ``patch_size_level0``, ``level0_magnification``, ``target_magnification``, ``overlap``,
  ``name``, ``savetodir``, ``level0_width``, ``level0_height``.

Magnifications follow the 10 / mpp convention used throughout histomil (0.25 um/px = 40x).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

OUTPUT_LAYOUTS = ("histomil", "clam", "trident")


def trident_folder(encoder: str) -> str:
    """``features_<encoder>`` with characters unsafe in folder names replaced (``timm:x`` ->
    ``features_timm-x``)."""
    safe = "".join(c if c.isalnum() or c in "_-." else "-" for c in encoder)
    return f"features_{safe}"


def feature_path(out_dir: str | os.PathLike, slide_id: str, layout: str, encoder: str) -> Path:
    """The feature file of ``slide_id`` under ``out_dir`` for an output ``layout``."""
    out = Path(out_dir)
    if layout == "histomil":
        return out / "bags" / f"{slide_id}.h5"
    if layout == "clam":
        return out / "h5_files" / f"{slide_id}.h5"
    if layout == "trident":
        return out / trident_folder(encoder) / f"{slide_id}.h5"
    raise ValueError(f"unknown layout {layout!r}; valid: {', '.join(OUTPUT_LAYOUTS)}")


def clam_coords_attrs(attrs: Mapping[str, Any], save_path: str | os.PathLike = "") -> dict:
    """CLAM's ``coords`` attributes for level-0 coordinates of ``patch_size_level0`` squares.

    We state the patches at level 0 (``patch_level`` 0, ``downsample`` (1, 1)): CLAM then reads
    ``patch_size_level0`` px at level 0 and resizes to its ``--target_patch_size``, i.e. the same
    field of view as ours.
    """
    dims = _dims(attrs)
    return {
        "patch_size": int(attrs["patch_size_level0"]),
        "patch_level": 0,
        "downsample": (1.0, 1.0),
        "downsampled_level_dim": dims,
        "level_dim": dims,
        "name": str(attrs.get("slide_id", "")),
        "save_path": str(save_path),
    }


def trident_coords_attrs(attrs: Mapping[str, Any], save_dir: str | os.PathLike = "") -> dict:
    """TRIDENT's ``coords`` attributes (``IO.coords_to_h5``) for our patch geometry."""
    level0_mag = 10.0 / float(attrs["level0_mpp"])
    target_mag = 10.0 / float(attrs["target_mpp"])
    return {
        "patch_size": int(attrs["patch_size"]),
        "patch_size_level0": int(attrs["patch_size_level0"]),
        "level0_magnification": level0_mag,
        "target_magnification": target_mag,
        "overlap": 0,
        "name": str(attrs.get("slide_id", "")),
        "savetodir": str(save_dir),
        "level0_width": None if _dims(attrs) is None else _dims(attrs)[0],
        "level0_height": None if _dims(attrs) is None else _dims(attrs)[1],
    }


def _dims(attrs: Mapping[str, Any]) -> tuple[int, int] | None:
    """Level-0 (width, height) when the patch file recorded them (None values are not written)."""
    if attrs.get("level0_width") is None or attrs.get("level0_height") is None:
        return None
    return int(attrs["level0_width"]), int(attrs["level0_height"])


def layout_attrs(layout: str, attrs: Mapping[str, Any], path: Path, encoder: str) -> dict:
    """``{"coords": {...}, "features": {...}}`` dataset attributes for an output layout."""
    if layout == "clam":
        return {"coords": clam_coords_attrs(attrs, path.parent)}
    if layout == "trident":
        name = str(attrs.get("slide_id", path.stem))
        return {
            "coords": trident_coords_attrs(attrs, path.parent),
            "features": {"name": name, "savetodir": str(path.parent), "encoder": encoder},
        }
    return {}
