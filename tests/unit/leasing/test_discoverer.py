"""The 3.x lease discoverer renews a discovered lease once before it is processed, so a lease this worker
dropped on its own clock (a partition) cannot be picked up again while the leader reassigns it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shardwise.backends.sqlite.leases import SQLiteLeaseStore
from shardwise.checkpoint.sequence import TRIM_HORIZON
from shardwise.leases.model import Lease
from shardwise.leasing.discoverer import LeaseDiscoverer

ME = "w1"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteLeaseStore]:
    store = SQLiteLeaseStore(tmp_path / "leases.db", "app")
    store.create_table_if_not_exists()
    yield store
    store.close()


def owned(store: SQLiteLeaseStore, key: str, owner: str) -> Lease:
    created = store.create_lease_if_not_exists(Lease(key, TRIM_HORIZON))
    assert created is not None
    taken = store.take_lease(created, owner)
    assert taken is not None
    return taken


def test_a_discovered_lease_is_renewed_before_it_is_processed(store: SQLiteLeaseStore) -> None:
    lease = owned(store, "shardId-000000000000", ME)
    found = LeaseDiscoverer(store, store, ME, held_keys=set).discover()
    assert [f.lease_key for f in found] == [lease.lease_key]
    assert found[0].lease_counter == lease.lease_counter + 1
    current = store.get_lease(lease.lease_key)
    assert current is not None
    assert current.lease_counter == lease.lease_counter + 1


class LeaderReassignsFirst(SQLiteLeaseStore):
    """The leader moves the lease to another worker between the discoverer's read and its renewal."""

    def renew_lease(self, lease: Lease, *, throughput_kbps: float | None = None) -> Lease | None:
        assert self.assign_lease(lease, "w2") is not None
        return super().renew_lease(lease, throughput_kbps=throughput_kbps)


def test_a_lease_the_leader_reassigns_meanwhile_is_not_discovered(tmp_path: Path) -> None:
    store = LeaderReassignsFirst(tmp_path / "leases.db", "app")
    store.create_table_if_not_exists()
    lease = owned(store, "shardId-000000000000", ME)
    assert LeaseDiscoverer(store, store, ME, held_keys=set).discover() == []
    current = store.get_lease(lease.lease_key)
    assert current is not None
    assert current.lease_owner == "w2"
    store.close()


class SlowStore(SQLiteLeaseStore):
    """Every renewal takes 5 s on the test's clock (a store under load)."""

    def __init__(self, path: Path, table_name: str, clock: list[int]) -> None:
        super().__init__(path, table_name)
        self.clock = clock

    def renew_lease(self, lease: Lease, *, throughput_kbps: float | None = None) -> Lease | None:
        self.clock[0] += 5_000_000_000
        return super().renew_lease(lease, throughput_kbps=throughput_kbps)


def test_each_discovered_lease_is_stamped_right_before_its_own_renewal(tmp_path: Path) -> None:
    """A slow discovery run must not leave its last leases stamped at the run's start (they would be expired on
    this worker's clock before they are even held)."""
    clock = [1_000]
    store = SlowStore(tmp_path / "leases.db", "app", clock)
    store.create_table_if_not_exists()
    keys = [f"shardId-00000000000{n}" for n in range(3)]
    for key in keys:
        owned(store, key, ME)
    discoverer = LeaseDiscoverer(store, store, ME, held_keys=set, clock_ns=lambda: clock[0])
    found = discoverer.discover()
    assert sorted(lease.lease_key for lease in found) == keys
    stamps = sorted(discoverer.last_stamps.values())
    assert stamps == [1_000, 1_000 + 5_000_000_000, 1_000 + 10_000_000_000]
    store.close()
