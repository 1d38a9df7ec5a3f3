"""Shared fixtures: the real data in ../shared/data (skipped with a reason when absent), tiny
synthetic slides."""

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


@pytest.fixture(scope="session")
def synth_cohort(tmp_path_factory) -> Path:
    """Manifest of 3 small synthetic slides (1200 x 900 px at 0.5 um/px; 2 positive), shared by
    the slides and synth tests (generated once per session)."""
    from histomil.synth.slides import SlideSynthConfig, make_synthetic_slides

    out = tmp_path_factory.mktemp("synth")
    return make_synthetic_slides(
        out, 3, seed=7, config=SlideSynthConfig(size=(1200, 900)), positive_fraction=0.67
    )


@pytest.fixture(autouse=True, scope="session")
def _torch_threads():
    """Keep tests deterministic and polite on 2 cores."""
    try:
        import torch
    except ImportError:  # pragma: no cover
        return
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
