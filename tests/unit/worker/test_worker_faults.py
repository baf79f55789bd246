"""A worker in front of permanent and not-ready errors (issue 13), in process on the real SQLite backend:
initialization retries a missing stream within its bound with growing, jittered back-off (the sleeps are
injected, nothing waits), fails at once on a damaged database, and a running worker whose loops keep meeting a
permanent error stops on its own with the error as its ``stop_reason``."""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from shardwise.assignment.taker import TakerConfig
from shardwise.backends.sqlite.leases import SQLiteLeaseStore
from shardwise.backends.sqlite.stream import LocalStreamStore
from shardwise.errors import ConfigurationError, ResourceNotFoundError, UnusableStoreError
from shardwise.leasing.shard_sync import InitialPosition
from shardwise.processor import BaseRecordProcessor, ProcessRecordsInput
from shardwise.worker import Worker, WorkerConfig


class Processor(BaseRecordProcessor):
    def process_records(self, process_records_input: ProcessRecordsInput) -> None:
        pass


def config(**overrides: int) -> WorkerConfig:
    return WorkerConfig(
        "orders-app",
        "orders",
        worker_id="w1",
        initial_position=InitialPosition.trim_horizon(),
        leases=TakerConfig(failover_time_ms=1_000),
        **overrides,  # type: ignore[arg-type]
    )


def worker(db: Path, cfg: WorkerConfig, sleeps: list[float]) -> Worker:
    streams = LocalStreamStore(db)
    return Worker(
        cfg,
        store=SQLiteLeaseStore(db, "orders-app"),
        source=streams.stream("orders"),
        processor_factory=Processor,
        rng=random.Random(11),
        sleep=sleeps.append,
    )


def test_a_missing_stream_is_retried_with_back_off_up_to_the_bound(tmp_path: Path) -> None:
    sleeps: list[float] = []
    cfg = config(max_initialization_attempts=6, initialization_backoff_ms=1_000, initialization_max_backoff_ms=5_000)
    subject = worker(tmp_path / "shardwise.db", cfg, sleeps)
    with pytest.raises(ResourceNotFoundError, match="stream 'orders' does not exist"):
        subject.run()
    assert subject.initialization_attempts == 6
    assert len(sleeps) == 5
    for attempt, slept in enumerate(sleeps, start=1):
        step = min(5.0, 2.0 ** (attempt - 1))
        assert step / 2 <= slept <= step, (attempt, sleeps)
    assert len(set(sleeps)) == len(sleeps), "jittered"


def test_a_stream_created_during_the_retries_lets_the_worker_start(tmp_path: Path) -> None:
    db = tmp_path / "shardwise.db"
    sleeps: list[float] = []
    subject: Worker

    def create_the_stream(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 2:
            LocalStreamStore(db).create_stream("orders", 1)
        if len(sleeps) > 2:
            raise AssertionError("retried after the stream existed")

    subject = Worker(
        config(initialization_backoff_ms=10),
        store=SQLiteLeaseStore(db, "orders-app"),
        source=LocalStreamStore(db).stream("orders"),
        processor_factory=Processor,
        sleep=create_the_stream,
    )
    thread = threading.Thread(target=subject.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not subject.consumers():  # started: it took the stream's lease
            assert time.monotonic() < deadline, "the worker did not start consuming"
            assert not subject.wait_stopped(0.05), "the worker stopped"
    finally:
        subject.request_shutdown()
        thread.join(30)
    assert subject.initialization_attempts == 3
    assert subject.stop_reason is None


def test_a_damaged_database_fails_the_start_at_once(tmp_path: Path) -> None:
    db = tmp_path / "shardwise.db"
    db.write_bytes(b"this is not a database" * 300)
    sleeps: list[float] = []
    with pytest.raises(UnusableStoreError, match="not a database"):
        worker(db, config(), sleeps).run()
    assert sleeps == []


def test_bad_settings_are_refused() -> None:
    for name in ("max_initialization_attempts", "permanent_error_limit", "retry_backoff_ms"):
        with pytest.raises(ConfigurationError, match=name):
            config(**{name: 0})


def test_a_running_worker_meeting_a_permanent_error_repeatedly_stops_on_its_own(tmp_path: Path) -> None:
    db = tmp_path / "shardwise.db"
    LocalStreamStore(db).create_stream("orders", 2)
    store = SQLiteLeaseStore(db, "orders-app")
    store.create_table_if_not_exists()
    store.close()
    # Damage the lease table's root page only: the worker starts, its first lease write meets the damage.
    conn = sqlite3.connect(db)
    (page,) = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'shardwise_leases'").fetchone()
    (page_size,) = conn.execute("PRAGMA page_size").fetchone()
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    with db.open("r+b") as file:
        file.seek((page - 1) * page_size)
        file.write(b"\xff" * 64)
    subject = worker(db, config(permanent_error_limit=3, retry_backoff_ms=10, shutdown_timeout_ms=5_000), [])
    thread = threading.Thread(target=subject.run, daemon=True)
    thread.start()
    try:
        assert subject.wait_stopped(60), "the worker did not stop on its own"
    finally:
        subject.request_shutdown()
        thread.join(30)
    assert isinstance(subject.stop_reason, UnusableStoreError)
    assert "database disk image is malformed" in str(subject.stop_reason)
    assert subject.initialization_attempts == 1
