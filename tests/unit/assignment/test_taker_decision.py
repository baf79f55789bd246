"""The pure KCL 2.x taker: observe() and decide() rule by rule, plus Hypothesis properties and convergence."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shardwise.assignment.taker import (
    NEVER,
    LeaseObservation,
    TakeDecision,
    TakerConfig,
    decide,
    is_expired,
    is_very_old,
    observe,
    steal_count,
)
from shardwise.checkpoint.sequence import TRIM_HORIZON
from shardwise.errors import ConfigurationError
from shardwise.leases.model import Lease

ME = "me"
CONFIG = TakerConfig()
F_NS = CONFIG.failover_time_ns
NOW = 1_000 * F_NS  # well past every threshold, like a real monotonic clock
FRESH = NOW
EXPIRED = NOW - F_NS - 1
VERY_OLD = NOW - CONFIG.very_old_age_ns - 1


def key(n: int) -> str:
    return f"shardId-{n:012d}"


def lease(n: int, owner: str | None = None, counter: int = 1) -> Lease:
    return Lease(key(n), TRIM_HORIZON, lease_owner=owner, lease_counter=counter)


def snapshot(*items: tuple[Lease, int]) -> dict[str, LeaseObservation]:
    return {item.lease_key: LeaseObservation(item, stamp) for item, stamp in items}


def owned(owners: Mapping[str, int], stamp: int = FRESH, start: int = 0) -> list[tuple[Lease, int]]:
    """``{owner: count}`` → fresh owned leases with consecutive keys from ``start``."""
    out: list[tuple[Lease, int]] = []
    n = start
    for owner, count in owners.items():
        for _ in range(count):
            out.append((lease(n, owner), stamp))
            n += 1
    return out


def run(observations: Mapping[str, LeaseObservation], config: TakerConfig = CONFIG, seed: int = 7) -> TakeDecision:
    return decide(ME, observations, NOW, config, random.Random(seed))


# -- configuration ---------------------------------------------------------------------------------------


def test_config_defaults_and_intervals() -> None:
    assert CONFIG.failover_time_ms == 10_000
    assert CONFIG.epsilon_ms == 25
    assert CONFIG.max_leases_for_worker == 2**31 - 1
    assert CONFIG.max_leases_to_steal_at_one_time == 1
    assert CONFIG.enable_priority_lease_assignment is True
    assert CONFIG.very_old_lease_duration_multiplier == 3
    assert CONFIG.renewal_interval_ms == 3_308
    assert CONFIG.taker_interval_ms == 20_050


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("failover_time_ms", 0),
        ("epsilon_ms", -1),
        ("max_leases_for_worker", 0),
        ("max_leases_for_worker", 2**31),
        ("max_leases_to_steal_at_one_time", 0),
        ("very_old_lease_duration_multiplier", 0),
        ("max_leases_to_steal_at_one_time", True),
        ("enable_priority_lease_assignment", 1),
    ],
)
def test_config_rejects_out_of_range_values(field: str, value: object) -> None:
    with pytest.raises(ConfigurationError, match=field):
        TakerConfig(**{field: value})  # type: ignore[arg-type]


def test_config_rejects_a_non_positive_renewal_interval() -> None:
    with pytest.raises(ConfigurationError, match="renewal interval"):
        TakerConfig(failover_time_ms=75, epsilon_ms=25)
    assert TakerConfig(failover_time_ms=78, epsilon_ms=25).renewal_interval_ms == 1


# -- observe (step 1) ------------------------------------------------------------------------------------


def test_observe_stamps_new_leases_by_ownership() -> None:
    seen = observe({}, [lease(1, "a"), lease(0)], 500, ME)
    assert list(seen) == [key(0), key(1)]
    assert seen[key(0)].last_counter_change_ns == NEVER
    assert seen[key(0)].never_renewed
    assert seen[key(1)].last_counter_change_ns == 500


def test_observe_restamps_only_on_counter_change_and_forgets_missing_leases() -> None:
    previous = snapshot((lease(0, "a", 5), 100), (lease(1, "a", 5), 100), (lease(2), NEVER), (lease(3, "b"), 100))
    renewed = lease(1, "a", 6)
    moved_unchanged_counter = lease(0, "b", 5)  # same counter: the stamp is kept, the new value stored
    seen = observe(previous, [moved_unchanged_counter, renewed, lease(2)], 900, ME)
    assert set(seen) == {key(0), key(1), key(2)}
    assert seen[key(0)] == LeaseObservation(moved_unchanged_counter, 100)
    assert seen[key(1)] == LeaseObservation(renewed, 900)
    assert seen[key(2)].last_counter_change_ns == NEVER
    assert key(3) in previous  # the input is not modified


def test_expiry_is_strictly_after_the_failover_time() -> None:
    assert not is_expired(LeaseObservation(lease(0, "a"), NOW - F_NS), NOW, CONFIG)
    assert is_expired(LeaseObservation(lease(0, "a"), NOW - F_NS - 1), NOW, CONFIG)
    assert not is_very_old(LeaseObservation(lease(0, "a"), NOW - 3 * F_NS), NOW, CONFIG)
    assert is_very_old(LeaseObservation(lease(0, "a"), NOW - 3 * F_NS - 1), NOW, CONFIG)
    never = LeaseObservation(lease(0), NEVER)
    assert is_expired(never, 1, CONFIG)
    assert is_very_old(never, 1, CONFIG)


# -- decide: examples per rule ---------------------------------------------------------------------------


def test_empty_table_takes_nothing() -> None:
    decision = run({})
    assert decision.leases == ()
    assert (decision.target, decision.num_workers, decision.total_leases) == (0, 1, 0)


def test_target_is_one_when_workers_outnumber_leases() -> None:
    decision = run(snapshot(*owned({"a": 1, "b": 1, "c": 1})))
    assert decision.num_workers == 4
    assert decision.target == 1
    assert decision.needed == 1
    # Every other worker sits exactly at target and I need only one: no steal.
    assert decision.leases == ()
    assert decision.most_loaded == ("a", 1)  # ties broken by the smallest worker id
    assert decision.lease_counts == (("a", 1), ("b", 1), ("c", 1), (ME, 0))


def test_target_is_clamped_to_max_leases_for_worker_with_spillover() -> None:
    # 10 leases, 2 workers: target 5; at most 3 per worker → target 3, spillover 2.
    released = [(lease(n), FRESH) for n in range(2, 10)]  # unowned, recently released: available, not very old
    observations = snapshot(*owned({"b": 2}), *released)
    decision = run(observations, TakerConfig(max_leases_for_worker=3))
    assert (decision.target, decision.spillover, decision.needed) == (3, 2, 3)
    assert len(decision.to_take) == 3
    assert {item.lease_key for item in decision.to_take} <= {item.lease_key for item, _ in released}
    assert decision.to_steal == ()
    assert not decision.priority


def test_priority_takes_never_owned_leases_ignoring_target() -> None:
    never_owned = [(lease(n), NEVER) for n in range(2, 8)]
    observations = snapshot(*owned({"b": 2}), *never_owned)
    decision = run(observations)
    assert decision.target == 4
    assert decision.priority
    assert sorted(item.lease_key for item in decision.to_take) == [key(n) for n in range(2, 8)]
    assert decision.very_old_taken == 6
    assert decision.very_old_keys == tuple(key(n) for n in range(2, 8))


def test_priority_obeys_max_leases_for_worker_and_does_not_fall_through() -> None:
    never_owned = [(lease(n), NEVER) for n in range(4, 10)]
    mine = owned({ME: 2}, start=0)
    decision = run(snapshot(*mine, *never_owned), TakerConfig(max_leases_for_worker=5))
    assert decision.priority
    assert len(decision.to_take) == 3

    full = run(
        snapshot(*owned({ME: 5}), *[(lease(n), NEVER) for n in range(5, 7)]), TakerConfig(max_leases_for_worker=5)
    )
    assert full.priority
    assert full.leases == ()


def test_priority_includes_long_expired_owned_leases() -> None:
    observations = snapshot(*owned({"b": 1}, stamp=VERY_OLD), *owned({"c": 3}, start=1))
    decision = run(observations)
    assert decision.priority
    assert [item.lease_key for item in decision.to_take] == [key(0)]


def test_without_priority_very_old_leases_are_taken_up_to_the_need() -> None:
    observations = snapshot(*owned({"b": 2}), *[(lease(n), NEVER) for n in range(2, 8)])
    decision = run(observations, TakerConfig(enable_priority_lease_assignment=False))
    assert not decision.priority
    assert decision.very_old_taken == 0
    assert len(decision.to_take) == decision.needed == 4


def test_my_own_expired_lease_counts_as_available() -> None:
    mine_fresh = (lease(0, ME), FRESH)
    mine_expired = (lease(1, ME), EXPIRED)
    decision = run(snapshot(mine_fresh, mine_expired, *owned({"b": 2}, start=2)))
    assert decision.my_count == 1
    assert decision.available_keys == (key(1),)
    assert decision.expired_keys == (key(1),)
    assert (decision.target, decision.needed) == (2, 1)
    assert decision.to_take == (mine_expired[0],)


def test_a_lease_expired_exactly_at_the_failover_time_is_not_available() -> None:
    decision = run(snapshot((lease(0, "b"), NOW - F_NS), *owned({"b": 1}, start=1)))
    assert decision.available_keys == ()


def test_steal_is_capped_by_max_leases_to_steal_at_one_time() -> None:
    observations = snapshot(*owned({"b": 6}))
    one = run(observations)
    assert (one.target, one.needed, one.steal_from) == (3, 3, "b")
    assert len(one.to_steal) == 1
    many = run(observations, TakerConfig(max_leases_to_steal_at_one_time=10))
    assert len(many.to_steal) == 3  # min(need 3, over target 3)
    two = run(observations, TakerConfig(max_leases_to_steal_at_one_time=2))
    assert len(two.to_steal) == 2


def test_steal_one_when_the_most_loaded_is_at_target_and_i_need_more_than_one() -> None:
    decision = run(snapshot(*owned({"b": 2, "c": 2})), TakerConfig(max_leases_to_steal_at_one_time=5))
    assert (decision.target, decision.needed) == (2, 2)
    assert len(decision.to_steal) == 1
    assert decision.steal_from == "b"


def test_no_steal_when_the_most_loaded_is_at_target_and_i_need_one() -> None:
    decision = run(snapshot(*owned({"b": 2, "c": 2, ME: 1})))
    assert (decision.target, decision.needed) == (2, 1)
    assert decision.leases == ()
    assert decision.most_loaded == ("b", 2)


def test_steal_picks_among_the_most_loaded_workers_leases_only() -> None:
    observations = snapshot(*owned({"c": 1, "b": 4}))
    for seed in range(20):
        decision = run(observations, seed=seed)
        assert decision.steal_from == "b"
        assert [item.lease_owner for item in decision.to_steal] == ["b"]
    picked = {run(observations, seed=seed).to_steal[0].lease_key for seed in range(40)}
    assert len(picked) > 1  # random choice among b's leases


def test_ties_for_most_loaded_break_on_the_smallest_worker_id() -> None:
    decision = run(snapshot(*owned({"z": 3, "b": 3})))
    assert decision.steal_from == "b"


def test_no_steal_when_available_leases_exist() -> None:
    decision = run(snapshot(*owned({"b": 5}), (lease(5), FRESH)))
    assert decision.to_steal == ()
    assert [item.lease_key for item in decision.to_take] == [key(5)]


@pytest.mark.parametrize(
    ("most_loaded", "needed", "target", "max_steal", "expected"),
    [
        (5, 2, 3, 10, 2),  # min(need, over target)
        (5, 3, 3, 10, 2),
        (5, 3, 3, 1, 1),  # capped
        (3, 2, 3, 10, 1),  # at target, need > 1: the quirk steals one
        (3, 1, 3, 10, 0),  # at target, need 1: nothing
        (2, 2, 3, 10, 0),  # below target: nothing
        (9, 0, 3, 10, 0),  # no need: nothing
    ],
)
def test_steal_count_rules(most_loaded: int, needed: int, target: int, max_steal: int, expected: int) -> None:
    assert steal_count(most_loaded, needed, target, max_steal) == expected


def test_decisions_are_deterministic_for_a_snapshot_and_seed() -> None:
    items = [*owned({"b": 5, "c": 2}), (lease(7), FRESH), (lease(8), FRESH), (lease(9, "c"), EXPIRED)]
    forward = snapshot(*items)
    backward = snapshot(*reversed(items))
    assert list(forward) != list(backward)
    for seed in range(10):
        assert run(forward, seed=seed) == run(backward, seed=seed)
        assert run(forward, seed=seed) == run(forward, seed=seed)


# -- Hypothesis properties -------------------------------------------------------------------------------

WORKERS = [ME, "a", "b", "c", "d"]
STAMPS = [NEVER, FRESH, NOW - F_NS, EXPIRED, NOW - 3 * F_NS, VERY_OLD, NOW - F_NS // 2]


@st.composite
def snapshots(draw: st.DrawFn) -> dict[str, LeaseObservation]:
    count = draw(st.integers(0, 24))
    items: list[tuple[Lease, int]] = []
    for n in range(count):
        owner = draw(st.sampled_from([None, *WORKERS]))
        stamp = draw(st.sampled_from(STAMPS))
        if stamp == NEVER and owner is not None:
            stamp = FRESH  # an owned lease is never "never renewed" (see observe)
        items.append((lease(n, owner, draw(st.integers(0, 50))), stamp))
    return snapshot(*items)


configs = st.builds(
    TakerConfig,
    max_leases_for_worker=st.one_of(st.integers(1, 12), st.just(2**31 - 1)),
    max_leases_to_steal_at_one_time=st.integers(1, 4),
    enable_priority_lease_assignment=st.booleans(),
)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(observations=snapshots(), config=configs, seed=st.integers(0, 2**32))
def test_decision_properties(observations: dict[str, LeaseObservation], config: TakerConfig, seed: int) -> None:
    decision = decide(ME, observations, NOW, config, random.Random(seed))
    available = set(decision.available_keys)
    observed = {obs.lease for obs in observations.values()}
    keys = [item.lease_key for item in decision.leases]

    # Every chosen lease is one observed value, chosen once.
    assert len(keys) == len(set(keys))
    assert set(decision.leases) <= observed

    # (a) Without the priority path, never more than the need.
    if not decision.priority:
        assert len(decision.leases) <= max(0, decision.target - decision.my_count)
    else:
        assert decision.to_steal == ()
        assert len(decision.to_take) <= max(0, config.max_leases_for_worker - decision.my_count)
        assert set(keys) <= set(decision.very_old_keys)

    # (b) Steals: bounded, one victim, never myself, never an available lease, only when nothing is available.
    assert len(decision.to_steal) <= config.max_leases_to_steal_at_one_time
    if decision.to_steal:
        assert decision.to_take == ()
        assert not available
        owners = {item.lease_owner for item in decision.to_steal}
        assert owners == {decision.steal_from}
        assert decision.steal_from != ME
    assert not {item.lease_key for item in decision.to_steal} & available

    # (c) Everything taken is available (very old leases are available too).
    assert {item.lease_key for item in decision.to_take} <= available

    # Bookkeeping is consistent with the snapshot.
    assert sum(count for _, count in decision.lease_counts) == len(observations) - len(available)
    assert dict(decision.lease_counts)[ME] == decision.my_count
    assert decision.num_workers == len(decision.lease_counts)


# -- convergence -----------------------------------------------------------------------------------------


class Table:
    """An in-memory lease table with KCL's counter semantics for renew and take."""

    def __init__(self, count: int) -> None:
        self.leases = {key(n): lease(n, counter=0) for n in range(count)}

    def renew_all(self) -> None:
        for name, item in self.leases.items():
            if item.lease_owner is not None:
                self.leases[name] = item.with_changes(lease_counter=item.lease_counter + 1)

    def take(self, observed: Lease, owner: str) -> Lease | None:
        current = self.leases[observed.lease_key]
        if current.lease_counter != observed.lease_counter:
            return None
        taken = current.with_changes(
            lease_owner=owner,
            lease_counter=current.lease_counter + 1,
            owner_switches_since_checkpoint=current.owner_switches_since_checkpoint
            + int(observed.counts_as_owner_switch(owner)),
        )
        self.leases[observed.lease_key] = taken
        return taken

    def counts(self, workers: list[str]) -> dict[str, int]:
        held = Counter(item.lease_owner for item in self.leases.values())
        return {worker: held.get(worker, 0) for worker in workers}


def play_round(
    table: Table,
    workers: list[str],
    memory: dict[str, dict[str, LeaseObservation]],
    now: int,
    rng: random.Random,
) -> int:
    """Every owner renews, then every worker runs a taker pass in random order. Returns the leases moved."""
    table.renew_all()
    moved = 0
    for worker in rng.sample(workers, len(workers)):
        memory[worker] = observe(memory[worker], table.leases.values(), now, worker)
        decision = decide(worker, memory[worker], now, CONFIG, rng)
        for chosen in decision.leases:
            taken = table.take(chosen, worker)
            if taken is not None:
                memory[worker][taken.lease_key] = LeaseObservation(taken, now)
                moved += 1
    return moved


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(num_workers=st.integers(2, 8), num_leases=st.integers(1, 64), seed=st.integers(0, 2**32))
def test_workers_converge_to_a_balanced_stable_assignment(num_workers: int, num_leases: int, seed: int) -> None:
    rng = random.Random(seed)
    workers = [f"worker-{n}" for n in range(num_workers)]
    table = Table(num_leases)
    memory: dict[str, dict[str, LeaseObservation]] = {worker: {} for worker in workers}
    low, high = num_leases // num_workers, -(-num_leases // num_workers)
    now = 1_000 * F_NS
    step = CONFIG.taker_interval_ms * 1_000_000

    def balanced() -> bool:
        counts = table.counts(workers)
        return sum(counts.values()) == num_leases and all(low <= c <= high for c in counts.values())

    rounds = 0
    while not balanced():
        rounds += 1
        assert rounds <= 4 * num_leases + 10, f"not balanced after {rounds - 1} rounds: {table.counts(workers)}"
        now += step
        play_round(table, workers, memory, now, rng)

    settled = table.counts(workers)
    for _ in range(num_workers + 5):
        now += step
        assert play_round(table, workers, memory, now, rng) == 0
        assert table.counts(workers) == settled
