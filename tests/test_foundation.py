from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from histomil._io import atomic_path, atomic_write_json, slide_id_from_path
from histomil.cli import app
from histomil.executors import ExecutorConfig, Task, run_tasks
from histomil.manifest import ManifestError, read_manifest


def _square(x: int) -> int:
    if x == 3:
        raise ValueError("three is not allowed")
    return x * x


def test_slide_id_from_path():
    assert slide_id_from_path("/a/b/Tumor_001.tif") == "Tumor_001"
    assert slide_id_from_path("x/slide.ome.tiff") == "slide"
    assert slide_id_from_path("c.svs") == "c"


def test_atomic_path_leaves_nothing_on_error(tmp_path: Path):
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert not target.exists()
    assert os.listdir(tmp_path) == []
    atomic_write_json(target, {"a": 1})
    assert target.read_text().strip().startswith("{")


@pytest.mark.parametrize("workers", [1, 2])
def test_run_tasks_isolates_failures(workers: int):
    tasks = [Task(str(i), _square, {"x": i}) for i in range(5)]
    seen = []
    results = run_tasks(tasks, ExecutorConfig(workers=workers), on_result=seen.append)
    assert [r.key for r in results] == ["0", "1", "2", "3", "4"]
    assert [r.ok for r in results] == [True, True, True, False, True]
    assert results[4].value == 16
    assert "three is not allowed" in results[3].error
    assert len(seen) == 5


def test_executor_config_rejects_unknown():
    with pytest.raises(ValueError, match="unknown executor"):
        ExecutorConfig(executor="slurm")


def test_manifest_problems_are_reported(tmp_path: Path):
    p = tmp_path / "m.csv"
    pd.DataFrame({"slide_id": ["a", "a", "b"], "label": [1, 0, None]}).to_csv(p, index=False)
    with pytest.raises(ManifestError) as err:
        read_manifest(p)
    assert "duplicate slide_id" in str(err.value) and "missing label" in str(err.value)
    pd.DataFrame({"slide": ["a"], "label": [1]}).to_csv(p, index=False)
    with pytest.raises(ManifestError, match="missing required column"):
        read_manifest(p)
    pd.DataFrame({"slide_id": ["a", "b"], "label": [1, 0], "slide_path": ["x.svs", ""]}).to_csv(
        p, index=False
    )
    df = read_manifest(p)
    assert df.loc[0, "slide_path"] == str((tmp_path / "x.svs").resolve())
    assert df.loc[1, "slide_path"] is None


def test_cli_help_and_version():
    runner = CliRunner()
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0 and "demo" in result.output
    result = runner.invoke(app, ["version"])
    assert result.exit_code == 0 and result.output.strip()
