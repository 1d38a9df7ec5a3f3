"""Tiny synthetic slides shared by the slides tests (generated once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest

from histomil.slides.synth import SynthConfig, make_synthetic_slides


@pytest.fixture(scope="session")
def synth_cohort(tmp_path_factory) -> Path:
    """Manifest of 3 small slides (1200 x 900 px at 0.5 um/px; 2 positive)."""
    out = tmp_path_factory.mktemp("synth")
    return make_synthetic_slides(
        out, 3, seed=7, config=SynthConfig(size=(1200, 900)), positive_fraction=0.67
    )
