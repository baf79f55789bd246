"""Issue 13, behaviours 1 and 3 at the shard consumer and the renewer: real SQLite leases and a real local stream,
a hand-moved clock, and stores that block or fail the way a partition or a bad lease item does.

* Behaviour 1: a lease this worker could not renew within the failover time minus the margin is no longer held,
  whatever its renewal is blocked on: no batch is delivered, checkpoints are refused, the processor gets
  ``lease_lost``.
* Behaviour 3: one lease whose counter would overflow SQLite's integer range costs only that lease; its
  checkpoints back off and the lease is given up after the bound instead of redelivering every back-off.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from shardwise.backends.sqlite.leases import SQLiteLeaseStore
from shardwise.backends.sqlite.stream import LocalStream, LocalStreamStore, shard_id_for_index
from shardwise.checkpoint.sequence import TRIM_HORIZON, ExtendedSequenceNumber
from shardwise.errors import DependencyError, LeaseLostError
from shardwise.leases.model import Lease
from shardwise.leasing.renewer import LeaseRenewer
from shardwise.lifecycle.consumer import ConsumerConfig, ShardConsumer
from shardwise.lifecycle.states import ConsumerState, ShutdownReason
from shardwise.processor import BaseRecordProcessor, LeaseLostInput, ProcessRecordsInput
from shardwise.retrieval.model import GetRecordsResult, Shard, ShardFilter, StartingPosition
from support.clocks import FakeClock

STREAM = "orders"
S0, S1, S2 = (shard_id_for_index(i) for i in range(3))
MS = 1_000_000
FAILOVER_MS = 10_000
LOCAL_EXPIRY_MS = 9_000  # the failover time minus the default margin (a tenth)
JAVA_LONG_MAX = 2**63 - 1  # SQLite's largest integer: renewing a lease at this counter overflows
CONFIG = ConsumerConfig(
    max_records=100,
    idle_time_between_reads_ms=0,
    task_backoff_time_ms=100,
    checkpoint_backoff_max_ms=400,
    max_checkpoint_failures=4,
)


class FaultyStore(SQLiteLeaseStore):
    """A real SQLite store whose renewals can block (a partition: the call hangs) and whose checkpoint updates
    can fail with a transient error."""

    def __init__(self, path: Path, table: str) -> None:
        super().__init__(path, table)
        self.block_renewals = False
        self.renewal_entered = threading.Event()
        self.unblock = threading.Event()
        self.fail_updates: Exception | None = None

    def renew_lease(self, lease: Lease, *, throughput_kbps: float | None = None) -> Lease | None:
        if self.block_renewals:
            self.renewal_entered.set()
            self.unblock.wait()
        return super().renew_lease(lease, throughput_kbps=throughput_kbps)

    def update_lease(self, lease: Lease) -> Lease | None:
        if self.fail_updates is not None:
            raise self.fail_updates
        return super().update_lease(lease)


class SlowSource:
    """The real local stream; ``get_records`` can move the clock on by ``read_ms`` (a GetRecords that hangs)."""

    def __init__(self, inner: LocalStream, clock: FakeClock) -> None:
        self._inner = inner
        self._clock = clock
        self.read_ms = 0

    @property
    def stream_name(self) -> str:
        return self._inner.stream_name

    def list_shards(self, shard_filter: ShardFilter | None = None) -> list[Shard]:
        return self._inner.list_shards(shard_filter)

    def get_shard_iterator(self, shard_id: str, position: StartingPosition) -> str:
        return self._inner.get_shard_iterator(shard_id, position)

    def get_records(self, shard_iterator: str, *, limit: int = 10_000) -> GetRecordsResult:
        result = self._inner.get_records(shard_iterator, limit=limit)
        self._clock.advance(self.read_ms * MS)
        return result


@dataclass
class Processor(BaseRecordProcessor):
    """Checkpoints after every batch; records deliveries, lease_lost and what its checkpoints raised."""

    batches: list[list[str]] = field(default_factory=list)
    lease_lost_calls: int = 0
    checkpoint_errors: list[Exception] = field(default_factory=list)
    swallow_checkpoint_errors: bool = False

    def process_records(self, process_records_input: ProcessRecordsInput) -> None:
        self.batches.append([r.sequence_number for r in process_records_input.records])
        try:
            process_records_input.checkpointer.checkpoint()
        except LeaseLostError:
            raise
        except Exception as exc:
            self.checkpoint_errors.append(exc)
            if not self.swallow_checkpoint_errors:
                raise

    def lease_lost(self, lease_lost_input: LeaseLostInput) -> None:
        self.lease_lost_calls += 1


@dataclass
class Env:
    clock: FakeClock
    streams: LocalStreamStore
    store: FaultyStore
    source: SlowSource
    renewer: LeaseRenewer

    def put(self, *payloads: bytes) -> list[str]:
        return [r.sequence_number for r in self.streams.put_records(STREAM, [(p, "pk") for p in payloads])]

    def hold(self, key: str, *, counter: int | None = None) -> tuple[Lease, str]:
        if counter is None:
            taken = self.store.take_lease(self.lease(key), "w1")
        else:
            # A counter the store itself refuses to write (it could not be renewed): put it in the row by hand,
            # as a damaged or hand-edited item would have it.
            owned = self.store.take_lease(self.lease(key), "w1")
            assert owned is not None
            with sqlite3.connect(self.store.path) as conn:
                conn.execute(
                    "UPDATE shardwise_leases SET lease_counter = ? WHERE table_name = ? AND lease_key = ?",
                    (counter, self.store.table_name, key),
                )
            conn.close()
            taken = owned.with_changes(lease_counter=counter)
        assert taken is not None
        return taken, self.renewer.add_leases([taken])[key]

    def consumer(self, key: str, processor: Processor, *, counter: int | None = None) -> ShardConsumer:
        lease, token = self.hold(key, counter=counter)
        consumer = ShardConsumer(
            lease=lease,
            token=token,
            processor=processor,
            source=self.source,
            store=self.store,
            renewer=self.renewer,
            create_child_leases=lambda parent, children: None,
            config=CONFIG,
            clock_ns=self.clock,
        )
        consumer.step()  # parents done
        consumer.step()  # initialized
        assert consumer.state is ConsumerState.PROCESSING
        return consumer

    def lease(self, key: str) -> Lease:
        lease = self.store.get_lease(key)
        assert lease is not None, key
        return lease


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    db = tmp_path / "shardwise.db"
    streams = LocalStreamStore(db)
    streams.create_stream(STREAM, 3)
    store = FaultyStore(db, "app")
    store.create_table_if_not_exists()
    for key in (S0, S1, S2):
        assert store.create_lease_if_not_exists(Lease(key, TRIM_HORIZON)) is not None
    clock = FakeClock()
    renewer = LeaseRenewer(store, "w1", failover_time_ms=FAILOVER_MS, clock_ns=clock)
    yield Env(clock, streams, store, SlowSource(streams.stream(STREAM), clock), renewer)
    store.unblock.set()
    store.close()
    streams.close()


def finished(consumer: ShardConsumer) -> bool:
    """Whether the consumer is done (a call, so that type checkers do not narrow it across steps)."""
    return consumer.is_complete


def in_thread(target: Callable[[], object]) -> tuple[threading.Thread, list[object]]:
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(target())
        except Exception as exc:  # handed to the test
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


# -- behaviour 1: local expiry while the renewal is blocked --------------------------------------------------------


def test_a_lease_whose_renewal_hangs_is_no_longer_held_once_the_local_expiry_passes(env: Env) -> None:
    env.put(b"a")
    processor = Processor()
    consumer = env.consumer(S0, processor)
    token = consumer.token
    consumer.step()
    assert processor.batches and processor.lease_lost_calls == 0
    env.put(b"b")

    env.store.block_renewals = True
    env.clock.advance(3_000 * MS)
    renewal, _ = in_thread(env.renewer.renew_all)
    assert env.store.renewal_entered.wait(30)  # the renewal of S0 is now stuck in the "network"

    env.clock.advance((LOCAL_EXPIRY_MS - 3_000) * MS)  # exactly the local expiry since the last checkpoint
    assert env.renewer.holds(S0, token)
    env.clock.advance(1 * MS)
    assert not env.renewer.holds(S0, token)
    assert env.renewer.get(S0) is None
    assert S0 not in env.renewer.held()

    # A checkpoint is refused at once (it does not wait behind the hung renewal for the same lease).
    writer, outcome = in_thread(
        lambda: env.renewer.write_checkpoint(S0, token, ExtendedSequenceNumber("1"), pending=None, pending_state=None)
    )
    writer.join(10)
    assert not writer.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], LeaseLostError)
    assert "expired" in str(outcome[0])

    delivered = len(processor.batches)
    consumer.step()
    consumer.step()
    assert len(processor.batches) == delivered  # record "b" was not delivered
    assert processor.lease_lost_calls == 1
    assert consumer.is_complete
    assert consumer.shutdown_reason is ShutdownReason.LEASE_LOST
    assert renewal.is_alive()  # all of it while the renewal was still blocked

    env.store.unblock.set()
    renewal.join(30)
    assert not renewal.is_alive()


def test_a_batch_read_after_the_local_expiry_is_not_delivered(env: Env) -> None:
    env.put(b"a")
    processor = Processor()
    consumer = env.consumer(S0, processor)
    env.source.read_ms = LOCAL_EXPIRY_MS + 1  # GetRecords hangs past the lease's local expiry
    consumer.step()
    assert processor.batches == []
    consumer.step()
    assert processor.lease_lost_calls == 1
    assert consumer.shutdown_reason is ShutdownReason.LEASE_LOST
    assert env.renewer.renew_all().lost == ()  # the consumer dropped it already
    assert env.renewer.held() == {}


# -- behaviour 3: one bad lease costs only itself -------------------------------------------------------------------


def test_one_lease_whose_renewal_overflows_does_not_stop_the_others(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    env.hold(S0, counter=JAVA_LONG_MAX)
    env.hold(S1)
    env.hold(S2)
    counters = {key: env.lease(key).lease_counter for key in (S1, S2)}
    renewed: list[tuple[str, ...]] = []
    with caplog.at_level(logging.WARNING, logger="shardwise.leasing.renewer"):
        for _ in range(3):
            env.clock.advance(3_000 * MS)
            result = env.renewer.renew_all()  # never raises for one lease's fault
            renewed.append(result.renewed)
    assert all({S1, S2} <= set(run) for run in renewed)
    assert S0 not in renewed[-1]
    assert {key: env.lease(key).lease_counter for key in (S1, S2)} == {k: c + 3 for k, c in counters.items()}
    assert S0 in caplog.text
    # The bad lease alone expires on this worker's clock; the others stay held.
    env.clock.advance(LOCAL_EXPIRY_MS * MS)
    result = env.renewer.renew_all()
    assert S0 in result.lost
    assert set(env.renewer.held()) == {S1, S2}


def test_a_checkpoint_that_fails_permanently_backs_off_and_gives_the_lease_up(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    env.put(b"a", b"b")
    processor = Processor()
    consumer = env.consumer(S0, processor, counter=JAVA_LONG_MAX)
    env.renewer.renew_all()  # the counter leaves SQLite's integer range (or the store refuses the item)
    delays: list[int] = []
    with caplog.at_level(logging.WARNING, logger="shardwise.lifecycle.consumer"):
        for _ in range(20):
            if consumer.is_complete:
                break
            consumer.step()
            if not finished(consumer) and not consumer.is_due(env.clock()):
                waited = 0
                while not consumer.is_due(env.clock()):
                    env.clock.advance(1 * MS)
                    waited += 1
                delays.append(waited)
    assert consumer.is_complete
    assert consumer.shutdown_reason is ShutdownReason.LEASE_LOST
    assert processor.lease_lost_calls == 1
    assert len(processor.checkpoint_errors) == CONFIG.max_checkpoint_failures
    assert len(processor.batches) == CONFIG.max_checkpoint_failures  # redelivered, but not forever
    assert delays == [100, 200, 400]  # doubling from the task back-off, capped
    assert env.renewer.get(S0) is None  # given up: no longer renewed, so it expires for another worker
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert S0 in errors[0].getMessage()
    assert "giving the lease up" in errors[0].getMessage()


def test_a_checkpoint_failure_the_processor_swallows_still_counts(env: Env) -> None:
    env.put(b"a")
    processor = Processor(swallow_checkpoint_errors=True)
    consumer = env.consumer(S0, processor, counter=JAVA_LONG_MAX)
    env.renewer.renew_all()
    for i in range(CONFIG.max_checkpoint_failures):
        env.put(str(i).encode())
        env.clock.advance(1_000 * MS)
        consumer.step()
    assert len(processor.checkpoint_errors) == CONFIG.max_checkpoint_failures
    consumer.step()
    assert processor.lease_lost_calls == 1
    assert consumer.is_complete


def test_a_transient_checkpoint_failure_is_retried_while_the_lease_is_held(env: Env) -> None:
    env.put(b"a")
    processor = Processor()
    consumer = env.consumer(S0, processor)
    env.store.fail_updates = DependencyError("throttled")
    for _ in range(3 * CONFIG.max_checkpoint_failures):
        env.clock.advance(400 * MS)
        assert env.renewer.renew_all().renewed == (S0,)
        consumer.step()
    assert processor.lease_lost_calls == 0
    assert consumer.state is ConsumerState.PROCESSING
    env.store.fail_updates = None
    env.clock.advance(400 * MS)
    consumer.step()
    assert env.lease(S0).checkpoint.sequence_number == processor.batches[-1][-1]
