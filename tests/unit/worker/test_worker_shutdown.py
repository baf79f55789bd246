"""A graceful shutdown that meets a lease take under way: the leases it brings are given back too.

Seen in CI: SIGTERM reached a worker while its taker was taking the leases two stopped workers had just released.
The dispatcher asked the consumers it had to shut down, the take then added five more that nobody asked, and the
worker renewed them until it was killed. Now a consumer started during a shutdown is asked at once, and a lease
that arrives after the dispatcher has finished is released without a consumer.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import pytest

from shardwise.assignment.taker import TakerConfig
from shardwise.backends.sqlite.leases import SQLiteLeaseStore
from shardwise.backends.sqlite.stream import LocalStreamStore
from shardwise.leases.model import Lease
from shardwise.leasing.shard_sync import InitialPosition
from shardwise.lifecycle.consumer import ConsumerConfig
from shardwise.processor import (
    BaseRecordProcessor,
    InitializationInput,
    ProcessRecordsInput,
    ShutdownRequestedInput,
)
from shardwise.worker import Worker, WorkerConfig
from shardwise.worker.generations import LeaseCountGeneration

SHARDS = 4
#: Far longer than the test waits: a worker that only stops at this deadline has lost the race.
SHUTDOWN_TIMEOUT_MS = 60_000


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.01)


class Recorder(BaseRecordProcessor):
    """Records each ``shutdown_requested``; holds it until ``gate`` opens (so a shutdown can be kept under way)."""

    shutdowns: ClassVar[list[str]] = []
    gate: ClassVar[threading.Event] = threading.Event()

    def initialize(self, initialization_input: InitializationInput) -> None:
        self.shard_id = initialization_input.shard_id

    def process_records(self, process_records_input: ProcessRecordsInput) -> None:
        pass

    def shutdown_requested(self, shutdown_requested_input: ShutdownRequestedInput) -> None:
        Recorder.shutdowns.append(self.shard_id)
        Recorder.gate.wait(30)
        shutdown_requested_input.checkpointer.checkpoint()


@pytest.mark.parametrize("dispatcher", ["asked its consumers", "already finished"])
def test_leases_taken_while_shutting_down_are_released(tmp_path: Path, dispatcher: str) -> None:
    """The first take keeps half its leases from the worker (they expire, and the second take takes them again);
    SIGTERM comes during the second take, after the dispatcher has asked the consumers it has (which hold their
    ``shutdown_requested`` until the new ones are in), or after it has finished."""
    db = tmp_path / "shutdown.db"
    streams = LocalStreamStore(db)
    streams.create_stream("orders", SHARDS)
    store = SQLiteLeaseStore(db, "orders-app")
    config = WorkerConfig(
        "orders-app",
        "orders",
        worker_id="w1",
        initial_position=InitialPosition.trim_horizon(),
        leases=TakerConfig(failover_time_ms=1_000),
        consumer=ConsumerConfig(idle_time_between_reads_ms=50),
        shard_sync_interval_ms=500,
        shutdown_timeout_ms=SHUTDOWN_TIMEOUT_MS,
    )
    Recorder.shutdowns = []
    Recorder.gate = threading.Event()
    if dispatcher == "already finished":
        Recorder.gate.set()
    worker = Worker(
        config, store=SQLiteLeaseStore(db, "orders-app"), source=streams.stream("orders"), processor_factory=Recorder
    )
    takes: list[list[Lease]] = []
    generation = worker._generation
    assert isinstance(generation, LeaseCountGeneration)
    original = generation.taker.take_leases

    def take() -> list[Lease]:
        leases = original()
        if not leases or len(takes) >= 2:
            return leases
        takes.append(leases)
        if len(takes) == 1:
            return leases[: SHARDS // 2]  # the rest expire unrenewed, for the second take
        # SIGTERM arrives while this take is under way (the leases are ours in the table already).
        worker.request_shutdown()
        if dispatcher == "already finished":
            wait_for(lambda: worker._dispatcher.intake_closed, 10, "the dispatcher to finish")
        else:
            wait_for(lambda: len(Recorder.shutdowns) == SHARDS // 2, 10, "the running consumers to be asked")
        return leases

    generation.taker.take_leases = take  # type: ignore[method-assign]
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        if dispatcher == "asked its consumers":
            # Every lease has had a consumer (the late ones, asked at once, may already have finished: the
            # dispatcher runs a new consumer's step as soon as it arrives).
            wait_for(lambda: worker.stats.leases_taken == SHARDS, 30, "the second take's consumers")
            Recorder.gate.set()
        assert worker.wait_stopped(SHUTDOWN_TIMEOUT_MS / 1000 / 2), "the worker waited for its shutdown deadline"
    finally:
        Recorder.gate.set()
        worker.request_shutdown()
        thread.join(SHUTDOWN_TIMEOUT_MS / 1000)
    assert [len(leases) for leases in takes] == [SHARDS, SHARDS // 2], takes
    owners = {lease.lease_key: lease.lease_owner for lease in store.list_leases()}
    assert len(owners) == SHARDS, owners
    assert owners == dict.fromkeys(owners, None), f"leases left to expire instead of released: {owners}"
    # The running consumers' processors got shutdown_requested; the late ones had not initialized (they are
    # released without it, or never started once the dispatcher had finished).
    first = sorted(lease.lease_key for lease in takes[0][: SHARDS // 2])
    assert sorted(Recorder.shutdowns) == first, Recorder.shutdowns
