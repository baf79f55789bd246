"""Fleets of real ``shardwise run`` worker processes, on the local backend (SQLite leases + local stream) and
on the AWS stand-ins (DynamoDB on moto, Kinesis on kinesis-local).

Every record is unique (``<tag>-<n>``) and every delivery is written to a results database before the
processor checkpoints (``processors.RecordingProcessor``), so losses and duplicates are counted exactly:

a. at-least-once across a SIGKILL, with duplicates only where the killed worker had not checkpointed;
b. lease stealing spreads 16 shards from 1 worker to 4 (exactly 4 each) and stays there;
c. a split and a merge while consuming: nothing lost, each parent finished before any of its children starts,
   parents end at SHARD_END;
d. a processor that raises gets the same batch again; the worker survives and logs the error.

Timings are shortened (failover 2 s, so the lease taker runs every 4.05 s).
"""

from __future__ import annotations

import itertools
import time
from collections import Counter, defaultdict
from collections.abc import Callable

import pytest

from integration.processors import CHECKPOINT_DELAY_ENV, Processed, read_attempts, read_processed
from shardwise.hashkeys import HashKeyRange, hash_key_for
from shardwise.leases.model import Lease
from support.fleet import taker_interval_s
from support.scenario import FreshStreams, RecordScenario
from support.traffic import ProducerThread, some

FAILOVER_MS = 2_000
TAKER_S = taker_interval_s(FAILOVER_MS)  # 4.05 s between two runs of a worker's lease taker
TASK_BACKOFF_MS = 200
MAX_RECORDS = 100
WORKER_ARGS = (
    "--initial-position",
    "TRIM_HORIZON",
    "--failover-time-ms",
    str(FAILOVER_MS),
    "--idle-time-between-reads-ms",
    "200",
    "--max-records",
    str(MAX_RECORDS),
    "--set",
    "consumer.parent_shard_poll_interval_ms=300",
    "--set",
    "shard_sync_interval_ms=2000",
    "--set",
    f"consumer.task_backoff_time_ms={TASK_BACKOFF_MS}",
    "--set",
    "leases.max_leases_to_steal_at_one_time=1",
)
RECORDING = "processors:RecordingProcessor"
FLAKY = "processors:FlakyProcessor"


class Scenario(RecordScenario):
    """One application consuming one fresh stream (see :class:`RecordScenario`)."""

    processed_poll_s = 0.25

    def produce(self, data: list[str], partition_keys: list[str] | None = None) -> list[str]:
        """Put records whose data is ``data`` (and their id), by default with partition keys ``pk-<data>``."""
        keys = partition_keys if partition_keys is not None else [f"pk-{item}" for item in data]
        return self.put(list(zip(data, keys, strict=True)))

    def deliveries(self) -> list[Processed]:
        return read_processed(self.results)


def _ids(tag: str, start: int, count: int) -> list[str]:
    return [f"{tag}-{i:05d}" for i in range(start, start + count)]


class Producer(ProducerThread):
    """Puts ``count`` records tagged ``tag`` in batches of ``batch`` every ``interval_s``, in the background."""

    def __init__(self, scenario: Scenario, tag: str, count: int, batch: int, interval_s: float) -> None:
        super().__init__(name=f"producer-{tag}")
        self._scenario = scenario
        self._ids = _ids(tag, 0, count)
        self._batch = batch
        self._interval_s = interval_s

    def produce(self) -> None:
        for start in range(0, len(self._ids), self._batch):
            if self.stop.is_set():
                return
            self._scenario.produce(self._ids[start : start + self._batch])
            self.stop.wait(self._interval_s)


@pytest.fixture
def make_scenario(fresh_streams: FreshStreams) -> Callable[..., Scenario]:
    def make(name: str, shards: int, processor: str = RECORDING) -> Scenario:
        return Scenario(*fresh_streams.open(name, shards, processor=processor, worker_args=WORKER_ARGS))

    return make


def _after(sequence_number: str, checkpoint: Lease) -> bool:
    """Whether a record lies after the lease's checkpoint (every record does, at a sentinel such as
    TRIM_HORIZON)."""
    if checkpoint.checkpoint.is_sentinel:
        return True
    return int(sequence_number) > int(checkpoint.checkpoint.sequence_number)


# -- a. at-least-once across SIGKILL ---------------------------------------------------------------------


@pytest.mark.slow
def test_every_record_is_processed_at_least_once_across_a_sigkill(make_scenario: Callable[..., Scenario]) -> None:
    scenario = make_scenario("sigkill", shards=4)
    fleet = scenario.fleet
    victim = "w1"
    # The victim pauses between recording a batch and checkpointing it, so that the kill can land in between.
    fleet.start(victim, extra_env={CHECKPOINT_DELAY_ENV: "300"})
    fleet.wait_until(lambda: fleet.lease_counts()[victim] == 4, 30, f"{victim} holding the 4 leases")
    fleet.start("w2")
    fleet.start("w3")
    # Steady state before producing (w1 keeps 2, the others steal 1 each), so that the duplicates come from the
    # kill rather than from the initial rebalancing.
    fleet.wait_until(
        lambda: sorted(fleet.lease_counts().values()) == [1, 1, 2],
        2 * TAKER_S + 15,
        lambda: f"the leases spread 2/1/1; now {dict(fleet.lease_counts())}",
    )

    total = 1_200
    producer = Producer(scenario, "rec", total, batch=40, interval_s=0.25)  # ~7.5 s of production
    producer.start()
    try:
        fleet.wait_until(lambda: len(scenario.processed_ids()) >= total // 3, 60, f"{total // 3} records processed")

        def victim_between_record_and_checkpoint() -> bool:
            # Deliveries first, leases second: a delivery past the checkpoint read *after* it is not checkpointed.
            rows = [row for row in scenario.deliveries() if row.worker_id == victim]
            held = {lease.lease_key: lease for lease in fleet.leases() if lease.lease_owner == victim}
            return any(row.shard_id in held and _after(row.sequence_number, held[row.shard_id]) for row in rows)

        fleet.wait_until(
            victim_between_record_and_checkpoint, 30, f"{victim} between recording and checkpointing", interval_s=0.02
        )
        fleet.kill(victim)
        kill_ns = time.time_ns()
        assert producer.is_alive(), "production ended before the kill; the kill was not mid-stream"
        # Nobody else can checkpoint the victim's shards until its leases expire: this is its last checkpoint.
        at_kill = {lease.lease_key: lease for lease in fleet.leases() if lease.lease_owner == victim}
        fleet.start("w4")
    except BaseException:
        producer.stop.set()
        raise
    producer.finish(stop=False)  # every record put
    assert at_kill, f"the killed worker held no lease\n{fleet.report()}"

    # Its leases expire (failover) and are taken at the next taker runs of the others.
    scenario.wait_all_processed(FAILOVER_MS / 1000 + 4 * TAKER_S + 20)
    fleet.wait_until(
        lambda: not any(lease.lease_owner == victim for lease in fleet.leases()),
        FAILOVER_MS / 1000 + 2 * TAKER_S + 10,
        f"no lease owned by the killed worker {victim}",
    )

    deliveries = scenario.deliveries()
    per_record: dict[str, list[Processed]] = defaultdict(list)
    for row in deliveries:
        per_record[row.data].append(row)
    produced = set(scenario.produced_now())
    assert len(produced) == total
    assert produced <= set(per_record), f"records lost: {some(produced - set(per_record))}"
    assert set(per_record) <= produced, f"unknown records: {some(set(per_record) - produced)}"

    uncheckpointed: set[str] = set()
    for shard_id, lease in at_kill.items():
        shard_rows = [row for row in deliveries if row.shard_id == shard_id]
        # What the victim had checkpointed is never delivered again after the kill...
        redelivered = [
            row.data for row in shard_rows if row.time_ns > kill_ns and not _after(row.sequence_number, lease)
        ]
        assert not redelivered, (
            f"{shard_id}: records at or before the killed worker's checkpoint {lease.checkpoint} were delivered "
            f"again after the kill: {some(set(redelivered))}"
        )
        # ... and what it had processed without checkpointing is delivered again by another worker.
        lost_work = {row.data for row in shard_rows if row.worker_id == victim and _after(row.sequence_number, lease)}
        redone = {row.data for row in shard_rows if row.worker_id != victim and row.time_ns > kill_ns}
        assert lost_work <= redone, (
            f"{shard_id}: processed by {victim} after its last checkpoint but never delivered again: "
            f"{some(lost_work - redone)}"
        )
        uncheckpointed |= lost_work
    assert uncheckpointed, f"the kill did not land between recording and checkpointing\n{fleet.report()}"

    duplicates = {data: rows for data, rows in per_record.items() if len(rows) > 1}
    for data, rows in duplicates.items():
        # A duplicate comes from a lease changing hands (the kill, or a steal while rebalancing), never from
        # one worker delivering a record twice, and always from the shard the record was put into.
        workers = [row.worker_id for row in rows]
        assert len(set(workers)) == len(workers), f"{data} was delivered more than once by one worker: {workers}"
        assert {row.shard_id for row in rows} == {scenario.produced[data]}
    # Besides the kill, only a steal duplicates records: the worker it was stolen from finishes the batch in
    # hand (at most max_records) and fails to checkpoint it.
    from_steals = set(duplicates) - uncheckpointed
    steals = sum(fleet.log_text(w).count(" will steal lease ") for w in fleet.workers)
    print(
        f"killed {victim} holding {sorted(at_kill)} with {len(uncheckpointed)} record(s) not checkpointed; "
        f"{len(deliveries)} deliveries of {total} records, {len(duplicates)} duplicated "
        f"({len(from_steals)} after {steals} lease steal(s))"
    )
    assert len(from_steals) <= steals * MAX_RECORDS, f"{len(from_steals)} duplicates after {steals} steal(s)"
    assert len(duplicates) <= total // 10, f"{len(duplicates)} of {total} records delivered more than once"


# -- b. stealing rebalances 16 shards from 1 worker to 4 ------------------------------------------------


@pytest.mark.slow
def test_stealing_rebalances_16_shards_from_one_worker_to_four(make_scenario: Callable[..., Scenario]) -> None:
    scenario = make_scenario("steal", shards=16)
    fleet = scenario.fleet
    scenario.produce(_ids("rec", 0, 320))
    fleet.start("w1")
    fleet.wait_until(lambda: fleet.lease_counts()["w1"] == 16, 30, "w1 holding all 16 leases")

    started = time.monotonic()
    for worker_id in ("w2", "w3", "w4"):
        fleet.start(worker_id)

    def balanced() -> Counter[str] | None:
        counts = fleet.lease_counts()
        return counts if len(counts) == 4 and all(n == 4 for n in counts.values()) else None

    # Target ceil(16/4) = 4; stealing one lease per taker run, each new worker needs 4 runs (+ start-up, +
    # the odd run whose conditional take loses a race with a renewal).
    fleet.wait_until(balanced, 2 * TAKER_S * 5 + 15, lambda: f"4 leases per worker; now {dict(fleet.lease_counts())}")
    rebalance_s = time.monotonic() - started

    # Stable: nobody steals once everyone is at the target.
    until = time.monotonic() + TAKER_S + 1
    while time.monotonic() < until:
        counts = fleet.lease_counts()
        assert all(n == 4 for n in counts.values()) and len(counts) == 4, (
            f"the balance did not hold: {dict(counts)}\n{fleet.report()}"
        )
        time.sleep(0.25)

    scenario.wait_all_processed(30)
    assert all(fleet.is_alive(w) for w in ("w1", "w2", "w3", "w4"))
    print(f"rebalanced 16 leases from 1 worker to 4 in {rebalance_s:.1f}s")


# -- c. split and merge ------------------------------------------------------------------------------------


def _keys_in(hash_range: HashKeyRange, count: int, salt: str) -> list[str]:
    """``count`` partition keys whose hash keys fall in ``hash_range``."""
    keys: list[str] = []
    for n in itertools.count():
        key = f"{salt}-{n}"
        if hash_key_for(key) in hash_range:
            keys.append(key)
            if len(keys) == count:
                return keys
    raise AssertionError("unreachable")


def test_split_and_merge_finish_parents_before_children(make_scenario: Callable[..., Scenario]) -> None:
    scenario = make_scenario("reshard", shards=2)
    fleet, admin = scenario.fleet, scenario.admin
    # Slow consumers (small batches, a pause before each checkpoint) keep the parents busy while their
    # children already hold records.
    slow_args, slow_env = ("--max-records", "25"), {CHECKPOINT_DELAY_ENV: "100"}
    fleet.start("w1", slow_args, slow_env)
    fleet.start("w2", slow_args, slow_env)
    fleet.wait_until(lambda: sum(fleet.lease_counts().values()) == 2, 30, "both leases held")

    shard0, shard1 = sorted(s.shard_id for s in admin.list_shards())
    scenario.produce(_ids("a", 0, 200))
    low, high = admin.split(shard0)
    ranges = {s.shard_id: s.hash_key_range for s in admin.list_shards()}
    if ranges[low].start > ranges[high].start:
        low, high = high, low
    assert ranges[high].end + 1 == ranges[shard1].start, "the upper child of the split must be next to shard 1"
    # The upper child gets a long backlog, so that the child of the merge waits for it.
    scenario.produce(_ids("b", 0, 300), _keys_in(ranges[high], 300, "high"))
    scenario.produce(_ids("b", 300, 50), _keys_in(ranges[low], 50, "low"))
    merged = admin.merge(high, shard1)
    scenario.produce(_ids("c", 0, 200))
    merge_child_fed_ns = time.time_ns()

    shards = {s.shard_id: s for s in admin.list_shards()}
    parents = {shard_id: set(shard.parent_shard_ids) for shard_id, shard in shards.items()}
    assert parents[low] == {shard0} and parents[high] == {shard0} and parents[merged] == {high, shard1}
    landed = Counter(scenario.produced.values())
    assert landed[low] and landed[high] and landed[merged], f"every child must receive records: {landed}"

    scenario.wait_all_processed(90)
    closed = {shard0, shard1, high}

    def parents_finished() -> bool:
        by_key = {lease.lease_key: lease for lease in fleet.leases()}
        return all(key not in by_key or by_key[key].is_complete for key in closed)

    fleet.wait_until(parents_finished, 30, f"the leases of the closed shards {sorted(closed)} at SHARD_END or deleted")

    deliveries = scenario.deliveries()
    for row in deliveries:
        assert row.shard_id == scenario.produced[row.data], f"{row.data} was delivered from the wrong shard"
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    for row in deliveries:
        first[row.shard_id] = min(first.get(row.shard_id, row.time_ns), row.time_ns)
        last[row.shard_id] = max(last.get(row.shard_id, row.time_ns), row.time_ns)
    # The merge child held records long before its parent `high` was done: it really had to wait.
    assert merge_child_fed_ns < last[high], "the scenario did not make the merge child wait for its parent"
    for child in (low, high, merged):
        for parent in parents[child]:
            if parent in last and child in first:
                assert last[parent] < first[child], (
                    f"{child} started ({first[child]}) before its parent {parent} finished ({last[parent]})\n"
                    f"{fleet.report()}"
                )
    leases = {lease.lease_key: lease for lease in fleet.leases()}
    assert leases[low].parent_shard_ids == {shard0}
    assert leases[merged].parent_shard_ids == {high, shard1}
    for key in (low, merged):
        assert not leases[key].is_complete, f"{key} is open but its lease is at {leases[key].checkpoint}"
    print(
        "reshard: last delivery of each parent → first of its children (ms): "
        + ", ".join(
            f"{p[-2:]}→{c[-2:]} {(first[c] - last[p]) / 1e6:.0f}"
            for c in (low, high, merged)
            for p in sorted(parents[c])
            if p in last and c in first
        )
    )

    fleet.terminate_all()
    assert all(worker.process.returncode == 0 for worker in fleet.workers.values()), fleet.report()


# -- d. a processor that raises ------------------------------------------------------------------------


def test_a_raising_processor_gets_the_same_batch_again(make_scenario: Callable[..., Scenario]) -> None:
    scenario = make_scenario("flaky", shards=2, processor=FLAKY)
    fleet = scenario.fleet
    fleet.start("w1")
    fleet.wait_until(lambda: fleet.lease_counts()["w1"] == 2, 30, "w1 holding both leases")

    poison = [f"poison-{n}" for n in range(1, 5)]
    records = _ids("rec", 0, 300)
    for position, item in zip((20, 110, 111, 260), poison, strict=True):
        records.insert(position, item)
    for start in range(0, len(records), 100):
        scenario.produce(records[start : start + 100])
        time.sleep(0.3)
    scenario.wait_all_processed(60)

    deliveries = scenario.deliveries()
    counts = Counter(row.data for row in deliveries)
    assert set(counts) == set(records)
    # A failed delivery records nothing (the processor raised before writing): exactly one delivery each.
    assert [data for data, n in counts.items() if n > 1] == []

    attempts = read_attempts(scenario.results)
    for item in poison:
        mine = [a for a in attempts if a.data == item]
        outcomes = [a.outcome for a in mine]
        assert outcomes[:1] == ["failure"] and outcomes.count("failure") == 1 and "success" in outcomes, (
            f"{item}: attempts {outcomes}"
        )
        failure, success = mine[0], mine[outcomes.index("success")]
        assert (success.batch_first_sequence_number, success.batch_size) == (
            failure.batch_first_sequence_number,
            failure.batch_size,
        ), f"{item}: the retry was not the same batch"
        assert success.time_ns - failure.time_ns >= (TASK_BACKOFF_MS - 50) * 1_000_000, (
            f"{item}: redelivered {(success.time_ns - failure.time_ns) / 1e6:.0f} ms after the failure, "
            f"before the {TASK_BACKOFF_MS} ms backoff"
        )

    assert fleet.is_alive("w1"), fleet.report()
    log = fleet.log_text("w1")
    assert "process_records raised" in log and "RuntimeError: poison" in log, fleet.log_tail("w1", 60)

    # SIGTERM is a graceful shutdown: exit 0, every lease released.
    assert fleet.terminate("w1") == 0, fleet.report()
    assert [lease.lease_key for lease in fleet.leases() if lease.lease_owner is not None] == []
