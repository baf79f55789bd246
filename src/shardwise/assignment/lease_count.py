"""KCL's ``LeaseCountBasedLeaseAssignmentDecider`` (``LEASE_COUNT_BASED``, kcl-protocol.md §6.3, last bullet).

The 3.x decider that balances the number of leases per worker and ignores their metrics (only the throughput
cap still applies). The bookkeeping is :mod:`shardwise.assignment.projection`'s.
"""

from __future__ import annotations

import heapq
import random

from shardwise.assignment.projection import Book, DeciderRun, is_graceful, movable_keys, move_reason, stays_with_owner
from shardwise.assignment.utilization import AssignmentConfig, AssignmentDecision, AssignmentSnapshot

__all__ = ["decide_lease_count"]


def _lease_count_target(total_leases: int, workers: int, max_leases: int) -> int:
    """KCL: 1 when there are at least as many workers as leases, else ``ceil(leases / workers)``, capped."""
    if workers == 0:
        return 0
    if workers >= total_leases:
        return 1
    return min(-(-total_leases // workers), max_leases)


class _CountQueue:
    """Workers below the lease-count target, fewest leases first (ties: worker id), with lazy updates."""

    def __init__(self, book: Book, target: int) -> None:
        self.book = book
        self.target = target
        self.heap = [(book.count(worker), worker) for worker in book.worker_ids]
        heapq.heapify(self.heap)

    def changed(self, worker: str) -> None:
        heapq.heappush(self.heap, (self.book.count(worker), worker))

    def best_for(self, key: str) -> str | None:
        """The least loaded worker below the target that can take lease ``key`` under the throughput cap."""
        skipped: list[tuple[int, str]] = []
        found: str | None = None
        while self.heap:
            count, worker = heapq.heappop(self.heap)
            if count != self.book.count(worker):
                continue  # stale entry: a fresher one was pushed when the count changed
            if count >= self.target:
                skipped.append((count, worker))
                break
            skipped.append((count, worker))
            if self.book.fits(worker, key):
                found = worker
                break
        for entry in skipped:
            heapq.heappush(self.heap, entry)
        return found


def decide_lease_count(
    snapshot: AssignmentSnapshot,
    config: AssignmentConfig,
    *,
    rebalance: bool,
    rng: random.Random,
) -> AssignmentDecision:
    """KCL's ``LeaseCountBasedLeaseAssignmentDecider`` (``LEASE_COUNT_BASED``, kcl-protocol.md §6.3).

    The target is ``ceil(#leases / #workers)`` capped by ``max_leases_for_worker``. Expired and unassigned
    leases, oldest first, each go to the worker with the fewest leases still under the target (and the
    throughput cap); rebalancing then moves one lease at a time — never a SHARD_END, blocked or in-handoff
    one — from the most loaded worker above the target to the least loaded one below it, until no worker is
    above the target or nothing more can move.
    """
    run = DeciderRun(snapshot, config)
    book = run.book
    target = _lease_count_target(len(book.leases), len(book.worker_ids), config.max_leases_for_worker)
    least_loaded = _CountQueue(book, target)
    for lease in run.candidates:
        key = lease.lease_key
        options = [least_loaded.best_for(key)]
        if book.owner[key] in book.values:  # an active owner may keep its lease even above the target
            options.append(book.owner[key])
        eligible = [worker for worker in options if worker is not None]
        if not eligible:
            run.spilled.append(key)
            continue
        worker = min(eligible, key=lambda item: (book.count(item), item))
        if stays_with_owner(lease, worker, key in snapshot.expired_keys):
            run.kept.append(key)
            continue
        source = book.owner[key]
        run.record(lease, worker, move_reason(lease), graceful=False)
        least_loaded.changed(worker)
        if source is not None and source in book.values:
            least_loaded.changed(source)

    if not rebalance or not book.worker_ids:
        return run.decision(rebalanced=False, target_leases_per_worker=target)

    run.moved.update(run.spilled)
    # Leases only leave workers above the target and only reach workers below it, so each worker's pool of
    # movable leases is drawn up (and shuffled) once.
    pools = {
        worker: [key for key in movable_keys(book, snapshot, worker, run.moved) if not book.leases[key].in_handoff]
        for worker in book.worker_ids
    }
    for pool in pools.values():
        rng.shuffle(pool)
    while (step := _lease_count_step(book, target, pools)) is not None:
        key, worker = step
        lease = book.leases[key]
        run.record(lease, worker, "rebalance", graceful=is_graceful(lease, snapshot, config))

    return run.decision(rebalanced=True, target_leases_per_worker=target)


def _lease_count_step(book: Book, target: int, pools: dict[str, list[str]]) -> tuple[str, str] | None:
    """One rebalancing move of the lease-count decider: ``(lease key, recipient)`` or ``None`` when done.

    From the most loaded worker above the target (ties: largest id) to the least loaded one below it (ties:
    smallest id) that can take one of its leases under the throughput cap.
    """
    by_load = sorted(book.worker_ids, key=lambda worker: (book.count(worker), worker))
    under = [worker for worker in by_load if book.count(worker) < target]
    over = [worker for worker in reversed(by_load) if book.count(worker) > target]
    for donor in over:
        pool = pools[donor]
        for recipient in under:
            for index, key in enumerate(pool):
                if book.fits(recipient, key):
                    del pool[index]
                    return key, recipient
    return None
