"""A read failure's hint is a CLI flag naming another backend, never Python syntax."""

from __future__ import annotations

from pathlib import Path

import pytest

from histomil.slides import SlideError, open_slide


@pytest.mark.parametrize(
    ("used", "other"), [("tiffslide", "openslide"), ("openslide", "tiffslide")]
)
def test_read_failure_hint_names_another_backend_as_a_flag(real_slide: Path, used: str, other: str):
    """Found: the corrupt-file hint said `try backend='tiffslide'` even after tiffslide failed."""
    with open_slide(real_slide, backend=used) as slide:

        def broken(*args, **kwargs):
            raise OSError("truncated tile")

        slide._reader.read_region = broken
        with pytest.raises(SlideError) as info:
            slide.read_region((0, 0), 0, (16, 16))
    message = str(info.value)
    assert f"--backend {other}" in message and f"--backend {used}" not in message
    assert "backend=" not in message and "'" not in message.split("truncated tile")[1]
