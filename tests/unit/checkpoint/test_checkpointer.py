"""Checkpointer: KCL's checkpointing rules, over a recording writer and over a real renewer + SQLite lease store."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pytest

from shardwise.backends.sqlite.leases import SQLiteLeaseStore
from shardwise.checkpoint.checkpointer import Checkpointer
from shardwise.checkpoint.sequence import SHARD_END, TRIM_HORIZON, ExtendedSequenceNumber
from shardwise.errors import CheckpointError, InvalidCheckpointError, LeaseLostError
from shardwise.leases.model import Lease
from shardwise.leasing.renewer import LeaseRenewer
from shardwise.retrieval.model import Record

KEY = "shardId-000000000000"
ACQUISITION = "acquisition-1"
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def esn(seq: int, sub: int = 0) -> ExtendedSequenceNumber:
    return ExtendedSequenceNumber(str(seq), sub)


@dataclass(frozen=True)
class Write:
    lease_key: str
    token: str
    checkpoint: ExtendedSequenceNumber
    pending: ExtendedSequenceNumber | None
    pending_state: bytes | None


@dataclass
class RecordingWriter:
    writes: list[Write] = field(default_factory=list)

    def write_checkpoint(
        self,
        lease_key: str,
        token: str,
        checkpoint: ExtendedSequenceNumber,
        *,
        pending: ExtendedSequenceNumber | None,
        pending_state: bytes | None,
    ) -> None:
        self.writes.append(Write(lease_key, token, checkpoint, pending, pending_state))


@pytest.fixture
def writer() -> RecordingWriter:
    return RecordingWriter()


def make(writer: RecordingWriter, last: ExtendedSequenceNumber = TRIM_HORIZON) -> Checkpointer:
    return Checkpointer(KEY, ACQUISITION, writer, last_checkpoint=last)


# -- with a recording writer -------------------------------------------------------------------------------------


def test_checkpoint_without_arguments_writes_the_largest_delivered(writer: RecordingWriter) -> None:
    cp = make(writer)
    cp.advance(esn(100))
    cp.advance(esn(105))
    cp.advance(esn(103))  # advance never goes backwards
    assert cp.largest_permitted == esn(105)
    cp.checkpoint()
    assert writer.writes == [Write(KEY, ACQUISITION, esn(105), None, None)]
    assert cp.last_checkpoint == esn(105)
    assert cp.pending_checkpoint is None


def test_checkpoint_at_an_explicit_sequence_and_sub_sequence_number(writer: RecordingWriter) -> None:
    cp = make(writer)
    cp.advance(esn(105, 3))
    cp.checkpoint("103")
    cp.checkpoint("105", 2)
    cp.checkpoint("105", 3)
    assert [w.checkpoint for w in writer.writes] == [esn(103), esn(105, 2), esn(105, 3)]
    assert cp.last_checkpoint == esn(105, 3)


def test_sequence_numbers_compare_as_integers_not_text(writer: RecordingWriter) -> None:
    cp = make(writer, last=esn(9))
    cp.advance(esn(10))
    cp.checkpoint("10")  # "10" < "9" as text, but 10 > 9
    assert writer.writes[-1].checkpoint == esn(10)


def test_checkpoint_at_a_record_uses_its_sub_sequence_number(writer: RecordingWriter) -> None:
    cp = make(writer)
    subs = [Record(b"x", "pk", "200", T0, sub_sequence_number=i, aggregated=True) for i in range(3)]
    cp.advance(subs[-1].extended_sequence_number)
    cp.checkpoint(subs[1])
    assert writer.writes == [Write(KEY, ACQUISITION, esn(200, 1), None, None)]
    cp.checkpoint(subs[2])
    assert writer.writes[-1].checkpoint == esn(200, 2)


def test_a_record_and_a_sub_sequence_number_together_are_rejected(writer: RecordingWriter) -> None:
    cp = make(writer)
    record = Record(b"x", "pk", "200", T0, sub_sequence_number=1, aggregated=True)
    cp.advance(record.extended_sequence_number)
    with pytest.raises(InvalidCheckpointError):
        cp.checkpoint(record, 1)
    assert writer.writes == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(("100",), "acceptable range", id="behind-last-checkpoint"),
        pytest.param(("110", 0), "acceptable range", id="sub-behind-last-checkpoint"),
        pytest.param(("120", 1), "acceptable range", id="sub-beyond-largest"),
        pytest.param(("121",), "acceptable range", id="beyond-largest-delivered"),
        pytest.param(("not-a-number",), "cannot checkpoint at 'not-a-number'", id="garbage"),
        pytest.param(("",), "cannot checkpoint", id="empty"),
        pytest.param(("12a",), "cannot checkpoint", id="digits-and-letters"),
        pytest.param(("110", -1), "cannot checkpoint", id="negative-sub"),
        pytest.param((None, 2), "needs a sequence number", id="sub-without-seq"),
    ],
)
def test_invalid_positions_are_rejected_without_writing(
    writer: RecordingWriter, args: tuple[str | None, int] | tuple[str], message: str
) -> None:
    cp = make(writer, last=esn(110, 1))
    cp.advance(esn(120))
    with pytest.raises(InvalidCheckpointError, match=message) as info:
        cp.checkpoint(*args)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, CheckpointError)
    assert info.value.kcl_name == "IllegalArgumentException"
    with pytest.raises(InvalidCheckpointError, match=message):
        cp.prepare_checkpoint(*args)
    assert writer.writes == []
    assert cp.last_checkpoint == esn(110, 1)


@pytest.mark.parametrize("value", [b"123", 123, {"seq": "123"}], ids=["bytes", "int", "dict"])
def test_a_sequence_number_that_is_not_a_string_is_rejected(writer: RecordingWriter, value: object) -> None:
    cp = make(writer)
    cp.advance(esn(500))
    with pytest.raises(InvalidCheckpointError, match="cannot checkpoint"):
        cp.checkpoint(value)  # type: ignore[arg-type]
    assert writer.writes == []


def test_nothing_is_written_when_nothing_changed(writer: RecordingWriter) -> None:
    cp = make(writer)
    cp.checkpoint()  # nothing delivered yet: the checkpoint is where it was
    assert writer.writes == []
    cp.advance(esn(50))
    cp.checkpoint()
    cp.checkpoint()
    cp.checkpoint("50")
    assert len(writer.writes) == 1


def test_a_checkpoint_at_the_last_position_clears_a_pending_one(writer: RecordingWriter) -> None:
    cp = make(writer, last=esn(50))
    cp.advance(esn(60))
    cp.prepare_checkpoint("60")
    assert cp.pending_checkpoint == esn(60)
    cp.checkpoint("50")  # same position as before, but the pending checkpoint must go
    assert writer.writes[-1] == Write(KEY, ACQUISITION, esn(50), None, None)
    assert cp.pending_checkpoint is None


def test_prepare_writes_a_pending_checkpoint_and_commit_writes_it(writer: RecordingWriter) -> None:
    cp = make(writer, last=esn(10))
    cp.advance(esn(20))
    prepared = cp.prepare_checkpoint("15", application_state=b"state")
    assert prepared.pending_checkpoint == esn(15)
    assert writer.writes == [Write(KEY, ACQUISITION, esn(10), esn(15), b"state")]
    assert cp.last_checkpoint == esn(10)
    assert cp.pending_checkpoint == esn(15)
    prepared.checkpoint()
    assert writer.writes[-1] == Write(KEY, ACQUISITION, esn(15), None, None)
    assert cp.last_checkpoint == esn(15)
    assert cp.pending_checkpoint is None


def test_a_prepared_checkpoint_behind_a_later_checkpoint_cannot_be_committed(writer: RecordingWriter) -> None:
    cp = make(writer)
    cp.advance(esn(20))
    prepared = cp.prepare_checkpoint("15")
    cp.checkpoint("20")
    with pytest.raises(InvalidCheckpointError, match="behind the last checkpoint"):
        prepared.checkpoint()
    assert cp.last_checkpoint == esn(20)


def test_retract_after_a_failed_batch(writer: RecordingWriter) -> None:
    cp = make(writer, last=esn(10))
    cp.advance(esn(20))
    cp.retract(esn(15))  # the batch (15, 20] will be delivered again
    assert cp.largest_permitted == esn(15)
    with pytest.raises(InvalidCheckpointError):
        cp.checkpoint("20")
    cp.retract(TRIM_HORIZON)  # never behind the last checkpoint
    assert cp.largest_permitted == esn(10)


def test_shard_end_is_checkpointed_after_advance_to_shard_end(writer: RecordingWriter) -> None:
    cp = make(writer)
    cp.advance(esn(30))
    cp.checkpoint()
    cp.advance(SHARD_END)
    with pytest.raises(InvalidCheckpointError, match="SHARD_END cannot be prepared"):
        cp.prepare_checkpoint()
    cp.checkpoint()
    assert writer.writes[-1].checkpoint == SHARD_END
    assert cp.last_checkpoint.is_shard_end


# -- with a real renewer over SQLite ---------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now_ns = 1_000_000_000

    def __call__(self) -> int:
        return self.now_ns


@dataclass
class Held:
    store: SQLiteLeaseStore
    renewer: LeaseRenewer
    checkpointer: Checkpointer

    def lease(self) -> Lease:
        lease = self.store.get_lease(KEY)
        assert lease is not None
        return lease


@pytest.fixture
def held(tmp_path: Path) -> Held:
    store = SQLiteLeaseStore(tmp_path / "leases.db", "app")
    store.create_table_if_not_exists()
    assert store.create_lease_if_not_exists(Lease(KEY, TRIM_HORIZON)) is not None
    # Held by w0 first, then taken by w1: one owner switch since the last checkpoint.
    first = store.take_lease(store.get_lease(KEY) or Lease(KEY, TRIM_HORIZON), "w0")
    assert first is not None
    taken = store.take_lease(first, "w1")
    assert taken is not None
    assert taken.owner_switches_since_checkpoint == 1
    renewer = LeaseRenewer(store, "w1", failover_time_ms=10_000, clock_ns=FakeClock())
    token = renewer.add_leases([taken])[KEY]
    cp = Checkpointer(KEY, token, renewer, last_checkpoint=taken.checkpoint)
    return Held(store, renewer, cp)


def test_checkpoint_is_written_to_the_lease(held: Held) -> None:
    before = held.lease()
    held.checkpointer.advance(esn(500, 2))
    held.checkpointer.checkpoint()
    after = held.lease()
    assert after.checkpoint == esn(500, 2)
    assert after.lease_counter == before.lease_counter + 1
    assert after.lease_owner == "w1"
    assert held.store.get_checkpoint(KEY) == esn(500, 2)


def test_prepare_and_commit_through_the_lease_store(held: Held) -> None:
    held.checkpointer.advance(esn(700))
    prepared = held.checkpointer.prepare_checkpoint("600", application_state=b"\x00app-state")
    lease = held.lease()
    assert lease.checkpoint == TRIM_HORIZON  # not committed yet
    assert lease.pending_checkpoint == esn(600)
    assert lease.pending_checkpoint_state == b"\x00app-state"
    assert lease.owner_switches_since_checkpoint == 1  # only a commit resets it

    prepared.checkpoint()
    lease = held.lease()
    assert lease.checkpoint == esn(600)
    assert lease.pending_checkpoint is None
    assert lease.pending_checkpoint_state is None
    assert lease.owner_switches_since_checkpoint == 0


def test_owner_switches_are_reset_by_a_plain_checkpoint(held: Held) -> None:
    assert held.lease().owner_switches_since_checkpoint == 1
    held.checkpointer.advance(esn(42))
    held.checkpointer.checkpoint()
    assert held.lease().owner_switches_since_checkpoint == 0


def test_shard_end_checkpoint_in_the_store(held: Held) -> None:
    held.checkpointer.advance(esn(800))
    held.checkpointer.advance(SHARD_END)
    held.checkpointer.checkpoint()
    lease = held.lease()
    assert lease.checkpoint == SHARD_END
    assert lease.is_complete


def test_checkpoint_after_another_worker_took_the_lease_raises_lease_lost(held: Held) -> None:
    stolen = held.store.take_lease(held.lease(), "w2")
    assert stolen is not None
    held.checkpointer.advance(esn(900))
    with pytest.raises(LeaseLostError) as info:
        held.checkpointer.checkpoint()
    assert isinstance(info.value, CheckpointError)
    assert not isinstance(info.value, ValueError)
    assert info.value.kcl_name == "ShutdownException"
    assert held.renewer.get(KEY) is None  # the renewer let go of it
    assert held.lease() == stolen  # nothing was written
    with pytest.raises(LeaseLostError):
        held.checkpointer.prepare_checkpoint("900")


def test_checkpoint_after_the_renewer_dropped_the_lease_raises_lease_lost(held: Held) -> None:
    held.renewer.drop(KEY)
    held.checkpointer.advance(esn(900))
    before = held.lease()
    with pytest.raises(LeaseLostError, match="doesn't hold the lease"):
        held.checkpointer.checkpoint()
    assert held.lease() == before


def test_a_checkpointer_of_an_earlier_acquisition_cannot_checkpoint(held: Held) -> None:
    # The lease is lost and acquired again by the same worker: a new token, the old checkpointer is stale.
    held.renewer.drop(KEY)
    new_token = held.renewer.add_leases([held.lease()])[KEY]
    held.checkpointer.advance(esn(900))
    with pytest.raises(LeaseLostError):
        held.checkpointer.checkpoint()
    fresh = Checkpointer(KEY, new_token, held.renewer, last_checkpoint=held.lease().checkpoint)
    fresh.advance(esn(900))
    fresh.checkpoint()
    assert held.lease().checkpoint == esn(900)
