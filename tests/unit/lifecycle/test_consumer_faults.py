"""A shard consumer's answer to errors its states do not handle (the generic branch of ShardConsumer.step and
lifecycle/faults.py), on the real local stream and SQLite lease store with a hand-moved clock: a deleted stream
is a permanent error reported to the worker with its count in a row; a transient one backs off and is never
reported; a record processor's exception gets its traceback at most once a minute."""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from shardwise.backends.sqlite.leases import SQLiteLeaseStore
from shardwise.backends.sqlite.stream import LocalStreamStore
from shardwise.errors import DependencyError, StreamNotFoundError
from shardwise.leasing.renewer import LeaseRenewer
from shardwise.leasing.shard_sync import InitialPosition, ShardSyncer
from shardwise.lifecycle.consumer import ConsumerConfig, ShardConsumer
from shardwise.lifecycle.faults import StepFaults, retry_delay_ms
from shardwise.lifecycle.states import ConsumerState
from shardwise.processor import BaseRecordProcessor, InitializationInput, ProcessRecordsInput
from support.clocks import FakeClock

STREAM = "orders"
SHARD = "shardId-000000000000"
BACKOFF_MS = 100
MS = 1_000_000
CONFIG = ConsumerConfig(idle_time_between_reads_ms=0, task_backoff_time_ms=BACKOFF_MS)


@dataclass
class Processor(BaseRecordProcessor):
    """Raises ``initialize_errors`` in turn from ``initialize``, then works."""

    initialize_errors: list[BaseException] = field(default_factory=list)
    batches: int = 0

    def initialize(self, initialization_input: InitializationInput) -> None:
        if self.initialize_errors:
            raise self.initialize_errors.pop(0)

    def process_records(self, process_records_input: ProcessRecordsInput) -> None:
        self.batches += 1


@dataclass
class Env:
    clock: FakeClock
    streams: LocalStreamStore
    store: SQLiteLeaseStore
    reports: list[tuple[str, BaseException, int]] = field(default_factory=list)
    renewers: list[LeaseRenewer] = field(default_factory=list)

    def pass_time(self, ms: int) -> None:
        """Let ``ms`` pass while the renewer keeps the lease alive (renewing every 3 s, as it would)."""
        while ms > 0:
            step = min(ms, 3_000)
            self.clock.advance(step * MS)
            ms -= step
            for renewer in self.renewers:
                renewer.renew_all()

    def consumer(self, processor: Processor) -> ShardConsumer:
        renewer = LeaseRenewer(self.store, "w1", failover_time_ms=10_000, clock_ns=self.clock)
        self.renewers.append(renewer)
        lease = self.store.get_lease(SHARD)
        assert lease is not None
        taken = self.store.take_lease(lease, "w1")
        assert taken is not None
        token = renewer.add_leases([taken])[SHARD]
        return ShardConsumer(
            lease=taken,
            token=token,
            processor=processor,
            source=self.streams.stream(STREAM),
            store=self.store,
            renewer=renewer,
            create_child_leases=lambda _parent, _children: None,
            config=CONFIG,
            clock_ns=self.clock,
            on_permanent_error=lambda source, exc, count: self.reports.append((source, exc, count)),
        )

    def step_when_due(self, consumer: ShardConsumer) -> int:
        """Advance the clock to when the consumer is due, step it; returns the ms waited."""
        waited = 0
        while not consumer.is_due(self.clock()):
            self.clock.advance(MS)
            waited += 1
        consumer.step()
        return waited


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    db = tmp_path / "shardwise.db"
    streams = LocalStreamStore(db)
    streams.create_stream(STREAM, 1)
    store = SQLiteLeaseStore(db, "app")
    store.create_table_if_not_exists()
    ShardSyncer(store, streams.stream(STREAM), InitialPosition.trim_horizon()).sync()
    yield Env(FakeClock(), streams, store)
    store.close()
    streams.close()


def test_a_deleted_stream_is_reported_as_permanent_with_its_count_in_a_row(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    processor = Processor()
    consumer = env.consumer(processor)
    for _ in range(3):  # parents, initialize, first batch
        env.step_when_due(consumer)
    assert consumer.state is ConsumerState.PROCESSING
    env.streams.delete_stream(STREAM)
    with caplog.at_level(logging.DEBUG, logger="shardwise.lifecycle.consumer"):
        waits = [env.step_when_due(consumer) for _ in range(4)]
    assert [(source, count) for source, _exc, count in env.reports] == [
        (f"shard consumer {SHARD}", 1),
        (f"shard consumer {SHARD}", 2),
        (f"shard consumer {SHARD}", 3),
        (f"shard consumer {SHARD}", 4),
    ]
    assert all(type(exc) is StreamNotFoundError for _source, exc, _count in env.reports)
    # The first retry after KCL's task back-off, later ones longer.
    assert waits[1] == BACKOFF_MS
    assert waits[2] > BACKOFF_MS
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 4
    assert all(r.exc_info is None for r in caplog.records), "one line per permanent error, no traceback"
    assert consumer.state is ConsumerState.PROCESSING  # the worker, not the consumer, decides to stop


def test_transient_errors_back_off_and_are_not_reported(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    processor = Processor(initialize_errors=[DependencyError("the database is busy")] * 3)
    consumer = env.consumer(processor)
    env.step_when_due(consumer)  # parents
    with caplog.at_level(logging.DEBUG, logger="shardwise.lifecycle.consumer"):
        for _ in range(3):
            env.step_when_due(consumer)
        waits = [env.step_when_due(consumer)]
    assert env.reports == []
    assert consumer.state is ConsumerState.PROCESSING
    assert waits[0] >= BACKOFF_MS  # after the third failure: at least the task back-off
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3
    assert all(r.exc_info is None for r in caplog.records)


def test_a_processor_exception_gets_its_traceback_at_most_once_a_minute(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    processor = Processor(initialize_errors=[RuntimeError("processor bug")] * 3)
    consumer = env.consumer(processor)
    env.step_when_due(consumer)  # parents
    with caplog.at_level(logging.DEBUG, logger="shardwise.lifecycle.consumer"):
        env.step_when_due(consumer)
        env.step_when_due(consumer)
        env.pass_time(60_000)
        env.step_when_due(consumer)
    assert env.reports == []
    assert [r.exc_info is not None for r in caplog.records if r.levelno >= logging.ERROR] == [True, False, True]


def test_retry_delays_start_at_the_task_backoff_and_stay_bounded() -> None:
    rng = random.Random(5)
    delays = [retry_delay_ms(attempt, BACKOFF_MS, rng) for attempt in range(1, 30)]
    assert delays[0] == BACKOFF_MS
    assert all(BACKOFF_MS <= d <= 16 * BACKOFF_MS for d in delays)
    assert max(delays[10:]) > 8 * BACKOFF_MS


def test_a_success_in_between_resets_the_permanent_count() -> None:
    reports: list[int] = []
    faults = StepFaults(
        SHARD,
        task_backoff_time_ms=BACKOFF_MS,
        clock_ns=FakeClock(),
        log=logging.getLogger("test"),
        on_permanent=lambda _source, _exc, count: reports.append(count),
    )
    missing = StreamNotFoundError("stream gone")
    faults.failed(missing, "PROCESSING", 1)
    faults.failed(missing, "PROCESSING", 2)
    faults.failed(missing, "PROCESSING", 1)  # consecutive failures 1 again: the step before succeeded
    faults.failed(DependencyError("busy"), "PROCESSING", 2)
    faults.failed(missing, "PROCESSING", 3)
    assert reports == [1, 2, 1, 1]
