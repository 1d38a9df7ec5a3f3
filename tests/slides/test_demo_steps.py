"""The first demo steps (the whole `histomil demo` is exercised by the foundation tests)."""

from __future__ import annotations

from pathlib import Path

from histomil.demo import DemoPaths, find_real_slide, step_preprocess, step_synthetic_slides


def test_demo_slide_steps(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("HISTOMIL_SHARED_DATA", str(tmp_path / "nowhere"))
    paths = DemoPaths(tmp_path)
    manifest = step_synthetic_slides(paths, quick=True, seed=0)
    assert manifest == paths.manifest and manifest.is_file()
    table = step_preprocess(paths, real_slide=None, workers=1)
    assert len(table) == 4 and (table["status"] == "ok").all()
    assert len(list((paths.preprocess / "patches").glob("*.h5"))) == 4


def test_find_real_slide(real_slide: Path, monkeypatch):
    monkeypatch.delenv("HISTOMIL_SHARED_DATA", raising=False)
    assert find_real_slide() == real_slide.resolve()
