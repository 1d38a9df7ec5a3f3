"""Reading a slide's patches for the encoder: the patch file, a Dataset and its DataLoader.

Each DataLoader worker opens its own slide handle lazily on first use (a handle is never
shared across processes); workers return uint8 (3, S, S) tensors so little data crosses
process boundaries, and normalisation runs next to the model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from histomil._io import slide_id_from_path

PATCH_LABEL_DATASETS = ("patch_labels", "overlap", "tissue", "attn_target")
TILESPEC_ATTRS = (
    "patch_size",
    "target_mpp",
    "level0_mpp",
    "read_level",
    "read_size",
    "patch_size_level0",
)


class PatchFileError(ValueError):
    """A patch file (``OUT/patches/<id>.h5``) that cannot drive extraction."""


@dataclass(frozen=True)
class PatchFile:
    """The contents of a patch file that extraction needs."""

    path: Path
    slide_id: str
    slide_path: Path
    coords: np.ndarray  # (N, 2) int64 level-0 top-left x, y
    attrs: dict[str, Any]
    extras: dict[str, np.ndarray]  # per-patch label datasets present in the file, each (N,)

    def tile_spec(self):
        """The :class:`~histomil.slides.TileSpec` the patch grid was cut with."""
        from histomil.slides import TileSpec

        return TileSpec(
            patch_size=int(self.attrs["patch_size"]),
            target_mpp=float(self.attrs["target_mpp"]),
            level0_mpp=float(self.attrs["level0_mpp"]),
            read_level=int(self.attrs["read_level"]),
            read_size=int(self.attrs["read_size"]),
            patch_size_level0=int(self.attrs["patch_size_level0"]),
        )


def read_patch_file(path: str | os.PathLike, slides_dir: str | os.PathLike | None = None):
    """Read coords, attrs and label datasets of a patch file; resolve the slide path.

    When the recorded ``slide_path`` is gone, ``slides_dir/<file name>`` is tried (slides moved).
    """
    import h5py

    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            if "coords" not in f:
                raise PatchFileError(f"patch file {path}: no 'coords' dataset; re-run preprocess")
            coords = np.asarray(f["coords"][()], dtype=np.int64)
            attrs = {k: _plain(v) for k, v in f.attrs.items()}
            coords_attrs = {k: _plain(v) for k, v in f["coords"].attrs.items()}
            extras = {k: np.asarray(f[k][()]) for k in PATCH_LABEL_DATASETS if k in f}
    except OSError as exc:
        raise PatchFileError(
            f"patch file {path} cannot be read ({exc}); re-run preprocess"
        ) from exc
    if "slide_path" not in attrs and coords_attrs.get("patch_size") is not None:
        attrs = {**foreign_attrs(path, coords_attrs, slides_dir), **attrs}
    missing = [k for k in (*TILESPEC_ATTRS, "slide_path") if k not in attrs]
    if missing:
        raise PatchFileError(
            f"patch file {path}: missing attribute(s) {', '.join(missing)}; it was not written by "
            "`histomil preprocess` (or by an old version); re-run preprocess"
        )
    if coords.ndim != 2 or coords.shape[1] != 2:
        raise PatchFileError(f"patch file {path}: coords shape {coords.shape}, expected (N, 2)")
    slide_path = Path(str(attrs["slide_path"]))
    if not slide_path.is_file() and slides_dir is not None:
        slide_path = Path(slides_dir) / slide_path.name
    if not slide_path.is_file():
        raise PatchFileError(
            f"patch file {path}: slide {attrs['slide_path']} not found; pass --slides DIR "
            "pointing at the folder that now holds the slides"
        )
    slide_id = str(attrs.get("slide_id") or slide_id_from_path(path))
    return PatchFile(path, slide_id, slide_path, coords, attrs, extras)


CLAM_PATCH_SIZE = 224  # CLAM extract_features_fp.py --target_patch_size default


def foreign_attrs(path: Path, coords_attrs: dict, slides_dir) -> dict[str, Any]:
    """Our patch-file attributes for a CLAM (``patches/<id>.h5``) or TRIDENT
    (``patches/<id>_patches.h5``) coordinate file, from the attributes on its ``coords`` and the
    slide found in ``slides_dir``.

    TRIDENT: ``patch_size`` px at ``target_magnification`` cut from ``patch_size_level0`` level-0
    squares. CLAM: ``patch_size`` px read at ``patch_level`` (level-0 side ``patch_size`` x the
    level's downsample) and resized to 224 px, as CLAM's ``extract_features_fp.py`` does.
    """
    from histomil._io import SLIDE_SUFFIXES
    from histomil.slides import TileSpec, open_slide

    trident = "target_magnification" in coords_attrs and "level0_magnification" in coords_attrs
    stem = path.stem.removesuffix("_patches") if trident else path.stem
    slide_id = str(coords_attrs.get("name") or stem)
    if slides_dir is None:
        raise PatchFileError(
            f"patch file {path} is a {'TRIDENT' if trident else 'CLAM'} coordinate file (no "
            "slide path inside); pass --slides DIR, the folder holding its slide"
        )
    found = [Path(slides_dir) / f"{slide_id}{ext}" for ext in SLIDE_SUFFIXES]
    slide_path = next((p for p in found if p.is_file()), None)
    if slide_path is None:
        raise PatchFileError(f"patch file {path}: no slide named {slide_id}.* in {slides_dir}")
    with open_slide(slide_path) as slide:
        mpp0 = slide.require_mpp()
        dims = slide.dimensions
        if trident:
            size = int(coords_attrs["patch_size"])
            size0 = int(
                coords_attrs.get("patch_size_level0")
                or size
                * float(coords_attrs["level0_magnification"])
                // float(coords_attrs["target_magnification"])
            )
            spec = TileSpec.for_slide(slide, size, mpp0 * size0 / size)
        else:
            level = int(coords_attrs.get("patch_level", 0))
            read = int(coords_attrs["patch_size"])
            size0 = round(read * slide.level_downsamples[level])
            size = CLAM_PATCH_SIZE
            spec = TileSpec(size, mpp0 * size0 / size, mpp0, level, read, size0)
    return {
        "slide_id": slide_id,
        "slide_path": str(slide_path),
        **spec.as_attrs(),
        "level0_width": dims[0],
        "level0_height": dims[1],
        "patch_file_format": "trident" if trident else "clam",
    }


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.generic):
        return value.item()
    return value


class PatchDataset:
    """``dataset[i]`` -> uint8 tensor (3, S, S) of patch ``i`` (S = the patch file's patch_size).

    The slide is opened on first access in whichever process reads (each DataLoader worker gets
    its own handle); pickling drops an open handle.
    """

    def __init__(self, slide_path: Path, coords: np.ndarray, spec, mpp: float | None) -> None:
        self.slide_path = Path(slide_path)
        self.coords = np.asarray(coords, dtype=np.int64)
        self.spec = spec
        self.mpp = mpp
        self._slide = None

    def __len__(self) -> int:
        return len(self.coords)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_slide"] = None
        return state

    def _open(self):
        if self._slide is None:
            from histomil.slides import open_slide

            self._slide = open_slide(self.slide_path, mpp=self.mpp)
        return self._slide

    def __getitem__(self, i: int):
        import torch

        from histomil.slides import read_patch

        patch = read_patch(self._open(), self.coords[i], self.spec)  # (S, S, 3) uint8
        # writable + contiguous (copies only when needed): torch warns on read-only arrays
        return torch.from_numpy(np.require(patch, requirements=("C", "W"))).permute(2, 0, 1)


def _worker_init(_: int) -> None:
    import torch

    torch.set_num_threads(1)  # readers decode images; leave the cores to the model


def make_loader(dataset: PatchDataset, batch_size: int, workers: int, pin: bool):
    """A DataLoader yielding uint8 (B, 3, S, S) batches in patch order, ``workers`` readers."""
    from torch.utils.data import DataLoader

    kwargs: dict[str, Any] = {}
    if workers > 0:
        kwargs = {"prefetch_factor": 4, "worker_init_fn": _worker_init, "persistent_workers": False}
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        pin_memory=pin,
        **kwargs,
    )
