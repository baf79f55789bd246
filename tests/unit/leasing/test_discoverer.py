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
