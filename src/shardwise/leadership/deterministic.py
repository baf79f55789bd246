"""Deterministic leader election for shard sync, compatible with KCL's
``DeterministicShuffleShardSyncLeaderDecider`` (kcl-protocol.md §7, last paragraph).

Every worker scans the lease table, takes the distinct non-null ``leaseOwner`` values, sorts them in Java's
``String.compareTo`` order, shuffles them with ``Collections.shuffle(list, new java.util.Random(1947))`` and
treats the first ``leaders`` of them (KCL: 1) as the leaders. When no lease has an owner, every worker
considers itself a leader. A Python worker sharing a fleet with Java workers must reach the same answer, so
this module reproduces ``java.util.Random`` (the 48-bit LCG and ``nextInt(bound)``) and ``Collections.shuffle``
bit for bit, and Java's UTF-16 string order.

The decision is the pure function :func:`deterministic_leaders`; :class:`DeterministicShuffleLeaderDecider`
is the thin stateful shell that re-scans the lease table at most once per interval.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, MutableSequence
from dataclasses import dataclass
from typing import TypeVar

from shardwise.errors import ConfigurationError, ShardwiseError
from shardwise.leases.model import Lease
from shardwise.leases.store import LeaseStore

__all__ = [
    "DETERMINISTIC_SHUFFLE_SEED",
    "DeterministicLeaderDecider",
    "DeterministicShuffleLeaderDecider",
    "JavaRandom",
    "deterministic_leaders",
    "is_leader",
    "java_shuffle",
    "java_shuffle_in_place",
    "java_string_sort_key",
]

logger = logging.getLogger(__name__)

#: KCL's fixed shuffle seed (``DeterministicShuffleShardSyncLeaderDecider.DETERMINISTIC_SHUFFLE_SEED``).
DETERMINISTIC_SHUFFLE_SEED = 1947

_MULTIPLIER = 0x5DEECE66D
_ADDEND = 0xB
_SEED_MASK = (1 << 48) - 1

T = TypeVar("T")


def _to_int32(value: int) -> int:
    """Wrap an integer to Java's signed 32-bit ``int`` (two's complement overflow)."""
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


class JavaRandom:
    """``java.util.Random``: the 48-bit linear congruential generator of the Java platform specification.

    Only the operations ``Collections.shuffle`` needs are provided: ``next(bits)``, ``nextInt()`` and
    ``nextInt(bound)``.
    """

    __slots__ = ("_seed",)

    def __init__(self, seed: int) -> None:
        # ``new Random(long seed)`` scrambles the seed; Python's ``^`` on negative ints behaves like Java's
        # two's complement ``long`` once masked to 48 bits.
        self._seed = (seed ^ _MULTIPLIER) & _SEED_MASK

    def next_bits(self, bits: int) -> int:
        """``protected int next(int bits)``: advance the LCG and return its top ``bits`` bits as an ``int``."""
        if not 1 <= bits <= 32:
            raise ValueError(f"bits must be between 1 and 32, got {bits}")
        self._seed = (self._seed * _MULTIPLIER + _ADDEND) & _SEED_MASK
        return _to_int32(self._seed >> (48 - bits))

    def next_int(self, bound: int | None = None) -> int:
        """``nextInt()`` (any ``int``) or ``nextInt(bound)`` (uniform in ``[0, bound)``), as Java computes it."""
        if bound is None:
            return self.next_bits(32)
        if bound <= 0 or bound > 0x7FFFFFFF:
            raise ValueError(f"bound must be a positive Java int, got {bound}")
        r = self.next_bits(31)
        m = bound - 1
        if bound & m == 0:
            # Power of two: the high bits of the 31-bit value, ``(int) ((bound * (long) r) >> 31)``.
            return (bound * r) >> 31
        # Rejection loop: reject the values of ``u`` whose ``u - u % bound + m`` overflows an ``int``,
        # i.e. the incomplete last bucket of the 31-bit range.
        u = r
        while True:
            r = u % bound
            if _to_int32(u - r + m) >= 0:
                return r
            u = self.next_bits(31)


def java_shuffle_in_place(items: MutableSequence[T], rnd: JavaRandom) -> None:
    """``Collections.shuffle(list, rnd)``: for ``i`` from ``size`` down to 2, swap ``i - 1`` with
    ``rnd.nextInt(i)``. (Java copies non-random-access lists to an array first; the order is the same.)"""
    for i in range(len(items), 1, -1):
        j = rnd.next_int(i)
        items[i - 1], items[j] = items[j], items[i - 1]


def java_shuffle(items: list[str], seed: int) -> list[str]:
    """A shuffled copy of ``items``: ``Collections.shuffle(list, new java.util.Random(seed))``."""
    result = list(items)
    java_shuffle_in_place(result, JavaRandom(seed))
    return result


def java_string_sort_key(s: str) -> bytes:
    """Sort key giving Java's ``String.compareTo`` order: lexicographic by UTF-16 code unit.

    Big-endian UTF-16 bytes compare exactly as the code-unit sequences do (a prefix sorts first). This
    differs from Python's code-point order only between supplementary characters (surrogate pairs,
    0xD800-0xDBFF leading units) and characters U+E000-U+FFFF, which Java sorts *after* the pairs.
    """
    return s.encode("utf-16-be", "surrogatepass")


def deterministic_leaders(
    owners: Iterable[str | None], *, seed: int = DETERMINISTIC_SHUFFLE_SEED, leaders: int = 1
) -> frozenset[str]:
    """The leaders KCL elects from these lease owners: distinct non-null owners, sorted Java-style, shuffled
    with ``java.util.Random(seed)``, the first ``leaders`` of them. Empty when there is no owner."""
    if leaders < 1:
        raise ConfigurationError(f"the number of leaders must be >= 1, got {leaders}")
    distinct = sorted({owner for owner in owners if owner is not None}, key=java_string_sort_key)
    return frozenset(java_shuffle(distinct, seed)[:leaders])


def is_leader(
    worker_id: str,
    leases: Iterable[Lease],
    *,
    seed: int = DETERMINISTIC_SHUFFLE_SEED,
    leaders: int = 1,
) -> bool:
    """Whether ``worker_id`` is a shard-sync leader given a scan of the lease table. If no lease has an owner,
    every worker is a leader (KCL's rule, so that a fresh application still syncs)."""
    chosen = deterministic_leaders((lease.lease_owner for lease in leases), seed=seed, leaders=leaders)
    return not chosen or worker_id in chosen


@dataclass(frozen=True, slots=True)
class DeterministicLeaderDecider:
    """The pure decision with its parameters bound (KCL: seed 1947, one leader)."""

    seed: int = DETERMINISTIC_SHUFFLE_SEED
    leaders: int = 1

    def __post_init__(self) -> None:
        if self.leaders < 1:
            raise ConfigurationError(f"the number of leaders must be >= 1, got {self.leaders}")

    def elect(self, owners: Iterable[str | None]) -> frozenset[str]:
        return deterministic_leaders(owners, seed=self.seed, leaders=self.leaders)

    def is_leader(self, worker_id: str, leases: Iterable[Lease]) -> bool:
        return is_leader(worker_id, leases, seed=self.seed, leaders=self.leaders)


_FIRST_REELECTION_S = 60.0


class DeterministicShuffleLeaderDecider:
    """Stateful shell: scans the lease table on the first call, again 60 s later (or after ``interval_s`` if
    shorter), then at most once every ``interval_s`` seconds of ``clock`` — KCL's schedule (first re-election
    after 60 s, then every 5 minutes) — and answers from the last election in between.

    A failed scan (a :class:`~shardwise.errors.ShardwiseError`) is logged and keeps the previous election; if
    there has never been a successful one, the worker counts as a leader — as in KCL, where an empty leader
    set makes every worker a leader — and the next call scans again. Shard sync is idempotent (conditional
    creates), so a spare leader costs API calls, never correctness. Thread-safe.
    """

    def __init__(
        self,
        store: LeaseStore,
        worker_id: str,
        *,
        interval_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        seed: int = DETERMINISTIC_SHUFFLE_SEED,
        leaders: int = 1,
    ) -> None:
        if not worker_id:
            raise ConfigurationError("worker_id must not be empty")
        if interval_s <= 0:
            raise ConfigurationError(f"interval_s must be > 0 seconds, got {interval_s}")
        self._store = store
        self._worker_id = worker_id
        self._interval_s = interval_s
        self._clock = clock
        self._decider = DeterministicLeaderDecider(seed=seed, leaders=leaders)
        self._lock = threading.Lock()
        self._leaders: frozenset[str] | None = None
        self._next_scan_at: float | None = None

    @property
    def worker_id(self) -> str:
        return self._worker_id

    @property
    def leaders(self) -> frozenset[str] | None:
        """The leaders of the last successful election (``None`` before the first one; empty when no lease
        had an owner)."""
        return self._leaders

    def is_leader(self) -> bool:
        """Whether this worker should run shard sync now."""
        with self._lock:
            now = self._clock()
            if self._next_scan_at is None or now >= self._next_scan_at:
                self._elect(now)
            leaders = self._leaders
        return not leaders or self._worker_id in leaders

    def refresh(self) -> frozenset[str] | None:
        """Re-scan now, whatever the interval; return the leaders."""
        with self._lock:
            self._elect(self._clock())
            return self._leaders

    def _elect(self, now: float) -> None:
        try:
            leases = self._store.list_leases()
        except ShardwiseError as exc:
            logger.error("leader election for %s failed to scan the lease table: %s", self._worker_id, exc)
            if self._leaders is not None:
                self._next_scan_at = now + self._interval_s
            return
        leaders = self._decider.elect(lease.lease_owner for lease in leases)
        if leaders != self._leaders:
            logger.info(
                "elected shard-sync leaders: %s (this worker %s: %s)",
                ", ".join(sorted(leaders)) if leaders else "none (every worker leads)",
                self._worker_id,
                "leader" if not leaders or self._worker_id in leaders else "follower",
            )
        # KCL elects again 60 s after the first election (ELECTION_INITIAL_DELAY), then every interval: the
        # first election of a (re)started worker happens before it holds any lease, so it cannot count itself.
        first = self._leaders is None
        self._leaders = leaders
        self._next_scan_at = now + (min(_FIRST_REELECTION_S, self._interval_s) if first else self._interval_s)
