"""The coordination generations as objects, and the swap between them.

A switch swaps the worker's generation object between two loop runs: held leases and running consumers stay,
nothing in the lease table is written, the 2.x generation starts its taker afresh, the 3.x generation opens its
parts (coordinator items, owner index, leader lock, assigner, discoverer) once however often the worker switches,
gives up the leader lock when left, and holds rebalancing in the first leader term after it is entered.
"""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from shardwise.backends.sqlite.leases import SQLiteLeaseStore
from shardwise.backends.sqlite.stream import LocalStreamStore
from shardwise.checkpoint.sequence import TRIM_HORIZON
from shardwise.errors import ConfigurationError
from shardwise.leadership.lock import LeaderLock
from shardwise.leases.model import Lease
from shardwise.leasing.shard_sync import InitialPosition
from shardwise.processor import BaseRecordProcessor, ProcessRecordsInput
from shardwise.tables.items import Layout
from shardwise.versions.migration_rules import ClientVersionConfig, MigrationStep
from shardwise.versions.migration_state import ClientVersion
from shardwise.worker import AssignmentMode, CoordinationConfig, Worker, WorkerConfig
from shardwise.worker import generations as generations_module
from shardwise.worker.generations import Generation, LeaseCountGeneration, UtilizationGeneration

APP = "orders-app"
SHARDS = 4
_databases = itertools.count()


class Idle(BaseRecordProcessor):
    def process_records(self, process_records_input: ProcessRecordsInput) -> None:
        pass


def make_worker(
    tmp_path: Path,
    *,
    assignment: AssignmentMode = "lease-count-2x",
    client_version_config: ClientVersionConfig | None = None,
    worker_id: str = "w1",
) -> tuple[Worker, SQLiteLeaseStore]:
    db = tmp_path / f"generations-{next(_databases)}.db"
    streams = LocalStreamStore(db)
    streams.create_stream("orders", SHARDS)
    store = SQLiteLeaseStore(db, APP)
    store.create_table_if_not_exists()
    config = WorkerConfig(
        APP,
        "orders",
        worker_id=worker_id,
        initial_position=InitialPosition.trim_horizon(),
        assignment=assignment,
        coordination=CoordinationConfig(leader_lease_duration_ms=2_000, leader_heartbeat_period_ms=50),
        client_version_config=client_version_config,
    )
    worker = Worker(config, store=SQLiteLeaseStore(db, APP), source=streams.stream("orders"), processor_factory=Idle)
    return worker, store


def hold_leases(worker: Worker, store: SQLiteLeaseStore) -> list[Lease]:
    """Every shard's lease taken by the worker and given a consumer, as a take or a discovery would."""
    taken: list[Lease] = []
    for n in range(SHARDS):
        lease = store.create_lease_if_not_exists(Lease(f"shardId-{n:012d}", TRIM_HORIZON))
        assert lease is not None
        mine = store.take_lease(lease, worker.worker_id)
        assert mine is not None
        taken.append(mine)
    worker._dispatcher.start_consumers(taken)
    return taken


def current(worker: Worker) -> Generation:
    return worker._generation


def state(worker: Worker) -> tuple[ClientVersion | None, AssignmentMode, bool, Layout | None]:
    """Read afresh (a function, so that no earlier assertion narrows what the properties return)."""
    return worker.client_version, worker.mode, worker.reports_worker_metrics, worker.layout


def snapshot(worker: Worker, store: SQLiteLeaseStore) -> tuple[object, ...]:
    """What a switch must not touch: held leases, the consumers (same objects, same states), the lease table."""
    consumers = worker.consumers()
    return (
        sorted((lease.lease_key, lease.lease_counter) for lease in worker.held_leases()),
        [id(consumer) for consumer in consumers],
        [consumer.state for consumer in consumers],
        sorted((lease.lease_key, lease.lease_owner, lease.lease_counter) for lease in store.list_leases()),
    )


def test_a_switch_swaps_the_generation_and_touches_no_held_lease_or_consumer(tmp_path: Path) -> None:
    worker, store = make_worker(tmp_path)
    hold_leases(worker, store)
    before = snapshot(worker, store)
    assert len(worker.consumers()) == SHARDS
    lease_count = worker._generation
    assert isinstance(lease_count, LeaseCountGeneration)
    first_taker, leader = lease_count.taker, lease_count.leader
    assert state(worker)[1:3] == ("lease-count-2x", False)

    worker.switch_mode("utilization-3x")
    utilization = worker._generation
    assert isinstance(utilization, UtilizationGeneration) and utilization.opened
    assert state(worker)[1:3] == ("utilization-3x", True)
    assert snapshot(worker, store) == before

    worker.switch_mode("lease-count-2x")
    assert current(worker) is lease_count and state(worker)[1] == "lease-count-2x"
    # A fresh taker (its observations start over, so nothing looks expired); the same deterministic leader.
    assert lease_count.taker is not first_taker and lease_count.leader is leader
    assert snapshot(worker, store) == before

    worker.switch_mode("utilization-3x")
    assert current(worker) is utilization
    worker.switch_mode("utilization-3x")  # already there: nothing happens
    assert current(worker) is utilization
    assert snapshot(worker, store) == before


def test_the_3x_generation_opens_its_parts_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    locks: list[LeaderLock] = []

    class CountedLock(LeaderLock):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            locks.append(self)

    monkeypatch.setattr(generations_module, "LeaderLock", CountedLock)
    worker, _ = make_worker(tmp_path, assignment="utilization-3x")
    generation = worker._generation
    assert isinstance(generation, UtilizationGeneration)
    assert not generation.opened and state(worker)[3] is None and not worker.is_leader()
    barrier = threading.Barrier(4)

    def open_it() -> None:
        barrier.wait()
        generation.open()

    threads = [threading.Thread(target=open_it) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(locks) == 1 and generation.lock is locks[0]
    parts = (generation.lock, generation.assigner, generation.discoverer)
    assert state(worker)[3] == "single-table"
    for mode in ("lease-count-2x", "utilization-3x", "lease-count-2x", "utilization-3x"):
        worker.switch_mode(mode)
    assert current(worker) is generation and len(locks) == 1
    assert (generation.lock, generation.assigner, generation.discoverer) == parts


def test_leaving_3x_gives_up_the_lock_and_entering_it_holds_rebalancing_for_one_term(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker, _ = make_worker(tmp_path, assignment="utilization-3x")
    generation = worker._generation
    assert isinstance(generation, UtilizationGeneration)
    generation.open()
    assigner, lock = generation.assigner, generation.lock
    assert assigner is not None and lock is not None
    holds: list[int | None] = []
    original_reset = assigner.reset

    def reset(*, skip_rebalance_until_ns: int | None = None) -> None:
        holds.append(skip_rebalance_until_ns)
        original_reset(skip_rebalance_until_ns=skip_rebalance_until_ns)

    monkeypatch.setattr(assigner, "reset", reset)
    assert generation.assign() is not None  # the only worker: it takes the lock and runs a pass
    assert worker.is_leader() and holds == [None]
    assert generation.assign() is not None and holds == [None]  # the same term: no reset

    generation.leave()
    assert not lock.holds_lock() and not worker.is_leader()
    hold = time.monotonic_ns() + 60_000_000_000
    generation.enter(rebalance_hold_until_ns=hold)
    time.sleep(0.1)  # the released lock is tried again after one heartbeat period
    assert generation.assign() is not None and holds == [None, hold]

    generation.leave()
    generation.enter(rebalance_hold_until_ns=None)  # a hold is for one leader term only
    time.sleep(0.1)
    assert generation.assign() is not None and holds == [None, hold, None]


def test_the_2x_generation_runs_no_3x_loop_and_the_3x_generation_no_taker(tmp_path: Path) -> None:
    worker, _ = make_worker(tmp_path)
    lease_count = worker._generation
    assert lease_count.assign() is None and lease_count.discover() == []
    assert lease_count.recent_leases() is None
    assert len(lease_count.take()) == 0  # no lease in the table yet
    assert lease_count.recent_leases() is not None  # the taker's scan
    worker.switch_mode("utilization-3x")
    utilization = worker._generation
    assert utilization.take() == [] and utilization.recent_leases() is None


def test_a_worker_id_that_looks_like_a_shard_cannot_run_3x(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"cannot be used with KCL 3\.x coordination"):
        make_worker(tmp_path, assignment="utilization-3x", worker_id="shardId-000000000001")
    with pytest.raises(ConfigurationError, match=r"cannot be used with KCL 3\.x coordination"):
        make_worker(tmp_path, client_version_config="compatible-with-2x", worker_id="Migration3.0")
    worker, _ = make_worker(tmp_path, worker_id="shardId-000000000001")  # 2.x only: fine
    with pytest.raises(ConfigurationError, match=r"cannot be used with KCL 3\.x coordination"):
        worker.switch_mode("utilization-3x")
    assert worker.mode == "lease-count-2x"


def test_the_worker_applies_migration_steps_by_swapping_generations(tmp_path: Path) -> None:
    worker, store = make_worker(tmp_path, client_version_config="compatible-with-2x")
    assert state(worker)[:2] == (None, "lease-count-2x") and worker.migration is None
    hold_leases(worker, store)
    before = snapshot(worker, store)
    expected: list[tuple[ClientVersion, AssignmentMode, bool]] = [
        (ClientVersion.UPGRADE_FROM_2X, "lease-count-2x", True),
        (ClientVersion.V3X_WITH_ROLLBACK, "utilization-3x", True),
        (ClientVersion.V2X, "lease-count-2x", False),
        (ClientVersion.UPGRADE_FROM_2X, "lease-count-2x", True),
    ]
    for version, mode, reports in expected:
        worker._apply(MigrationStep.to(version))
        assert state(worker)[:3] == (version, mode, reports)
        assert snapshot(worker, store) == before, version
    assert state(worker)[3] == "single-table"
