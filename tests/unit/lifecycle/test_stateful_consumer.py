"""ShardConsumer with a stateful processor, driven step by step: a real local stream, SQLite leases and renewer,
the real SQLite store engine and changelog, a fake clock, and a processor that counts records per partition key
in its store. Every test ends by checking the counts: each record changes the state exactly once."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from shardwise.backends.sqlite.backend import SQLiteBackend
from shardwise.backends.sqlite.leases import SQLiteLeaseStore
from shardwise.backends.sqlite.stream import LocalStreamStore, shard_id_for_index
from shardwise.checkpoint.sequence import SHARD_END, TRIM_HORIZON, ExtendedSequenceNumber
from shardwise.leases.model import Lease
from shardwise.leasing.renewer import LeaseRenewer
from shardwise.leasing.shard_sync import InitialPosition, ShardSyncer
from shardwise.lifecycle.consumer import ConsumerConfig, ShardConsumer
from shardwise.lifecycle.stateful import (
    ShardState,
    StateConfig,
    StateServices,
    ensured_once,
    set_commit_observer,
)
from shardwise.lifecycle.states import ConsumerState, ShutdownReason
from shardwise.processor import (
    BaseRecordProcessor,
    InitializationInput,
    LeaseLostInput,
    ProcessRecordsInput,
    RecordProcessor,
    ShardEndedInput,
    ShutdownRequestedInput,
    StatefulRecordProcessor,
)
from shardwise.retrieval.model import ChildShard, Record, StartingPosition
from shardwise.state.engines import open_local_store
from shardwise.state.port import Changelog, StateStore
from support.consumers import MillisClock, RecordingSource, start, state, steps

STREAM = "orders"
APP = "app"
S0, S1, S2 = (shard_id_for_index(i) for i in range(3))
BACKOFF_MS = 100
COMMIT_INTERVAL_MS = 1_000
CONFIG = ConsumerConfig(
    max_records=100,
    idle_time_between_reads_ms=0,
    parent_shard_poll_interval_ms=50,
    task_backoff_time_ms=BACKOFF_MS,
)


class Crash(Exception):
    """The simulated death of the worker inside a commit."""


def counts(store: StateStore | None) -> dict[str, int]:
    assert store is not None
    return {key.decode(): int(value) for key, value in store.range()}


@dataclass
class Counter(StatefulRecordProcessor):
    """Counts records per partition key in the shard's store. Knobs:

    * ``fail_process``: the next N ``process_records`` calls raise after counting the batch;
    * ``checkpoint_each_batch``: checkpoint() after each batch (else never while processing).
    """

    calls: list[str] = field(default_factory=list)
    init: InitializationInput | None = None
    counts_at_initialize: dict[str, int] | None = None
    counts_at_lease_lost: dict[str, int] | None = None
    batches: list[list[Record]] = field(default_factory=list)
    fail_process: int = 0
    checkpoint_each_batch: bool = True
    store: StateStore | None = None

    def initialize(self, initialization_input: InitializationInput) -> None:
        self.calls.append("initialize")
        self.init = initialization_input
        self.store = initialization_input.state
        self.counts_at_initialize = counts(initialization_input.state)

    def process_records(self, process_records_input: ProcessRecordsInput) -> None:
        self.calls.append("process_records")
        store = process_records_input.state
        assert store is not None
        assert store is self.store  # the one store of the shard, opened before initialize
        records = list(process_records_input.records)
        self.batches.append(records)
        for record in records:
            key = record.partition_key.encode()
            store.put(key, str(int(store.get(key) or b"0") + 1).encode())
        if self.fail_process:
            self.fail_process -= 1
            raise RuntimeError("processor bug after counting")
        if self.checkpoint_each_batch:
            process_records_input.checkpointer.checkpoint()

    def lease_lost(self, lease_lost_input: LeaseLostInput) -> None:
        self.calls.append("lease_lost")
        self.counts_at_lease_lost = counts(self.store)

    def shard_ended(self, shard_ended_input: ShardEndedInput) -> None:
        self.calls.append("shard_ended")
        assert shard_ended_input.state is self.store
        shard_ended_input.checkpointer.checkpoint()

    @property
    def delivered(self) -> list[ExtendedSequenceNumber]:
        return [r.extended_sequence_number for batch in self.batches for r in batch]


@dataclass
class Env:
    tmp_path: Path
    clock: MillisClock
    streams: LocalStreamStore
    store: SQLiteLeaseStore
    backend: SQLiteBackend
    syncer: ShardSyncer
    renewers: dict[str, LeaseRenewer] = field(default_factory=dict)
    services_by_worker: dict[str, StateServices] = field(default_factory=dict)
    consumers: list[ShardConsumer] = field(default_factory=list)
    child_creations: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)
    positions: list[tuple[str, StartingPosition]] = field(default_factory=list)

    @property
    def changelog(self) -> Changelog:
        changelog = self.backend.open_changelog(APP)
        changelog.ensure_exists()
        return changelog

    def services(self, worker: str) -> StateServices:
        if worker not in self.services_by_worker:
            self.services_by_worker[worker] = StateServices(
                config=StateConfig(dir_path=self.tmp_path / worker / "state", commit_interval_ms=COMMIT_INTERVAL_MS),
                changelog=ensured_once(lambda: self.backend.open_changelog(APP)),
                open_store=open_local_store,
                clock_ns=self.clock,
            )
        return self.services_by_worker[worker]

    def renewer(self, worker: str) -> LeaseRenewer:
        if worker not in self.renewers:
            self.renewers[worker] = LeaseRenewer(self.store, worker, failover_time_ms=10_000, clock_ns=self.clock)
        return self.renewers[worker]

    def lease(self, key: str) -> Lease:
        lease = self.store.get_lease(key)
        assert lease is not None, key
        return lease

    def put(self, *keys: str) -> list[ExtendedSequenceNumber]:
        """One record per partition key given (its data is the key), in order."""
        results = self.streams.put_records(STREAM, [(key.encode(), key) for key in keys])
        return [ExtendedSequenceNumber(r.sequence_number) for r in results]

    def create_children(self, parent: Lease, children: Sequence[ChildShard]) -> None:
        self.child_creations.append((parent.lease_key, tuple(c.shard_id for c in children)))
        self.syncer.create_child_leases(parent, children)

    def consumer(
        self,
        key: str,
        processor: RecordProcessor,
        *,
        worker: str = "w1",
        state: Callable[[], StateServices] | None = None,
    ) -> ShardConsumer:
        taken = self.store.take_lease(self.lease(key), worker)
        assert taken is not None
        renewer = self.renewer(worker)
        token = renewer.add_leases([taken])[key]
        consumer = ShardConsumer(
            lease=taken,
            token=token,
            processor=processor,
            source=RecordingSource(self.streams.stream(STREAM), self.positions),
            store=self.store,
            renewer=renewer,
            create_child_leases=self.create_children,
            config=CONFIG,
            clock_ns=self.clock,
            state=state if state is not None else (lambda: self.services(worker)),
        )
        self.consumers.append(consumer)
        return consumer

    def open_state(self, key: str, worker: str = "w1") -> ShardState:
        """The shard's state as a consumer of ``worker`` opens it (for a test to prepare or inspect it)."""
        return ShardState.open(
            self.services(worker), shard_id=key, lease_checkpoint=self.lease(key).checkpoint, lease_store=self.store
        )

    def committed_counts(self, key: str) -> dict[str, int]:
        """The shard's state as the changelog holds it (what any worker would restore)."""
        plan = self.changelog.plan_restore(key, lineage=None, after_commit=None)
        assert plan is not None, key
        return {k.decode(): int(v) for k, v in plan.changes if v is not None}


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    db = tmp_path / "shardwise.db"
    streams = LocalStreamStore(db)
    streams.create_stream(STREAM, 1)
    store = SQLiteLeaseStore(db, APP)
    store.create_table_if_not_exists()
    backend = SQLiteBackend(tmp_path / "changelog.db")
    syncer = ShardSyncer(store, streams.stream(STREAM), InitialPosition.trim_horizon())
    syncer.sync()
    env = Env(tmp_path, MillisClock(), streams, store, backend, syncer)
    try:
        yield env
    finally:
        set_commit_observer(None)
        for consumer in env.consumers:
            if consumer.shard_state is not None:
                consumer.shard_state.close()
        backend.database.close()
        store.close()
        streams.close()


def abandon(env: Env, consumer: ShardConsumer, worker: str = "w1") -> None:
    """The worker dies: the consumer is never stepped again, its store closes with the process (what was pending
    is lost) and the lease is no longer held."""
    if consumer.shard_state is not None:
        consumer.shard_state.close()
    env.renewer(worker).drop(consumer.shard_id)


# -- restore before the processor hears of the shard --------------------------------------------------------------


def test_the_state_is_restored_before_initialize_on_another_worker(env: Env) -> None:
    first_seqs = env.put("a", "a", "b")
    first = Counter()
    consumer = env.consumer(S0, first)
    start(consumer)
    assert first.counts_at_initialize == {}
    consumer.step()
    assert env.lease(S0).checkpoint == first_seqs[-1]
    abandon(env, consumer)

    later = env.put("a", "c")
    second = Counter()
    taken_over = env.consumer(S0, second, worker="w2")  # an empty state directory
    start(taken_over)
    assert second.calls == ["initialize"]
    assert second.init is not None
    assert second.init.state is not None
    assert second.init.extended_sequence_number == first_seqs[-1]
    assert second.counts_at_initialize == {"a": 2, "b": 1}
    taken_over.step()
    assert second.delivered == later
    assert counts(second.store) == {"a": 3, "b": 1, "c": 1}
    assert env.committed_counts(S0) == {"a": 3, "b": 1, "c": 1}


# -- what is not committed is discarded --------------------------------------------------------------------------


def test_a_failing_batch_discards_its_changes_and_is_delivered_again(env: Env) -> None:
    seqs = env.put("a", "a", "b")
    processor = Counter(fail_process=2)
    consumer = env.consumer(S0, processor)
    start(consumer)
    consumer.step()
    assert consumer.consecutive_failures == 1
    assert counts(processor.store) == {}  # the failed batch's counting is gone
    env.clock.advance_ms(BACKOFF_MS)
    consumer.step()
    assert consumer.consecutive_failures == 2
    assert counts(processor.store) == {}
    env.clock.advance_ms(BACKOFF_MS)
    consumer.step()
    assert consumer.consecutive_failures == 0
    assert [[r.extended_sequence_number for r in b] for b in processor.batches] == [seqs] * 3
    assert counts(processor.store) == {"a": 2, "b": 1}
    assert env.committed_counts(S0) == {"a": 2, "b": 1}
    assert env.lease(S0).checkpoint == seqs[-1]


def test_a_lost_lease_discards_what_is_pending_before_lease_lost(env: Env) -> None:
    seqs = env.put("a", "b")
    processor = Counter(checkpoint_each_batch=False)
    consumer = env.consumer(S0, processor)
    start(consumer)
    consumer.step()
    assert counts(processor.store) == {"a": 1, "b": 1}  # pending: never checkpointed

    stolen = env.store.take_lease(env.lease(S0), "w2")
    assert stolen is not None
    assert env.renewer("w1").renew_all().lost == (S0,)
    steps(consumer, 2)
    assert consumer.is_complete
    assert consumer.shutdown_reason is ShutdownReason.LEASE_LOST
    assert processor.calls == ["initialize", "process_records", "lease_lost"]
    assert processor.counts_at_lease_lost == {}
    assert env.changelog.head(S0) is None  # nothing was committed

    # The new owner gets the records again and counts each once.
    env.renewer("w2")
    successor = Counter()
    taken = env.consumer(S0, successor, worker="w2")
    steps(taken, 3)
    assert successor.delivered == seqs
    assert env.committed_counts(S0) == {"a": 1, "b": 1}


# -- commits -------------------------------------------------------------------------------------------------------


def test_a_checkpoint_commits_the_changelog_then_the_store_then_the_lease(env: Env) -> None:
    seqs = env.put("a", "b")
    processor = Counter()
    consumer = env.consumer(S0, processor)
    start(consumer)
    seen: list[tuple[str, ExtendedSequenceNumber | None, ExtendedSequenceNumber | None, ExtendedSequenceNumber]] = []

    def observe(stage: str, shard_id: str) -> None:
        assert shard_id == S0
        head = env.changelog.head(S0)
        shard_state = consumer.shard_state
        assert shard_state is not None
        seen.append((stage, None if head is None else head.position, shard_state.position, env.lease(S0).checkpoint))

    set_commit_observer(observe)
    consumer.step()
    last = seqs[-1]
    assert seen == [
        ("after-changelog", last, None, TRIM_HORIZON),
        ("after-store", last, last, TRIM_HORIZON),
    ]
    shard_state = consumer.shard_state
    assert shard_state is not None
    assert env.lease(S0).checkpoint == shard_state.position == last
    assert not shard_state.store.has_pending()


def test_the_commit_interval_commits_and_checkpoints_a_processor_that_never_checkpoints(env: Env) -> None:
    processor = Counter(checkpoint_each_batch=False)
    consumer = env.consumer(S0, processor)
    start(consumer)
    shard_state = consumer.shard_state
    assert shard_state is not None

    env.put("a")
    consumer.step()
    env.clock.advance_ms(COMMIT_INTERVAL_MS - 1)
    env.put("b")
    consumer.step()
    assert shard_state.position is None
    assert env.lease(S0).checkpoint == TRIM_HORIZON
    assert env.changelog.head(S0) is None

    env.clock.advance_ms(1)
    [last] = env.put("c")
    consumer.step()
    assert shard_state.position == last
    assert env.lease(S0).checkpoint == last
    assert env.committed_counts(S0) == {"a": 1, "b": 1, "c": 1}

    # The interval starts again at that commit.
    env.clock.advance_ms(COMMIT_INTERVAL_MS - 1)
    env.put("d")
    consumer.step()
    assert env.lease(S0).checkpoint == last
    env.clock.advance_ms(1)
    [newest] = env.put("e")
    consumer.step()
    assert env.lease(S0).checkpoint == newest
    assert env.committed_counts(S0) == {"a": 1, "b": 1, "c": 1, "d": 1, "e": 1}


# -- the store's position wins -----------------------------------------------------------------------------------


def test_records_the_store_already_holds_are_not_delivered_again(env: Env) -> None:
    seqs = env.put("a", "b", "c")
    # A previous run of this worker committed its store up to b and died before the lease checkpoint.
    earlier = env.open_state(S0)
    earlier.store.put(b"a", b"1")
    earlier.store.put(b"b", b"1")
    earlier.commit(seqs[1])
    earlier.close()
    assert env.lease(S0).checkpoint == TRIM_HORIZON

    processor = Counter()
    consumer = env.consumer(S0, processor)
    start(consumer)
    assert processor.init is not None
    assert processor.init.extended_sequence_number == TRIM_HORIZON
    assert processor.counts_at_initialize == {"a": 1, "b": 1}
    consumer.step()
    assert env.positions == [(S0, StartingPosition.at_sequence(seqs[1].sequence_number))]  # not TRIM_HORIZON
    assert processor.delivered == [seqs[2]]
    assert env.committed_counts(S0) == {"a": 1, "b": 1, "c": 1}
    assert env.lease(S0).checkpoint == seqs[2]


@pytest.fixture
def crash_after_store() -> Iterator[None]:
    """The next commit raises :class:`Crash` after the store commit, before the lease checkpoint (once)."""
    armed = [True]

    def observer(stage: str, shard_id: str) -> None:
        if stage == "after-store" and armed[0]:
            armed[0] = False
            raise Crash(f"{shard_id} dies before its lease checkpoint")

    set_commit_observer(observer)
    try:
        yield
    finally:
        set_commit_observer(None)


@pytest.mark.usefixtures("crash_after_store")
def test_a_lease_checkpoint_failing_after_the_store_commit_does_not_apply_the_batch_twice(env: Env) -> None:
    seqs = env.put("a", "b")
    processor = Counter()
    consumer = env.consumer(S0, processor)
    start(consumer)
    consumer.step()
    assert env.lease(S0).checkpoint == TRIM_HORIZON
    shard_state = consumer.shard_state
    assert shard_state is not None
    assert shard_state.position == seqs[-1]

    # The same consumer retries the batch after the back-off: what the store holds is not delivered again.
    assert not consumer.is_due(env.clock())
    env.clock.advance_ms(BACKOFF_MS)
    assert consumer.is_due(env.clock())
    consumer.step()
    assert state(consumer) is ConsumerState.PROCESSING
    assert processor.delivered == seqs
    assert counts(processor.store) == {"a": 1, "b": 1}
    [newer] = env.put("b")
    consumer.step()
    assert processor.delivered == [*seqs, newer]
    assert env.lease(S0).checkpoint == newer
    assert env.committed_counts(S0) == {"a": 1, "b": 2}


@pytest.mark.usefixtures("crash_after_store")
def test_after_a_crash_between_the_store_commit_and_the_lease_checkpoint_reading_resumes_at_the_store(
    env: Env,
) -> None:
    seqs = env.put("a", "b")
    consumer = env.consumer(S0, Counter())
    start(consumer)
    consumer.step()
    abandon(env, consumer)  # dies: the store is at b, the lease at TRIM_HORIZON
    assert env.lease(S0).checkpoint == TRIM_HORIZON

    [later] = env.put("a")
    env.positions.clear()
    restarted = Counter()
    again = env.consumer(S0, restarted)  # the same state directory
    start(again)
    assert restarted.counts_at_initialize == {"a": 1, "b": 1}
    again.step()
    assert env.positions == [(S0, StartingPosition.at_sequence(seqs[-1].sequence_number))]
    assert restarted.delivered == [later]
    assert env.committed_counts(S0) == {"a": 2, "b": 1}
    assert env.lease(S0).checkpoint == later


# -- shard end -----------------------------------------------------------------------------------------------------


def test_shard_ended_commits_the_store_at_shard_end_and_the_children_start_with_its_state(env: Env) -> None:
    env.put("a", "b", "a")
    env.streams.split_shard(STREAM, S0, 2**127)
    processor = Counter(checkpoint_each_batch=False)
    consumer = env.consumer(S0, processor)
    start(consumer)
    consumer.step()
    assert state(consumer) is ConsumerState.SHUTTING_DOWN
    consumer.step()
    assert consumer.is_complete
    assert consumer.shutdown_reason is ShutdownReason.SHARD_END
    assert processor.calls == ["initialize", "process_records", "shard_ended"]
    assert env.lease(S0).checkpoint == SHARD_END
    head = env.changelog.head(S0)
    assert head is not None
    assert head.position == SHARD_END
    assert env.committed_counts(S0) == {"a": 2, "b": 1}
    finished = env.open_state(S0)
    assert finished.finished
    finished.close()

    # A child of the split starts with the parent's whole state.
    child = Counter()
    child_consumer = env.consumer(S1, child)
    start(child_consumer)
    assert child.counts_at_initialize == {"a": 2, "b": 1}
    assert env.committed_counts(S1) == {"a": 2, "b": 1}  # seeded durably, as the child's commit 1
    assert env.changelog.head(S0) is not None  # the other child has not taken its share yet
    other = Counter()
    start(env.consumer(S2, other, worker="w2"))
    assert other.counts_at_initialize == {"a": 2, "b": 1}
    assert env.changelog.head(S0) is None  # both children have their state: the parent's changelog is gone


def test_a_store_finished_at_shard_end_completes_the_shard_without_the_processor(env: Env) -> None:
    [seq] = env.put("a")
    env.streams.split_shard(STREAM, S0, 2**127)
    earlier = env.open_state(S0)
    earlier.store.put(b"a", b"1")
    earlier.commit(seq)
    earlier.commit(SHARD_END)  # then the worker died before the lease checkpoint
    earlier.close()
    assert env.lease(S0).checkpoint == TRIM_HORIZON

    processor = Counter()
    consumer = env.consumer(S0, processor)
    steps(consumer, 3)
    assert consumer.is_complete
    assert consumer.shutdown_reason is ShutdownReason.SHARD_END
    assert processor.calls == []
    assert env.lease(S0).checkpoint == SHARD_END
    assert env.child_creations == [(S0, (S1, S2))]
    assert env.committed_counts(S0) == {"a": 1}


# -- processors without state ------------------------------------------------------------------------------------


@dataclass
class Plain(BaseRecordProcessor):
    inputs: list[object] = field(default_factory=list)

    def initialize(self, initialization_input: InitializationInput) -> None:
        self.inputs.append(initialization_input)

    def process_records(self, process_records_input: ProcessRecordsInput) -> None:
        self.inputs.append(process_records_input)
        process_records_input.checkpointer.checkpoint()


def test_a_stateless_processor_gets_no_state_and_nothing_is_opened(env: Env) -> None:
    seqs = env.put("a")
    asked: list[str] = []

    def services() -> StateServices:
        asked.append("services")
        return env.services("w1")

    processor = Plain()
    consumer = env.consumer(S0, processor, state=services)
    start(consumer)
    consumer.step()
    assert len(processor.inputs) == 2
    init, batch = processor.inputs
    assert isinstance(init, InitializationInput)
    assert isinstance(batch, ProcessRecordsInput)
    assert init.state is None
    assert batch.state is None
    assert [r.extended_sequence_number for r in batch.records] == seqs
    assert asked == []
    assert consumer.shard_state is None
    assert not (env.tmp_path / "w1").exists()
    assert env.lease(S0).checkpoint == seqs[-1]
    assert env.changelog.shard_ids() == []


class KclpyShaped:
    """An amazon-kclpy-shaped processor (no shardwise base class) that opts in to a store."""

    shardwise_stateful = True

    def __init__(self) -> None:
        self.stores: list[StateStore | None] = []

    def initialize(self, initialization_input: InitializationInput) -> None:
        self.stores.append(initialization_input.state)

    def process_records(self, process_records_input: ProcessRecordsInput) -> None:
        store = process_records_input.state
        self.stores.append(store)
        assert store is not None
        for record in process_records_input.records:
            store.put(record.partition_key.encode(), b"seen")
        process_records_input.checkpointer.checkpoint()

    def lease_lost(self, lease_lost_input: LeaseLostInput) -> None:
        return None

    def shard_ended(self, shard_ended_input: ShardEndedInput) -> None:
        shard_ended_input.checkpointer.checkpoint()

    def shutdown_requested(self, shutdown_requested_input: ShutdownRequestedInput) -> None:
        shutdown_requested_input.checkpointer.checkpoint()


def test_a_kclpy_shaped_processor_that_opts_in_gets_the_store(env: Env) -> None:
    env.put("a")
    processor = KclpyShaped()
    consumer = env.consumer(S0, processor)
    start(consumer)
    consumer.step()
    assert len(processor.stores) == 2
    assert all(store is not None for store in processor.stores)
    plan = env.changelog.plan_restore(S0, lineage=None, after_commit=None)
    assert plan is not None
    assert dict(plan.changes) == {b"a": b"seen"}


# -- the same shard again on the same worker ----------------------------------------------------------------------


def test_a_new_acquisition_waits_until_the_lost_one_has_closed_the_store(env: Env) -> None:
    first_seqs = env.put("a")
    old_processor = Counter()
    old = env.consumer(S0, old_processor)
    start(old)
    old.step()
    old_processor.checkpoint_each_batch = False
    env.put("b")
    old.step()  # counted, pending
    # The lease is lost here (not renewed in time) and taken again by this worker before the old consumer ran.
    env.renewer("w1").drop(S0)
    new_processor = Counter()
    new = env.consumer(S0, new_processor)

    new.step()
    new.step()  # initialize: the store is still open by the old consumer
    assert state(new) is ConsumerState.INITIALIZING
    assert new.consecutive_failures == 1
    assert new_processor.calls == []

    steps(old, 2)
    assert old.is_complete
    assert old_processor.calls[-1] == "lease_lost"
    env.clock.advance_ms(CONFIG.task_backoff_time_ms * 4)
    new.step()
    assert state(new) is ConsumerState.PROCESSING
    assert new_processor.counts_at_initialize == {"a": 1}  # the old consumer's pending count of b is gone
    new.step()
    assert [r.data for r in new_processor.batches[0]] == [b"b"]
    assert env.committed_counts(S0) == {"a": 1, "b": 1}
    assert env.lease(S0).checkpoint > first_seqs[0]


def test_a_requested_shutdown_commits_what_the_processor_checkpoints_and_closes_the_store(env: Env) -> None:
    seqs = env.put("a", "b")
    processor = Counter(checkpoint_each_batch=False)
    consumer = env.consumer(S0, processor)
    start(consumer)
    consumer.step()
    shard_state = consumer.shard_state
    assert shard_state is not None
    assert shard_state.position is None

    consumer.request_shutdown()
    steps(consumer, 3)
    assert consumer.is_complete
    assert consumer.shutdown_reason is ShutdownReason.REQUESTED
    assert env.committed_counts(S0) == {"a": 1, "b": 1}  # shutdown_requested's checkpoint committed
    lease = env.lease(S0)
    assert lease.checkpoint == seqs[-1]
    assert lease.lease_owner is None
    reopened = env.open_state(S0)  # closed by the consumer: not refused as still open
    assert reopened.position == seqs[-1]
    reopened.close()


# -- the commit interval after an empty read, compaction after a checkpoint ---------------------------------------


def test_the_commit_interval_also_commits_after_an_empty_read(env: Env) -> None:
    processor = Counter(checkpoint_each_batch=False)
    consumer = env.consumer(S0, processor)
    start(consumer)
    [seq] = env.put("a")
    consumer.step()
    assert env.changelog.head(S0) is None
    env.clock.advance_ms(COMMIT_INTERVAL_MS)
    consumer.step()  # nothing new to read
    assert processor.delivered == [seq]
    assert env.lease(S0).checkpoint == seq
    assert env.committed_counts(S0) == {"a": 1}


def test_the_changelog_is_compacted_after_the_16th_checkpoint(env: Env) -> None:
    processor = Counter()
    consumer = env.consumer(S0, processor)
    start(consumer)
    for batch in range(16):
        env.put(*(f"key-{batch}-{i}" for i in range(8)))  # 8 new keys a batch: 120 changes after 15 commits
        consumer.step()
        if batch == 14:
            assert env.changelog.needs_compaction(S0)
    assert not env.changelog.needs_compaction(S0)
    assert len(env.committed_counts(S0)) == 128


@dataclass
class PerRecordCounter(Counter):
    """Counts a record, then checkpoints at it — the KCL habit of a checkpoint per record."""

    def process_records(self, process_records_input: ProcessRecordsInput) -> None:
        store = process_records_input.state
        assert store is not None
        self.store = store
        records = list(process_records_input.records)
        self.batches.append(records)
        for record in records:
            key = record.partition_key.encode()
            store.put(key, str(int(store.get(key) or b"0") + 1).encode())
            process_records_input.checkpointer.checkpoint(record)


def test_a_checkpoint_per_record_commits_the_state_as_of_that_record(env: Env) -> None:
    """Each checkpoint(record) commits the state holding exactly the records up to it: a crash after the second
    record's commit, mid-batch, leaves the third to the next owner, which applies it once."""
    seqs = env.put("a", "b", "a")
    commits: list[str] = []

    def observer(stage: str, shard_id: str) -> None:
        if stage == "after-store":
            commits.append(shard_id)
            if len(commits) == 2:
                raise Crash("dies after the second record's store commit")

    set_commit_observer(observer)
    consumer = env.consumer(S0, PerRecordCounter())
    start(consumer)
    consumer.step()  # a committed, then b committed to the store and the worker dies before the lease write
    abandon(env, consumer)
    set_commit_observer(None)
    assert env.committed_counts(S0) == {"a": 1, "b": 1}
    assert env.lease(S0).checkpoint == seqs[0]

    successor = PerRecordCounter()
    again = env.consumer(S0, successor, worker="w2")  # an empty state directory: restored from the changelog
    start(again)
    again.step()
    assert successor.delivered == [seqs[2]]
    assert env.committed_counts(S0) == {"a": 2, "b": 1}
    assert env.lease(S0).checkpoint == seqs[2]
