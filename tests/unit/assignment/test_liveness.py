"""The pure KCL 3.x leader liveness rules: examples rule by rule, then Hypothesis properties over run histories."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shardwise.assignment.liveness import (
    NEVER,
    CounterStamp,
    LeaderMemory,
    Liveness,
    LivenessRules,
    expired_keys,
    judge,
    observe_counters,
    observe_handoffs,
    rebalance_due,
    recent_assignments,
    record_assignments,
)
from shardwise.assignment.taker import LeaseObservation, observe
from shardwise.assignment.utilization import AssignmentConfig
from shardwise.checkpoint.sequence import SHARD_END, TRIM_HORIZON
from shardwise.leases.model import Lease

MS = 1_000_000
FAILOVER_MS = 10_000
RULES = LivenessRules.for_leader(AssignmentConfig(), failover_time_ms=FAILOVER_MS, discovery_interval_ms=1_000)
F_NS = RULES.failover_ns
START = 5_000_000 * MS  # a leader's monotonic clock: well above 0


def key(n: int) -> str:
    return f"shardId-{n:012d}"


def lease(
    n: int, owner: str | None = "a", counter: int = 1, *, handoff_from: str | None = None, done: bool = False
) -> Lease:
    return Lease(
        key(n),
        SHARD_END if done else TRIM_HORIZON,
        lease_owner=owner,
        lease_counter=counter,
        checkpoint_owner=handoff_from,
    )


# -- the rules' timings ----------------------------------------------------------------------------------


def test_rules_follow_the_leaders_settings() -> None:
    config = AssignmentConfig(graceful_lease_handoff_timeout_ms=30_000, variance_balancing_frequency=5)
    rules = LivenessRules.for_leader(config, failover_time_ms=10_000, discovery_interval_ms=2_000)
    assert rules == LivenessRules(
        failover_ns=10_000 * MS, handoff_grace_ns=40_000 * MS, assignment_grace_ns=12_000 * MS, rebalance_every=5
    )
    assert LivenessRules.for_leader(config, failover_time_ms=10_000).assignment_grace_ns == 10_000 * MS


# -- counter stamps --------------------------------------------------------------------------------------


def test_first_sight_stamps_owned_leases_now_and_unowned_ones_never() -> None:
    stamps = observe_counters({}, [lease(0), lease(1, None)], START)
    assert stamps == {key(0): CounterStamp(1, START), key(1): CounterStamp(1, NEVER)}


def test_a_moved_counter_restamps_an_unmoved_one_keeps_its_stamp_and_a_missing_lease_is_forgotten() -> None:
    previous = {key(0): CounterStamp(1, START), key(1): CounterStamp(1, START), key(2): CounterStamp(4, NEVER)}
    kept = dict(previous)
    stamps = observe_counters(previous, [lease(0, counter=2), lease(1, "b", counter=1)], START + 7)
    assert stamps == {key(0): CounterStamp(2, START + 7), key(1): CounterStamp(1, START)}
    assert previous == kept  # the input is not modified


def test_recent_assignments_keep_the_ones_within_their_grace() -> None:
    grace = RULES.assignment_grace_ns
    assigned = {key(0): START, key(1): START - 1}
    assert recent_assignments(assigned, START + grace, grace) == {key(0): START}


# -- expiry ----------------------------------------------------------------------------------------------


def test_expiry_is_strictly_after_the_failover_time() -> None:
    leases = [lease(0)]
    stamps = {key(0): CounterStamp(1, START)}
    assert expired_keys(leases, stamps, (), START + F_NS, F_NS) == frozenset()
    assert expired_keys(leases, stamps, (), START + F_NS + 1, F_NS) == {key(0)}


def test_unowned_finished_and_recently_assigned_leases_are_never_expired() -> None:
    leases = [lease(0, None), lease(1, done=True), lease(2), lease(3)]
    stamps = {item.lease_key: CounterStamp(1, NEVER) for item in leases}
    assert expired_keys(leases, stamps, {key(2)}, START, F_NS) == {key(3)}


def test_a_new_term_declares_nothing_expired_before_a_failover_time() -> None:
    leases = [lease(0), lease(1, "b")]
    memory = LeaderMemory()
    now = START
    while now <= START + F_NS:
        liveness, memory = judge(memory, leases, now, RULES)
        assert liveness.expired_keys == frozenset()
        now += F_NS // 4
    liveness, memory = judge(memory, leases, now, RULES)
    assert liveness.expired_keys == {key(0), key(1)}


# -- graceful handoffs -----------------------------------------------------------------------------------


def test_a_handoff_blocks_its_lease_for_its_grace_from_when_it_was_first_seen() -> None:
    grace = RULES.handoff_grace_ns
    handing = [lease(0, "b", handoff_from="a"), lease(1)]
    seen, blocked = observe_handoffs({}, handing, START, grace)
    assert (seen, blocked) == ({key(0): START}, frozenset({key(0)}))
    seen, blocked = observe_handoffs(seen, handing, START + grace, grace)
    assert (seen, blocked) == ({key(0): START}, frozenset({key(0)}))
    seen, blocked = observe_handoffs(seen, handing, START + grace + 1, grace)
    assert (seen, blocked) == ({key(0): START}, frozenset())
    seen, blocked = observe_handoffs(seen, [lease(0, "b", counter=2)], START + grace + 2, grace)
    assert (seen, blocked) == ({}, frozenset())  # the handoff finished: forgotten


def test_an_expired_handoff_is_available_again() -> None:
    """KCL 3.5.0, #1765: the old owner died mid-handoff, so the new owner never took the lease over."""
    handing = [lease(0, "b", handoff_from="a")]
    # The handoff was first seen a failover time after the counter last moved: well within its own grace.
    memory = LeaderMemory(stamps={key(0): CounterStamp(1, START)}, handoffs_seen={key(0): START + F_NS})
    liveness, _ = judge(memory, handing, START + F_NS + 1, RULES)
    assert liveness.expired_keys == {key(0)}
    assert liveness.blocked_keys == frozenset()


# -- the rebalancing cadence and hold --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("runs", "hold", "now", "expected"),
    [
        (0, None, START, (True, None)),  # the term's first run rebalances
        (1, None, START, (False, None)),
        (3, None, START, (True, None)),
        (0, START - 1, START, (False, START - 1)),  # a hold always skips the first run, and is kept
        (3, START + 1, START, (False, START + 1)),  # before the hold: no rebalancing
        (3, START, START, (True, None)),  # at the hold: lifted, on the cadence
        (4, START, START, (False, None)),  # lifted off the cadence: the cadence is not shifted
    ],
)
def test_rebalance_due(runs: int, hold: int | None, now: int, expected: tuple[bool, int | None]) -> None:
    assert rebalance_due(runs, hold, now, 3) == expected


def test_judge_counts_the_runs_and_record_assignments_adds_the_writes() -> None:
    liveness, memory = judge(LeaderMemory(), [lease(0)], START, RULES)
    assert liveness == Liveness({key(0): START}, frozenset(), frozenset(), rebalance=True)
    assert memory.runs == 1
    recorded = record_assignments(memory, [key(0), key(1)], START + 5)
    assert recorded.assigned_at == {key(0): START + 5, key(1): START + 5}
    assert memory.assigned_at == {}  # the input is not modified
    assert (recorded.stamps, recorded.runs) == (memory.stamps, memory.runs)


# -- Hypothesis properties -------------------------------------------------------------------------------

OWNERS = [None, "a", "b"]
PROPERTIES = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@dataclass(frozen=True)
class Step:
    """One leader run: the clock advance before it, and per lease: present in the scan, counter bumped,
    in a graceful handoff."""

    advance_ns: int
    present: tuple[bool, ...]
    bumped: tuple[bool, ...]
    handoff: tuple[bool, ...]


@dataclass(frozen=True)
class History:
    rules: LivenessRules
    owners: tuple[str | None, ...]  # fixed per lease: an owned lease stays owned
    done: tuple[bool, ...]
    steps: tuple[Step, ...]


@st.composite
def histories(draw: st.DrawFn) -> History:
    failover_ms = draw(st.integers(1, 20_000))
    config = AssignmentConfig(
        graceful_lease_handoff_timeout_ms=draw(st.integers(0, 40_000)),
        variance_balancing_frequency=draw(st.integers(1, 4)),
    )
    rules = LivenessRules.for_leader(
        config, failover_time_ms=failover_ms, discovery_interval_ms=draw(st.integers(0, 20_000))
    )
    count = draw(st.integers(1, 6))
    flags = st.tuples(*[st.booleans()] * count)
    steps = draw(
        st.lists(
            st.builds(
                Step,
                advance_ns=st.integers(0, 3 * failover_ms).map(lambda ms: ms * MS),
                present=st.tuples(*[st.sampled_from([True, True, True, False])] * count),
                bumped=flags,
                handoff=flags,
            ),
            min_size=1,
            max_size=10,
        )
    )
    owners = draw(st.tuples(*[st.sampled_from(OWNERS)] * count))
    done = draw(st.tuples(*[st.sampled_from([False, False, False, True])] * count))
    return History(rules, owners, done, tuple(steps))


def scans(history: History) -> list[tuple[int, list[Lease]]]:
    """Each run's time and scan; a bumped counter moves by one, a lease in a handoff has a checkpoint owner."""
    counters = [0] * len(history.owners)
    now = START
    out: list[tuple[int, list[Lease]]] = []
    for step in history.steps:
        now += step.advance_ns
        leases = []
        for n, owner in enumerate(history.owners):
            counters[n] += int(step.bumped[n])
            if step.present[n]:
                handing = step.handoff[n] and owner is not None
                leases.append(
                    lease(n, owner, counters[n], handoff_from="old" if handing else None, done=history.done[n])
                )
        out.append((now, leases))
    return out


def play(history: History, memory: LeaderMemory | None = None) -> list[tuple[int, list[Lease], Liveness]]:
    memory = LeaderMemory() if memory is None else memory
    results = []
    for now, leases in scans(history):
        liveness, memory = judge(memory, leases, now, history.rules)
        results.append((now, leases, liveness))
    return results


def streak_start(runs: Sequence[tuple[int, list[Lease]]], index: int, lease_key: str) -> int:
    """The time of the first run of the lease's latest streak of scans with the same counter (no gap)."""
    counter = next(item.lease_counter for item in runs[index][1] if item.lease_key == lease_key)
    start = runs[index][0]
    for now, leases in reversed(runs[:index]):
        found = [item for item in leases if item.lease_key == lease_key]
        if not found or found[0].lease_counter != counter:
            break
        start = now
    return start


@PROPERTIES
@given(history=histories())
def test_expiry_follows_the_counter_on_the_leaders_clock(history: History) -> None:
    runs = [(now, leases) for now, leases, _ in play(history)]
    for index, (now, leases, liveness) in enumerate(play(history)):
        previous = {item.lease_key: item for item in runs[index - 1][1]} if index else {}
        for item in leases:
            expired = item.lease_key in liveness.expired_keys
            if item.lease_owner is None or item.is_complete:
                assert not expired
                continue
            old = previous.get(item.lease_key)
            if old is not None and old.lease_counter != item.lease_counter:
                assert not expired  # a lease whose counter moved is never expired
            # Owned all along: expired exactly when the counter has not moved for longer than the failover time.
            assert expired == (now - streak_start(runs, index, item.lease_key) > history.rules.failover_ns)
            if now - START <= history.rules.failover_ns:
                assert not expired  # a new term declares nothing expired before a failover time


@PROPERTIES
@given(history=histories())
def test_an_expired_handoff_is_available_and_only_handoffs_block(history: History) -> None:
    first_seen: dict[str, int] = {}
    for now, leases, liveness in play(history):
        handing = {item.lease_key for item in leases if item.checkpoint_owner is not None}
        first_seen = {lease_key: first_seen.get(lease_key, now) for lease_key in handing}
        assert not liveness.blocked_keys & liveness.expired_keys
        assert liveness.blocked_keys == {
            lease_key
            for lease_key in handing
            if now - first_seen[lease_key] <= history.rules.handoff_grace_ns and lease_key not in liveness.expired_keys
        }


@PROPERTIES
@given(history=histories(), assigned=st.sets(st.integers(0, 5)))
def test_a_lease_just_assigned_is_not_expired_within_its_grace(history: History, assigned: set[int]) -> None:
    """Whatever its counter does, until the new owner could have discovered and renewed it."""
    runs = scans(history)
    memory = LeaderMemory()
    now, leases = runs[0]
    _, memory = judge(memory, leases, now, history.rules)
    keys = {key(n) for n in assigned}
    memory = record_assignments(memory, keys, now)
    assigned_at = now
    for later, scan in runs[1:]:
        liveness, memory = judge(memory, scan, later, history.rules)
        if later - assigned_at <= history.rules.assignment_grace_ns:
            assert not liveness.expired_keys & keys
            assert keys <= set(memory.assigned_at)
        else:
            assert not keys & set(memory.assigned_at)  # past its grace: forgotten


@PROPERTIES
@given(history=histories(), later_ns=st.integers(0, 100_000 * MS))
def test_re_observing_the_same_scan_is_idempotent(history: History, later_ns: int) -> None:
    runs = scans(history)
    memory = LeaderMemory()
    for now, leases in runs:
        liveness, memory = judge(memory, leases, now, history.rules)
    now, leases = runs[-1]
    again, repeated = judge(memory, leases, now, history.rules)
    assert (again.stamps, again.expired_keys, again.blocked_keys) == (
        liveness.stamps,
        liveness.expired_keys,
        liveness.blocked_keys,
    )
    assert (repeated.stamps, repeated.handoffs_seen, repeated.assigned_at) == (
        memory.stamps,
        memory.handoffs_seen,
        memory.assigned_at,
    )
    assert repeated.runs == memory.runs + 1
    # An unchanged scan keeps every stamp, whenever it is observed again.
    assert observe_counters(memory.stamps, leases, now + later_ns) == memory.stamps


@PROPERTIES
@given(history=histories())
def test_the_stamps_are_the_2x_takers(history: History) -> None:
    """The leader stamps counters exactly as every 2.x taker does (KCL ``updateAllLeases``)."""
    stamps: dict[str, CounterStamp] = {}
    observations: dict[str, LeaseObservation] = {}
    for now, leases in scans(history):
        stamps = observe_counters(stamps, leases, now)
        observations = observe(observations, leases, now, "leader")
        assert {k: stamp.changed_ns for k, stamp in stamps.items()} == {
            k: seen.last_counter_change_ns for k, seen in observations.items()
        }


@PROPERTIES
@given(
    history=histories(),
    hold_after_ns=st.one_of(st.none(), st.integers(-10_000 * MS, 100_000 * MS)),
)
def test_rebalancing_never_happens_during_the_hold(history: History, hold_after_ns: int | None) -> None:
    hold = None if hold_after_ns is None else START + hold_after_ns
    every = history.rules.rebalance_every
    for index, (now, _, liveness) in enumerate(play(history, LeaderMemory(rebalance_hold_ns=hold))):
        if hold is None:
            assert liveness.rebalance == (index % every == 0)  # KCL's cadence, from the first run
            continue
        if index == 0 or now < hold:
            assert not liveness.rebalance  # the term's first run, or within the hold
        else:
            assert liveness.rebalance == (index % every == 0)  # once lifted, the cadence resumes unshifted


@PROPERTIES
@given(history=histories())
def test_judge_modifies_none_of_its_inputs(history: History) -> None:
    memory = LeaderMemory()
    for now, leases in scans(history):
        before = copy.deepcopy((dict(memory.stamps), dict(memory.handoffs_seen), dict(memory.assigned_at)))
        scanned = list(leases)
        _, next_memory = judge(memory, leases, now, history.rules)
        assert (dict(memory.stamps), dict(memory.handoffs_seen), dict(memory.assigned_at)) == before
        assert leases == scanned
        memory = record_assignments(next_memory, [item.lease_key for item in leases[:1]], now)
