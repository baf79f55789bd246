"""KCL's default 3.x decider, ``VarianceBasedLeaseAssignmentDecider`` (kcl-protocol.md §6.2 steps 3–6, §6.3).

:func:`decide_variance_based` gives the expired and unassigned leases to the workers with the most headroom and,
on a rebalancing run, moves leases from the workers above the fleet average of the most unbalanced metric to
the ones below it; under ``rebalance_past_average`` a donor still above the threshold after that makes one
settling move or exchange (:mod:`shardwise.assignment.settle`). :func:`metrics_out_of_balance` and
:func:`projected_loads` expose the same judgement for the leader's metrics and logs and for tests. The
bookkeeping is :mod:`shardwise.assignment.projection`'s.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Iterator

from shardwise.assignment.model import THROUGHPUT
from shardwise.assignment.projection import (
    Book,
    DeciderRun,
    above,
    is_graceful,
    movable_keys,
    move_reason,
    stays_with_owner,
)
from shardwise.assignment.settle import find_settle
from shardwise.assignment.utilization import AssignmentConfig, AssignmentDecision, AssignmentSnapshot

__all__ = ["decide_variance_based", "metrics_out_of_balance", "projected_loads"]


def _donors_for(book: Book, metric: str) -> list[str]:
    """KCL ``getWorkersToTakeLeasesFromIfRequired`` for one metric, over the workers reporting it.

    Rebalance is triggered when some worker is strictly outside ``avg × (1 ± threshold)`` or above its
    operating range; the donors are then the workers at or above the upper limit or above their range, or, if
    there is none, the single most loaded worker (the first by worker id among equals).
    """
    avg = book.fleet_avg[metric]
    threshold = book.config.rebalance_threshold_percentage / 100
    upper = avg * (1 + threshold)
    lower = avg * (1 - threshold)
    triggered = False
    donors: list[str] = []
    most_loaded: str | None = None
    for worker in book.worker_ids:
        per_metric = book.values[worker]
        if metric not in per_metric:
            continue
        value = per_metric[metric]
        above_range = above(value, book.limits[worker][metric])
        if value > upper or value < lower or above_range:
            triggered = True
        if value >= upper or above_range:
            donors.append(worker)
        if most_loaded is None or book.values[most_loaded][metric] < value:
            most_loaded = worker
    if not triggered:
        return []
    if not donors and most_loaded is not None:
        donors.append(most_loaded)
    return donors


def _throughput_to_take(book: Book, worker: str, metric: str) -> float:
    """KCL: ``assignedTp × (v − avg) / v × dampening``; 0 for a worker whose value is 0."""
    value = book.values[worker][metric]
    if value <= 0:
        return 0.0
    share = (value - book.fleet_avg[metric]) / value * book.config.dampening_percentage / 100
    return book.assigned_tp(worker) * share


def _choose_metric(book: Book) -> tuple[str | None, list[tuple[str, float]]]:
    """The metric to rebalance and its donors with their throughput to take, largest take first.

    KCL picks the metric with the largest total throughput to take; a metric nobody is out of balance in
    cannot win over one that is (KCL's choice among equal totals depends on hash-map order).
    """
    best: tuple[float, str, list[tuple[str, float]]] | None = None
    for metric in sorted(book.fleet_avg):
        donors = _donors_for(book, metric)
        if not donors:
            continue
        takes = [(worker, _throughput_to_take(book, worker, metric)) for worker in donors]
        total = math.fsum(take for _, take in takes)
        if best is None or total > best[0]:
            best = (total, metric, takes)
    if best is None:
        return None, []
    _, metric, takes = best
    return metric, sorted(takes, key=lambda item: (-item[1], item[0]))


def _leases_to_take(
    book: Book, snapshot: AssignmentSnapshot, donor: str, take: float, *, moved: set[str], rng: random.Random
) -> list[str]:
    """KCL ``getLeasesToTake``: one arbitrary lease from a donor without throughput, else a greedy fill.

    The donor's movable leases are shuffled and every lease that keeps the remaining amount above 0 is taken;
    if none is, and overshoot is allowed, the smallest lease is taken instead. Not in KCL: a lease whose load
    is within :data:`~shardwise.assignment.projection.READING_SPREAD` of the idle floor is not picked (its next
    holder may read it as idle, and the imbalance it seemed to fix comes back the other way).
    """
    if not book.members.get(donor):
        return []
    movable = movable_keys(book, snapshot, donor, moved)
    if not movable:
        return []
    if book.assigned_tp(donor) == 0:
        return [rng.choice(movable)]
    movable = [key for key in movable if not book.near_idle(key)]
    if not movable:
        return []
    rng.shuffle(movable)
    picked: list[str] = []
    remaining = take
    for key in movable:
        tp = book.tp[key]
        if remaining - tp <= 0:
            continue
        remaining -= tp
        picked.append(key)
    if not picked and book.config.allow_throughput_overshoot:
        picked.append(min(movable, key=lambda key: book.tp[key]))
    return picked


def _values_after_taking(book: Book, worker: str, key: str) -> Iterator[tuple[str, float]]:
    """Each metric of ``worker`` with its projected value once it holds lease ``key`` as well."""
    tp = book.tp[key]
    for name, value in book.values[worker].items():
        yield name, value + book.contribution(name, tp)


def _above_average_or_range(book: Book, worker: str, name: str, value: float) -> bool:
    return above(value, book.fleet_avg[name]) or above(value, book.limits[worker][name])


def _would_exceed_average(book: Book, worker: str, key: str) -> bool:
    """KCL ``willAnyMetricStatsGoAboveAverageUtilizationOrOperatingRange`` for the recipient of ``key``."""
    return any(
        _above_average_or_range(book, worker, name, after) for name, after in _values_after_taking(book, worker, key)
    )


def _population_variance(values: Iterable[float]) -> float:
    items = list(values)
    if not items:
        return 0.0
    mean = math.fsum(items) / len(items)
    return math.fsum((value - mean) ** 2 for value in items) / len(items)


#: A move must lower the projected variance by more than this fraction to count as lowering it (rounding noise
#: must not let two workers swap their loads back and forth).
_VARIANCE_EPSILON = 1e-9


def _lowers_variance(book: Book, metric: str, key: str, recipient: str) -> bool:
    """Whether moving lease ``key`` to ``recipient`` strictly lowers the projected variance of ``metric``."""
    delta = book.contribution(metric, book.tp[key])
    source = book.owner[key]
    if delta == 0 or source == recipient:
        return False
    current = {worker: values[metric] for worker, values in book.values.items() if metric in values}
    after = dict(current)
    if source is not None and source in after:
        after[source] = max(0.0, after[source] - delta)
    if recipient in after:
        after[recipient] += delta
    before = _population_variance(current.values())
    return _population_variance(after.values()) < before * (1 - _VARIANCE_EPSILON)


def _reduces_variance(book: Book, metric: str, key: str, recipient: str) -> bool:
    """Whether the move is worth making for ``metric``: it lowers the variance (or leaves it, for a lease adding
    nothing) **and** leaves the recipient clearly below where the donor started.

    Not in KCL, which never lowers a donor's projected value within a run, so it cannot notice a donor drained
    to the fleet average; here such a move stops the donor. The gap rule is what keeps a balanced fleet still:
    the recipient must end at least half of ``rebalance_threshold_percentage`` of the fleet average below where
    the donor started (``recipient + lease <= donor − threshold / 2 × average``). Measured loads are noisy (a
    lease's throughput EMA moves by several percent from one renewal to the next), so a move that merely swaps
    which of two workers is the higher one, or gains less than that margin, would be undone by the next run's
    noise: leases would wander between workers under even load (the synthetic ``T`` makes every worker above
    100 a donor, so some worker always is one). Half the threshold, not all of it, so that a fleet still
    converges to within the threshold: a donor above ``average × (1 + threshold)`` can always give a lease of up
    to half the threshold to a worker at or below the average. A move that brings a donor above ``average ×
    (1 + threshold)`` back under that bound without taking the recipient above it is always worth making (it
    is how a fleet gets within the threshold when its smallest leases are large); no noise of a few percent
    puts a worker of an evenly loaded fleet above that bound, and with lease counts that differ by one the
    recipient would end where the donor was, above it.
    """
    delta = book.contribution(metric, book.tp[key])
    if delta == 0:
        return True
    source = book.owner[key]
    if source is not None and metric in book.values.get(source, {}) and metric in book.values[recipient]:
        threshold = book.config.rebalance_threshold_percentage / 100
        donor_value, recipient_after = book.values[source][metric], book.values[recipient][metric] + delta
        band = book.fleet_avg[metric] * (1 + threshold)
        clearly_lower = not above(recipient_after, donor_value - book.fleet_avg[metric] * threshold / 2)
        into_band = (
            above(donor_value, band)
            and not above(recipient_after, band)
            and not above(recipient_after, donor_value - book.fleet_avg[metric] * threshold / 5)
        )
        if not (clearly_lower or into_band):
            return False
    return _lowers_variance(book, metric, key, recipient)


def _may_pass_average(book: Book, metric: str, key: str, recipient: str) -> bool:
    """The ``rebalance_past_average`` exception to KCL's recipient rule (see :class:`AssignmentConfig`).

    The recipient reports ``metric`` and may end above its fleet average (and, for the synthetic ``T``, above
    its nominal range of 100, which is that same average), as long as the move strictly lowers the variance
    of ``metric``; its other metrics still obey KCL's rule and an explicit metric never exceeds its range.
    """
    if metric not in book.values[recipient] or book.owner[key] == recipient:
        return False
    for name, after in _values_after_taking(book, recipient, key):
        if name == metric:
            if name != THROUGHPUT and above(after, book.limits[recipient][name]):
                return False
        elif _above_average_or_range(book, recipient, name, after):
            return False
    return _lowers_variance(book, metric, key, recipient)


def _give(run: DeciderRun, metric: str, donor: str, take: float, rng: random.Random) -> bool:
    """Step B for one donor: its leases picked by the greedy fill, each to the best queued worker, until KCL's
    stop rule. Whether the donor gave every lease picked (it was not stopped)."""
    snapshot, book, config = run.snapshot, run.book, run.book.config
    given = 0
    picked = _leases_to_take(book, snapshot, donor, take, moved=run.moved, rng=rng)
    for key in picked:
        if not book.queued:
            return False
        worker = book.pop_recipient(key)
        if worker is None:
            continue  # nobody can take this lease under the caps; a smaller one may still fit
        if _would_exceed_average(book, worker, key) and not (
            given == 0 and config.rebalance_past_average and _may_pass_average(book, metric, key, worker)
        ):
            return False  # KCL: stop taking from this donor; the worker is not queued again
        lease = book.leases[key]
        if stays_with_owner(lease, worker, key in snapshot.expired_keys):
            book.enqueue(worker)
            continue
        if not _reduces_variance(book, metric, key, worker):
            book.enqueue(worker)
            return False
        run.record(lease, worker, "rebalance", graceful=is_graceful(lease, snapshot, config))
        book.requeue_after_move(worker)
        given += 1
    return given == len(picked) > 0


def _settle(run: DeciderRun, metric: str, donors: Iterable[tuple[str, float]], filled: set[str]) -> None:
    """Step C: at most one settling action (:mod:`shardwise.assignment.settle`) per donor, in B's order; a donor
    in ``filled`` (B gave every lease its fill picked) may only settle into the band, and without
    ``allow_throughput_overshoot`` no action moves more throughput than the donor's take."""
    snapshot, book = run.snapshot, run.book
    for donor, take in donors:
        limit = math.inf if book.config.allow_throughput_overshoot else take
        action = find_settle(
            book, snapshot, metric, donor, moved=run.moved, into_band=donor in filled, max_net_tp=limit
        )
        if action is None:
            continue
        for key, worker in ((action.give, action.recipient), *((back, donor) for back in action.back)):
            lease = book.leases[key]
            run.record(lease, worker, "rebalance", graceful=is_graceful(lease, snapshot, book.config))


def decide_variance_based(
    snapshot: AssignmentSnapshot,
    config: AssignmentConfig,
    *,
    rebalance: bool,
    rng: random.Random,
) -> AssignmentDecision:
    """KCL's ``VarianceBasedLeaseAssignmentDecider`` (kcl-protocol.md §6.2 steps 3–6, §6.3).

    A. Every expired or unassigned lease (not blocked), oldest stamp first, goes to the queued worker with the
       most headroom that can take it under both caps; that worker's projected load rises and it is queued
       again while under both caps. A worker that already is the lease's actual owner keeps it (no move),
       unless the lease is expired in a handoff. When the queue runs dry, the rest is spillover.
    B. If ``rebalance``: for the metric with the largest total throughput to take, each donor (largest take
       first) gives the leases picked by the greedy fill, each to the best queued worker that can take it;
       once that worker would go above the fleet average or its operating range, the donor stops (and that
       worker leaves the queue) — except for the donor's first lease under ``rebalance_past_average``. A move
       that would not lower the projected variance of the metric also stops the donor. SHARD_END and blocked
       leases, and leases moved or spilled in A, are never rebalanced.
    C. Under ``rebalance_past_average`` (not in KCL): each donor still above ``average × (1 + threshold)`` (or
       its operating range) makes at most one settling move or exchange (:func:`~.settle.find_settle`), which
       must leave both workers within that band when B gave every lease its fill picked from the donor. This
       is what brings a fleet whose leases are large next to its imbalance within the threshold in a few runs,
       and it cannot undo itself on the next run (see :mod:`shardwise.assignment.settle`).
    """
    run = DeciderRun(snapshot, config)
    book = run.book
    candidates = run.candidates
    for index, lease in enumerate(candidates):
        if not book.queued:
            run.spilled.extend(item.lease_key for item in candidates[index:])
            break
        key = lease.lease_key
        worker = book.pop_recipient(key)
        if worker is None:
            run.spilled.append(key)
            continue
        if stays_with_owner(lease, worker, key in snapshot.expired_keys):
            book.enqueue(worker)
            run.kept.append(key)
            continue
        run.record(lease, worker, move_reason(lease), graceful=False)
        book.requeue_after_move(worker)

    if not rebalance or not book.worker_ids:
        return run.decision(rebalanced=False)

    run.moved.update(run.spilled)  # a lease no worker could take under the caps is not rebalanced either
    metric, donors = _choose_metric(book)
    if metric is not None:
        filled = {donor for donor, take in donors if _give(run, metric, donor, take, rng)}
        if config.rebalance_past_average:
            _settle(run, metric, donors, filled)

    return run.decision(rebalanced=True, rebalance_metric=metric, donors=tuple(donors))


def metrics_out_of_balance(snapshot: AssignmentSnapshot, config: AssignmentConfig) -> tuple[str, ...]:
    """The metrics in which some worker is outside ``avg × (1 ± threshold)`` or above its operating range."""
    book = Book(snapshot, config)
    return tuple(metric for metric in sorted(book.fleet_avg) if _donors_for(book, metric))


def projected_loads(
    snapshot: AssignmentSnapshot, config: AssignmentConfig, metric: str | None = None
) -> dict[str, float]:
    """Per worker, the value of ``metric`` the deciders start from, for the workers reporting it.

    Without ``metric``: the one a rebalance would choose now, or, when every metric is in balance, the one
    reported by the most workers (ties: by name). Empty when there is no usable worker.
    """
    book = Book(snapshot, config)
    if metric is None:
        metric, _ = _choose_metric(book)
    if metric is None:
        reporters = {name: sum(name in book.values[w] for w in book.worker_ids) for name in book.fleet_avg}
        if not reporters:
            return {}
        metric = min(reporters, key=lambda name: (-reporters[name], name))
    return {worker: book.values[worker][metric] for worker in book.worker_ids if metric in book.values[worker]}
