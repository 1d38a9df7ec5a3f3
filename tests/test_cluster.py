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
