"""The LeaseStore contract: KCL's conditional lease operations, identical on every backend.

Each operation's condition comes from KCL's DynamoDBLeaseRefresher (kcl-protocol.md §2.3). A lost race
returns None; only infrastructure faults raise.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable

import pytest

from shardwise.checkpoint.sequence import SHARD_END, TRIM_HORIZON, ExtendedSequenceNumber
from shardwise.hashkeys import MAX_HASH_KEY, HashKeyRange
from shardwise.leases.model import Lease
from shardwise.leases.store import LeaseStore
from support.backends import LeaseBackend

SEQ_A = "49590338271490256608559692538361571095921575989136588898"
SEQ_B = "49590338271490256608559692540925702759324208523137515618"


def new_lease(key: str = "shardId-000000000000", **changes: object) -> Lease:
    lease = Lease(
        lease_key=key,
        checkpoint=TRIM_HORIZON,
        hash_key_range=HashKeyRange(0, MAX_HASH_KEY),
    )
    return lease.with_changes(**changes) if changes else lease


def owned(store: LeaseStore, key: str = "shardId-000000000000", owner: str = "worker-a") -> Lease:
    created = store.create_lease_if_not_exists(new_lease(key))
    assert created is not None
    taken = store.take_lease(created, owner)
    assert taken is not None
    return taken


def test_satisfies_the_protocol(store: LeaseStore) -> None:
    assert isinstance(store, LeaseStore)


class TestTable:
    def test_create_is_idempotent(self, lease_backend: LeaseBackend) -> None:
        store = lease_backend.open_store()
        assert not store.table_exists()
        assert store.create_table_if_not_exists() is True
        assert store.table_exists()
        assert store.create_table_if_not_exists() is False
        assert store.is_empty()

    def test_not_empty_after_a_lease(self, store: LeaseStore) -> None:
        store.create_lease_if_not_exists(new_lease())
        assert not store.is_empty()


class TestCreateAndRead:
    def test_create_if_absent(self, store: LeaseStore) -> None:
        lease = new_lease(parent_shard_ids=frozenset({"shardId-000000000001"}))
        assert store.create_lease_if_not_exists(lease) == lease
        assert store.get_lease(lease.lease_key) == lease

    def test_create_does_not_overwrite(self, store: LeaseStore) -> None:
        first = owned(store)
        assert store.create_lease_if_not_exists(new_lease()) is None
        assert store.get_lease(first.lease_key) == first

    def test_every_attribute_round_trips(self, store: LeaseStore) -> None:
        lease = Lease(
            lease_key="shardId-000000000007",
            lease_owner="worker-a",
            lease_counter=41,
            checkpoint=ExtendedSequenceNumber(SEQ_A, 3),
            pending_checkpoint=ExtendedSequenceNumber(SEQ_B, 1),
            pending_checkpoint_state=b"\x00app-state\xff",
            owner_switches_since_checkpoint=2,
            parent_shard_ids=frozenset({"shardId-000000000001", "shardId-000000000002"}),
            child_shard_ids=frozenset({"shardId-000000000009"}),
            hash_key_range=HashKeyRange(12345678901234567890, MAX_HASH_KEY - 1),
            throughput_kbps=0.098896,
            checkpoint_owner="worker-b",
        )
        store.create_lease_if_not_exists(lease)
        assert store.get_lease(lease.lease_key) == lease

    def test_missing_lease(self, store: LeaseStore) -> None:
        assert store.get_lease("shardId-000000000404") is None
        assert store.get_checkpoint("shardId-000000000404") is None

    def test_list_is_sorted_and_complete(self, store: LeaseStore) -> None:
        keys = [f"shardId-{i:012d}" for i in (5, 0, 12, 3)]
        for key in keys:
            store.create_lease_if_not_exists(new_lease(key))
        assert [lease.lease_key for lease in store.list_leases()] == sorted(keys)

    def test_checkpoint_keeps_exact_text_and_orders_numerically(self, store: LeaseStore) -> None:
        created = store.create_lease_if_not_exists(new_lease(checkpoint=ExtendedSequenceNumber("9")))
        assert created is not None
        moved = store.update_lease(created.with_changes(checkpoint=ExtendedSequenceNumber("10")))
        assert moved is not None
        checkpoint = store.get_checkpoint(created.lease_key)
        assert checkpoint is not None
        assert checkpoint.sequence_number == "10"
        assert checkpoint > ExtendedSequenceNumber("9")


class TestRenew:
    def test_renew_increments_counter(self, store: LeaseStore) -> None:
        lease = owned(store)
        renewed = store.renew_lease(lease)
        assert renewed is not None
        assert renewed.lease_counter == lease.lease_counter + 1
        assert renewed.lease_owner == "worker-a"

    def test_renew_writes_throughput(self, store: LeaseStore) -> None:
        renewed = store.renew_lease(owned(store), throughput_kbps=12.5)
        assert renewed is not None
        assert renewed.throughput_kbps == 12.5
        again = store.renew_lease(renewed)
        assert again is not None
        assert again.throughput_kbps == 12.5  # not erased when no new figure is given

    def test_stale_counter_loses(self, store: LeaseStore) -> None:
        lease = owned(store)
        assert store.renew_lease(lease) is not None
        assert store.renew_lease(lease) is None

    def test_renew_fails_once_a_handoff_started(self, store: LeaseStore) -> None:
        lease = owned(store)
        assert store.initiate_graceful_handoff(lease, "worker-b") is not None
        # The old owner's next renewal (it does not know about the handoff yet) must fail ...
        assert store.renew_lease(lease) is None
        # ... and once it adopts the handoff state it keeps renewing.
        adopted = store.get_lease(lease.lease_key)
        assert adopted is not None
        assert adopted.checkpoint_owner == "worker-a"
        assert store.renew_lease(adopted) is not None

    def test_renew_of_missing_lease_loses(self, store: LeaseStore) -> None:
        assert store.renew_lease(new_lease("shardId-000000000404")) is None


class TestTake:
    def test_take_unowned(self, store: LeaseStore) -> None:
        created = store.create_lease_if_not_exists(new_lease())
        assert created is not None
        taken = store.take_lease(created, "worker-a")
        assert taken is not None
        assert (taken.lease_owner, taken.lease_counter) == ("worker-a", 1)
        assert taken.owner_switches_since_checkpoint == 0  # KCL: taking an unowned lease is no switch

    def test_steal_counts_owner_switch_and_clears_handoff(self, store: LeaseStore) -> None:
        lease = owned(store)
        in_handoff = store.initiate_graceful_handoff(lease, "worker-b")
        assert in_handoff is not None
        stolen = store.take_lease(in_handoff, "worker-c")
        assert stolen is not None
        assert stolen.lease_owner == "worker-c"
        assert stolen.checkpoint_owner is None
        assert stolen.owner_switches_since_checkpoint == lease.owner_switches_since_checkpoint + 1
        assert stolen.lease_counter == lease.lease_counter + 1

    def test_retake_by_same_owner_is_no_switch(self, store: LeaseStore) -> None:
        lease = owned(store)
        again = store.take_lease(lease, "worker-a")
        assert again is not None
        assert again.owner_switches_since_checkpoint == lease.owner_switches_since_checkpoint

    def test_stale_counter_loses(self, store: LeaseStore) -> None:
        lease = owned(store)
        assert store.renew_lease(lease) is not None
        assert store.take_lease(lease, "worker-b") is None
        current = store.get_lease(lease.lease_key)
        assert current is not None
        assert current.lease_owner == "worker-a"


class TestEvict:
    def test_evict_releases(self, store: LeaseStore) -> None:
        lease = owned(store)
        evicted = store.evict_lease(lease)
        assert evicted is not None
        assert evicted.lease_owner is None
        assert evicted.lease_counter == lease.lease_counter + 1

    def test_evict_during_handoff_keeps_new_owner(self, store: LeaseStore) -> None:
        in_handoff = store.initiate_graceful_handoff(owned(store), "worker-b")
        assert in_handoff is not None
        evicted = store.evict_lease(in_handoff)
        assert evicted is not None
        assert (evicted.lease_owner, evicted.checkpoint_owner) == ("worker-b", None)

    def test_evict_with_wrong_observed_owner_loses(self, store: LeaseStore) -> None:
        lease = owned(store)
        assert store.evict_lease(lease.with_changes(lease_owner="worker-z")) is None
        assert store.evict_lease(new_lease("shardId-000000000404", lease_owner="worker-a")) is None


class TestAssign:
    def test_assign_unowned(self, store: LeaseStore) -> None:
        created = store.create_lease_if_not_exists(new_lease())
        assert created is not None
        assigned = store.assign_lease(created, "worker-b")
        assert assigned is not None
        assert (assigned.lease_owner, assigned.lease_counter) == ("worker-b", 1)
        assert assigned.owner_switches_since_checkpoint == 0

    def test_assign_ignores_counter_but_checks_owners(self, store: LeaseStore) -> None:
        lease = owned(store)
        renewed = store.renew_lease(lease)
        assert renewed is not None
        # The leader's snapshot has an older counter: assignment still applies (owner unchanged).
        assigned = store.assign_lease(lease, "worker-b")
        assert assigned is not None
        assert assigned.lease_owner == "worker-b"
        assert assigned.lease_counter == renewed.lease_counter + 1
        # But a snapshot with the wrong owner loses.
        assert store.assign_lease(lease, "worker-c") is None

    def test_assign_completes_a_handoff(self, store: LeaseStore) -> None:
        lease = owned(store)
        in_handoff = store.initiate_graceful_handoff(lease, "worker-b")
        assert in_handoff is not None
        done = store.assign_lease(in_handoff, "worker-b")
        assert done is not None
        assert (done.lease_owner, done.checkpoint_owner) == ("worker-b", None)
        # KCL counts a switch only if leaseOwner changes or checkpointOwner is the new owner.
        assert done.owner_switches_since_checkpoint == lease.owner_switches_since_checkpoint
        assert done.lease_counter == lease.lease_counter + 1

    def test_assigning_back_to_the_checkpoint_owner_counts_a_switch(self, store: LeaseStore) -> None:
        lease = owned(store)
        in_handoff = store.initiate_graceful_handoff(lease, "worker-b")
        assert in_handoff is not None
        back = store.assign_lease(in_handoff, "worker-a")
        assert back is not None
        assert (back.lease_owner, back.checkpoint_owner) == ("worker-a", None)
        assert back.owner_switches_since_checkpoint == lease.owner_switches_since_checkpoint + 1

    def test_assign_requires_existing_item(self, store: LeaseStore) -> None:
        assert store.assign_lease(new_lease("shardId-000000000404"), "worker-b") is None
        assert store.get_lease("shardId-000000000404") is None


class TestGracefulHandoff:
    def test_handoff_swaps_owners_without_counter(self, store: LeaseStore) -> None:
        lease = owned(store)
        handed = store.initiate_graceful_handoff(lease, "worker-b")
        assert handed is not None
        assert (handed.lease_owner, handed.checkpoint_owner) == ("worker-b", "worker-a")
        assert handed.lease_counter == lease.lease_counter
        assert handed.actual_owner == "worker-a"

    def test_only_one_handoff_at_a_time(self, store: LeaseStore) -> None:
        lease = owned(store)
        assert store.initiate_graceful_handoff(lease, "worker-b") is not None
        assert store.initiate_graceful_handoff(lease, "worker-c") is None

    def test_handoff_needs_the_observed_owner(self, store: LeaseStore) -> None:
        lease = owned(store)
        assert store.initiate_graceful_handoff(lease.with_changes(lease_owner="worker-z"), "worker-b") is None


class TestUpdate:
    def test_checkpoint_and_pending(self, store: LeaseStore) -> None:
        lease = owned(store)
        prepared = store.update_lease(
            lease.with_changes(pending_checkpoint=ExtendedSequenceNumber(SEQ_A, 2), pending_checkpoint_state=b"state")
        )
        assert prepared is not None
        assert prepared.pending_checkpoint == ExtendedSequenceNumber(SEQ_A, 2)
        assert prepared.pending_checkpoint_state == b"state"
        assert prepared.lease_counter == lease.lease_counter + 1
        committed = store.update_lease(
            prepared.with_changes(
                checkpoint=ExtendedSequenceNumber(SEQ_A, 2),
                pending_checkpoint=None,
                pending_checkpoint_state=None,
                owner_switches_since_checkpoint=0,
            )
        )
        assert committed is not None
        assert committed.checkpoint == ExtendedSequenceNumber(SEQ_A, 2)
        assert (committed.pending_checkpoint, committed.pending_checkpoint_state) == (None, None)
        assert committed.owner_switches_since_checkpoint == 0
        assert store.get_lease(lease.lease_key) == committed

    def test_shard_end_with_children(self, store: LeaseStore) -> None:
        lease = owned(store)
        children = frozenset({"shardId-000000000001", "shardId-000000000002"})
        ended = store.update_lease(lease.with_changes(checkpoint=SHARD_END, child_shard_ids=children))
        assert ended is not None
        assert ended.is_complete
        assert ended.child_shard_ids == children

    def test_stale_counter_loses(self, store: LeaseStore) -> None:
        lease = owned(store)
        assert store.renew_lease(lease) is not None
        assert store.update_lease(lease.with_changes(checkpoint=ExtendedSequenceNumber(SEQ_A))) is None
        assert store.get_checkpoint(lease.lease_key) == TRIM_HORIZON

    def test_meta_update_leaves_counter(self, store: LeaseStore) -> None:
        lease = owned(store)
        rng = HashKeyRange(10, 20)
        updated = store.update_lease_meta(lease.lease_key, child_shard_ids=["shardId-000000000003"], hash_key_range=rng)
        assert updated is not None
        assert updated.lease_counter == lease.lease_counter
        assert (updated.child_shard_ids, updated.hash_key_range) == (frozenset({"shardId-000000000003"}), rng)
        assert store.update_lease_meta("shardId-000000000404", child_shard_ids=["x"]) is None


class TestDelete:
    def test_delete(self, store: LeaseStore) -> None:
        lease = owned(store)
        store.delete_lease(lease.lease_key)
        assert store.get_lease(lease.lease_key) is None
        store.delete_lease(lease.lease_key)  # deleting again is not an error


class TestRacesBetweenClients:
    """Two independent clients (connections / boto3 clients) on the same table."""

    @staticmethod
    def _race(actions: list[Callable[[], Lease | None]]) -> list[Lease | None]:
        barrier = threading.Barrier(len(actions))
        results: list[Lease | None] = [None] * len(actions)
        errors: list[BaseException] = []

        def run(i: int) -> None:
            try:
                barrier.wait()
                results[i] = actions[i]()
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(actions))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors, errors
        return results

    def test_exactly_one_taker_wins(self, lease_backend: LeaseBackend, store: LeaseStore) -> None:
        other = lease_backend.open_store()
        for i in range(8):
            created = store.create_lease_if_not_exists(new_lease(f"shardId-{i:012d}"))
            assert created is not None
            results = self._race(
                [
                    functools.partial(store.take_lease, created, "worker-a"),
                    functools.partial(other.take_lease, created, "worker-b"),
                ]
            )
            winners = [r for r in results if r is not None]
            assert len(winners) == 1
            assert store.get_lease(created.lease_key) == winners[0]

    def test_renew_against_steal(self, lease_backend: LeaseBackend, store: LeaseStore) -> None:
        other = lease_backend.open_store()
        lease = owned(store)
        renewed, stolen = self._race([lambda: store.renew_lease(lease), lambda: other.take_lease(lease, "worker-b")])
        assert (renewed is None) != (stolen is None)

    def test_counter_equals_successful_renewals(self, lease_backend: LeaseBackend, store: LeaseStore) -> None:
        other = lease_backend.open_store()
        start = owned(store)
        successes = 0
        lock = threading.Lock()

        def renew_loop(client: LeaseStore) -> None:
            nonlocal successes
            for _ in range(25):
                current = client.get_lease(start.lease_key)
                assert current is not None
                if client.renew_lease(current) is not None:
                    with lock:
                        successes += 1

        threads = [threading.Thread(target=renew_loop, args=(c,)) for c in (store, other)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        final = store.get_lease(start.lease_key)
        assert final is not None
        assert final.lease_counter == start.lease_counter + successes
        assert successes >= 25  # at least one of each pair of competing renewals wins

    def test_create_race_has_one_winner(self, lease_backend: LeaseBackend, store: LeaseStore) -> None:
        other = lease_backend.open_store()
        lease = new_lease()
        results = self._race(
            [lambda: store.create_lease_if_not_exists(lease), lambda: other.create_lease_if_not_exists(lease)]
        )
        assert sum(r is not None for r in results) == 1


class TestForeignItems:
    """Coordinator items, worker metrics and broken items may share the table: scans must survive them."""

    def test_coordinator_items_are_skipped_quietly_and_malformed_leases_with_a_warning(
        self, lease_backend: LeaseBackend, store: LeaseStore, caplog: pytest.LogCaptureFixture
    ) -> None:
        good = owned(store, "shardId-000000000001")
        lease_backend.put_raw_non_lease("worker-1", "WORKER_METRIC_STATS")
        lease_backend.put_raw_non_lease("Leader", "LEADER")
        lease_backend.put_raw_malformed("shardId-000000000002")
        with caplog.at_level(logging.WARNING, logger="shardwise"):
            leases = store.list_leases()
        assert leases == [good]
        warned = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
        assert "shardId-000000000002" in warned
        # The single-table layout keeps its coordinator items in the lease table: expected, so not warned about.
        assert "worker-1" not in warned
        assert "Leader" not in warned
        assert store.get_lease("worker-1") is None
        assert store.get_lease("shardId-000000000002") is None

    def test_table_of_only_foreign_items_is_empty(self, lease_backend: LeaseBackend, store: LeaseStore) -> None:
        lease_backend.put_raw_non_lease("Migration3.0", "CLIENT_VERSION_MIGRATION")
        assert store.is_empty()
        assert store.list_leases() == []

    def test_foreign_items_are_not_lease_targets(self, lease_backend: LeaseBackend, store: LeaseStore) -> None:
        lease_backend.put_raw_non_lease("worker-1", "WORKER_METRIC_STATS")
        assert store.create_lease_if_not_exists(new_lease("worker-1")) is None
