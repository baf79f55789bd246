"""LeaseRenewer over a real SQLite lease store, with a fake monotonic clock and a fault-injecting store wrapper."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from shardwise.backends.sqlite.leases import SQLiteLeaseStore
from shardwise.checkpoint.sequence import TRIM_HORIZON, ExtendedSequenceNumber
from shardwise.errors import ConfigurationError, DependencyError, LeaseLostError
from shardwise.leases.model import Lease
from shardwise.leasing.renewer import LeaseRenewer

A = "shardId-000000000000"
B = "shardId-000000000001"
FAILOVER_MS = 10_000
LOCAL_EXPIRY_MS = 9_000  # the failover time minus the default margin (a tenth)
MS = 1_000_000


class FakeClock:
    def __init__(self) -> None:
        self.now_ns = 5_000 * MS

    def __call__(self) -> int:
        return self.now_ns

    def advance_ms(self, ms: int) -> None:
        self.now_ns += ms * MS


class FlakyStore(SQLiteLeaseStore):
    """A SQLite store that counts renewals and reads, and can fail or lose the response of the next renewals."""

    def __init__(self, path: Path, table: str) -> None:
        super().__init__(path, table)
        self.renew_calls = 0
        self.get_calls = 0
        self.fail_renewals = 0  # raise DependencyError instead of renewing
        self.lose_responses = 0  # renew, then answer "condition failed" (a retried write that did succeed)

    def renew_lease(self, lease: Lease, *, throughput_kbps: float | None = None) -> Lease | None:
        self.renew_calls += 1
        if self.fail_renewals:
            self.fail_renewals -= 1
            raise DependencyError("lease table unreachable")
        result = super().renew_lease(lease, throughput_kbps=throughput_kbps)
        if self.lose_responses and result is not None:
            self.lose_responses -= 1
            return None
        return result

    def get_lease(self, lease_key: str) -> Lease | None:
        self.get_calls += 1
        return super().get_lease(lease_key)

    def lease(self, key: str) -> Lease:
        lease = super().get_lease(key)
        assert lease is not None
        return lease


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[FlakyStore]:
    s = FlakyStore(tmp_path / "leases.db", "app")
    s.create_table_if_not_exists()
    for key in (A, B):
        assert s.create_lease_if_not_exists(Lease(key, TRIM_HORIZON)) is not None
    yield s
    s.close()


@pytest.fixture
def renewer(store: FlakyStore, clock: FakeClock) -> LeaseRenewer:
    return LeaseRenewer(store, "w1", failover_time_ms=FAILOVER_MS, clock_ns=clock)


def take(store: FlakyStore, key: str, owner: str = "w1") -> Lease:
    taken = store.take_lease(store.lease(key), owner)
    assert taken is not None
    return taken


def hold(store: FlakyStore, renewer: LeaseRenewer, *keys: str) -> dict[str, str]:
    return renewer.add_leases([take(store, key) for key in keys])


def test_renew_all_bumps_every_held_counter(store: FlakyStore, renewer: LeaseRenewer, clock: FakeClock) -> None:
    hold(store, renewer, A, B)
    before = {key: store.lease(key).lease_counter for key in (A, B)}
    clock.advance_ms(3_000)
    result = renewer.renew_all()
    assert result.renewed == (A, B)
    assert result.lost == ()
    for key in (A, B):
        assert store.lease(key).lease_counter == before[key] + 1
        held = renewer.get(key)
        assert held is not None
        assert held.lease == store.lease(key)  # the renewer knows the new counter
        assert held.last_renewal_ns == clock.now_ns
    clock.advance_ms(3_000)
    assert renewer.renew_all().renewed == (A, B)
    assert [store.lease(key).lease_counter for key in (A, B)] == [before[A] + 2, before[B] + 2]


def test_a_lease_taken_by_another_worker_is_lost_and_dropped(store: FlakyStore, renewer: LeaseRenewer) -> None:
    hold(store, renewer, A, B)
    held_counter = store.lease(A).lease_counter
    stolen = take(store, A, "w2")
    # The re-read shows counter c + 1, as a spurious failure would, but with another owner: lost.
    assert stolen.lease_counter == held_counter + 1
    result = renewer.renew_all()
    assert result.lost == (A,)
    assert result.renewed == (B,)
    assert renewer.get(A) is None
    assert set(renewer.held()) == {B}
    assert store.lease(A) == stolen  # the renewer wrote nothing to it
    # Lost means lost: it is not renewed on later runs either.
    assert renewer.renew_all().renewed == (B,)


def test_a_spurious_failure_counts_as_renewed(store: FlakyStore, renewer: LeaseRenewer, clock: FakeClock) -> None:
    hold(store, renewer, A)
    counter = store.lease(A).lease_counter
    store.lose_responses = 1
    clock.advance_ms(3_000)
    result = renewer.renew_all()
    assert result.renewed == (A,)
    assert result.lost == ()
    assert store.lease(A).lease_counter == counter + 1
    held = renewer.get(A)
    assert held is not None
    assert held.lease.lease_counter == counter + 1
    assert held.last_renewal_ns == clock.now_ns
    # The next renewal is conditional on the counter the table really has.
    clock.advance_ms(3_000)
    assert renewer.renew_all().renewed == (A,)
    assert store.lease(A).lease_counter == counter + 2


def test_a_failed_renewal_whose_reread_shows_another_counter_is_lost(store: FlakyStore, renewer: LeaseRenewer) -> None:
    hold(store, renewer, A)
    counter = store.lease(A).lease_counter
    # Someone moved the counter by two (e.g. taken and renewed by another worker, then given back to us).
    take(store, A, "w2")
    take(store, A, "w1")
    assert store.lease(A).lease_counter == counter + 2
    assert renewer.renew_all().lost == (A,)


def test_a_lease_not_renewed_for_the_local_expiry_is_dropped_without_asking_the_store(
    store: FlakyStore, renewer: LeaseRenewer, clock: FakeClock
) -> None:
    hold(store, renewer, A)
    before = store.lease(A)
    assert renewer.local_expiry_ms == LOCAL_EXPIRY_MS
    clock.advance_ms(LOCAL_EXPIRY_MS)  # exactly the local expiry (failover minus margin): not expired yet
    assert renewer.renew_all().renewed == (A,)
    assert store.renew_calls == 1
    calls = (store.renew_calls, store.get_calls)
    clock.advance_ms(LOCAL_EXPIRY_MS + 1)
    result = renewer.renew_all()
    assert result.lost == (A,)
    assert (store.renew_calls, store.get_calls) == calls
    assert renewer.get(A) is None
    assert store.lease(A).lease_counter == before.lease_counter + 1


def test_a_dependency_error_keeps_the_lease_until_it_expires(
    store: FlakyStore, renewer: LeaseRenewer, clock: FakeClock
) -> None:
    tokens = hold(store, renewer, A)
    counter = store.lease(A).lease_counter
    store.fail_renewals = 100
    for _ in range(3):  # t = 3 s, 6 s, 9 s after the last renewal
        clock.advance_ms(3_000)
        result = renewer.renew_all()
        assert result.renewed == ()
        assert result.lost == ()
        assert renewer.holds(A, tokens[A])
    # The table comes back before the lease expired: renewed, and the expiry starts again from now.
    store.fail_renewals = 0
    clock.advance_ms(LOCAL_EXPIRY_MS - 9_000)  # at the local expiry exactly: still held
    assert renewer.renew_all().renewed == (A,)
    assert store.lease(A).lease_counter == counter + 1
    store.fail_renewals = 100
    clock.advance_ms(LOCAL_EXPIRY_MS)
    assert renewer.renew_all().lost == ()
    assert renewer.holds(A, tokens[A])
    calls = store.renew_calls
    clock.advance_ms(1)
    assert renewer.renew_all().lost == (A,)
    assert store.renew_calls == calls  # expired on the local clock: no store call
    assert not renewer.holds(A, tokens[A])


def test_tokens_differ_per_acquisition(store: FlakyStore, renewer: LeaseRenewer) -> None:
    first = hold(store, renewer, A, B)
    assert first[A] != first[B]
    assert renewer.holds(A, first[A])
    assert not renewer.holds(A, first[B])
    renewer.drop(A)
    assert not renewer.holds(A, first[A])
    second = renewer.add_leases([store.lease(A)])
    assert second[A] != first[A]
    assert renewer.holds(A, second[A])
    assert not renewer.holds(A, first[A])


def test_drop_with_a_token_drops_only_that_acquisition(store: FlakyStore, renewer: LeaseRenewer) -> None:
    old = hold(store, renewer, A)[A]
    renewer.drop(A)
    new = renewer.add_leases([store.lease(A)])[A]
    assert renewer.drop(A, old) is None  # a consumer of the earlier acquisition cleaning up
    assert renewer.holds(A, new)
    dropped = renewer.drop(A, new)
    assert dropped is not None
    assert dropped.token == new
    assert renewer.get(A) is None


def test_release_evicts_the_lease(store: FlakyStore, renewer: LeaseRenewer) -> None:
    tokens = hold(store, renewer, A, B)
    before = store.lease(A)
    assert not renewer.release(A, tokens[B])  # the wrong token releases nothing
    assert store.lease(A) == before
    assert renewer.release(A, tokens[A])
    after = store.lease(A)
    assert after.lease_owner is None
    assert after.lease_counter == before.lease_counter + 1
    assert renewer.get(A) is None
    assert not renewer.release(A, tokens[A])  # once only
    assert renewer.renew_all().renewed == (B,)


def test_release_of_a_lease_taken_meanwhile_does_not_evict_the_new_owner(
    store: FlakyStore, renewer: LeaseRenewer
) -> None:
    tokens = hold(store, renewer, A)
    stolen = take(store, A, "w2")
    assert not renewer.release(A, tokens[A])
    assert store.lease(A) == stolen


def test_write_checkpoint_with_a_stale_token_raises_lease_lost(store: FlakyStore, renewer: LeaseRenewer) -> None:
    tokens = hold(store, renewer, A)
    before = store.lease(A)
    with pytest.raises(LeaseLostError, match="doesn't hold the lease"):
        renewer.write_checkpoint(A, "stale", ExtendedSequenceNumber("10"), pending=None, pending_state=None)
    assert store.lease(A) == before
    assert renewer.holds(A, tokens[A])  # a stale caller does not make the current holder lose it
    renewer.write_checkpoint(A, tokens[A], ExtendedSequenceNumber("10"), pending=None, pending_state=None)
    assert store.lease(A).checkpoint == ExtendedSequenceNumber("10")


def test_write_checkpoint_refreshes_the_renewal_time(
    store: FlakyStore, renewer: LeaseRenewer, clock: FakeClock
) -> None:
    tokens = hold(store, renewer, A)
    clock.advance_ms(LOCAL_EXPIRY_MS - 1)
    renewer.write_checkpoint(A, tokens[A], ExtendedSequenceNumber("10"), pending=None, pending_state=None)
    held = renewer.get(A)
    assert held is not None
    assert held.last_renewal_ns == clock.now_ns
    assert held.lease == store.lease(A)
    clock.advance_ms(LOCAL_EXPIRY_MS - 1)
    assert renewer.renew_all().renewed == (A,)


def test_write_checkpoint_after_the_counter_moved_raises_lease_lost_and_drops(
    store: FlakyStore, renewer: LeaseRenewer
) -> None:
    tokens = hold(store, renewer, A)
    stolen = take(store, A, "w2")
    with pytest.raises(LeaseLostError, match="another worker changed it"):
        renewer.write_checkpoint(A, tokens[A], ExtendedSequenceNumber("10"), pending=None, pending_state=None)
    assert renewer.get(A) is None
    assert store.lease(A) == stolen


def handoff_renewer(store: FlakyStore, clock: FakeClock, seen: list[tuple[str, str]]) -> LeaseRenewer:
    return LeaseRenewer(
        store,
        "w1",
        failover_time_ms=10_000,
        clock_ns=clock,
        on_handoff=lambda key, next_owner: seen.append((key, next_owner)),
    )


def test_a_handoff_started_by_the_leader_is_adopted_and_reported(store: FlakyStore, clock: FakeClock) -> None:
    seen: list[tuple[str, str]] = []
    renewer = handoff_renewer(store, clock, seen)
    lease = take(store, "shardId-000000000000")
    token = renewer.add_leases([lease])[lease.lease_key]
    assert store.initiate_graceful_handoff(lease, "w2") is not None
    assert renewer.renew_all().renewed == (lease.lease_key,)  # adopted, still renewed by the old owner
    assert seen == [(lease.lease_key, "w2")]
    assert renewer.in_handoff(lease.lease_key)
    assert renewer.complete_handoff(lease.lease_key, token)
    current = store.get_lease(lease.lease_key)
    assert current is not None
    assert (current.lease_owner, current.checkpoint_owner) == ("w2", None)


def test_a_checkpoint_between_handoff_and_renewal_does_not_hide_the_handoff(
    store: FlakyStore, clock: FakeClock
) -> None:
    """The leader's handoff does not move the counter, so the old owner's checkpoint still succeeds; the renewer
    must keep its own view of the owners so that the next renewal notices the handoff (a regression)."""
    seen: list[tuple[str, str]] = []
    renewer = handoff_renewer(store, clock, seen)
    lease = take(store, "shardId-000000000000")
    token = renewer.add_leases([lease])[lease.lease_key]
    assert store.initiate_graceful_handoff(lease, "w2") is not None
    renewer.write_checkpoint(lease.lease_key, token, ExtendedSequenceNumber("100"), pending=None, pending_state=None)
    renewer.renew_all()
    assert seen == [(lease.lease_key, "w2")]


class WaitingStore(SQLiteLeaseStore):
    """Renewing the first lease waits (up to 10 s) until the second lease's renewal has started."""

    def __init__(self, path: Path, table_name: str) -> None:
        super().__init__(path, table_name)
        self.second_started = threading.Event()
        self.first_waited: bool | None = None

    def renew_lease(self, lease: Lease, *, throughput_kbps: float | None = None) -> Lease | None:
        if lease.lease_key.endswith("0"):
            self.first_waited = self.second_started.wait(10)
        else:
            self.second_started.set()
        return super().renew_lease(lease, throughput_kbps=throughput_kbps)


def test_leases_are_renewed_in_parallel(tmp_path: Path, clock: FakeClock) -> None:
    """One slow renewal does not hold the others back (KCL renews on a pool of maxLeaseRenewalThreads)."""
    store = WaitingStore(tmp_path / "leases.db", "app")
    store.create_table_if_not_exists()
    keys = ["shardId-000000000000", "shardId-000000000001"]
    leases = []
    for key in keys:
        created = store.create_lease_if_not_exists(Lease(key, TRIM_HORIZON))
        assert created is not None
        taken = store.take_lease(created, "w1")
        assert taken is not None
        leases.append(taken)
    renewer = LeaseRenewer(store, "w1", failover_time_ms=10_000, clock_ns=clock)
    renewer.add_leases(leases)
    result = renewer.renew_all()
    assert result.renewed == tuple(keys)
    assert store.first_waited is True, "the second lease's renewal started while the first one was under way"
    store.close()


def test_max_renewal_threads_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="max_renewal_threads"):
        LeaseRenewer(SQLiteLeaseStore(tmp_path / "x.db", "app"), "w1", failover_time_ms=10_000, max_renewal_threads=0)
