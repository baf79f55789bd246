"""Every worker reports malformed lease items — leader or not, KCL 2.x or 3.x generation — with the
``LeaseDeserializationFailureCount`` metric and a WARNING naming the key and the repair command."""

from __future__ import annotations

import functools
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from shardwise.assignment.taker import TakerConfig
from shardwise.backends.sqlite.leases import SQLiteLeaseStore
from shardwise.backends.sqlite.stream import LocalStreamStore, shard_id_for_index
from shardwise.checkpoint.sequence import TRIM_HORIZON
from shardwise.leases.model import Lease
from shardwise.leasing.bad_items import METRIC_NAME, METRIC_OPERATION
from shardwise.leasing.shard_sync import InitialPosition
from shardwise.metrics import InMemoryMetricsSink
from shardwise.processor import BaseRecordProcessor, InitializationInput, ProcessRecordsInput
from shardwise.worker import Worker, WorkerConfig

BAD = shard_id_for_index(1)


class Idle(BaseRecordProcessor):
    def initialize(self, initialization_input: InitializationInput) -> None:
        pass

    def process_records(self, process_records_input: ProcessRecordsInput) -> None:
        pass


def reported_thrice(sink: InMemoryMetricsSink) -> bool:
    return len(sink.values(METRIC_OPERATION, METRIC_NAME)) >= 3


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.02)


@pytest.mark.parametrize("assignment", ["lease-count-2x", "utilization-3x"])
def test_every_worker_reports_a_malformed_lease(
    tmp_path: Path, assignment: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    db = tmp_path / "fleet.db"
    streams = LocalStreamStore(db)
    streams.create_stream("orders", 2)
    seed = SQLiteLeaseStore(db, "orders-app")
    seed.create_table_if_not_exists()
    assert seed.create_lease_if_not_exists(Lease(BAD, TRIM_HORIZON, lease_owner="gone", lease_counter=5))
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE shardwise_leases SET lease_counter = 'five' WHERE lease_key = ?", (BAD,))
    workers: list[Worker] = []
    sinks: list[InMemoryMetricsSink] = []
    for worker_id in ("w1", "w2"):
        config = WorkerConfig(
            "orders-app",
            "orders",
            worker_id=worker_id,
            initial_position=InitialPosition.trim_horizon(),
            assignment=assignment,  # type: ignore[arg-type]
            leases=TakerConfig(failover_time_ms=1_000),
            shard_sync_interval_ms=500,
            malformed_lease_report_interval_ms=200,
            shutdown_timeout_ms=5_000,
        )
        sink = InMemoryMetricsSink()
        sinks.append(sink)
        workers.append(
            Worker(
                config,
                store=SQLiteLeaseStore(db, "orders-app"),
                source=streams.stream("orders"),
                processor_factory=Idle,
                metrics=sink,
            )
        )
    threads = [threading.Thread(target=worker.run, daemon=True) for worker in workers]
    for thread in threads:
        thread.start()
    try:
        if assignment == "utilization-3x":
            # A leader and a non-leader: the non-leader, which never scans the lease table for assignment, reports too.
            wait_for(lambda: any(worker.is_leader() for worker in workers), 30, "a leader")
        for sink in sinks:
            wait_for(functools.partial(reported_thrice, sink), 30, "three reports")
        leaders = [worker for worker in workers if worker.is_leader()]
    finally:
        for worker in workers:
            worker.request_shutdown()
        for thread in threads:
            thread.join(10)
    for sink in sinks:
        assert set(sink.values(METRIC_OPERATION, METRIC_NAME)) == {1}
    reports = [
        r.getMessage()
        for r in caplog.records
        if r.name == "shardwise.leasing.bad_items" and repr(BAD) in r.getMessage()
    ]
    # Each worker warned more than once (the 200 ms interval passed between its reports).
    assert len(reports) >= 2 * 2, reports
    assert all("shardwise leases repair --app orders-app --shard " + BAD in message for message in reports)
    if assignment == "utilization-3x":
        assert len(leaders) == 1
