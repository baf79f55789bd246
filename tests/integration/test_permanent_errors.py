"""Permanent errors end a ``shardwise run`` worker with one clear line and a non-zero exit (issue 13, behaviour
4), and credentials never reach its output at any verbosity (issue 13, item 6) — real worker subprocesses on the
local backend and on the stand-ins (DynamoDB on moto, Kinesis on kinesis-local).

* A stream that does not exist: initialization is retried within its bound (small here), then the worker exits
  1 with one ``Error:`` line naming the stream and the fix — no traceback.
* A database with damaged pages (the lease table's b-tree headers overwritten after it was created): the
  running worker's loops meet ``database disk image is malformed``, which is permanent; after
  ``permanent_error_limit`` (default 5) in a row the worker stops and exits 1 with one line — no traceback.
* ``-vv`` and ``-vvv`` with known fake credentials: neither the secret key nor the session token appears
  anywhere in the worker's output.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest

from shardwise.backends.sqlite.leases import SQLiteLeaseStore
from shardwise.backends.sqlite.stream import LocalStreamStore
from support.fleet import Backend, Fleet
from support.scenario import FreshStreams

PROCESSOR = "processors:RecordingProcessor"
#: Small initialization bound for the tests (the defaults are KCL's 20 attempts, 1 s to 5 s apart).
QUICK_START = [
    "--set",
    "max_initialization_attempts=3",
    "--set",
    "initialization_backoff_ms=50",
    "--set",
    "initialization_max_backoff_ms=100",
]
SECRET = "FakeSecretKey/With+Slashes=AndPlusSigns0123456789abcd"  # noqa: S105 - a fake secret to search for
TOKEN = "FakeSessionToken//IQoJb3JpZ2luX2VjEOr+the/rest=of=it=="  # noqa: S105 - a fake session token


def wait_exit(fleet: Fleet, worker_id: str, timeout_s: float) -> int:
    worker = fleet.workers[worker_id]
    try:
        code = worker.process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        tail = fleet.log_tail(worker_id, 40)
        raise AssertionError(
            f"worker {worker_id} still runs after {timeout_s} s; it should have exited:\n{tail}"
        ) from None
    worker.stopped = "exited"
    return code


def one_clear_line(log: str) -> str:
    """The one ``Error:`` line of a worker's output (and no traceback anywhere)."""
    assert "Traceback" not in log, log[-6000:]
    errors = [line for line in log.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, log[-6000:]
    assert log.rstrip().splitlines()[-1] == errors[0], "the error is the last thing printed"
    return errors[0]


def test_a_missing_stream_ends_the_worker_after_the_initialization_bound(backend: Backend, tmp_path: Path) -> None:
    stream = f"no-such-stream-{uuid.uuid4().hex[:8]}"
    with Fleet(backend, f"perm-app-{uuid.uuid4().hex[:8]}", stream, PROCESSOR, tmp_path / "logs") as fleet:
        fleet.start("w1", QUICK_START)
        code = wait_exit(fleet, "w1", 60)
        log = fleet.log_text("w1")
    assert code == 1, log[-4000:]
    line = one_clear_line(log)
    assert line.startswith("Error: worker w1 could not start: "), line
    assert stream in line
    assert line.endswith("(gave up after 3 initialization attempts)"), line
    fix = "shardwise stream create" if backend.kind == "local" else "create the stream"
    assert fix in line, line
    retried = [line for line in log.splitlines() if "WARNING" in line and "initialization attempt" in line]
    assert len(retried) == 2, "each retried attempt is one WARNING line"


def damage_lease_table(db: Path) -> None:
    """Overwrite the header of the lease table's root page, as a disk or a careless copy might. Its indexes stay
    intact, so the worker starts (reads go through the indexes) and meets the damage at its first lease write."""
    conn = sqlite3.connect(db)
    try:
        pages = [r[0] for r in conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'shardwise_leases'")]
        (page_size,) = conn.execute("PRAGMA page_size").fetchone()
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    assert pages
    with db.open("r+b") as file:
        for page in pages:
            file.seek((page - 1) * page_size)
            file.write(b"\xff" * 64)


def test_a_damaged_database_ends_the_running_worker_with_one_line(tmp_path: Path) -> None:
    db = tmp_path / "shardwise.db"
    streams = LocalStreamStore(db)
    streams.create_stream("orders", 2)
    streams.close()
    store = SQLiteLeaseStore(db, "orders-app")
    store.create_table_if_not_exists()
    store.close()
    damage_lease_table(db)
    fleet = Fleet(
        Backend.local(db), "orders-app", "orders", PROCESSOR, tmp_path / "logs", ["--failover-time-ms", "1000"]
    )
    with fleet:
        fleet.start("w1")  # default permanent_error_limit and back-off
        code = wait_exit(fleet, "w1", 90)
        log = fleet.log_text("w1")
    assert code == 1, log[-4000:]
    line = one_clear_line(log)
    assert line.startswith(f"Error: SQLite database {db} cannot be used (database disk image is malformed)"), line
    assert "restore it from a backup or pass another --db path" in line
    assert "starts on application orders-app" in log, "the damage was met while running, not at start"
    assert "failed 5 times in a row" in log


# -- secrets -------------------------------------------------------------------------------------------------------


@pytest.fixture
def aws_backend(moto_server: object, kinesis_local: object) -> Backend:
    from support.standins import Server

    assert isinstance(moto_server, Server)
    assert isinstance(kinesis_local, Server)
    return Backend.aws(kinesis_endpoint_url=kinesis_local.endpoint_url, dynamodb_endpoint_url=moto_server.endpoint_url)


@pytest.mark.aws
@pytest.mark.parametrize("verbosity", ["-vv", "-vvv"])
def test_credentials_never_appear_in_the_output_at_any_verbosity(
    aws_backend: Backend, tmp_path: Path, verbosity: str
) -> None:
    streams = FreshStreams(aws_backend, tmp_path)
    try:
        fleet, admin, _results = streams.open(
            "secrets", 2, processor=PROCESSOR, worker_args=["--failover-time-ms", "2000"]
        )
        admin.put([(b"hello", "k1"), (b"world", "k2")])
        command = [sys.executable, "-m", "shardwise", verbosity, *fleet.command("w1")[4:]]
        assert command[4] == "run", command
        env = fleet.worker_env(
            "w1",
            {"AWS_ACCESS_KEY_ID": "AKIAFAKEFAKEFAKE1234", "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_SESSION_TOKEN": TOKEN},
        )
        out_path, err_path = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
        with out_path.open("wb") as out, err_path.open("wb") as err:
            process = subprocess.Popen(
                command, stdout=out, stderr=err, env=env, stdin=subprocess.DEVNULL, start_new_session=True
            )
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not any(lease.lease_owner == "w1" for lease in fleet.leases()):
                assert process.poll() is None, "the worker exited early"
                time.sleep(0.25)
            time.sleep(2)  # a few renewals and reads
        finally:
            os.kill(process.pid, signal.SIGTERM)
            process.wait(30)
    finally:
        streams.close()
    output = out_path.read_text(errors="replace") + err_path.read_text(errors="replace")
    assert "took leases" in output, output[-3000:]
    for secret in (SECRET, TOKEN):
        for form in {secret, quote(secret, safe=""), quote(secret, safe="/")}:
            assert form not in output, f"a credential leaked into the {verbosity} output"
    if verbosity == "-vvv":
        # The SDK's wire logs were on (so the test looked where credentials would leak), and redacted.
        assert "botocore" in output
        assert "[REDACTED]" in output
