"""`histomil preprocess` start-up (issue 20): the command loads neither pandas nor scipy.ndimage
(0.3-0.7 s each per process) nor pydantic (typer 0.29 imports it to parse options: ~0.2 s per
command, hence `typer<0.29`), and the status file it now writes without pandas keeps ids."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from histomil._io import read_csv
from histomil.slides.preprocess import PreprocessConfig, preprocess_rows, preprocess_slides


def test_preprocess_command_loads_no_pandas_scipy_or_torch(synth_cohort: Path, tmp_path: Path):
    slide = synth_cohort.parent / "slides" / "synth_7_001.tif"
    code = (
        "import sys\n"
        "from histomil.cli import main\n"
        f"sys.argv = ['histomil', 'preprocess', r'{slide}', '--out', r'{tmp_path / 'out'}']\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as e:\n"
        "    assert not e.code, e.code\n"
        "heavy = ('pandas', 'scipy', 'scipy.ndimage', 'torch', 'timm', 'matplotlib', 'pydantic')\n"
        "print('loaded:', sorted(m for m in heavy if m in sys.modules))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "1 slide(s): 1 ok;" in res.stdout
    assert res.stdout.strip().splitlines()[-1] == "loaded: []"
    assert (tmp_path / "out" / "patches" / "synth_7_001.h5").is_file()


def test_status_file_keeps_ids_and_earlier_rows(synth_cohort: Path, tmp_path: Path):
    src = synth_cohort.parent / "slides" / "synth_7_001.tif"
    for name in ("00008", "NA"):
        shutil.copy(src, tmp_path / f"{name}.tif")
    out = tmp_path / "out"
    config = PreprocessConfig(patch_size=112)
    rows = preprocess_rows([tmp_path / "00008.tif"], out, config)
    assert [r["slide_id"] for r in rows] == ["00008"] and rows[0]["status"] == "ok"
    table = preprocess_slides([tmp_path / "NA.tif"], out, config)  # reads the first row back
    assert list(table["slide_id"]) == ["NA"]
    status = read_csv(out / "preprocess.csv")
    assert sorted(status["slide_id"]) == ["00008", "NA"]
    assert set(status["status"]) == {"ok"} and (status["n_patches"] > 0).all()
    lines = (out / "preprocess.csv").read_text().splitlines()
    assert lines[0] == "slide_id,status,n_patches,seconds,error,warning,slide_path"
    assert lines[1].startswith("00008,ok,") and lines[2].startswith("NA,ok,")


def test_api_result_builds_its_table_on_first_access(synth_cohort: Path, tmp_path: Path):
    import pandas as pd

    from histomil.api import preprocess

    slide = synth_cohort.parent / "slides" / "synth_7_001.tif"
    result = preprocess(slide, tmp_path / "out", patch_size=112)
    assert callable(object.__getattribute__(result, "table"))  # nothing built yet
    assert result.counts == {"ok": 1} and result.n_patches > 0
    table = result.table
    assert isinstance(table, pd.DataFrame) and result.table is table  # built once, then kept
    assert list(table["slide_id"]) == ["synth_7_001"] and result.n_slides == 1
    assert int(table["n_patches"].iloc[0]) == result.n_patches
