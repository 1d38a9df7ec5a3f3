"""Shared fixtures: the real data in ../shared/data (skipped with a reason when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("HISTOMIL_SHARED_DATA", ROOT.parent / "shared" / "data"))
REAL_SLIDE = SHARED_DATA / "slides" / "CMU-1-Small-Region.svs"
CAMELYON_ANNOTATIONS = SHARED_DATA / "annotations" / "camelyon16"


@pytest.fixture(scope="session")
def real_slide() -> Path:
    if not REAL_SLIDE.is_file():
        pytest.skip(f"real slide not found at {REAL_SLIDE} (../shared/data is absent)")
    return REAL_SLIDE


@pytest.fixture(scope="session")
def camelyon_annotations() -> Path:
    if not CAMELYON_ANNOTATIONS.is_dir():
        pytest.skip(f"CAMELYON16 annotations not found at {CAMELYON_ANNOTATIONS}")
    return CAMELYON_ANNOTATIONS


@pytest.fixture(autouse=True, scope="session")
def _torch_threads():
    """Keep tests deterministic and polite on 2 cores."""
    try:
        import torch
    except ImportError:  # pragma: no cover
        return
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
