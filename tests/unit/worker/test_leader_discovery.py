"""The 3.x leader knows its own leases from its scan and its assignments: no owner-index query (issue 15)."""

from __future__ import annotations

import random

from shardwise.assignment.model import WorkerMetricStats
from shardwise.assignment.utilization import AssignmentConfig, AssignmentSnapshot
from shardwise.assignment.variance import decide_variance_based
from shardwise.checkpoint.sequence import TRIM_HORIZON
from shardwise.leases.model import Lease
from shardwise.leasing.assigner import AssignmentRun
from shardwise.worker.generations import _owned_after


def _lease(n: int, owner: str | None) -> Lease:
    return Lease(f"shardId-{n:012d}", TRIM_HORIZON, lease_owner=owner, lease_counter=1, throughput_kbps=None)


def test_the_leaders_leases_after_its_run() -> None:
    leases = [_lease(0, "leader"), _lease(1, "other"), _lease(2, None), _lease(3, None)]
    snapshot = AssignmentSnapshot(
        leases=tuple(leases),
        expired_keys=frozenset(),
        stamps={},
        workers=(WorkerMetricStats("leader", 1), WorkerMetricStats("other", 1)),
        blocked_keys=frozenset(),
    )
    decision = decide_variance_based(snapshot, AssignmentConfig(), rebalance=False, rng=random.Random(1))
    to_leader = sorted(m.lease.lease_key for m in decision.moves if m.to_worker == "leader")
    assert to_leader  # one of the two unassigned leases goes to the leader
    applied = tuple(m.lease.lease_key for m in decision.moves)
    run = AssignmentRun(decision, applied, (), ("leader", "other"))
    assert _owned_after((0, leases), run, "leader") == sorted(["shardId-000000000000", *to_leader])
    # A move whose write failed leaves the lease where the scan saw it.
    failed = AssignmentRun(decision, (), applied, ("leader", "other"))
    assert _owned_after((0, leases), failed, "leader") == ["shardId-000000000000"]
    assert _owned_after(None, run, "leader") is None
