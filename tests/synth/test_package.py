"""The synthetic world lives in `histomil.synth` only; `slides/` and `bags/` hold real-data code."""

import subprocess
import sys
from pathlib import Path

import histomil


def test_slides_and_bags_hold_no_synthetic_modules():
    root = Path(histomil.__file__).parent
    stray = sorted(p.name for d in ("slides", "bags") for p in (root / d).glob("*synth*"))
    assert stray == []


def test_synthetic_slides_import_no_torch():
    code = (
        "import sys, histomil.synth, histomil.synth.slides; "
        "print(sorted(m for m in ('torch', 'timm', 'torchvision') if m in sys.modules))"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"
