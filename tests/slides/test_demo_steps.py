"""The first demo steps (the whole `histomil demo` is exercised by the foundation tests)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from histomil.demo import (
    QUICK,
    DemoPaths,
    find_real_slide,
    step_preprocess,
    step_synthetic_slides,
)


def test_demo_slide_steps(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("HISTOMIL_SHARED_DATA", str(tmp_path / "nowhere"))
    paths = DemoPaths(tmp_path)
    small = replace(QUICK, n_slides=4)
    manifest = step_synthetic_slides(paths, quick=True, seed=0, settings=small)
    assert manifest == paths.manifest and manifest.is_file()
    table = step_preprocess(paths, real_slide=None, workers=1, settings=small)
    assert len(table) == 4 and (table["status"] == "ok").all()
    assert len(list((paths.preprocess / "patches").glob("*.h5"))) == 4


def test_find_real_slide(real_slide: Path, monkeypatch):
    monkeypatch.delenv("HISTOMIL_SHARED_DATA", raising=False)
    assert find_real_slide() == real_slide.resolve()
