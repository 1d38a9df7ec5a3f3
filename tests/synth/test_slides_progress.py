"""Synthetic slide generation shows a bar over slides (the demo spent minutes there silently)."""

from __future__ import annotations

import io

import rich
from rich.console import Console

from histomil.synth.slides import SlideSynthConfig, make_synthetic_slides

TINY = SlideSynthConfig(size=(128, 96), tile=64, min_level_side=128, artefacts=False)


def _console(monkeypatch) -> io.StringIO:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=200, color_system=None)
    monkeypatch.setattr(rich, "_console", console)
    return out


def test_slide_bar_counts_slides(monkeypatch, tmp_path):
    out = _console(monkeypatch)
    make_synthetic_slides(tmp_path, 2, seed=0, config=TINY)
    text = out.getvalue()
    assert "synthetic slides" in text and "2/2" in text and "last: synth_0_001" in text


def test_no_bar_when_disabled(monkeypatch, tmp_path):
    out = _console(monkeypatch)
    make_synthetic_slides(tmp_path, 1, seed=0, config=TINY, progress=False)
    assert out.getvalue() == ""
