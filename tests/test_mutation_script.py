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
