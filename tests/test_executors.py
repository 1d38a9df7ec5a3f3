"""The executors without Ray: ordering, failure isolation, thread limits, init options, CLI."""

from __future__ import annotations

import functools
import os
import sys

import pytest
from typer.testing import CliRunner

from histomil import executors as ex
from histomil.executors import ExecutorConfig, Task, run_tasks


def _tasks() -> list[Task]:
    return [
        Task("a", dict, {"x": 1}),
        Task("bad", int, {"nope": 1}),  # int() takes no keyword 'nope': TypeError
        Task("c", pow, {"base": 2, "exp": 5}),
    ]


@pytest.mark.parametrize("workers", [1, 2])
def test_local_results_in_task_order_failures_isolated(workers):
    seen = []
    results = run_tasks(_tasks(), ExecutorConfig(workers=workers), on_result=seen.append)
    assert [r.key for r in results] == ["a", "bad", "c"]
    assert results[0].ok and results[0].value == {"x": 1}
    assert results[2].ok and results[2].value == 32
    assert not results[1].ok and results[1].error.startswith("TypeError")
    assert sorted(r.key for r in seen) == ["a", "bad", "c"]


def test_local_worker_death_is_reported_per_task():
    tasks = [Task("dies", functools.partial(os._exit, 3)), Task("ok", dict, {"y": 2})]
    results = run_tasks(tasks, ExecutorConfig(workers=2))
    assert not results[0].ok and "worker died" in results[0].error
    # the pool is broken once a worker dies; whatever did not finish is reported, never lost
    assert len(results) == 2 and results[1].key == "ok"


def test_no_tasks_and_config_validation():
    assert run_tasks([], ExecutorConfig(executor="ray")) == []
    with pytest.raises(ValueError, match="unknown executor"):
        ExecutorConfig(executor="slurm")
    with pytest.raises(ValueError, match="workers"):
        ExecutorConfig(workers=0)


def test_worker_threads_share_the_cores(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert ex.worker_threads(1) == 8 and ex.worker_threads(3) == 2 and ex.worker_threads(16) == 1


def test_limit_threads_respects_user_setting(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    ex._limit_threads(1)
    assert os.environ["OMP_NUM_THREADS"] == "7"


def test_ray_init_kwargs(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    local = ex.ray_init_kwargs(ExecutorConfig(executor="ray", workers=3))
    assert local["address"] == "local" and local["num_cpus"] == 3
    cluster = ex.ray_init_kwargs(ExecutorConfig(executor="ray", ray_address="head:6379"))
    assert cluster["address"] == "head:6379" and "num_cpus" not in cluster
    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")
    from_env = ex.ray_init_kwargs(ExecutorConfig(executor="ray", workers=3))
    assert "address" not in from_env and "num_cpus" not in from_env  # Ray reads RAY_ADDRESS


def test_missing_ray_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(ImportError, match=r"pip install 'histomil\[ray\]'"):
        run_tasks(_tasks(), ExecutorConfig(executor="ray"))


@pytest.mark.parametrize("command", ["preprocess", "label", "extract", "train", "experiment"])
def test_batch_commands_expose_executor_options(command):
    from histomil.cli import app

    out = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200"}).output
    # extract runs one slide at a time per process; its parallelism is --readers (patch readers)
    parallel = "--readers" if command == "extract" else "--workers"
    for option in ("--executor", "--ray-address", parallel):
        assert option in out, f"{command} lacks {option}"


def test_cli_rejects_unknown_executor(tmp_path):
    from histomil.cli import app

    result = CliRunner().invoke(
        app, ["preprocess", str(tmp_path), "--out", str(tmp_path / "o"), "--executor", "slurm"]
    )
    assert result.exit_code != 0 and "unknown executor" in result.output


class _Ref:
    def __init__(self, key, result) -> None:
        self.key, self.result = key, result


class _FakeRay:
    """Just enough of the Ray API to check init/shutdown decisions without starting Ray."""

    def __init__(self, initialized: bool) -> None:
        self.initialized, self.calls = initialized, []

    def is_initialized(self):
        return self.initialized

    def init(self, **kwargs):
        self.calls.append(("init", kwargs))
        self.initialized = True

    def shutdown(self):
        self.calls.append(("shutdown", {}))
        self.initialized = False

    def remote(self, fn):
        fake = self

        class _Remote:
            def options(self, **opts):
                fake.calls.append(("options", opts))
                return self

            def remote(self, task):
                return _Ref(task.key, fn(task))

        return _Remote()

    def wait(self, refs, num_returns=1, timeout=None):
        return refs[:num_returns], refs[num_returns:]

    def get(self, ref):
        return ref.result

    def cancel(self, ref):
        self.calls.append(("cancel", {"key": ref.key}))


@pytest.mark.parametrize("initialized", [False, True])
def test_ray_shut_down_only_when_run_tasks_started_it(monkeypatch, initialized):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    fake = _FakeRay(initialized)
    monkeypatch.setattr(ex, "_import_ray", lambda: fake)
    config = ExecutorConfig(executor="ray", workers=2, num_gpus_per_task=1.0)
    results = run_tasks(_tasks(), config)
    assert [r.ok for r in results] == [True, False, True]
    names = [c[0] for c in fake.calls]
    assert ("init" in names) is (not initialized)
    assert ("shutdown" in names) is (not initialized)
    opts = dict(fake.calls)["options"]
    assert opts["num_gpus"] == 1.0 and opts["max_retries"] == 0


def test_ray_interrupted_driver_cancels_pending(monkeypatch):
    fake = _FakeRay(True)
    monkeypatch.setattr(ex, "_import_ray", lambda: fake)

    def stop(result):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_tasks(_tasks(), ExecutorConfig(executor="ray"), on_result=stop)
    cancelled = [c[1]["key"] for c in fake.calls if c[0] == "cancel"]
    assert cancelled == ["bad", "c"]


@pytest.mark.parametrize(("device", "gpus"), [("cuda", 1.0), ("cpu", 0.0)])
def test_extract_requests_a_gpu_per_ray_task_with_cuda(tmp_path, monkeypatch, device, gpus):
    """Decided from --device, not from the driver's hardware (a head node may have no GPU)."""
    from histomil.features import ExtractConfig, WeightsSpec
    from histomil.features import extract as fx

    (tmp_path / "s1.h5").write_bytes(b"")
    seen = []
    monkeypatch.setattr(fx, "run_tasks", lambda tasks, executor, **kw: seen.append(executor))
    fx.extract_dir(tmp_path, tmp_path / "out", ExtractConfig(device=device, weights=WeightsSpec(random=True)),
                   ExecutorConfig("ray"))  # fmt: skip
    assert seen[0].executor == "ray" and seen[0].num_gpus_per_task == gpus
