"""The variance decider's settling step: one move or exchange for a donor KCL's fill leaves above the band.

KCL's rebalance (:mod:`shardwise.assignment.variance`, step B) gives a donor's leases only while the best
recipient stays at or below the fleet average, and only a dampened share of its excess per run. When a donor's
leases are large next to the gaps between the workers (90, 30 and 30 KB/s against workers of 10 KB/s leases),
nothing fits: the donor stays up to ~15 % above the mean for good, and a donor drained one small lease per run
takes many runs to get back within the threshold. After step B, each donor still above the *band*
(``average × (1 + threshold)``, ``threshold = rebalance_threshold_percentage / 100``; for an explicit metric,
also above its operating range) may make one settling action:

* a **move** of one of its leases to another worker, or, when no move qualifies,
* an **exchange**: one of its leases for some of another worker's leases, each less than half its size
  (:data:`_EXCHANGE_RATIO`), chosen largest first to bring the two workers closest to equal. The difference of
  their throughputs is what moves; every lease goes by a graceful handoff like any rebalancing move.

An action qualifies when it lowers the higher of the two workers by at least the *margin*, half of
``rebalance_threshold_percentage`` of the fleet average: with ``d`` the donor's value, ``r`` the other
worker's and ``delta`` the load that moves, ``delta >= margin`` and ``r + delta <= d − margin`` — the gap rule
of ``variance._reduces_variance``, for a load that may come to rest above the average. When step B gave every
lease its fill picked from this donor (it was held back by dampening alone, not stopped), the action must also
leave both workers within the band: settling finishes a donor's way back, it never continues KCL's dampened
drift. Among qualifying actions the one leaving the lower of the two maxima is taken, then by lease key and
worker id (no randomness).

Why this converges and cannot oscillate: an action never takes the other worker to where the donor was
(``r + delta <= d − margin``), so the reverse action would have to *raise* that pair's maximum by ``delta >=
margin`` and cannot qualify unless the measures move by more than half the margin each; and every action lowers
the sum of squared loads by at least ``2 × delta × margin`` (the total is kept: no value is projected below 0),
a bounded step down from a finite start, so repeated runs end. Measures closer to the idle floor than
:data:`~shardwise.assignment.projection.READING_SPREAD` times it are not balanced on, and an exchange never
trades leases within that factor of each other: the same lease can read that far apart on two workers (EMAs
decaying out of phase), and a settling action must not rest on such a difference.

Only leases rebalancing may move (:func:`~shardwise.assignment.projection.movable_keys`: not SHARD_END, not
blocked, not moved this run) and that carry load take part; every worker given a lease must be within both caps
afterwards; the other worker must report the balanced metric, stay within the operating range of an explicit
one and not go above the average or range of any other metric (KCL's recipient rule for the metrics not being
balanced).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from shardwise.assignment.model import THROUGHPUT
from shardwise.assignment.projection import READING_SPREAD, Book, above, movable_keys
from shardwise.assignment.utilization import AssignmentSnapshot

__all__ = ["Settle", "find_settle", "settle_margin"]

#: An exchange takes back only leases less than 1/this of the one it gives: the same lease can read up to this
#: factor apart on two workers (:data:`~shardwise.assignment.projection.READING_SPREAD`), and an exchange of
#: leases closer in size could be undone once they are read by their new holders.
_EXCHANGE_RATIO = READING_SPREAD


@dataclass(frozen=True, slots=True)
class Settle:
    """Give lease ``give`` to ``recipient`` and, for an exchange, the leases ``back`` from ``recipient`` to the donor.

    ``peak_after`` is the higher of the two workers' values of the balanced metric once done.
    """

    give: str
    recipient: str
    back: tuple[str, ...]
    peak_after: float


def settle_margin(book: Book, metric: str) -> float:
    """How much an action must lower the higher of its two workers: half the rebalance threshold of the average."""
    return book.fleet_avg[metric] * book.config.rebalance_threshold_percentage / 200


def _loaded(
    book: Book, snapshot: AssignmentSnapshot, worker: str, metric: str, moved: set[str]
) -> list[tuple[float, str]]:
    """The worker's movable leases that carry load, as (contribution to ``metric``, key), smallest first, and no
    larger than the worker's own value (so taking one away never projects below 0)."""
    value = book.values[worker][metric]
    found = []
    for key in movable_keys(book, snapshot, worker, moved):
        share = book.contribution(metric, book.tp[key])
        if not book.near_idle(key) and 0 < share <= value:
            found.append((share, key))
    return sorted(found)


def _fits(book: Book, worker: str, *, leases_gained: int, net_tp: float) -> bool:
    """Whether ``worker``, which receives a lease, is within both caps once its count has changed by
    ``leases_gained`` and its throughput by ``net_tp`` KB/s (as the deciders check every worker given a lease)."""
    if book.count(worker) + leases_gained > book.config.max_leases_for_worker:
        return False
    max_tp = book.config.max_throughput_per_host_kbps
    return math.isinf(max_tp) or book.assigned_tp(worker) + net_tp <= max_tp


def _recipient_allows(book: Book, recipient: str, metric: str, net_tp: float) -> bool:
    """KCL's recipient rule for the metrics not being balanced, and the operating range of an explicit one."""
    for name, value in book.values[recipient].items():
        after = value + book.contribution(name, net_tp)
        if name == metric:
            if name != THROUGHPUT and above(after, book.limits[recipient][name]):
                return False
        elif above(after, book.fleet_avg[name]) or above(after, book.limits[recipient][name]):
            return False
    return True


@dataclass(frozen=True, slots=True)
class _Pair:
    """The donor and one other worker, with their values of the balanced metric, the margin and the band."""

    book: Book
    metric: str
    donor: str
    recipient: str
    margin: float
    into_band: bool
    max_net_tp: float

    @property
    def gap(self) -> float:
        return self.book.values[self.donor][self.metric] - self.book.values[self.recipient][self.metric]

    def peak_after(self, delta: float) -> float | None:
        """The higher of the two values once ``delta`` has moved, or ``None`` when that does not qualify."""
        book, metric = self.book, self.metric
        d, r = book.values[self.donor][metric], book.values[self.recipient][metric]
        if delta < self.margin or r + delta > d - self.margin:
            return None
        peak = max(d - delta, r + delta)
        if self.into_band and above(peak, book.fleet_avg[metric] + 2 * self.margin):
            return None
        return peak

    def allows(self, give: str, back: tuple[str, ...]) -> bool:
        """Caps on both sides, and the recipient's other metrics."""
        book = self.book
        net_tp = book.tp[give] - math.fsum(book.tp[key] for key in back)
        if net_tp > self.max_net_tp:
            return False
        if not _fits(book, self.recipient, leases_gained=1 - len(back), net_tp=net_tp):
            return False
        if back and not _fits(book, self.donor, leases_gained=len(back) - 1, net_tp=-net_tp):
            return False
        return _recipient_allows(book, self.recipient, self.metric, net_tp)


def _best_move(pair: _Pair, give: list[tuple[float, str]]) -> Settle | None:
    best: Settle | None = None
    for share, key in give:
        peak = pair.peak_after(share)
        if peak is None or (best is not None and (peak, key) >= (best.peak_after, best.give)):
            continue
        if pair.allows(key, ()):
            best = Settle(key, pair.recipient, (), peak)
    return best


def _take_back(take: list[tuple[float, str]], ideal: float, high: float) -> tuple[float, tuple[str, ...]]:
    """Leases of the other worker whose shares sum close to ``ideal`` without exceeding ``high``: largest first,
    each added while it brings the sum closer to ``ideal``."""
    total, keys = 0.0, []
    for share, key in reversed(take):
        if total + share <= high and abs(total + share - ideal) < abs(total - ideal):
            total += share
            keys.append(key)
    return total, tuple(keys)


def _best_exchange(pair: _Pair, give: list[tuple[float, str]], take: list[tuple[float, str]]) -> Settle | None:
    """The exchange closest to halving the gap: one lease given, the other worker's smaller leases nearest the
    rest taken back."""
    best: Settle | None = None
    seen: set[float] = set()
    for share, key in give:
        if share in seen:
            continue
        seen.add(share)
        smaller = [item for item in take if item[0] * _EXCHANGE_RATIO < share]
        total, back = _take_back(smaller, share - pair.gap / 2, share - pair.margin)
        peak = pair.peak_after(share - total) if back else None
        if peak is None:
            continue
        if best is not None and (peak, len(back), key) >= (best.peak_after, len(best.back), best.give):
            continue
        if pair.allows(key, back):
            best = Settle(key, pair.recipient, back, peak)
    return best


def _better(candidate: Settle | None, best: Settle | None) -> bool:
    if candidate is None:
        return False
    return best is None or (candidate.peak_after, candidate.recipient) < (best.peak_after, best.recipient)


def find_settle(
    book: Book,
    snapshot: AssignmentSnapshot,
    metric: str,
    donor: str,
    *,
    moved: set[str],
    into_band: bool,
    max_net_tp: float = math.inf,
) -> Settle | None:
    """The best qualifying move of one of ``donor``'s leases, else the best qualifying exchange, else ``None``.

    Only a donor above ``average × (1 + threshold)`` (or, for an explicit metric, above its operating range)
    settles; ``moved`` holds the leases this run has already moved, which take no part; ``into_band``: both
    workers must end within the band; ``max_net_tp``: the most throughput (KB/s) the action may move (the
    donor's take when ``allow_throughput_overshoot`` is off).
    """
    margin = settle_margin(book, metric)
    if margin <= 0 or metric not in book.values.get(donor, {}):
        return None
    d = book.values[donor][metric]
    out_of_band = above(d, book.fleet_avg[metric] + 2 * margin)
    if not (out_of_band or (metric != THROUGHPUT and above(d, book.limits[donor][metric]))):
        return None
    give = _loaded(book, snapshot, donor, metric, moved)
    if not give:
        return None
    pairs = [
        _Pair(book, metric, donor, worker, margin, into_band, max_net_tp)
        for worker in book.worker_ids
        if worker != donor and metric in book.values[worker] and book.values[worker][metric] + 2 * margin <= d
    ]
    best: Settle | None = None
    for pair in pairs:
        candidate = _best_move(pair, give)
        if _better(candidate, best):
            best = candidate
    if best is not None:
        return best
    for pair in pairs:
        candidate = _best_exchange(pair, give, _loaded(book, snapshot, pair.recipient, metric, moved))
        if _better(candidate, best):
            best = candidate
    return best
