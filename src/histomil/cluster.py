"""Connecting to a Ray cluster within a time limit, and checking a cluster before a cohort runs.

Ray's own connection retries last about 14 minutes on an address that does not answer, and end
in a long traceback. :func:`connect` makes connecting a separate, bounded step: a TCP probe of
the address (a closed port fails at once), then ``ray.init`` under a watchdog of ``timeout``
seconds; any failure is one :class:`ClusterError` line naming the address, what was tried and
the usual causes. :func:`check_cluster` runs one small task pinned to every node and reports its
resources, its software versions against the driver's, and whether files written under the
given paths by each node are seen by the driver and the other way round (shared storage).
"""

from __future__ import annotations

import logging
import os
import platform
import socket
import sys
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

DEFAULT_TIMEOUT_S = 30.0
DEFAULT_PORT = 6379
CHECK_DIR = ".histomil-cluster-check"

CAUSES = (
    "usual causes: nothing listening there (is `ray start --head` running?), a wrong host or "
    "port (the GCS port `ray start --head` printed, default 6379; Ray Client uses "
    "ray://HOST:10001), a cluster that requires a token (set RAY_AUTH_MODE=token and "
    "RAY_AUTH_TOKEN_PATH as on the cluster), or different Ray/Python versions on this machine "
    "and the cluster"
)


class ClusterError(RuntimeError):
    """A Ray cluster that cannot be reached or used; the message is one line."""


def host_port(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of ``HOST:PORT`` / ``ray://HOST:PORT`` (``None`` for ``auto``/``local``)."""
    addr = address.strip()
    if addr in ("auto", "local", ""):
        return None
    if "://" in addr:
        addr = addr.split("://", 1)[1]
    host, _, port = addr.rpartition(":")
    if not host:
        return addr, DEFAULT_PORT
    try:
        return host.strip("[]"), int(port)
    except ValueError as exc:
        raise ClusterError(f"invalid Ray address {address!r}: use HOST:PORT") from exc


def probe(address: str, timeout: float) -> None:
    """Open (and close) a TCP connection to the address; a closed port fails at once."""
    target = host_port(address)
    if target is None:
        return
    try:
        with socket.create_connection(target, timeout=timeout):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ClusterError(
            f"cannot connect to Ray at {address}: TCP {target[0]}:{target[1]} - {reason}; " + CAUSES
        ) from None


def _cause(text: str) -> str:
    low = text.lower()
    if "token" in low or "auth" in low or "unauthenticated" in low:
        return (
            "the cluster requires authentication: set RAY_AUTH_MODE=token and "
            "RAY_AUTH_TOKEN_PATH (or RAY_AUTH_TOKEN) as on the cluster (docs/scale.md)"
        )
    if "version mismatch" in low or "version" in low and "python" in low:
        return "Ray or Python versions differ between this machine and the cluster"
    return CAUSES


def check_token(address: str) -> None:
    """Ask the cluster's GCS at ``address`` whether this driver may connect, before ``ray.init``.

    A cluster started with ``RAY_AUTH_MODE=token`` refuses a driver without its token at once
    (``AuthenticationError: ... InvalidAuthToken``), where ``ray.init`` only ends after about
    25 s with a ``ConnectionError`` that does not name the cause. Uses Ray's GCS client, which
    is internal API: if this Ray release does not have it, nothing is checked here.
    """
    try:
        from ray._raylet import GcsClient
    except ImportError:  # pragma: no cover - depends on the Ray release
        return
    try:
        GcsClient(address=address)
    except Exception as exc:  # noqa: BLE001 - only an authentication refusal is decided here
        if "auth" in type(exc).__name__.lower() or "InvalidAuthToken" in str(exc):
            raise
        # anything else (not a GCS, a timeout) is left to ray.init and its own error


def _first_line(exc: BaseException) -> str:
    """``Type: first sentence`` of an exception (Ray's messages run to a paragraph)."""
    text = str(exc).strip().splitlines()
    first = text[0].split(". ")[0].rstrip(".") if text else ""
    return f"{type(exc).__name__}: {first}"


def quiet_ray_logs() -> None:
    """Keep Ray's C++ warnings (retries, object-store dumps) out of the user's terminal.

    Read by Ray when it connects, so this must run before ``ray.init``; an explicit setting by
    the user wins. Ray still writes everything to its session logs (``/tmp/ray/session_*``).
    """
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "error")


def connect(
    init_kwargs: dict[str, Any],
    timeout: float = DEFAULT_TIMEOUT_S,
    ray=None,  # noqa: ANN001
    log: str | os.PathLike | None = None,
) -> None:
    """``ray.init(**init_kwargs)`` in at most ``timeout`` seconds, or :class:`ClusterError`.

    A new local instance (``address="local"``) is started without a limit (it can be slow on a
    loaded machine, and nothing remote can hang). For an existing cluster the address is probed
    first, then ``ray.init`` runs in a daemon thread: Ray cannot be interrupted while it retries,
    so on timeout the thread is left behind and the caller is expected to exit. ``ray``: the
    module to use (the executors pass theirs). What Ray's native code prints while connecting
    goes to ``log`` (appended once connected; nothing is written when connecting fails, whose
    cause is the one-line error), or nowhere without ``log``.
    """
    if ray is None:
        import ray

    quiet_ray_logs()
    with _native_stderr_to(log):
        _connect(ray, init_kwargs, timeout)


def _connect(ray, init_kwargs: dict[str, Any], timeout: float) -> None:  # noqa: ANN001
    kwargs = {"logging_level": logging.ERROR, **init_kwargs}
    address = kwargs.get("address") or os.environ.get("RAY_ADDRESS") or "auto"
    if address == "local":
        ray.init(**kwargs)
        return
    if timeout <= 0:
        raise ClusterError(f"--ray-timeout must be > 0, got {timeout}")
    probe(address, timeout)
    errors: list[BaseException] = []

    def init() -> None:
        try:
            if "://" not in address:
                check_token(address)
            ray.init(**kwargs)
        except BaseException as exc:  # noqa: BLE001 - reported by the caller's thread
            errors.append(exc)

    thread = threading.Thread(target=init, name="histomil-ray-connect", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise ClusterError(
            f"no answer from Ray at {address} within {timeout:g} s (--ray-timeout): the port "
            f"is open but did not answer as a Ray cluster; {CAUSES}"
        )
    if errors:
        raise ClusterError(
            f"cannot connect to Ray at {address}: {_first_line(errors[0])}; "
            f"{_cause(str(errors[0]))}"
        )


# --- Ray's own messages ------------------------------------------------------------------


@contextmanager
def _native_stderr_to(log: str | os.PathLike | None) -> Iterator[None]:
    """Ray's C++ core prints start-up lines (e.g. "Set ray log level from environment
    variable") straight to file descriptor 2, past Python's ``sys.stderr``; catch them in a
    temporary file while connecting and append them to ``log`` only when connecting worked
    (so a failed connection writes nothing to the output folder)."""
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
        caught.seek(0)
        text = caught.read().decode("utf-8", "replace")
    if log is not None and text.strip():
        target = Path(log)
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("a", encoding="utf-8") as fh:
            fh.write(text)


class _MakeDirFileHandler(logging.FileHandler):
    """A file handler that creates its folder on the first message (the output folder of a
    command may not exist yet when it connects)."""

    def _open(self):  # noqa: ANN202 - logging's signature
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        return super()._open()


@contextmanager
def ray_messages_to(path: str | os.PathLike | None) -> Iterator[Path | None]:
    """While connected, write Ray's driver-side messages to ``path`` instead of the terminal.

    Two sources reach a driver's terminal: Ray's Python logger (``ray.*``), and the errors the
    cluster publishes to the driver, printed by Ray's error-listener thread (a node that died:
    "Raylet is terminated ..." followed by the tail of that raylet's log, about 20 lines,
    sometimes twice). Both go to ``path`` (appended, created on the first message) while the
    block runs; histomil reports the failed tasks itself, in one line each. Ray prints the
    published errors through ``ray._private.worker.print_to_stdstream``; when a Ray release no
    longer has that function, those messages stay on the terminal (nothing else changes).
    ``None`` leaves everything as it is.
    """
    if path is None:
        yield None
        return
    target = Path(path)
    logger = logging.getLogger("ray")
    saved = (list(logger.handlers), logger.propagate)
    handler = _MakeDirFileHandler(target, encoding="utf-8", delay=True)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.handlers = [handler]
    logger.propagate = False
    worker = sys.modules.get("ray._private.worker")
    original = getattr(worker, "print_to_stdstream", None)

    def to_file(data: dict, ignore_prefix: bool = False) -> None:  # noqa: ARG001 - Ray's signature
        lines = data.get("lines") or []
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("a", encoding="utf-8") as fh:
            for line in lines:
                fh.write(f"[{data.get('pid', '?')}] {str(line).rstrip()}\n")

    if original is not None:
        worker.print_to_stdstream = to_file
    try:
        yield target
    finally:
        if original is not None:
            worker.print_to_stdstream = original
        handler.close()
        logger.handlers, logger.propagate = saved


# --- cluster check -----------------------------------------------------------------------


def software_versions() -> dict[str, str]:
    """Python and package versions of this process (read from metadata: no heavy imports)."""
    out = {"python": platform.python_version()}
    for name in ("ray", "torch", "histomil"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _node_probe(paths: Sequence[str], token: str, node_id: str) -> dict[str, Any]:
    """Runs on one node: its host name and versions; reads the driver's file under each path
    and writes its own there. Returns per path "ok" or the problem."""
    storage: dict[str, str] = {}
    for path in paths:
        folder = Path(path) / CHECK_DIR
        try:
            seen = (folder / "driver.txt").read_text(encoding="utf-8").strip()
        except OSError:
            storage[path] = "the driver's check file is not visible on this node (not shared)"
            continue
        try:
            if seen != token:
                storage[path] = "sees another driver's check file (a different folder?)"
                continue
            (folder / f"{node_id}.txt").write_text(token, encoding="utf-8")
            storage[path] = "ok"
        except OSError as exc:
            storage[path] = f"{type(exc).__name__}: {exc.strerror or exc}"
    return {"host": socket.gethostname(), "versions": software_versions(), "storage": storage}


@dataclass(frozen=True)
class NodeReport:
    node_id: str
    host: str
    address: str
    cpus: float
    gpus: float
    memory_gb: float
    versions: dict[str, str] = field(default_factory=dict)
    storage: dict[str, str] = field(default_factory=dict)
    error: str = ""


@dataclass(frozen=True)
class ClusterReport:
    driver: dict[str, str]
    nodes: tuple[NodeReport, ...]

    def problems(self) -> list[str]:
        """One line per problem: versions that differ from the driver's, storage not shared,
        nodes whose probe failed."""
        out: list[str] = []
        for node in self.nodes:
            name = f"node {node.host} ({node.address})"
            if node.error:
                out.append(f"{name}: probe failed: {node.error}")
                continue
            for key, want in self.driver.items():
                got = node.versions.get(key, "?")
                if got != want:
                    out.append(f"{name}: {key} {got} but the driver has {want}")
            for path, status in node.storage.items():
                if status != "ok":
                    out.append(f"{name}: {path}: {status}")
        return out


def check_cluster(paths: Sequence[str | os.PathLike] = (), timeout: float = 120.0) -> ClusterReport:
    """Probe every alive node of the connected Ray cluster (call :func:`connect` first).

    For each path the driver writes a token file under ``PATH/.histomil-cluster-check/``, each
    node reads it and writes its own, and the driver reads those back; the folder is removed
    afterwards. A path that exists only on the head node fails on the other nodes.
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    token = uuid.uuid4().hex
    folders = [Path(p).resolve() / CHECK_DIR for p in paths]
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "driver.txt").write_text(token, encoding="utf-8")
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    remote = ray.remote(_node_probe)
    refs = {}
    for node in nodes:
        strategy = NodeAffinitySchedulingStrategy(node_id=node["NodeID"], soft=False)
        refs[node["NodeID"]] = remote.options(
            num_cpus=0, scheduling_strategy=strategy, max_retries=0
        ).remote([str(f.parent) for f in folders], token, node["NodeID"])
    reports = []
    try:
        for node in nodes:
            reports.append(_node_report(ray, node, refs[node["NodeID"]], folders, token, timeout))
    finally:
        for folder in folders:
            for f in folder.glob("*.txt"):
                f.unlink(missing_ok=True)
            if not any(folder.iterdir()):
                folder.rmdir()
    return ClusterReport(software_versions(), tuple(reports))


def _node_report(ray, node: dict, ref, folders: list[Path], token: str, timeout: float):
    res = node.get("Resources", {})
    base = {
        "node_id": node["NodeID"],
        "address": str(node.get("NodeManagerAddress", "?")),
        "cpus": float(res.get("CPU", 0)),
        "gpus": float(res.get("GPU", 0)),
        "memory_gb": round(float(res.get("memory", 0)) / 1e9, 1),
    }
    try:
        value = ray.get(ref, timeout=timeout)
    except Exception as exc:  # noqa: BLE001 - a dead or unreachable node is a finding
        return NodeReport(host="?", error=_first_line(exc), **base)
    storage = dict(value["storage"])
    for folder in folders:
        key = str(folder.parent)
        if storage.get(key) != "ok":
            continue
        mine = folder / f"{node['NodeID']}.txt"
        try:
            seen = mine.read_text(encoding="utf-8").strip()
        except OSError:
            seen = ""
        if seen != token:
            storage[key] = "the node wrote its file but the driver does not see it (not shared)"
    return NodeReport(host=value["host"], versions=value["versions"], storage=storage, **base)
