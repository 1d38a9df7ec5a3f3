"""A tiny patch file on the real slide, written the way `histomil preprocess` writes them."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest


def write_patch_file(
    folder: Path, slide: Path, n: int, patch_size: int, slide_id: str = "CMU-1-Small-Region"
) -> Path:
    """``n`` patches of ``patch_size`` px at level 0 along the slide's diagonal, with labels."""
    from histomil.slides import open_slide

    with open_slide(slide) as s:
        mpp = float(s.mpp)
    xy = np.array([[600 + i * patch_size, 900 + i * patch_size // 2] for i in range(n)])
    path = folder / f"{slide_id}.h5"
    folder.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f["coords"] = xy.astype(np.int64)
        f["tissue"] = np.linspace(0.5, 1.0, n, dtype=np.float32)
        f["patch_labels"] = (np.arange(n) % 2).astype(np.int8)
        f["overlap"] = (np.arange(n) % 2).astype(np.float32) * 0.5
        f.attrs.update(
            slide_id=slide_id,
            slide_path=str(slide),
            patch_size=patch_size,
            patch_size_level0=patch_size,
            target_mpp=mpp,
            level0_mpp=mpp,
            read_level=0,
            read_size=patch_size,
            target_magnification=10.0 / mpp,
            segmentation="otsu",
            min_tissue=0.05,
            histomil_version="test",
            slide_label=1,
        )
    return path


@pytest.fixture
def make_patch_file(real_slide):
    """``make_patch_file(folder, n, patch_size, slide_id=...)`` on the real slide."""

    def make(folder: Path, n: int, patch_size: int, **kw) -> Path:
        return write_patch_file(folder, real_slide, n, patch_size, **kw)

    return make


@pytest.fixture
def patch_dir(tmp_path, real_slide) -> Path:
    """A patches folder with one 6-patch, 64-px patch file on the real slide."""
    folder = tmp_path / "patches"
    write_patch_file(folder, real_slide, n=6, patch_size=64)
    return folder
