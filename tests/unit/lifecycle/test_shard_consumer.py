"""ShardConsumer driven step by step: a real local stream, SQLite leases and renewer, a fake clock, and a
recording processor."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from shardwise.backends.sqlite.leases import SQLiteLeaseStore
from shardwise.backends.sqlite.stream import LocalStreamStore, shard_id_for_index
from shardwise.checkpoint.sequence import (
    AT_TIMESTAMP,
    LATEST,
    SHARD_END,
    TRIM_HORIZON,
    ExtendedSequenceNumber,
)
from shardwise.errors import ConfigurationError
from shardwise.leases.model import Lease
from shardwise.leasing.renewer import LeaseRenewer
from shardwise.leasing.shard_sync import InitialPosition, ShardSyncer
from shardwise.lifecycle.consumer import ConsumerConfig, ShardConsumer, starting_position
from shardwise.lifecycle.states import ConsumerState, ShutdownReason
from shardwise.processor import (
    BaseRecordProcessor,
    InitializationInput,
    LeaseLostInput,
    ProcessRecordsInput,
    RecordProcessor,
    ShardEndedInput,
    ShutdownRequestedInput,
)
from shardwise.retrieval.kpl import aggregate
from shardwise.retrieval.model import (
    ChildShard,
    IteratorType,
    Record,
    Shard,
    StartingPosition,
)
from support.consumers import MillisClock, RecordingSource, start, state, steps

STREAM = "orders"
S0, S1, S2 = (shard_id_for_index(i) for i in range(3))
CONFIG = ConsumerConfig(
    max_records=100,
    idle_time_between_reads_ms=0,
    parent_shard_poll_interval_ms=50,
    task_backoff_time_ms=100,
)
TS = datetime(2026, 1, 1, tzinfo=timezone.utc)


@dataclass
class Recorder(BaseRecordProcessor):
    """Records every call. Behaviour knobs:

    * ``fail_process``: the next N ``process_records`` calls raise after recording;
    * ``checkpoint_each_batch``: checkpoint() after each batch;
    * ``checkpoint_at``: picks the record to checkpoint at in a batch (or None);
    * ``skip_shard_end_checkpoints``: the first N ``shard_ended`` calls return without checkpointing;
    * ``on_shard_ended``: called (before checkpointing) with the input.
    """

    calls: list[str] = field(default_factory=list)
    init: InitializationInput | None = None
    batches: list[list[Record]] = field(default_factory=list)
    fail_process: int = 0
    checkpoint_each_batch: bool = False
    checkpoint_at: Callable[[list[Record]], Record | None] | None = None
    skip_shard_end_checkpoints: int = 0
    on_shard_ended: Callable[[ShardEndedInput], None] | None = None
    checkpoint_errors: list[Exception] = field(default_factory=list)

    def initialize(self, initialization_input: InitializationInput) -> None:
        self.calls.append("initialize")
        self.init = initialization_input

    def process_records(self, process_records_input: ProcessRecordsInput) -> None:
        self.calls.append("process_records")
        records = list(process_records_input.records)
        self.batches.append(records)
        if self.fail_process:
            self.fail_process -= 1
            raise RuntimeError("processor bug")
        if self.checkpoint_at is not None:
            target = self.checkpoint_at(records)
            if target is not None:
                process_records_input.checkpointer.checkpoint(target)
        if self.checkpoint_each_batch:
            process_records_input.checkpointer.checkpoint()

    def lease_lost(self, lease_lost_input: LeaseLostInput) -> None:
        self.calls.append("lease_lost")

    def shard_ended(self, shard_ended_input: ShardEndedInput) -> None:
        self.calls.append("shard_ended")
        if self.on_shard_ended is not None:
            self.on_shard_ended(shard_ended_input)
        if self.skip_shard_end_checkpoints:
            self.skip_shard_end_checkpoints -= 1
            return
        shard_ended_input.checkpointer.checkpoint()

    def shutdown_requested(self, shutdown_requested_input: ShutdownRequestedInput) -> None:
        self.calls.append("shutdown_requested")
        shutdown_requested_input.checkpointer.checkpoint()

    @property
    def delivered(self) -> list[ExtendedSequenceNumber]:
        return [r.extended_sequence_number for batch in self.batches for r in batch]


@dataclass
class Env:
    tmp_path: Path
    clock: MillisClock
    streams: LocalStreamStore
    store: SQLiteLeaseStore
    source: RecordingSource
    syncer: ShardSyncer
    renewers: dict[str, LeaseRenewer] = field(default_factory=dict)
    child_creations: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)

    def renewer(self, worker: str) -> LeaseRenewer:
        if worker not in self.renewers:
            self.renewers[worker] = LeaseRenewer(self.store, worker, failover_time_ms=10_000, clock_ns=self.clock)
        return self.renewers[worker]

    def lease(self, key: str) -> Lease:
        lease = self.store.get_lease(key)
        assert lease is not None, key
        return lease

    def put(self, *payloads: bytes, pk: str = "pk") -> list[str]:
        return [r.sequence_number for r in self.streams.put_records(STREAM, [(p, pk) for p in payloads])]

    def create_children(self, parent: Lease, children: Sequence[ChildShard]) -> None:
        self.child_creations.append((parent.lease_key, tuple(c.shard_id for c in children)))
        self.syncer.create_child_leases(parent, children)

    def consumer(
        self,
        key: str,
        processor: RecordProcessor,
        *,
        worker: str = "w1",
        config: ConsumerConfig = CONFIG,
    ) -> ShardConsumer:
        taken = self.store.take_lease(self.lease(key), worker)
        assert taken is not None
        renewer = self.renewer(worker)
        token = renewer.add_leases([taken])[key]
        return ShardConsumer(
            lease=taken,
            token=token,
            processor=processor,
            source=self.source,
            store=self.store,
            renewer=renewer,
            create_child_leases=self.create_children,
            config=config,
            clock_ns=self.clock,
        )


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    db = tmp_path / "shardwise.db"
    streams = LocalStreamStore(db)
    streams.create_stream(STREAM, 1)
    store = SQLiteLeaseStore(db, "app")
    store.create_table_if_not_exists()
    source = RecordingSource(streams.stream(STREAM))
    syncer = ShardSyncer(store, source, InitialPosition.trim_horizon())
    syncer.sync()
    yield Env(tmp_path, MillisClock(), streams, store, source, syncer)
    store.close()
    streams.close()


def esns(*seqs: str) -> list[ExtendedSequenceNumber]:
    return [ExtendedSequenceNumber(s) for s in seqs]


# -- initialization ----------------------------------------------------------------------------------------------


def test_initialize_carries_the_checkpoint_and_the_pending_checkpoint(env: Env) -> None:
    seqs = env.put(b"a", b"b", b"c")
    renewer = env.renewer("w0")
    taken = env.store.take_lease(env.lease(S0), "w0")
    assert taken is not None
    token = renewer.add_leases([taken])[S0]
    renewer.write_checkpoint(S0, token, ExtendedSequenceNumber(seqs[0]), pending=None, pending_state=None)
    renewer.write_checkpoint(
        S0,
        token,
        ExtendedSequenceNumber(seqs[0]),
        pending=ExtendedSequenceNumber(seqs[1]),
        pending_state=b"app-state",
    )
    renewer.drop(S0)

    processor = Recorder()
    consumer = env.consumer(S0, processor)
    assert state(consumer) is ConsumerState.WAITING_ON_PARENT_SHARDS
    consumer.step()
    assert state(consumer) is ConsumerState.INITIALIZING
    assert processor.calls == []
    consumer.step()
    assert state(consumer) is ConsumerState.PROCESSING
    assert processor.init == InitializationInput(
        shard_id=S0,
        extended_sequence_number=ExtendedSequenceNumber(seqs[0]),
        pending_checkpoint_sequence_number=ExtendedSequenceNumber(seqs[1]),
        pending_checkpoint_state=b"app-state",
    )
    consumer.step()
    # Records after the checkpoint (not after the pending one) are delivered.
    assert processor.delivered == esns(seqs[1], seqs[2])
    assert consumer.checkpointer.pending_checkpoint == ExtendedSequenceNumber(seqs[1])


def test_initialize_of_a_new_lease_starts_at_its_sentinel(env: Env) -> None:
    seqs = env.put(b"a", b"b")
    processor = Recorder()
    consumer = env.consumer(S0, processor)
    start(consumer)
    assert processor.init is not None
    assert processor.init.extended_sequence_number == TRIM_HORIZON
    assert processor.init.pending_checkpoint_sequence_number is None
    assert processor.init.pending_checkpoint_state is None
    consumer.step()
    assert env.source.positions == [(S0, StartingPosition.trim_horizon())]
    assert processor.delivered == esns(*seqs)


# -- parents -------------------------------------------------------------------------------------------------------


@pytest.fixture
def merged_env(tmp_path: Path) -> Iterator[Env]:
    """Two shards S0, S1 (with leases) merged into S2, whose lease names both as parents."""
    db = tmp_path / "merge.db"
    streams = LocalStreamStore(db)
    streams.create_stream(STREAM, 2)
    store = SQLiteLeaseStore(db, "app")
    store.create_table_if_not_exists()
    source = RecordingSource(streams.stream(STREAM))
    syncer = ShardSyncer(store, source, InitialPosition.trim_horizon())
    assert {lease.lease_key for lease in syncer.sync()} == {S0, S1}
    child = streams.merge_shards(STREAM, S0, S1)
    assert child.shard_id == S2
    lease = Lease(S2, TRIM_HORIZON, parent_shard_ids=frozenset({S0, S1}), hash_key_range=child.hash_key_range)
    assert store.create_lease_if_not_exists(lease) is not None
    yield Env(tmp_path, MillisClock(), streams, store, source, syncer)
    store.close()
    streams.close()


def test_waits_until_every_parent_is_at_shard_end_or_gone(merged_env: Env) -> None:
    env = merged_env
    seqs = env.put(b"child-record")
    processor = Recorder()
    consumer = env.consumer(S2, processor)

    consumer.step()
    assert state(consumer) is ConsumerState.WAITING_ON_PARENT_SHARDS
    assert not consumer.is_due(env.clock())
    env.clock.advance_ms(49)
    assert not consumer.is_due(env.clock())
    env.clock.advance_ms(1)
    assert consumer.is_due(env.clock())

    # One parent finished: still waiting for the other.
    finished = env.store.update_lease(env.lease(S0).with_changes(checkpoint=SHARD_END))
    assert finished is not None
    consumer.step()
    assert state(consumer) is ConsumerState.WAITING_ON_PARENT_SHARDS
    assert not consumer.is_due(env.clock())

    # The other parent's lease is gone (cleaned up): go on.
    env.store.delete_lease(S1)
    env.clock.advance_ms(50)
    consumer.step()
    assert state(consumer) is ConsumerState.INITIALIZING
    assert processor.calls == []
    consumer.step()
    consumer.step()
    assert processor.calls == ["initialize", "process_records"]
    assert processor.delivered == esns(*seqs)


def test_a_parent_with_a_real_checkpoint_is_not_finished(merged_env: Env) -> None:
    env = merged_env
    env.store.delete_lease(S1)
    assert env.store.update_lease(env.lease(S0).with_changes(checkpoint=ExtendedSequenceNumber("12345")))
    consumer = env.consumer(S2, Recorder())
    steps(consumer, 3)
    assert state(consumer) is ConsumerState.WAITING_ON_PARENT_SHARDS


# -- restart at a checkpoint -------------------------------------------------------------------------------------


def test_restart_resumes_at_the_checkpoint_and_skips_checkpointed_kpl_sub_records(env: Env) -> None:
    [first] = env.put(b"plain-before")
    sub_entries: list[tuple[bytes, str, str | None]] = [(f"sub{i}".encode(), f"pk{i}", None) for i in range(4)]
    agg_seq = env.streams.put_record(STREAM, aggregate(sub_entries), "agg").sequence_number
    [last] = env.put(b"plain-after")

    def at_sub_record_1(records: list[Record]) -> Record | None:
        return next(r for r in records if r.sequence_number == agg_seq and r.sub_sequence_number == 1)

    first_processor = Recorder(checkpoint_at=at_sub_record_1)
    first_consumer = env.consumer(S0, first_processor, worker="w1")
    start(first_consumer)
    first_consumer.step()
    assert first_processor.delivered == [
        ExtendedSequenceNumber(first),
        *(ExtendedSequenceNumber(agg_seq, i) for i in range(4)),
        ExtendedSequenceNumber(last),
    ]
    assert all(r.aggregated for r in first_processor.batches[0][1:5])
    assert env.lease(S0).checkpoint == ExtendedSequenceNumber(agg_seq, 1)

    # The worker dies without checkpointing again; another worker takes the lease.
    env.renewer("w1").drop(S0)
    env.source.positions.clear()
    second_processor = Recorder()
    second = env.consumer(S0, second_processor, worker="w2")
    start(second)
    assert second_processor.init is not None
    assert second_processor.init.extended_sequence_number == ExtendedSequenceNumber(agg_seq, 1)
    second.step()
    assert env.source.positions == [(S0, StartingPosition(IteratorType.AT_SEQUENCE_NUMBER, agg_seq))]
    assert second_processor.delivered == [
        ExtendedSequenceNumber(agg_seq, 2),
        ExtendedSequenceNumber(agg_seq, 3),
        ExtendedSequenceNumber(last),
    ]
    assert [r.data for r in second_processor.batches[0]] == [b"sub2", b"sub3", b"plain-after"]
    # A later batch is not filtered by mistake.
    [later] = env.put(b"later")
    second.step()
    assert second_processor.batches[-1][0].sequence_number == later


def test_restart_at_a_plain_record_checkpoint_skips_that_record(env: Env) -> None:
    seqs = env.put(b"a", b"b", b"c")
    first_processor = Recorder(checkpoint_at=lambda records: records[1])
    first = env.consumer(S0, first_processor)
    start(first)
    first.step()
    assert env.lease(S0).checkpoint == ExtendedSequenceNumber(seqs[1])
    env.renewer("w1").drop(S0)
    second_processor = Recorder()
    second = env.consumer(S0, second_processor, worker="w2")
    steps(second, 3)
    assert second_processor.delivered == esns(seqs[2])


# -- a failing processor ----------------------------------------------------------------------------------------


def test_a_failing_batch_is_delivered_again_after_the_backoff(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    seqs = env.put(b"a", b"b", b"c")
    processor = Recorder(fail_process=2, checkpoint_each_batch=True)
    consumer = env.consumer(S0, processor)
    start(consumer)
    with caplog.at_level(logging.ERROR, logger="shardwise.lifecycle.consumer"):
        consumer.step()
    assert processor.delivered == esns(*seqs)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "process_records raised" in errors[0].getMessage()
    assert S0 in errors[0].getMessage()
    assert errors[0].exc_info is not None
    assert "processor bug" in caplog.text
    assert state(consumer) is ConsumerState.PROCESSING

    # Not due again before the backoff.
    assert not consumer.is_due(env.clock())
    env.clock.advance_ms(99)
    assert not consumer.is_due(env.clock())
    env.clock.advance_ms(1)
    assert consumer.is_due(env.clock())

    assert consumer.consecutive_failures == 1
    more = env.put(b"d")  # arrives meanwhile: must not be mixed into the retried batch
    consumer.step()  # fails again
    assert consumer.consecutive_failures == 2
    env.clock.advance_ms(100)
    consumer.step()  # succeeds
    assert consumer.consecutive_failures == 0
    assert [esns(*seqs)] * 3 == [[r.extended_sequence_number for r in b] for b in processor.batches]
    assert env.lease(S0).checkpoint == ExtendedSequenceNumber(seqs[-1])
    consumer.step()
    assert processor.batches[-1][0].sequence_number == more[0]
    assert processor.delivered[-1] == ExtendedSequenceNumber(more[0])
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 2


# -- shard end -----------------------------------------------------------------------------------------------------


def split(env: Env) -> tuple[Shard, Shard]:
    return env.streams.split_shard(STREAM, S0, 2**127)


def test_shard_end_creates_children_first_and_retries_until_the_processor_checkpoints(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    seqs = env.put(b"a", b"b")
    children = split(env)
    seen_children: list[set[str]] = []

    def look_at_children(_input: ShardEndedInput) -> None:
        seen_children.append({lease.lease_key for lease in env.store.list_leases()} - {S0})

    processor = Recorder(skip_shard_end_checkpoints=1, on_shard_ended=look_at_children)
    consumer = env.consumer(S0, processor)
    start(consumer)
    consumer.step()
    assert processor.delivered == esns(*seqs)
    assert state(consumer) is ConsumerState.SHUTTING_DOWN
    assert consumer.shutdown_reason is ShutdownReason.SHARD_END
    assert consumer.checkpointer.largest_permitted == SHARD_END

    with caplog.at_level(logging.ERROR, logger="shardwise.lifecycle.consumer"):
        consumer.step()
    assert processor.calls[-1] == "shard_ended"
    assert seen_children == [{S1, S2}]  # the children existed before shard_ended was called
    assert env.child_creations == [(S0, (S1, S2))]
    assert f"Application didn't checkpoint at end of shard {S0}" in caplog.text
    assert state(consumer) is ConsumerState.SHUTTING_DOWN
    assert not env.lease(S0).is_complete
    assert env.renewer("w1").get(S0) is not None  # still held: the shard end is retried
    assert not consumer.is_due(env.clock())
    env.clock.advance_ms(100)
    assert consumer.is_due(env.clock())

    consumer.step()
    assert processor.calls.count("shard_ended") == 2
    assert consumer.is_complete
    assert consumer.shutdown_reason is ShutdownReason.SHARD_END
    parent = env.lease(S0)
    assert parent.checkpoint == SHARD_END
    assert parent.child_shard_ids == {S1, S2}
    for child in children:
        lease = env.lease(child.shard_id)
        assert lease.checkpoint == TRIM_HORIZON
        assert lease.parent_shard_ids == {S0}
        assert lease.hash_key_range == child.hash_key_range
    assert env.renewer("w1").get(S0) is None
    assert processor.calls == ["initialize", "process_records", "shard_ended", "shard_ended"]
    steps(consumer, 2)  # a finished consumer does nothing
    assert processor.calls.count("shard_ended") == 2


def test_a_lease_taken_at_shard_end_completes_without_calling_the_processor(env: Env) -> None:
    env.put(b"a")
    split(env)
    renewer = env.renewer("w0")
    taken = env.store.take_lease(env.lease(S0), "w0")
    assert taken is not None
    token = renewer.add_leases([taken])[S0]
    renewer.write_checkpoint(S0, token, SHARD_END, pending=None, pending_state=None)
    renewer.drop(S0)

    processor = Recorder()
    consumer = env.consumer(S0, processor)
    steps(consumer, 3)
    assert consumer.is_complete
    assert consumer.shutdown_reason is ShutdownReason.SHARD_END
    assert processor.calls == []
    # The previous owner may have died between its checkpoint and the child leases: they are made sure of.
    assert env.child_creations == [(S0, (S1, S2))]
    assert {S1, S2} <= {lease.lease_key for lease in env.store.list_leases()}
    assert env.renewer("w1").get(S0) is None


# -- lease loss and shutdown ---------------------------------------------------------------------------------


def test_lease_taken_by_another_worker_calls_lease_lost_and_stops_processing(env: Env) -> None:
    env.put(b"a")
    processor = Recorder(checkpoint_each_batch=True)
    consumer = env.consumer(S0, processor)
    start(consumer)
    consumer.step()
    assert processor.calls == ["initialize", "process_records"]

    stolen = env.store.take_lease(env.lease(S0), "w2")
    assert stolen is not None
    assert env.renewer("w1").renew_all().lost == (S0,)
    env.put(b"b")
    steps(consumer, 3)
    assert consumer.is_complete
    assert consumer.shutdown_reason is ShutdownReason.LEASE_LOST
    assert processor.calls == ["initialize", "process_records", "lease_lost"]
    assert env.lease(S0).lease_owner == "w2"


def test_a_checkpoint_failing_with_lease_lost_ends_the_consumer(env: Env) -> None:
    env.put(b"a")
    processor = Recorder(checkpoint_each_batch=True)
    consumer = env.consumer(S0, processor)
    start(consumer)
    consumer.step()
    # Taken by another worker; this worker's renewer has not noticed yet.
    stolen = env.store.take_lease(env.lease(S0), "w2")
    assert stolen is not None
    env.put(b"b")
    consumer.step()  # process_records → checkpoint → LeaseLostError
    assert state(consumer) is ConsumerState.SHUTTING_DOWN
    consumer.step()
    assert consumer.is_complete
    assert consumer.shutdown_reason is ShutdownReason.LEASE_LOST
    assert processor.calls == ["initialize", "process_records", "process_records", "lease_lost"]
    assert env.lease(S0) == stolen


def test_request_shutdown_notifies_the_processor_then_releases_the_lease(env: Env) -> None:
    seqs = env.put(b"a", b"b")
    processor = Recorder()
    consumer = env.consumer(S0, processor)
    start(consumer)
    consumer.step()
    assert env.lease(S0).checkpoint == TRIM_HORIZON  # the processor did not checkpoint while processing

    consumer.request_shutdown()
    assert consumer.is_due(env.clock())
    consumer.step()
    assert processor.calls[-1] == "shutdown_requested"
    lease = env.lease(S0)
    assert lease.checkpoint == ExtendedSequenceNumber(seqs[-1])  # its checkpointer worked
    assert lease.lease_owner == "w1"
    steps(consumer, 2)
    assert consumer.is_complete
    assert consumer.shutdown_reason is ShutdownReason.REQUESTED
    lease = env.lease(S0)
    assert lease.lease_owner is None
    assert lease.checkpoint == ExtendedSequenceNumber(seqs[-1])
    assert env.renewer("w1").get(S0) is None
    assert processor.calls == ["initialize", "process_records", "shutdown_requested"]


def test_request_shutdown_before_initialization_releases_without_calling_the_processor(env: Env) -> None:
    processor = Recorder()
    consumer = env.consumer(S0, processor)
    consumer.request_shutdown()
    consumer.step()
    assert consumer.is_complete
    assert processor.calls == []
    assert env.lease(S0).lease_owner is None


# -- starting_position ---------------------------------------------------------------------------------------


def test_starting_position_for_every_checkpoint() -> None:
    assert starting_position(TRIM_HORIZON, None) == StartingPosition.trim_horizon()
    assert starting_position(LATEST, None) == StartingPosition.latest()
    assert starting_position(AT_TIMESTAMP, TS) == StartingPosition.at_timestamp(TS)
    assert starting_position(ExtendedSequenceNumber("0042", 7), None) == StartingPosition.at_sequence("0042")
    with pytest.raises(ValueError, match="SHARD_END"):
        starting_position(SHARD_END, None)


def test_starting_position_at_timestamp_without_a_timestamp_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="initial timestamp"):
        starting_position(AT_TIMESTAMP, None)


@pytest.mark.parametrize(
    "changes",
    [
        {"max_records": 0},
        {"max_records": 10_001},
        {"idle_time_between_reads_ms": -1},
        {"parent_shard_poll_interval_ms": 0},
        {"task_backoff_time_ms": 0},
    ],
)
def test_consumer_config_rejects_bad_values(changes: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        ConsumerConfig(**changes)


def test_a_shutdown_during_the_backoff_does_not_checkpoint_the_failed_batch(env: Env) -> None:
    ok = env.put(b"a")
    processor = Recorder(checkpoint_each_batch=True)
    consumer = env.consumer(S0, processor)
    start(consumer)
    consumer.step()
    assert env.lease(S0).checkpoint == ExtendedSequenceNumber(ok[0])
    failed = env.put(b"b", b"c")
    processor.fail_process = 1
    consumer.step()
    assert consumer.consecutive_failures == 1
    # SIGTERM before the retry: the processor checkpoints "everything delivered" in shutdown_requested.
    consumer.request_shutdown()
    steps(consumer, 2)
    assert consumer.is_complete
    assert env.lease(S0).checkpoint == ExtendedSequenceNumber(ok[0])  # not past the batch that failed
    # The next owner gets the failed batch again.
    processor2 = Recorder()
    steps(env.consumer(S0, processor2, worker="w2"), 3)
    assert processor2.delivered == esns(*failed)


def test_shutdown_reason_is_set_when_leaving_before_initialization(env: Env) -> None:
    consumer = env.consumer(S0, Recorder())
    consumer.request_shutdown()
    consumer.step()
    assert consumer.is_complete
    assert consumer.shutdown_reason is ShutdownReason.REQUESTED

    lost = env.consumer(S0, Recorder())
    env.renewer("w1").drop(S0)
    lost.step()
    assert lost.is_complete
    assert lost.shutdown_reason is ShutdownReason.LEASE_LOST


def test_a_lost_consumer_does_not_drop_a_newer_acquisition_of_its_lease(env: Env) -> None:
    env.put(b"a")
    old_processor = Recorder()
    old = env.consumer(S0, old_processor)
    start(old)
    old.step()
    renewer = env.renewer("w1")
    # The lease is lost (e.g. not renewed in time) and this worker takes it again before the old consumer ran.
    renewer.drop(S0)
    new_processor = Recorder()
    new = env.consumer(S0, new_processor)
    assert new.token != old.token
    steps(old, 2)
    assert old.is_complete
    assert old.shutdown_reason is ShutdownReason.LEASE_LOST
    assert old_processor.calls[-1] == "lease_lost"
    assert renewer.holds(S0, new.token)  # the new acquisition is untouched
    start(new)
    new.step()
    assert new_processor.calls == ["initialize", "process_records"]
    assert renewer.renew_all().renewed == (S0,)


def test_a_batch_checkpointed_in_part_before_failing_is_delivered_again_in_full(env: Env) -> None:
    seqs = env.put(b"a", b"b", b"c")

    class CheckpointsFirstThenFailsOnce(Recorder):
        def process_records(self, process_records_input: ProcessRecordsInput) -> None:
            super().process_records(process_records_input)
            if len(self.batches) == 1:
                process_records_input.checkpointer.checkpoint(process_records_input.records[0])
                raise RuntimeError("failed after the first record")
            process_records_input.checkpointer.checkpoint()

    processor = CheckpointsFirstThenFailsOnce()
    consumer = env.consumer(S0, processor)
    start(consumer)
    consumer.step()
    assert env.lease(S0).checkpoint == ExtendedSequenceNumber(seqs[0])
    assert consumer.checkpointer.largest_permitted == ExtendedSequenceNumber(seqs[0])
    env.clock.advance_ms(100)
    consumer.step()
    assert [r.sequence_number for r in processor.batches[-1]] == seqs
    assert env.lease(S0).checkpoint == ExtendedSequenceNumber(seqs[-1])
