"""Connecting to a Ray cluster is bounded and fails in one line; `cluster check` on two nodes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from histomil.cluster import (
    ClusterError,
    ClusterReport,
    NodeReport,
    _node_probe,
    connect,
    host_port,
)
from histomil.executors import ExecutorConfig, ensure_connected

SRC = Path(__file__).resolve().parents[1] / "src"


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _histomil(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    code = (
        "import sys; from histomil.cli import main; sys.argv = ['histomil', *sys.argv[1:]]; main()"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def test_host_port_forms():
    assert host_port("10.1.2.3:6380") == ("10.1.2.3", 6380)
    assert host_port("ray://head:10001") == ("head", 10001)
    assert host_port("head") == ("head", 6379)
    assert host_port("auto") is None
    with pytest.raises(ClusterError, match="invalid Ray address"):
        host_port("head:port")


def test_closed_port_fails_fast_in_one_line():
    pytest.importorskip("ray")
    port = _closed_port()
    start = time.perf_counter()
    with pytest.raises(ClusterError) as err:
        connect({"address": f"127.0.0.1:{port}"}, timeout=5)
    assert time.perf_counter() - start < 5
    message = str(err.value)
    assert "\n" not in message
    assert f"127.0.0.1:{port}" in message and "usual causes" in message
    assert "token" in message  # the causes name authentication
    with pytest.raises(ClusterError, match=f"127.0.0.1:{port}"):
        ensure_connected(ExecutorConfig(executor="ray", ray_address=f"127.0.0.1:{port}"))


def test_timeout_must_be_positive():
    with pytest.raises(ValueError, match="timeout"):
        ExecutorConfig(executor="ray", ray_timeout=0)


def test_silent_port_times_out_from_the_cli():
    """Something listens but never answers as Ray: the CLI gives up after --ray-timeout."""
    pytest.importorskip("ray")
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    port = srv.getsockname()[1]
    try:
        start = time.perf_counter()
        proc = _histomil("cluster", "check", "--ray-address", f"127.0.0.1:{port}",
                         "--ray-timeout", "4")  # fmt: skip
        elapsed = time.perf_counter() - start
    finally:
        srv.close()
    assert proc.returncode == 1, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"127.0.0.1:{port}" in errors[0] and "4 s" in errors[0]
    assert "Traceback" not in proc.stderr
    assert elapsed < 90  # 4 s of waiting plus interpreter and Ray import on a loaded machine


def test_cli_closed_port_one_line():
    pytest.importorskip("ray")
    port = _closed_port()
    proc = _histomil("cluster", "check", "--ray-address", f"127.0.0.1:{port}")
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: cannot connect to Ray at"), lines


def test_preprocess_on_unreachable_cluster_writes_nothing(tmp_path):
    """The connection is checked before a command writes anything to --out."""
    pytest.importorskip("ray")
    from histomil.synth.slides import SlideSynthConfig, make_synthetic_slides

    make_synthetic_slides(tmp_path / "data", 1, seed=0, config=SlideSynthConfig(size=(600, 450)))
    port = _closed_port()
    out = tmp_path / "out"
    proc = _histomil("preprocess", str(tmp_path / "data" / "slides"), "--out", str(out),
                     "--executor", "ray", "--ray-address", f"127.0.0.1:{port}",
                     "--ray-timeout", "5")  # fmt: skip
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and f"127.0.0.1:{port}" in errors[0], errors
    assert not out.exists()


def test_node_probe_reports_unshared_path(tmp_path):
    """A node that cannot see the driver's check file reports the path as not shared."""
    result = _node_probe([str(tmp_path)], "token", "node1")
    assert "not visible" in result["storage"][str(tmp_path)]
    (tmp_path / ".histomil-cluster-check").mkdir()
    (tmp_path / ".histomil-cluster-check" / "driver.txt").write_text("token")
    result = _node_probe([str(tmp_path)], "token", "node1")
    assert result["storage"][str(tmp_path)] == "ok"
    assert (tmp_path / ".histomil-cluster-check" / "node1.txt").read_text() == "token"


def test_report_problems_name_mismatches():
    driver = {"python": "3.11.7", "ray": "2.60.0", "torch": "2.14.1", "histomil": "0.1.0"}
    good = NodeReport("a", "h1", "10.0.0.1", 2, 0, 8.0, dict(driver), {"/data": "ok"})
    bad = NodeReport(
        "b", "h2", "10.0.0.2", 2, 0, 8.0, {**driver, "ray": "2.50.0"}, {"/data": "not visible"}
    )
    problems = ClusterReport(driver, (good, bad)).problems()
    assert problems == [
        "node h2 (10.0.0.2): ray 2.50.0 but the driver has 2.60.0",
        "node h2 (10.0.0.2): /data: not visible",
    ]


@pytest.mark.ray
def test_check_two_node_cluster(tmp_path):
    """Two raylets on this machine: both found, versions equal, the shared folder works."""
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    from histomil.cluster import check_cluster

    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    try:
        connect({"address": cluster.address, "log_to_driver": False}, timeout=120)
        cluster.wait_for_nodes()
        report = check_cluster([tmp_path], timeout=120)
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert len(report.nodes) == 2
    assert {n.cpus for n in report.nodes} == {1.0}
    assert report.problems() == []
    assert all(n.storage == {str(tmp_path.resolve()): "ok"} for n in report.nodes)
    assert not (tmp_path / ".histomil-cluster-check").exists()


def test_ray_messages_go_to_the_log_file(tmp_path, capfd):
    """Ray's logger and the errors a cluster publishes (a dead raylet's log tail) go to the
    file, not the terminal; everything is restored afterwards."""
    import logging

    ray = pytest.importorskip("ray")
    from histomil.cluster import ray_messages_to

    worker = sys.modules["ray._private.worker"]
    original = worker.print_to_stdstream
    log = tmp_path / "out" / "ray.log"  # the folder does not exist yet
    with ray_messages_to(log):
        logging.getLogger("ray.core").error("object store dump line")
        # what Ray's error-listener thread calls (by module global) for a published error
        worker.print_to_stdstream(
            {
                "lines": ["Raylet is terminated. Termination is unexpected."],
                "pid": "raylet",
                "is_err": False,
            },
            ignore_prefix=False,
        )
    out, err = capfd.readouterr()
    assert "Raylet" not in out + err and "object store" not in out + err
    text = log.read_text(encoding="utf-8")
    assert "object store dump line" in text and "[raylet] Raylet is terminated" in text
    assert worker.print_to_stdstream is original
    assert ray is not None


def test_ray_messages_none_changes_nothing():
    import logging

    from histomil.cluster import ray_messages_to

    logger = logging.getLogger("ray")
    before = (list(logger.handlers), logger.propagate)
    with ray_messages_to(None) as path:
        assert path is None
        assert (list(logger.handlers), logger.propagate) == before


def test_experiment_on_unreachable_cluster_writes_nothing(tmp_path):
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(
        "data: {manifest: m.csv, bags: bags}\nmodel: {name: abmil}\nobjective: {name: bag}\n",
        encoding="utf-8",
    )
    out = tmp_path / "exp-out"
    start = time.monotonic()
    proc = _histomil(
        "experiment",
        "compare",
        "--config",
        str(cfg),
        "--out",
        str(out),
        "--executor",
        "ray",
        "--ray-address",
        f"127.0.0.1:{_closed_port()}",
        "--ray-timeout",
        "5",
    )
    assert proc.returncode == 1, proc.stderr
    # a closed port fails at the TCP probe; the rest is interpreter + torch/Ray imports, which
    # take over a minute on a loaded 2-core machine (Ray alone would retry for ~14 min)
    assert time.monotonic() - start < 180
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "cannot connect to Ray at 127.0.0.1" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()


def _sleep_on_node(i: int, folder: str) -> str:
    """A task that says on which node it started, then works for a few seconds."""
    import ray

    node = ray.get_runtime_context().get_node_id()
    Path(folder, f"{node}-{i}").write_text("started", encoding="utf-8")
    time.sleep(6)
    return node


@pytest.mark.ray
def test_node_death_fails_only_its_task_and_keeps_the_terminal_clean(tmp_path, capfd):
    """A worker node killed mid-batch: its task is reported in one line, the others finish,
    and Ray's dump of the dead raylet's log goes to the log file, not the terminal."""
    import threading

    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    from histomil.executors import Task, run_tasks

    if ray.is_initialized():
        ray.shutdown()
    signals = tmp_path / "started"
    signals.mkdir()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    worker = cluster.add_node(num_cpus=1)
    try:
        cluster.wait_for_nodes()

        def kill_worker_once_busy() -> None:
            deadline = time.monotonic() + 120
            while not list(signals.glob(f"{worker.node_id}-*")) and time.monotonic() < deadline:
                time.sleep(0.2)
            time.sleep(1.0)
            cluster.remove_node(worker, allow_graceful=False)

        killer = threading.Thread(target=kill_worker_once_busy, daemon=True)
        killer.start()
        log = tmp_path / "out" / "ray.log"
        config = ExecutorConfig(
            executor="ray", workers=2, ray_address=cluster.address, ray_log=str(log)
        )
        tasks = [Task(str(i), _sleep_on_node, {"i": i, "folder": str(signals)}) for i in range(4)]
        results = run_tasks(tasks, config)
        killer.join(timeout=5)
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()
    failed = [r for r in results if not r.ok]
    assert len(failed) == 1, [(r.key, r.error) for r in results]
    assert failed[0].error.startswith("ray task failed: NodeDiedError: ")
    assert "\n" not in failed[0].error
    assert all(r.value != worker.node_id for r in results if r.ok)
    out, err = capfd.readouterr()
    assert "Raylet is terminated" not in out + err and "state-dump" not in out + err
    assert "logging.cc" not in err  # Ray's native start-up lines go to the log too
    assert "Raylet is terminated" in log.read_text(encoding="utf-8")


_TOKEN_HEAD = """
import os, sys, time
os.environ["RAY_AUTH_MODE"] = "token"
os.environ["RAY_AUTH_TOKEN"] = "t" * 32
from ray.cluster_utils import Cluster
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
print(cluster.address, flush=True)
sys.stdin.read()  # until the test closes stdin
cluster.shutdown()
"""


@pytest.mark.ray
def test_token_cluster_refuses_in_one_line_naming_authentication(tmp_path):
    """A cluster started with RAY_AUTH_MODE=token, a driver without the token: one line that
    names authentication, well before Ray's own ~25 s ConnectionError."""
    pytest.importorskip("ray")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    head = subprocess.Popen(
        [sys.executable, "-c", _TOKEN_HEAD],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        address = head.stdout.readline().strip()
        assert address, "the token cluster did not start"
        proc = _histomil("cluster", "check", "--ray-address", address, "--ray-timeout", "60")
    finally:
        head.stdin.close()
        head.wait(timeout=120)
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    assert "InvalidAuthToken" in errors[0] and "requires authentication" in errors[0]
    assert "Traceback" not in proc.stderr
