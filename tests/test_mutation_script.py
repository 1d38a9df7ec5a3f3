"""scripts/mutation.py (issue 22, run on demand): its module map and its process cleanup."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def mutation():
    spec = importlib.util.spec_from_file_location("mutation_script", ROOT / "scripts/mutation.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_every_mapped_module_and_test_file_exists(mutation):
    for module, tests in mutation.MODULES.items():
        assert (ROOT / "src/histomil" / module).is_file(), module
        missing = [t for t in tests if not (ROOT / t).is_file()]
        assert not missing, f"{module}: {missing}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie has ended; whether init has reaped it yet does not matter here
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:  # gone meanwhile, or no /proc (then os.kill's answer stands)
        return not Path("/proc").is_dir()


@pytest.mark.skipif(sys.platform == "win32", reason="process groups")
def test_end_group_stops_the_run_and_its_workers(mutation, tmp_path):
    """Ending a run must end its workers too: an orphaned mutmut worker kept writing the
    module's results beside the next run."""
    pids = tmp_path / "pids"
    script = f"sleep 60 & echo $! > {pids}; sleep 60"
    proc = subprocess.Popen(["sh", "-c", script], start_new_session=True)
    for _ in range(100):
        if pids.is_file() and pids.read_text().strip():
            break
        time.sleep(0.05)
    worker = int(pids.read_text())
    mutation._end_group(proc)
    assert proc.poll() is not None
    for _ in range(100):  # wait until the worker is gone (or a zombie nobody reaps)
        if not _alive(worker):
            break
        time.sleep(0.05)
    else:
        pytest.fail("the worker survived _end_group")
    mutation._end_group(proc)  # a group that already ended: nothing to do


def test_a_rerun_also_runs_the_mutants_made_for_changed_functions(mutation, tmp_path, monkeypatch):
    """--rerun takes its names from the earlier results; the mutants mutmut makes for functions
    changed since appear (unchecked) only after that run and get a second pass."""
    status = {"m.x_f__mutmut_1": "survived", "m.x_f__mutmut_2": "killed"}
    runs: list[list[str]] = []

    def fake_run(dest, env, children, names, timeout):
        runs.append(list(names))
        for n in names:
            status[n] = "killed"
        if len(runs) == 1:  # mutmut regenerated the changed function's mutants
            status["m.x_f__mutmut_3"] = "not checked"
            status["m.x_g__mutmut_1"] = "not checked"
        return 0

    monkeypatch.setattr(mutation, "refresh", lambda module, work, *a: tmp_path)
    monkeypatch.setattr(mutation, "_results", lambda dest, env: dict(status))
    monkeypatch.setattr(mutation, "_run_mutmut", fake_run)
    got = mutation.run_module("objectives/rank.py", tmp_path, 1, 60, "forkserver", [], True)
    assert runs == [["m.x_f__mutmut_1"], ["m.x_f__mutmut_3", "m.x_g__mutmut_1"]]
    assert got["counts"]["killed"] == 4 and got["counts"]["not checked"] == 0
    # with globs, only the matching new mutants
    runs.clear()
    status.update({"m.x_f__mutmut_1": "survived", "m.x_f__mutmut_3": "survived"})
    status.pop("m.x_g__mutmut_1")
    mutation.run_module("objectives/rank.py", tmp_path, 1, 60, "forkserver", ["*x_f_*"], True)
    assert runs == [["m.x_f__mutmut_1", "m.x_f__mutmut_3"]]


def test_pyproject_section_for_one_module(mutation):
    src = "[project]\nname = 'x'\n\n[tool.mutmut]\nold = 1\n\n[tool.other]\nkeep = 2\n"
    text = mutation._pyproject(src, "objectives/rank.py", ["tests/a.py"], "forkserver", 15)
    assert "old = 1" not in text and "keep = 2" in text and "name = 'x'" in text
    assert 'only_mutate = ["src/histomil/objectives/rank.py"]' in text
    assert 'pytest_add_cli_args_test_selection = ["tests/a.py"]' in text
    assert "timeout_constant = 15.0" in text and 'process_isolation = "forkserver"' in text


def test_mutmut_runs_with_the_real_data_of_the_repository(mutation, monkeypatch, tmp_path):
    """The scratch copy has no ../shared beside it: the real-data tests would skip there."""
    monkeypatch.delenv("HISTOMIL_SHARED_DATA", raising=False)
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    env = mutation._env()
    assert "PYTHONPATH" not in env and env["HISTOMIL_MUTATION"] == "1"
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "1"
    default = (ROOT.parent / "shared" / "data").resolve()
    assert env.get("HISTOMIL_SHARED_DATA") == (str(default) if default.is_dir() else None)
    monkeypatch.setenv("HISTOMIL_SHARED_DATA", str(tmp_path))
    assert mutation._env()["HISTOMIL_SHARED_DATA"] == str(tmp_path.resolve())
    monkeypatch.setenv("HISTOMIL_SHARED_DATA", str(tmp_path / "absent"))
    assert mutation._env()["HISTOMIL_SHARED_DATA"] == str(tmp_path / "absent")  # left as set
