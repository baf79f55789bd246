"""Start and stop the local AWS stand-ins used by the tests.

Each server listens on 127.0.0.1 on a free port, is started as its own process group and stopped by its own
PID (SIGTERM, then SIGKILL). Node-based stand-ins are preloaded with ``loopback.cjs`` so they never listen on
another address. Nothing here targets any address but 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

STANDINS_DIR = Path(__file__).resolve().parent.parent / "standins"
NODE_MODULES = STANDINS_DIR / "node_modules"
LOOPBACK_PRELOAD = STANDINS_DIR / "loopback.cjs"
HOST = "127.0.0.1"

# Fake credentials: the stand-ins accept anything, and the tests must never pick up real ones.
FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class StandInUnavailable(RuntimeError):
    """A stand-in is not installed or did not start."""


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def endpoint_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def stop(self) -> None:
        stop_process(self.process)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def stop_process(process: subprocess.Popen[bytes], timeout_s: float = 2.0) -> None:
    """Stop a process we started, by its own PID: SIGTERM, wait, then SIGKILL."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=timeout_s)


def _wait_for_port(server: Server, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise StandInUnavailable(
                f"{server.name} exited with {server.process.returncode}; log:\n{server.log_path.read_text()}"
            )
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.2)
            if sock.connect_ex((HOST, server.port)) == 0:
                return
        time.sleep(0.05)
    server.stop()
    raise StandInUnavailable(f"{server.name} did not listen on {HOST}:{server.port} within {timeout_s}s")


def _start(
    name: str,
    argv: list[str],
    port: int,
    log_dir: Path,
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout_s: float = 30.0,
) -> Server:
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}-{port}.log"
    full_env = {**os.environ, **FAKE_AWS_ENV, **(env or {})}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, env=full_env, cwd=cwd, start_new_session=True
        )
    server = Server(name, process, port, log_path)
    _wait_for_port(server, timeout_s)
    return server


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        raise StandInUnavailable("node is not installed; run scripts/setup")
    return node


def start_moto(log_dir: Path) -> Server:
    """moto's standalone server (DynamoDB, and Kinesis for trivial uses), one request at a time through its
    backends (``moto_serial.py``: moto's own server lets two racing conditional writes both succeed)."""
    port = free_port()
    if importlib.util.find_spec("moto") is None:
        raise StandInUnavailable("moto is not installed; install the dev extra (pip install -e '.[dev]')")
    serial = Path(__file__).resolve().with_name("moto_serial.py")
    return _start("moto", [sys.executable, str(serial), "-H", HOST, "-p", str(port)], port, log_dir)


def start_kinesis_local(log_dir: Path) -> Server:
    """kinesis-local (the npm build of kinesis-mock): ChildShards, ShardFilter, resharding fidelity."""
    main = NODE_MODULES / "kinesis-local" / "main.js"
    if not main.exists():
        raise StandInUnavailable(f"{main} not found; run scripts/setup (npm install in tests/standins)")
    port, tls_port = free_port(), free_port()
    quick = "50ms"
    env = {
        "KINESIS_MOCK_CERT_PATH": str(NODE_MODULES / "kinesis-local" / "server.json"),
        "KINESIS_MOCK_PLAIN_PORT": str(port),
        "KINESIS_MOCK_TLS_PORT": str(tls_port),
        "CREATE_STREAM_DURATION": quick,
        "DELETE_STREAM_DURATION": quick,
        "SPLIT_SHARD_DURATION": quick,
        "MERGE_SHARDS_DURATION": quick,
        "UPDATE_SHARD_COUNT_DURATION": quick,
        "REGISTER_STREAM_CONSUMER_DURATION": quick,
        "DEREGISTER_STREAM_CONSUMER_DURATION": quick,
        "SHARD_LIMIT": "500",
        "LOG_LEVEL": "WARN",
    }
    return _start(
        "kinesis-local",
        [_node(), "-r", str(LOOPBACK_PRELOAD), str(main)],
        port,
        log_dir,
        env=env,
        cwd=STANDINS_DIR,
    )


def start_kinesalite(log_dir: Path) -> Server:
    """kinesalite: fast and flat for volume, but no ChildShards, ShardFilter or ARNs."""
    cli = NODE_MODULES / "kinesalite" / "cli.js"
    if not cli.exists():
        raise StandInUnavailable(f"{cli} not found; run scripts/setup (npm install in tests/standins)")
    port = free_port()
    argv = [
        _node(),
        "-r",
        str(LOOPBACK_PRELOAD),
        str(cli),
        "--port",
        str(port),
        "--createStreamMs",
        "20",
        "--deleteStreamMs",
        "20",
        "--updateStreamMs",
        "20",
        "--shardLimit",
        "500",
    ]
    return _start("kinesalite", argv, port, log_dir)


@contextlib.contextmanager
def running(server: Server) -> Iterator[Server]:
    try:
        yield server
    finally:
        server.stop()
