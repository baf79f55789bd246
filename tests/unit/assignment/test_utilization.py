"""The pure KCL 3.x deciders: rule-by-rule examples, Hypothesis properties and a balancing simulation."""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping, Sequence

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from shardwise.assignment.lease_count import decide_lease_count
from shardwise.assignment.model import CPU, THROUGHPUT, WorkerMetricStats
from shardwise.assignment.projection import project_loads
from shardwise.assignment.utilization import (
    AssignmentConfig,
    AssignmentDecision,
    AssignmentSnapshot,
    Move,
    worker_metric_value,
)
from shardwise.assignment.variance import decide_variance_based, metrics_out_of_balance, projected_loads
from shardwise.checkpoint.sequence import SHARD_END, TRIM_HORIZON
from shardwise.errors import ConfigurationError
from shardwise.leases.model import Lease

CONFIG = AssignmentConfig()
KCL_STRICT = AssignmentConfig(rebalance_past_average=False)
LUT = 1_700_000_000


def key(n: int) -> str:
    return f"shardId-{n:012d}"


def lease(
    n: int,
    owner: str | None = None,
    tp: float | None = None,
    *,
    checkpoint_owner: str | None = None,
    complete: bool = False,
) -> Lease:
    return Lease(
        key(n),
        SHARD_END if complete else TRIM_HORIZON,
        lease_owner=owner,
        lease_counter=1,
        throughput_kbps=tp,
        checkpoint_owner=checkpoint_owner,
    )


def tp_worker(worker_id: str) -> WorkerMetricStats:
    """A worker reporting no explicit metric: the leader gives it the synthetic throughput metric."""
    return WorkerMetricStats(worker_id, LUT)


def cpu_worker(worker_id: str, *history: float, limit: float = 100.0) -> WorkerMetricStats:
    return WorkerMetricStats(worker_id, LUT, {CPU: tuple(history)}, {CPU: (limit,)})


def held(owner: str, tps: Iterable[float], start: int) -> list[Lease]:
    return [lease(start + i, owner, tp) for i, tp in enumerate(tps)]


def snap(
    leases: Iterable[Lease],
    workers: Iterable[WorkerMetricStats],
    *,
    expired: Iterable[str] = (),
    stamps: Mapping[str, int] | None = None,
    blocked: Iterable[str] = (),
) -> AssignmentSnapshot:
    return AssignmentSnapshot(
        leases=tuple(leases),
        expired_keys=frozenset(expired),
        stamps=dict(stamps or {}),
        workers=tuple(workers),
        blocked_keys=frozenset(blocked),
    )


def variance_run(
    snapshot: AssignmentSnapshot, config: AssignmentConfig = CONFIG, *, rebalance: bool = True, seed: int = 7
) -> AssignmentDecision:
    return decide_variance_based(snapshot, config, rebalance=rebalance, rng=random.Random(seed))


def count_run(
    snapshot: AssignmentSnapshot, config: AssignmentConfig = CONFIG, *, rebalance: bool = True, seed: int = 7
) -> AssignmentDecision:
    return decide_lease_count(snapshot, config, rebalance=rebalance, rng=random.Random(seed))


def targets(decision: AssignmentDecision) -> dict[str, str]:
    return {move.lease_key: move.to_worker for move in decision.moves}


def apply(snapshot: AssignmentSnapshot, moves: Sequence[Move]) -> tuple[Lease, ...]:
    """The lease table once every move has completed (graceful handoffs included)."""
    to = {move.lease_key: move.to_worker for move in moves}
    return tuple(
        item.with_changes(lease_owner=to[item.lease_key], checkpoint_owner=None) if item.lease_key in to else item
        for item in snapshot.leases
    )


def population_variance(values: Iterable[float]) -> float:
    items = list(values)
    if not items:
        return 0.0
    mean = math.fsum(items) / len(items)
    return math.fsum((value - mean) ** 2 for value in items) / len(items)


# -- configuration and metric values -------------------------------------------------------------------------


def test_config_defaults_are_kcl_defaults() -> None:
    assert CONFIG.rebalance_threshold_percentage == 10
    assert CONFIG.dampening_percentage == 60
    assert CONFIG.variance_balancing_frequency == 3
    assert CONFIG.max_throughput_per_host_kbps == math.inf
    assert CONFIG.allow_throughput_overshoot is True
    assert CONFIG.max_leases_for_worker == 2**31 - 1
    assert CONFIG.worker_metrics_ema_alpha == 0.5
    assert CONFIG.graceful_lease_handoff is True
    assert CONFIG.graceful_lease_handoff_timeout_ms == 30_000


def test_rebalance_runs_every_frequency_starting_with_the_first() -> None:
    assert [CONFIG.is_rebalance_run(i) for i in range(7)] == [True, False, False, True, False, False, True]
    assert all(AssignmentConfig(variance_balancing_frequency=1).is_rebalance_run(i) for i in range(5))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("rebalance_threshold_percentage", -1),
        ("rebalance_threshold_percentage", 10.0),
        ("dampening_percentage", 0),
        ("dampening_percentage", 101),
        ("variance_balancing_frequency", 0),
        ("max_throughput_per_host_kbps", 0.0),
        ("max_throughput_per_host_kbps", math.nan),
        ("max_throughput_per_host_kbps", True),
        ("allow_throughput_overshoot", 1),
        ("max_leases_for_worker", 0),
        ("max_leases_for_worker", 2**31),
        ("worker_metrics_ema_alpha", 0.0),
        ("worker_metrics_ema_alpha", 1.5),
        ("graceful_lease_handoff", "yes"),
        ("graceful_lease_handoff_timeout_ms", -1),
        ("rebalance_past_average", None),
    ],
)
def test_config_rejects_bad_values(field: str, value: object) -> None:
    with pytest.raises(ConfigurationError, match=field):
        AssignmentConfig(**{field: value})  # type: ignore[arg-type]


def test_worker_metric_value_is_an_ema_seeded_by_the_first_value_and_skipping_missed() -> None:
    assert worker_metric_value([10.0, -1.0, 20.0, 30.0], 0.5) == 22.5
    assert worker_metric_value([40.0], 0.5) == 40.0
    assert worker_metric_value([-1.0, 50.0, 70.0], 0.25) == 55.0
    assert worker_metric_value([], 0.5) is None
    assert worker_metric_value([-1.0, -1.0], 0.5) is None
    with pytest.raises(ValueError, match="alpha"):
        worker_metric_value([1.0], 0.0)


def test_snapshot_rejects_duplicates() -> None:
    with pytest.raises(ValueError, match="same key"):
        snap([lease(1), lease(1)], [])
    with pytest.raises(ValueError, match="same worker"):
        snap([], [tp_worker("a"), tp_worker("a")])


# -- §6.2 steps 3-4: throughput bookkeeping and the synthetic metric ------------------------------------------


def test_synthetic_throughput_metric_for_workers_without_explicit_metrics() -> None:
    leases = [
        lease(1, "a", 100.0),
        lease(2, "a", 50.0),
        # During a handoff the checkpoint owner still processes the shard: its throughput counts for "b".
        lease(3, "c", 30.0, checkpoint_owner="b"),
        lease(4, None, None),  # unknown throughput counts as the average (60)
        lease(5, "dead", 60.0),
    ]
    decision = variance_run(snap(leases, [tp_worker("a"), tp_worker("b"), tp_worker("c")]), rebalance=False)

    assert decision.average_lease_throughput_kbps == 60.0
    assert decision.target_average_throughput_kbps == 60.0 * 5 / 3
    assert dict(decision.throughput_before_kbps) == {"a": 150.0, "b": 30.0, "c": 0.0}
    assert {w: dict(v) for w, v in decision.loads_before.items()} == {
        "a": {THROUGHPUT: 150.0},
        "b": {THROUGHPUT: 30.0},
        "c": {THROUGHPUT: 0.0},
    }
    assert decision.fleet_averages == {THROUGHPUT: 60.0}
    # The unassigned lease goes to the idle worker (headroom 1, the most).
    assert targets(decision) == {key(4): "c"}


def test_reported_throughput_values_are_replaced_by_the_synthetic_metric() -> None:
    reporting_t = WorkerMetricStats("a", LUT, {THROUGHPUT: (999.0,)}, {THROUGHPUT: (5.0,)})
    loads = project_loads(snap([lease(1, "a", 10.0)], [reporting_t, tp_worker("b")]), CONFIG)
    assert loads == {"a": {THROUGHPUT: 200.0}, "b": {THROUGHPUT: 0.0}}


def test_invalid_and_failing_workers_are_not_used() -> None:
    no_range = WorkerMetricStats("bad", LUT, {CPU: (10.0,)}, {})
    failing = cpu_worker("failing", 10.0, -1.0)
    decision = variance_run(snap([lease(1)], [no_range, failing, cpu_worker("ok", 90.0)]))
    assert targets(decision) == {key(1): "ok"}
    assert decision.num_workers == 1


def test_unknown_throughput_everywhere_spreads_leases_by_count() -> None:
    # At start-up no lease reports a throughput: every synthetic value is 0, so ties go to the fewest leases.
    leases = [lease(n) for n in range(9)]
    decision = variance_run(snap(leases, [tp_worker("a"), tp_worker("b"), tp_worker("c")]), rebalance=False)
    assert decision.target_average_throughput_kbps == 0.0
    assert dict(decision.lease_counts_after) == {"a": 3, "b": 3, "c": 3}


# -- §6.3 A: expired and unassigned leases --------------------------------------------------------------------


def test_unassigned_leases_go_to_the_most_headroom_with_projected_load_updates() -> None:
    # CPU 10/40/70 (average 40); six leases of 100 KB/s over three workers: target 200 KB/s, so each lease adds
    # 100 × 40 / 200 = 20 CPU to its recipient.
    leases = [lease(0, "b", 100.0), lease(1, "c", 100.0), lease(2, "c", 100.0)]
    leases += [lease(n, None, 100.0) for n in (3, 4, 5)]
    workers = [cpu_worker("a", 10.0), cpu_worker("b", 40.0), cpu_worker("c", 70.0)]
    decision = variance_run(snap(leases, workers), rebalance=False)

    # a: headroom 3 → takes one (30, headroom 0.33) → takes another (50, headroom −0.2) → b (headroom 0).
    assert targets(decision) == {key(3): "a", key(4): "a", key(5): "b"}
    assert all(move.reason == "unassigned" and not move.graceful for move in decision.moves)
    assert decision.loads_after["a"][CPU] == pytest.approx(50.0)
    assert decision.loads_after["b"][CPU] == pytest.approx(60.0)
    assert decision.spillover == 0
    assert decision.expired_or_unassigned == 3


def test_expired_leases_of_a_dead_worker_are_reassigned_the_live_ones_are_not() -> None:
    leases = [lease(1, "dead", 10.0), lease(2, "dead", 10.0), lease(3, "dead", 10.0)]
    workers = [tp_worker("a"), tp_worker("b")]
    decision = variance_run(snap(leases, workers, expired={key(1), key(2)}), rebalance=False)
    assert set(targets(decision)) == {key(1), key(2)}
    assert set(targets(decision).values()) == {"a", "b"}
    assert all(move.reason == "expired" and not move.graceful for move in decision.moves)


def test_expired_leases_are_assigned_oldest_stamp_first_after_unassigned_ones() -> None:
    leases = [lease(1, "dead", 1.0), lease(2, "dead", 1.0), lease(3, "dead", 1.0), lease(4, None, 1.0)]
    stamps = {key(1): 300, key(2): 100, key(3): 200, key(4): 999}  # an unassigned lease counts as 0
    config = AssignmentConfig(max_leases_for_worker=2)
    decision = variance_run(
        snap(leases, [tp_worker("a")], expired={key(1), key(2), key(3)}, stamps=stamps), config, rebalance=False
    )
    assert [move.lease_key for move in decision.moves] == [key(4), key(2)]
    assert decision.spillover == 2
    assert decision.spillover_keys == (key(3), key(1))


def test_max_leases_for_worker_caps_assignment_and_counts_spillover() -> None:
    leases = [lease(0, "a", 10.0), lease(1, "b", 10.0)] + [lease(n, None, 10.0) for n in range(2, 8)]
    decision = variance_run(
        snap(leases, [tp_worker("a"), tp_worker("b")]), AssignmentConfig(max_leases_for_worker=3), rebalance=False
    )
    assert len(decision.moves) == 4
    assert dict(decision.lease_counts_after) == {"a": 3, "b": 3}
    assert decision.spillover == 2


def test_max_throughput_caps_assignment_lease_by_lease() -> None:
    leases = [lease(1, None, 120.0), lease(2, None, 50.0), lease(3, None, 40.0), lease(4, None, 200.0)]
    config = AssignmentConfig(max_throughput_per_host_kbps=130.0)
    decision = variance_run(snap(leases, [tp_worker("a"), tp_worker("b")]), config, rebalance=False)
    # 200 fits nowhere; 120 fits an empty worker, then only 40 or less fits beside it.
    assert set(decision.spillover_keys) == {key(4)}
    for worker, tp in decision.throughput_after_kbps.items():
        assert tp <= 130.0, worker
    assert len(decision.moves) == 3


def test_no_worker_means_everything_spills_over() -> None:
    decision = variance_run(snap([lease(1), lease(2, "dead")], [], expired={key(2)}))
    assert decision.moves == ()
    assert decision.spillover == 2
    assert decision.rebalanced is False


def test_an_expired_lease_whose_best_worker_is_its_owner_is_left_alone() -> None:
    leases = [lease(1, "a", 10.0), lease(2, "b", 500.0)]
    decision = variance_run(snap(leases, [tp_worker("a"), tp_worker("b")], expired={key(1)}), rebalance=False)
    assert decision.moves == ()
    assert decision.kept_keys == (key(1),)
    assert decision.spillover == 0


def test_an_expired_pending_handoff_may_go_back_to_its_checkpoint_owner() -> None:
    # leaseOwner "gone" never took over; "a" (the checkpoint owner) is the only worker: reassign to clear it.
    stuck = lease(1, "gone", 10.0, checkpoint_owner="a")
    decision = variance_run(snap([stuck], [tp_worker("a")], expired={key(1)}), rebalance=False)
    assert decision.moves == (Move(stuck, "a", "expired", graceful=False),)


def test_blocked_leases_are_never_touched() -> None:
    in_handoff = lease(1, "b", 10.0, checkpoint_owner="a")
    unassigned_but_blocked = lease(2, None, 10.0)
    leases = [in_handoff, unassigned_but_blocked, *held("a", [10.0] * 6, start=10)]
    decision = variance_run(
        snap(leases, [tp_worker("a"), tp_worker("b")], expired={key(1)}, blocked={key(1), key(2)}), CONFIG
    )
    assert {key(1), key(2)}.isdisjoint(targets(decision))
    assert decision.spillover == 0
    assert decision.expired_or_unassigned == 0


# -- §6.3 B: variance rebalance --------------------------------------------------------------------------------


@pytest.mark.parametrize(("low", "high", "rebalances"), [(45.0, 55.0, False), (44.0, 56.0, True)])
def test_rebalance_triggers_only_outside_the_threshold(low: float, high: float, rebalances: bool) -> None:
    # Leases of 5 KB/s (5 CPU points each): 44 + 5 ends clearly below 56 (the gap rule); a 10-point lease would
    # only turn 44/56 into 54/46, which the next run's noise could undo, and does not move.
    leases = held("a", [5.0] * 10, start=0) + held("b", [5.0] * 10, start=10)
    snapshot = snap(leases, [cpu_worker("a", low), cpu_worker("b", high)])
    decision = variance_run(snapshot)
    assert decision.rebalanced is True
    assert bool(decision.rebalance_moves) is rebalances
    assert (decision.rebalance_metric == CPU) is rebalances
    assert metrics_out_of_balance(snapshot, CONFIG) == ((CPU,) if rebalances else ())
    if rebalances:
        assert {move.to_worker for move in decision.moves} == {"a"}


def test_synthetic_throughput_rebalances_any_worker_above_the_target() -> None:
    # KCL gives the synthetic T an operating range of 100 = the target throughput, so a worker above the average
    # is "above its range" even within ±10 %: 105/95 rebalances for T, not for CPU.
    leases = held("a", [5.0] * 21, start=0) + held("b", [5.0] * 19, start=100)
    decision = variance_run(snap(leases, [tp_worker("a"), tp_worker("b")]))
    assert decision.rebalance_metric == THROUGHPUT
    assert dict(decision.throughput_after_kbps) == {"a": 100.0, "b": 100.0}
    on_cpu = snap(leases, [cpu_worker("a", 52.5), cpu_worker("b", 47.5)])
    assert variance_run(on_cpu).moves == ()


def test_no_rebalance_unless_asked() -> None:
    leases = held("a", [10.0] * 10, start=0)
    decision = variance_run(snap(leases, [tp_worker("a"), tp_worker("b")]), rebalance=False)
    assert decision.moves == ()
    assert decision.rebalanced is False


def test_above_operating_range_triggers_and_makes_donors() -> None:
    leases = held("a", [10.0] * 3, start=0) + held("b", [10.0] * 3, start=10)
    snapshot = snap(leases, [cpu_worker("a", 85.0, limit=80.0), cpu_worker("b", 85.0, limit=80.0)])
    assert metrics_out_of_balance(snapshot, CONFIG) == (CPU,)
    decision = variance_run(snapshot)
    assert {worker for worker, _ in decision.donors} == {"a", "b"}
    assert decision.moves == ()  # nobody can take a lease without going above its range


@pytest.mark.parametrize(("dampening", "take", "moved"), [(60, 60.0, 5), (100, 100.0, 9), (30, 30.0, 2)])
def test_dampening_limits_the_amount_moved(dampening: int, take: float, moved: int) -> None:
    # a: 200 KB/s in 20 leases, b idle: T = 200 and 0, average 100; take = 200 × (200 − 100) / 200 × dampening.
    leases = held("a", [10.0] * 20, start=0)
    decision = variance_run(
        snap(leases, [tp_worker("a"), tp_worker("b")]), AssignmentConfig(dampening_percentage=dampening)
    )
    assert decision.rebalance_metric == THROUGHPUT
    [(donor, amount)] = decision.donors
    assert donor == "a"
    assert amount == pytest.approx(take)
    # Greedy fill: a lease is taken only while the remaining amount stays above 0.
    assert len(decision.rebalance_moves) == moved
    assert {move.to_worker for move in decision.moves} == {"b"}


@pytest.mark.parametrize("overshoot", [True, False])
def test_overshoot_takes_the_smallest_lease_when_none_fits(overshoot: bool) -> None:
    # a: 360 KB/s, b idle; take = 360 × 0.5 × 0.6 = 108: no lease is smaller.
    leases = held("a", [130.0, 110.0, 120.0], start=0)
    decision = variance_run(
        snap(leases, [tp_worker("a"), tp_worker("b")]), AssignmentConfig(allow_throughput_overshoot=overshoot)
    )
    if overshoot:
        assert [(move.lease_key, move.to_worker) for move in decision.moves] == [(key(1), "b")]
    else:
        assert decision.moves == ()


def test_recipient_stop_rule() -> None:
    # a: 115 of an average 100 (leases 2, 6 and 107 KB/s); b, c, d: 95 each. take = 9: the greedy fill picks the
    # 2 and the 6. The 6 would take any recipient above the average: KCL stops moving from "a" there, so the 2
    # moves only when it comes first in the shuffled order.
    leases = [lease(0, "a", 2.0), lease(1, "a", 6.0), lease(2, "a", 107.0)]
    leases += [lease(3, "b", 95.0), lease(4, "c", 95.0), lease(5, "d", 95.0)]
    snapshot = snap(leases, [tp_worker(w) for w in "abcd"])
    outcomes: set[tuple[str, ...]] = set()
    for seed in range(12):
        decision = variance_run(snapshot, KCL_STRICT, seed=seed)
        [(donor, amount)] = decision.donors
        assert donor == "a"
        assert amount == pytest.approx(9.0)
        assert key(1) not in targets(decision)
        outcomes.add(tuple(targets(decision)))
    assert outcomes == {(), (key(0),)}


def test_rebalance_past_average_lets_a_donor_give_one_lease_that_lowers_the_variance() -> None:
    # a: three 100s (300), b: eleven 10s (110). take 57 < 100: the smallest lease (100) would take b to 210, above
    # the average of 205. KCL moves nothing and stays there forever; the shardwise rule moves it (300/110 →
    # 200/210 lowers the variance).
    leases = held("a", [100.0] * 3, start=0) + held("b", [10.0] * 11, start=10)
    snapshot = snap(leases, [tp_worker("a"), tp_worker("b")])
    assert variance_run(snapshot, KCL_STRICT).moves == ()
    decision = variance_run(snapshot)
    assert len(decision.moves) == 1
    assert decision.moves[0].to_worker == "b"
    assert dict(decision.throughput_after_kbps) == {"a": 200.0, "b": 210.0}


def test_rebalance_never_swaps_loads() -> None:
    # a: 400, b: 300 with only 100 KB/s leases: moving one just swaps who is above the average.
    leases = held("a", [100.0] * 4, start=0) + held("b", [100.0] * 3, start=10) + held("c", [50.0] * 7, start=20)
    decision = variance_run(snap(leases, [tp_worker(w) for w in "abc"]))
    assert all(move.from_worker != "b" or move.to_worker != "a" for move in decision.moves)
    assert all(move.from_worker != "a" or move.to_worker != "b" for move in decision.moves)


def test_rebalance_moves_are_graceful_and_assignments_are_not() -> None:
    leases = [*held("a", [10.0] * 10, start=0), lease(99, None, 10.0)]
    snapshot = snap(leases, [tp_worker("a"), tp_worker("b")])
    decision = variance_run(snapshot)
    assert decision.assignment_moves and decision.rebalance_moves
    assert all(not move.graceful for move in decision.assignment_moves)
    assert all(move.graceful for move in decision.rebalance_moves)
    plain = variance_run(snapshot, AssignmentConfig(graceful_lease_handoff=False))
    assert plain.rebalance_moves
    assert not any(move.graceful for move in plain.moves)


def test_a_timed_out_handoff_is_rebalanced_with_a_plain_assignment() -> None:
    # Not blocked (its handoff timed out) and not expired: rebalancing may move it, but not gracefully again.
    stuck = lease(0, "x", 30.0, checkpoint_owner="a")
    finished = lease(1, "a", 90.0, complete=True)
    decision = variance_run(snap([stuck, finished], [tp_worker("a"), tp_worker("b")]))
    assert decision.moves == (Move(stuck, "b", "rebalance", graceful=False),)


def test_shard_end_leases_are_not_rebalanced_but_are_assigned() -> None:
    finished = [lease(n, "a", 50.0, complete=True) for n in range(6)]
    decision = variance_run(snap(finished, [tp_worker("a"), tp_worker("b")]))
    assert decision.rebalance_metric == THROUGHPUT
    assert decision.moves == ()
    orphan = lease(9, None, 0.0, complete=True)
    assert variance_run(snap([orphan], [tp_worker("a")])).moves == (Move(orphan, "a", "unassigned", graceful=False),)


def test_blocked_leases_are_not_rebalanced() -> None:
    leases = [lease(n, "b", 50.0, checkpoint_owner="a") for n in range(6)]
    decision = variance_run(snap(leases, [tp_worker("a"), tp_worker("b")], blocked={key(n) for n in range(6)}))
    assert decision.donors
    assert decision.moves == ()


def test_a_donor_without_throughput_gives_one_lease() -> None:
    # CPU says "a" is hot, but its leases carry no throughput: KCL moves a single one.
    leases = held("a", [0.0] * 4, start=0) + held("b", [10.0], start=10)
    decision = variance_run(snap(leases, [cpu_worker("a", 90.0), cpu_worker("b", 10.0)]))
    assert decision.rebalance_metric == CPU
    assert len(decision.moves) == 1
    assert decision.moves[0].lease_key in {key(n) for n in range(4)}
    assert decision.moves[0].to_worker == "b"


def test_the_metric_with_the_largest_take_is_balanced() -> None:
    # CPU workers are balanced; synthetic-T workers are not: T is the metric with something to take.
    leases = held("a", [10.0] * 4, start=0) + held("b", [10.0] * 4, start=10) + held("c", [10.0] * 8, start=20)
    workers = [cpu_worker("a", 50.0), cpu_worker("b", 51.0), tp_worker("c"), tp_worker("d")]
    snapshot = snap(leases, workers)
    decision = variance_run(snapshot)
    assert decision.rebalance_metric == THROUGHPUT
    assert decision.donors[0][0] == "c"
    assert projected_loads(snapshot, CONFIG) == {"c": 200.0, "d": 0.0}
    assert projected_loads(snapshot, CONFIG, CPU) == {"a": 50.0, "b": 51.0}


def test_decisions_are_deterministic_for_a_seed() -> None:
    leases = held("a", [float(n) for n in range(1, 30)], start=0)
    snapshot = snap(leases, [tp_worker(w) for w in "abcd"])
    assert variance_run(snapshot, seed=3) == variance_run(snapshot, seed=3)
    shuffled = snap(reversed(leases), [tp_worker(w) for w in "dcba"])
    assert targets(variance_run(shuffled, seed=3)) == targets(variance_run(snapshot, seed=3))


def test_project_loads_matches_the_decision() -> None:
    leases = [*held("a", [float(n) for n in range(1, 20)], start=0), lease(50, None, 7.0)]
    snapshot = snap(leases, [tp_worker("a"), cpu_worker("b", 30.0), tp_worker("c")])
    decision = variance_run(snapshot)
    assert decision.moves
    after = project_loads(snapshot, CONFIG, decision.moves)
    assert after == {worker: dict(values) for worker, values in decision.loads_after.items()}
    with pytest.raises(ValueError, match="not in the snapshot"):
        project_loads(snapshot, CONFIG, [Move(lease(77), "a", "rebalance", graceful=False)])


# -- lease-count decider -----------------------------------------------------------------------------------------


def test_lease_count_assigns_round_robin_to_the_least_loaded() -> None:
    leases = [lease(0, "a"), lease(1, "a"), lease(2, "b")] + [lease(n) for n in range(3, 10)]
    decision = count_run(snap(leases, [tp_worker(w) for w in "abc"]), rebalance=False)
    assert decision.target_leases_per_worker == 4  # ceil(10 / 3)
    assert dict(decision.lease_counts_after) == {"a": 4, "b": 3, "c": 3}
    assert decision.spillover == 0
    # Oldest first, each to the least loaded (ties: smallest worker id).
    assert [targets(decision)[key(n)] for n in range(3, 10)] == ["c", "b", "c", "a", "b", "c", "a"]


def test_lease_count_target_is_capped_and_the_rest_spills_over() -> None:
    leases = [lease(n) for n in range(10)]
    decision = count_run(snap(leases, [tp_worker("a"), tp_worker("b")]), AssignmentConfig(max_leases_for_worker=3))
    assert decision.target_leases_per_worker == 3
    assert dict(decision.lease_counts_after) == {"a": 3, "b": 3}
    assert decision.spillover == 4


def test_lease_count_rebalances_one_lease_at_a_time_down_to_the_target() -> None:
    leases = [lease(n, "a") for n in range(9)] + [lease(9, "b")]
    leases[0] = lease(0, "x", checkpoint_owner="a")  # in a handoff: never moved by rebalancing
    leases[1] = lease(1, "a", complete=True)  # SHARD_END: never moved by rebalancing
    decision = count_run(snap(leases, [tp_worker(w) for w in "abc"]))
    assert decision.target_leases_per_worker == 4
    assert dict(decision.lease_counts_after) == {"a": 4, "b": 3, "c": 3}
    assert {move.to_worker for move in decision.moves} == {"b", "c"}
    assert {key(0), key(1)}.isdisjoint(targets(decision))
    assert all(move.reason == "rebalance" and move.graceful for move in decision.moves)


def test_lease_count_leaves_a_fleet_within_target_alone() -> None:
    leases = [lease(n, "abc"[n % 3]) for n in range(8)]
    assert count_run(snap(leases, [tp_worker(w) for w in "abc"])).moves == ()


def test_lease_count_keeps_an_expired_lease_with_its_least_loaded_owner() -> None:
    leases = [lease(0, "a"), lease(1, "b"), lease(2, "b")]
    decision = count_run(snap(leases, [tp_worker("a"), tp_worker("b")], expired={key(0), key(1)}))
    assert decision.kept_keys == (key(0),)
    assert targets(decision) == {key(1): "a"}


# -- Hypothesis properties ---------------------------------------------------------------------------------------

WORKER_IDS = [f"w{n}" for n in range(8)]
DEAD = ["dead0", "dead1"]


@st.composite
def worker_strategy(draw: st.DrawFn, worker_id: str) -> WorkerMetricStats:
    kind = draw(st.sampled_from(["synthetic", "cpu", "cpu", "cpu_t"]))
    if kind == "synthetic":
        return tp_worker(worker_id)
    history = draw(
        st.lists(st.one_of(st.just(-1.0), st.floats(0, 100, allow_nan=False)), min_size=1, max_size=10).filter(
            lambda values: values[-1] != -1.0
        )
    )
    limit = draw(st.sampled_from([60.0, 80.0, 100.0]))
    stats: dict[str, tuple[float, ...]] = {CPU: tuple(history)}
    if kind == "cpu_t":
        stats[THROUGHPUT] = (draw(st.floats(0, 1000, allow_nan=False)),)
    return WorkerMetricStats(worker_id, LUT, stats, {CPU: (limit,)})


@st.composite
def snapshots(draw: st.DrawFn) -> AssignmentSnapshot:
    n_workers = draw(st.integers(1, 8))
    workers = [draw(worker_strategy(worker_id)) for worker_id in WORKER_IDS[:n_workers]]
    owners = [None, *WORKER_IDS[:n_workers], *DEAD]
    leases: list[Lease] = []
    for n in range(draw(st.integers(1, 64))):
        owner = draw(st.sampled_from(owners))
        handoff_to = draw(st.sampled_from([None, None, None, *WORKER_IDS[:n_workers]])) if owner else None
        tp = draw(st.one_of(st.none(), st.just(0.0), st.floats(0, 200, allow_nan=False)))
        complete = draw(st.integers(0, 9)) == 0
        if handoff_to is not None and handoff_to != owner:
            leases.append(lease(n, handoff_to, tp, checkpoint_owner=owner, complete=complete))
        else:
            leases.append(lease(n, owner, tp, complete=complete))
    keys = [item.lease_key for item in leases]
    expired = draw(st.sets(st.sampled_from(keys)))
    stamps = {k: draw(st.integers(0, 10**12)) for k in keys}
    in_handoff = [item.lease_key for item in leases if item.in_handoff and item.lease_key not in expired]
    blocked = draw(st.sets(st.sampled_from(in_handoff))) if in_handoff else set()
    return snap(leases, workers, expired=expired, stamps=stamps, blocked=blocked)


configs = st.builds(
    AssignmentConfig,
    rebalance_threshold_percentage=st.integers(0, 40),
    dampening_percentage=st.integers(1, 100),
    max_throughput_per_host_kbps=st.one_of(st.just(math.inf), st.floats(50, 3000)),
    allow_throughput_overshoot=st.booleans(),
    max_leases_for_worker=st.one_of(st.just(2**31 - 1), st.integers(1, 20)),
    graceful_lease_handoff=st.booleans(),
    rebalance_past_average=st.booleans(),
)

DECIDERS = [decide_variance_based, decide_lease_count]


def usable_ids(snapshot: AssignmentSnapshot) -> set[str]:
    return set(project_loads(snapshot, CONFIG))


def effective_throughputs(snapshot: AssignmentSnapshot) -> dict[str, float]:
    known = [item.throughput_kbps for item in snapshot.leases if item.throughput_kbps is not None]
    average = math.fsum(known) / len(known) if known else 0.0
    return {
        item.lease_key: average if item.throughput_kbps is None else item.throughput_kbps for item in snapshot.leases
    }


PROPERTY_SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY_SETTINGS
@given(snapshot=snapshots(), config=configs, rebalance=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_moves_target_active_workers_within_the_caps(
    snapshot: AssignmentSnapshot, config: AssignmentConfig, rebalance: bool, seed: int
) -> None:
    usable = usable_ids(snapshot)
    tps = effective_throughputs(snapshot)
    for decide in DECIDERS:
        decision = decide(snapshot, config, rebalance=rebalance, rng=random.Random(seed))
        keys = [move.lease_key for move in decision.moves]
        assert len(keys) == len(set(keys))
        final = {item.lease_key: item.actual_owner for item in apply(snapshot, ())}
        final.update(targets(decision))
        gaining = {move.to_worker for move in decision.moves if move.to_worker != move.from_worker}
        for worker in {move.to_worker for move in decision.moves}:
            assert worker in usable
        for worker in gaining:
            mine = [k for k, owner in final.items() if owner == worker]
            assert len(mine) <= config.max_leases_for_worker
            assert math.fsum(tps[k] for k in mine) <= config.max_throughput_per_host_kbps
        assert dict(decision.lease_counts_after) == {
            worker: sum(owner == worker for owner in final.values()) for worker in sorted(usable)
        }


@PROPERTY_SETTINGS
@given(snapshot=snapshots(), config=configs, rebalance=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_every_expired_or_unassigned_lease_is_moved_kept_or_spilled(
    snapshot: AssignmentSnapshot, config: AssignmentConfig, rebalance: bool, seed: int
) -> None:
    by_key = {item.lease_key: item for item in snapshot.leases}
    candidates = {
        k
        for k, item in by_key.items()
        if k not in snapshot.blocked_keys and (k in snapshot.expired_keys or item.actual_owner is None)
    }
    for decide in DECIDERS:
        decision = decide(snapshot, config, rebalance=rebalance, rng=random.Random(seed))
        assigned = [move.lease_key for move in decision.assignment_moves]
        parts = [set(assigned), set(decision.kept_keys), set(decision.spillover_keys)]
        assert sum(map(len, parts)) == len(candidates)
        assert set.union(*parts) == candidates
        assert decision.spillover == len(decision.spillover_keys)
        assert decision.expired_or_unassigned == len(candidates)
        for k in decision.kept_keys:
            assert by_key[k].actual_owner in usable_ids(snapshot)
        for move in decision.moves:
            assert move.lease_key not in snapshot.blocked_keys
            assert move.lease == by_key[move.lease_key]
            if move.reason == "rebalance":
                assert not move.lease.is_complete
                assert move.lease_key not in candidates or move.lease_key in decision.kept_keys
            if move.graceful:
                assert config.graceful_lease_handoff
                assert move.reason == "rebalance"
                assert not move.lease.in_handoff and move.lease_key not in snapshot.expired_keys
        if not rebalance:
            assert decision.rebalance_moves == ()


@PROPERTY_SETTINGS
@given(snapshot=snapshots(), config=configs, seed=st.integers(0, 2**32 - 1))
def test_rebalancing_only_lowers_the_variance_of_the_balanced_metric(
    snapshot: AssignmentSnapshot, config: AssignmentConfig, seed: int
) -> None:
    assigned_only = variance_run(snapshot, config, rebalance=False, seed=seed)
    decision = variance_run(snapshot, config, rebalance=True, seed=seed)
    assert decision.moves[: len(assigned_only.moves)] == assigned_only.moves
    assert all(move.reason == "rebalance" for move in decision.moves[len(assigned_only.moves) :])
    if not decision.rebalance_moves:
        return
    metric = decision.rebalance_metric
    assert metric is not None

    def spread(moves: Sequence[Move]) -> float:
        loads = project_loads(snapshot, config, moves)
        return population_variance(values[metric] for values in loads.values() if metric in values)

    before = spread(assigned_only.moves)
    after = spread(decision.moves)
    assert after <= before + 1e-9 * max(1.0, before)


@st.composite
def balanced_snapshots(draw: st.DrawFn) -> AssignmentSnapshot:
    """Nothing expired or unassigned; every worker holds the same throughput and CPU values are within ±4 %."""
    n_tp = draw(st.integers(0, 4))
    n_cpu = draw(st.integers(0 if n_tp else 1, 4))
    per_worker = draw(st.lists(st.floats(0, 200, allow_nan=False), min_size=1, max_size=5))
    leases: list[Lease] = []
    workers: list[WorkerMetricStats] = []
    base = draw(st.floats(5, 90))
    for n in range(n_tp + n_cpu):
        worker_id = WORKER_IDS[n]
        if n < n_tp:
            workers.append(tp_worker(worker_id))
            leases += held(worker_id, per_worker, start=len(leases))
        else:
            value = base * draw(st.floats(0.96, 1.04))
            history = [*draw(st.lists(st.just(-1.0), max_size=3)), value]
            workers.append(cpu_worker(worker_id, *history))
            # Same throughput as everyone: the synthetic T is relative to the throughput of all workers.
            leases += held(worker_id, per_worker, start=len(leases))
    assume(leases)
    return snap(leases, workers)


@PROPERTY_SETTINGS
@given(snapshot=balanced_snapshots(), seed=st.integers(0, 2**32 - 1))
def test_a_balanced_fleet_gets_an_empty_decision(snapshot: AssignmentSnapshot, seed: int) -> None:
    assert metrics_out_of_balance(snapshot, CONFIG) == ()
    decision = variance_run(snapshot, rebalance=True, seed=seed)
    assert decision.moves == ()
    assert decision.spillover == 0
    assert decision.rebalance_metric is None


def next_round(snapshot: AssignmentSnapshot, decision: AssignmentDecision) -> AssignmentSnapshot:
    """Apply the moves; explicit metrics take their projected values, synthetic ones are recomputed anyway."""
    moved = {move.lease_key for move in decision.moves}
    workers = []
    for worker in snapshot.workers:
        projected = decision.loads_after.get(worker.worker_id)
        if projected is None or THROUGHPUT in projected:
            workers.append(worker)
            continue
        stats = {name: (value,) for name, value in projected.items()}
        workers.append(WorkerMetricStats(worker.worker_id, worker.lut, stats, worker.operating_range))
    return AssignmentSnapshot(
        leases=apply(snapshot, decision.moves),
        expired_keys=snapshot.expired_keys - moved,
        stamps=snapshot.stamps,
        workers=tuple(workers),
        blocked_keys=snapshot.blocked_keys,
    )


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(snapshot=snapshots(), config=configs, seed=st.integers(0, 2**32 - 1))
def test_repeated_decisions_converge(snapshot: AssignmentSnapshot, config: AssignmentConfig, seed: int) -> None:
    rng = random.Random(seed)
    quiet = 0
    for _ in range(60):
        decision = decide_variance_based(snapshot, config, rebalance=True, rng=rng)
        quiet = 0 if decision.rebalance_moves else quiet + 1
        if quiet == 3:
            return
        snapshot = next_round(snapshot, decision)
    pytest.fail("rebalancing still moves leases after 60 rounds")


# -- simulation: the integration acceptance scenario -----------------------------------------------------------


def max_deviation(loads: Mapping[str, float]) -> float:
    mean = math.fsum(loads.values()) / len(loads)
    return max(abs(value - mean) for value in loads.values())


def one_move_improves(leases: Sequence[Lease], loads: Mapping[str, float]) -> bool:
    current = max_deviation(loads)
    for item in leases:
        assert item.lease_owner is not None and item.throughput_kbps is not None
        for worker in loads:
            if worker == item.lease_owner:
                continue
            trial = dict(loads)
            trial[item.lease_owner] -= item.throughput_kbps
            trial[worker] += item.throughput_kbps
            if max_deviation(trial) < current - 1e-9:
                return True
    return False


def simulate(config: AssignmentConfig, seed: int, runs: int = 30) -> tuple[dict[str, float], tuple[Lease, ...]]:
    workers = tuple(tp_worker(f"w{n}") for n in range(4))
    leases = tuple(lease(n, "w0", 100.0 if n % 2 else 10.0) for n in range(16))
    rng = random.Random(seed)
    for run in range(runs):
        snapshot = snap(leases, workers)
        decision = decide_variance_based(snapshot, config, rebalance=config.is_rebalance_run(run), rng=rng)
        leases = apply(snapshot, decision.moves)
    loads = dict.fromkeys((w.worker_id for w in workers), 0.0)
    for item in leases:
        assert item.lease_owner is not None and item.throughput_kbps is not None
        loads[item.lease_owner] += item.throughput_kbps
    return loads, leases


@pytest.mark.parametrize("seed", range(12))
def test_simulation_balances_throughput_across_workers(seed: int) -> None:
    loads, leases = simulate(CONFIG, seed)
    mean = math.fsum(loads.values()) / len(loads)
    within = all(abs(value - mean) <= 0.1 * mean for value in loads.values())
    assert within or not one_move_improves(leases, loads), loads


def test_kcl_recipient_rule_alone_gets_stuck_in_the_simulation() -> None:
    # Why rebalance_past_average exists: with KCL's rule a worker stays far above the mean in this scenario.
    loads, leases = simulate(KCL_STRICT, seed=0)
    mean = math.fsum(loads.values()) / len(loads)
    assert max(loads.values()) > 1.1 * mean
    assert one_move_improves(leases, loads)
