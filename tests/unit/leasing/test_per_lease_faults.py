"""Issue 13, behaviour 3 in the taker and the leader's assigner: an error writing one lease (a value the backend
cannot store, an untranslated error) costs that lease only — the other leases are still taken or moved."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import pytest

from shardwise.assignment.model import WorkerMetricStats, metrics_to_attributes
from shardwise.assignment.taker import TakerConfig
from shardwise.assignment.utilization import AssignmentConfig
from shardwise.backends import open_coordinator_tables
from shardwise.backends.sqlite.leases import SQLiteLeaseStore
from shardwise.checkpoint.sequence import TRIM_HORIZON
from shardwise.errors import MalformedItemError
from shardwise.leases.model import Lease
from shardwise.leasing.assigner import LeaseAssignmentManager
from shardwise.leasing.taker import LeaseTaker
from support.clocks import FakeClock

KEYS = [f"shardId-{n:012d}" for n in range(4)]
BAD = KEYS[1]
EPOCH = 1_800_000_000.0


class OneBadLeaseStore(SQLiteLeaseStore):
    """A real SQLite store in which every write to one lease fails the way a bad item makes it fail."""

    def __init__(self, path: Path, table_name: str, error: Exception) -> None:
        super().__init__(path, table_name)
        self.error = error

    def _check(self, lease: Lease) -> None:
        if lease.lease_key == BAD:
            raise self.error

    def take_lease(self, lease: Lease, owner: str) -> Lease | None:
        self._check(lease)
        return super().take_lease(lease, owner)

    def assign_lease(self, lease: Lease, new_owner: str) -> Lease | None:
        self._check(lease)
        return super().assign_lease(lease, new_owner)


ERRORS = [
    pytest.param(OverflowError("Python int too large to convert to SQLite INTEGER"), id="untranslated"),
    pytest.param(MalformedItemError(BAD, "leaseCounter out of range"), id="translated"),
]


def store_with(tmp_path: Path, error: Exception) -> OneBadLeaseStore:
    store = OneBadLeaseStore(tmp_path / "leases.db", "app", error)
    store.create_table_if_not_exists()
    for key in KEYS:
        assert store.create_lease_if_not_exists(Lease(key, TRIM_HORIZON)) is not None
    return store


@pytest.mark.parametrize("error", ERRORS)
def test_the_taker_takes_every_other_lease(tmp_path: Path, error: Exception, caplog: pytest.LogCaptureFixture) -> None:
    store = store_with(tmp_path, error)
    taker = LeaseTaker(store, "w1", TakerConfig(), clock_ns=FakeClock(), rng=random.Random(1))
    with caplog.at_level(logging.WARNING, logger="shardwise.leasing.taker"):
        taken = taker.take_leases()
    assert sorted(lease.lease_key for lease in taken) == [k for k in KEYS if k != BAD]
    assert BAD in caplog.text


@pytest.mark.parametrize("error", ERRORS)
def test_the_assigner_moves_every_other_lease(
    tmp_path: Path, error: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    store = store_with(tmp_path, error)
    metrics_table = open_coordinator_tables(store, "app").worker_metrics
    for worker in ("w1", "w2"):
        metrics_table.upsert(worker, metrics_to_attributes(WorkerMetricStats(worker, lut=int(EPOCH))))
    assigner = LeaseAssignmentManager(
        store,
        metrics_table,
        config=AssignmentConfig(),
        failover_time_ms=10_000,
        strategy="lease-count",
        clock_ns=FakeClock(),
        clock_epoch_s=lambda: EPOCH,
        rng=random.Random(3),
        discovery_interval_ms=0,
    )
    with caplog.at_level(logging.WARNING, logger="shardwise.leasing.assigner"):
        run = assigner.run_once()
    assert sorted(run.applied) == [k for k in KEYS if k != BAD]
    assert run.failed == (BAD,)
    assert BAD in caplog.text
