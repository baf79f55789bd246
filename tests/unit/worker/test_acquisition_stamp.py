"""Issue 13's bound starts at the acquisition: a lease's local expiry counts from before the take's writes, so a
take whose answer comes back late does not extend how long this worker believes it holds the lease."""

from __future__ import annotations

from pathlib import Path

from shardwise.assignment.taker import TakerConfig
from shardwise.backends.sqlite.leases import SQLiteLeaseStore
from shardwise.backends.sqlite.stream import LocalStreamStore
from shardwise.leases.model import Lease
from shardwise.leasing.shard_sync import InitialPosition
from shardwise.processor import BaseRecordProcessor, ProcessRecordsInput
from shardwise.worker import Worker, WorkerConfig
from support.clocks import FakeClock

MS = 1_000_000
SLOW_ANSWER_MS = 2_000  # a take written at once whose answer arrives later (the read timeout allows it)


class Processor(BaseRecordProcessor):
    def process_records(self, process_records_input: ProcessRecordsInput) -> None:
        pass


class SlowTakeStore(SQLiteLeaseStore):
    def __init__(self, path: Path, table_name: str, clock: FakeClock) -> None:
        super().__init__(path, table_name)
        self._clock = clock

    def take_lease(self, lease: Lease, owner: str) -> Lease | None:
        taken = super().take_lease(lease, owner)  # written (others may observe the new counter from now)
        self._clock.advance(SLOW_ANSWER_MS * MS)
        return taken


def test_a_taken_lease_expires_locally_counting_from_before_the_take(tmp_path: Path) -> None:
    db = tmp_path / "w.db"
    streams = LocalStreamStore(db)
    streams.create_stream("orders", 1)
    clock = FakeClock()
    store = SlowTakeStore(db, "app", clock)
    store.create_table_if_not_exists()
    config = WorkerConfig(
        "app", "orders", worker_id="w1", initial_position=InitialPosition.trim_horizon(), leases=TakerConfig()
    )
    worker = Worker(config, store=store, source=streams.stream("orders"), processor_factory=Processor, clock_ns=clock)
    try:
        worker._sync()
        before_take = clock()
        worker._take()
        [key] = worker.renewer.held()
        held = worker.renewer.get(key)
        assert held is not None
        assert held.last_renewal_ns == before_take
        clock.advance((config.leases.local_expiry_ms - SLOW_ANSWER_MS) * MS)
        assert worker.renewer.get(key) is not None
        clock.advance(1 * MS)
        assert worker.renewer.get(key) is None  # the others' expiry timers started no earlier than the write
    finally:
        worker.request_shutdown()
        store.close()
        streams.close()
