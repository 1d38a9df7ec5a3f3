"""The CLI surface (issue 19 "One vocabulary", issue 20 "no torch at start-up").

Each "Found" of issue 19 maps to a test here or to a rule of ``histomil.cli._docs.check``
(run in tests/test_cli_docs.py):
- ``--mpp`` target vs level-0, ``--slide-mpp``: test_old_resolution_spellings_map_to_new_names
  and the RETIRED rule;
- ``--precision`` values vs ``train.precision``: test_precision_values_are_the_yaml_values and
  the precision rule;
- ``--float16`` vs ``--dtype``: test_extract_old_spellings (with tests/features) and RETIRED;
- ``--annotation`` vs ``--annotations``, ``--slide``/``--slides``/``--slide-path``: the metavar
  rule (PATH / DIR / ID / FILE) and RETIRED; the heatmap test in tests/test_api_paths.py;
- ``--out`` file vs folder, missing in label: the ``--out DIR`` rule; test_label_single_annotation_file_and_out_folder in
  tests/test_api.py;
- ``--workers`` two meanings, ``--cpus-per-task`` help: the workers and cpus rules;
- no ``--version``/``-h``: test_version_and_short_help_everywhere.
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from typer.testing import CliRunner

from histomil.cli import app
from histomil.cli._docs import commands

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "timm", "ray", "matplotlib", "openslide")
runner = CliRunner()


def _python(code: str) -> dict:
    env = {"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_import_cli_loads_no_heavy_library_and_is_fast():
    """`import histomil.cli` pulled in torch through cli/synth_bags.py (3.8 s, 698 MB)."""
    found = _python(
        "import sys, time\n"
        "t0 = time.perf_counter(); import json; t1 = time.perf_counter()\n"
        "import histomil.cli\n"
        "t2 = time.perf_counter()\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "print(json.dumps({'heavy': heavy, 'json': t1 - t0, 'cli': t2 - t1}))\n"
    )
    assert found["heavy"] == []
    # Relative to `import json` in the same process, so machine load cancels out: about 10-80x
    # today, over 1000x when torch was imported.
    assert found["cli"] < 300 * max(found["json"], 1e-4), found


@pytest.mark.parametrize(
    "args", [["--help"], ["--version"], ["preprocess", "--help"], ["label", "-h"]]
)
def test_help_and_version_load_no_heavy_library(args):
    found = _python(
        "import json, sys\n"
        "from histomil.cli import app\n"
        "try:\n"
        f"    app({args!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        f"print(json.dumps({{'heavy': [m for m in {HEAVY!r} if m in sys.modules]}}))\n"
    )
    assert found["heavy"] == []


def test_version_and_short_help_everywhere():
    from histomil import __version__

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == __version__
    for name, _ in commands():
        result = runner.invoke(app, [*name.split(), "-h"])
        assert result.exit_code == 0, (name, result.output)
        assert "Usage" in result.output, name


def test_warnings_are_one_readable_line(tmp_path):
    """A Python warning raised inside a command prints as `warning: text`, no source line."""
    import typer

    from histomil.cli._app import readable_warnings

    probe = typer.Typer()

    @probe.command()
    def go() -> None:
        with readable_warnings():
            warnings.warn("the slide is upsampled 2x", UserWarning, stacklevel=1)

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        result = CliRunner().invoke(probe, [])
    assert result.exit_code == 0
    assert "warning: the slide is upsampled 2x" in result.output
    assert "UserWarning" not in result.output and "warnings.warn" not in result.output


def _warn_in_worker(i: int) -> int:
    warnings.warn(f"slide {i} is upsampled 2x", UserWarning, stacklevel=1)
    return i


def test_worker_process_warnings_are_one_line(capfd):
    from histomil.executors import ExecutorConfig, Task, run_tasks

    tasks = [Task(str(i), _warn_in_worker, {"i": i}) for i in range(2)]
    results = run_tasks(tasks, ExecutorConfig(workers=2))
    assert all(r.ok for r in results)
    err = capfd.readouterr().err
    assert "warning: slide 0 is upsampled 2x" in err and "UserWarning" not in err


def test_label_without_out_warns_in_one_line(tmp_path, synth_job):
    patches, ann_dir = synth_job
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        result = runner.invoke(
            app, ["label", "--patches", str(patches), "--annotations", str(ann_dir)]
        )
    assert result.exit_code == 0, result.output
    assert "warning: label without an output folder" in result.output
    assert "FutureWarning" not in result.output


def test_old_resolution_spellings_map_to_new_names(tmp_path):
    """`synth slides --mpp` was level 0, `preprocess --mpp` the target: both renamed."""
    import h5py

    res = runner.invoke(app, ["synth", "slides", "--out", str(tmp_path / "s"), "--n", "1",
                              "--size", "600x450", "--mpp", "0.5"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "--mpp is deprecated" in res.output and "--level0-mpp" in res.output
    slide = next((tmp_path / "s" / "slides").glob("*.tif"))
    res = runner.invoke(app, ["preprocess", str(slide), "--out", str(tmp_path / "p"),
                              "--mpp", "1.0", "--patch-size", "64"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "--mpp is deprecated" in res.output and "--target-mpp" in res.output
    with h5py.File(next((tmp_path / "p" / "patches").glob("*.h5"))) as f:
        assert float(f.attrs["target_mpp"]) == 1.0
    both = runner.invoke(app, ["preprocess", str(slide), "--out", str(tmp_path / "q"),
                               "--mpp", "1.0", "--target-mpp", "1.0"])  # fmt: skip
    assert both.exit_code == 1 and "give only --target-mpp" in both.output


def test_precision_values_are_the_yaml_values():
    import typing

    from histomil.api._common import PRECISIONS
    from histomil.training.config import TrainSettings

    yaml_values = typing.get_args(TrainSettings.__pydantic_fields__["precision"].annotation)
    assert set(yaml_values) <= set(PRECISIONS)
    out = runner.invoke(app, ["extract", "--help"], env={"COLUMNS": "200"}).output
    for value in PRECISIONS:
        assert value in out


def test_extract_old_spellings_are_hidden_but_accepted():
    out = runner.invoke(app, ["extract", "--help"], env={"COLUMNS": "200"}).output
    assert "--float16" not in out and "--readers" in out and "--dtype" in out
    assert "--workers" not in out  # patch readers are --readers; --workers means parallel tasks


def test_user_errors_are_one_line(tmp_path):
    res = runner.invoke(app, ["extract", "--patches", str(tmp_path / "nope"), "--out",
                              str(tmp_path / "o"), "--random-weights"])  # fmt: skip
    assert res.exit_code == 1
    assert res.output.strip().startswith("error: patches folder") and "Traceback" not in res.output


@pytest.fixture
def synth_job(tmp_path):
    """One preprocessed synthetic slide with its annotation folder."""
    from histomil.slides.preprocess import PreprocessConfig, preprocess_slides
    from histomil.synth.slides import SlideSynthConfig, make_synthetic_slides

    manifest = make_synthetic_slides(
        tmp_path / "s", 1, seed=3, config=SlideSynthConfig(size=(800, 600)), positive_fraction=1.0
    )
    preprocess_slides([manifest], tmp_path / "p", PreprocessConfig(patch_size=64))
    return tmp_path / "p" / "patches", tmp_path / "s" / "slides"
