"""``LeaseTaker``: one KCL 2.x taker run against a lease store (reference: kcl-protocol.md §7, §2.3, §9).

The shell around :mod:`shardwise.assignment.taker`: scan the table, fold the scan into the observations kept
between runs, let :func:`~shardwise.assignment.taker.decide` choose, and apply the choice with conditional
``take_lease`` writes (condition: the counter still has the scanned value). A lost race is not an error: the
lease is skipped and the next run sees the new state.

Run it every :attr:`~shardwise.assignment.taker.TakerConfig.taker_interval_ms` (KCL: fixed delay); hand the
returned leases to the renewer.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from shardwise.assignment.taker import (
    LeaseObservation,
    TakeDecision,
    TakerConfig,
    decide,
    observe,
)
from shardwise.errors import ConfigurationError, DependencyError, ShardwiseError, ThrottlingError
from shardwise.leases.model import Lease
from shardwise.leases.store import LeaseStore

__all__ = ["LeaseTaker", "TakeLeasesMetrics"]

logger = logging.getLogger(__name__)

#: KCL ``DynamoDBLeaseTaker``: attempts per ``takeLease`` when throttled.
TAKE_ATTEMPTS = 3
#: Scan attempts: the first one plus one retry.
SCAN_ATTEMPTS = 2
#: Re-read leases to steal when the scan took longer than this fraction of the renewal interval.
RENEWAL_SLACK_FRACTION = 0.5

_NS_PER_MS = 1_000_000


@dataclass(frozen=True, slots=True)
class TakeLeasesMetrics:
    """The datapoints of one taker run, named as KCL's ``TakeLeases`` operation names them (§9)."""

    taken_leases: int = 0
    untaken_leases: int = 0
    expired_leases: int = 0
    lease_spillover: int = 0
    num_workers: int = 0
    very_old_leases: int = 0
    leases_to_take: int = 0
    needed_leases: int = 0
    total_leases: int = 0
    list_leases_success: bool = True

    def as_dict(self) -> dict[str, int]:
        """``{KCL metric name: value}`` (``ListLeases`` is 1 on success, 0 on failure)."""
        return {
            "TakenLeases": self.taken_leases,
            "UntakenLeases": self.untaken_leases,
            "ExpiredLeases": self.expired_leases,
            "LeaseSpillover": self.lease_spillover,
            "NumWorkers": self.num_workers,
            "VeryOldLeases": self.very_old_leases,
            "LeasesToTake": self.leases_to_take,
            "NeededLeases": self.needed_leases,
            "TotalLeases": self.total_leases,
            "ListLeases": int(self.list_leases_success),
        }


class LeaseTaker:
    """Takes leases for one worker; keeps the observations (counter-change times) between runs.

    ``clock_ns`` must be monotonic and return values > 0 (0 is the "never seen renewed" mark); ``rng``
    drives the shuffles (seed it for reproducible runs). Runs are serialized by a lock.
    """

    def __init__(
        self,
        store: LeaseStore,
        worker_id: str,
        config: TakerConfig,
        *,
        clock_ns: Callable[[], int] = time.monotonic_ns,
        rng: random.Random | None = None,
    ) -> None:
        if not worker_id:
            raise ConfigurationError("worker_id must be a non-empty string")
        self._store = store
        self._worker_id = worker_id
        self._config = config
        self._clock_ns = clock_ns
        self._rng = rng if rng is not None else random.Random()
        self._observations: dict[str, LeaseObservation] = {}
        self._last_decision: TakeDecision | None = None
        self._last_metrics: TakeLeasesMetrics | None = None
        self._runs = 0
        self._total_taken = 0
        self._lock = threading.Lock()

        self.last_scan: tuple[int, list[Lease]] | None = None  # (scan time ns, leases) of the latest run
        #: When each lease the latest run took was written: the clock read right before its take request, from
        #: which the renewer counts the lease's local expiry.
        self.last_take_stamps: dict[str, int] = {}

    @property
    def worker_id(self) -> str:
        return self._worker_id

    @property
    def config(self) -> TakerConfig:
        return self._config

    @property
    def observations(self) -> Mapping[str, LeaseObservation]:
        """A read-only view of what this taker knows about every lease, by key."""
        return MappingProxyType(self._observations)

    @property
    def last_decision(self) -> TakeDecision | None:
        """The decision of the last run that managed to scan the table (``None`` before that)."""
        return self._last_decision

    @property
    def last_metrics(self) -> TakeLeasesMetrics | None:
        """The ``TakeLeases`` datapoints of the last run (``None`` before the first run)."""
        return self._last_metrics

    @property
    def runs(self) -> int:
        """How many runs have completed (successfully or not)."""
        return self._runs

    @property
    def total_taken(self) -> int:
        """Leases taken over all runs."""
        return self._total_taken

    def take_leases(self) -> list[Lease]:
        """One taker run. Returns the leases this run took, as the store now holds them.

        Raises :class:`~shardwise.errors.InvalidStateError` if the table is missing and
        :class:`~shardwise.errors.DependencyError` if the scan failed twice for a reason other than throttling
        (a scan throttled twice ends the run with nothing taken, as in KCL).
        """
        with self._lock:
            try:
                return self._run()
            finally:
                self._runs += 1

    # -- one run ---------------------------------------------------------------------------------------

    def _scan(self) -> tuple[list[Lease], int, int] | None:
        """``(leases, scan_time_ns, scan_duration_ns)``, or None if the scan was throttled on every try."""
        started = self._clock_ns()
        last_error: DependencyError | None = None
        for attempt in range(1, SCAN_ATTEMPTS + 1):
            try:
                leases = self._store.list_leases()
            except DependencyError as exc:
                last_error = exc
                logger.info(
                    "Worker %s could not scan the lease table %s on try %d out of %d: %s",
                    self._worker_id,
                    self._store.table_name,
                    attempt,
                    SCAN_ATTEMPTS,
                    exc,
                )
                continue
            # As in KCL, the scan time is read after the scan returned.
            scan_time = self._clock_ns()
            return leases, scan_time, scan_time - started
        assert last_error is not None
        if isinstance(last_error, ThrottlingError):
            logger.error(
                "Worker %s could not scan the lease table %s, aborting this taker run: %s",
                self._worker_id,
                self._store.table_name,
                last_error,
            )
            return None
        raise last_error

    def _run(self) -> list[Lease]:
        scanned = self._scan()
        if scanned is None:
            self._last_metrics = TakeLeasesMetrics(list_leases_success=False)
            return []
        leases, scan_time, scan_duration = scanned
        self.last_scan = (scan_time, leases)
        self._observations = observe(self._observations, leases, scan_time, self._worker_id)
        decision = decide(self._worker_id, self._observations, scan_time, self._config, self._rng)
        self._last_decision = decision
        self._log_decision(decision, scan_duration)

        to_steal = decision.to_steal
        if to_steal and scan_duration > self._stale_scan_threshold_ns():
            to_steal = self._reread(to_steal)

        taken: list[Lease] = []
        untaken: list[str] = []
        self.last_take_stamps = {}
        for lease in (*decision.to_take, *to_steal):
            self.last_take_stamps[lease.lease_key] = self._clock_ns()
            new = self._take(lease)
            if new is None:
                untaken.append(lease.lease_key)
                continue
            # KCL stamps a taken lease with the time of the take.
            self._observations[new.lease_key] = LeaseObservation(new, self._clock_ns())
            taken.append(new)

        if taken:
            logger.info(
                "Worker %s successfully took %d leases: %s",
                self._worker_id,
                len(taken),
                ", ".join(lease.lease_key for lease in taken),
            )
        if untaken:
            logger.info("Worker %s failed to take %d leases: %s", self._worker_id, len(untaken), ", ".join(untaken))
        self._total_taken += len(taken)
        self._last_metrics = TakeLeasesMetrics(
            taken_leases=len(taken),
            untaken_leases=len(untaken),
            expired_leases=len(decision.available_keys),
            lease_spillover=decision.spillover,
            num_workers=decision.num_workers,
            very_old_leases=decision.very_old_taken,
            leases_to_take=len(decision.leases),
            needed_leases=decision.needed,
            total_leases=decision.total_leases,
        )
        return taken

    def _stale_scan_threshold_ns(self) -> float:
        # KCL's taker computes its renewal interval without epsilon (failover / 3) and allows half of it.
        renewal_ms = self._config.failover_time_ms // 3
        return renewal_ms * _NS_PER_MS * RENEWAL_SLACK_FRACTION

    def _reread(self, leases: tuple[Lease, ...]) -> tuple[Lease, ...]:
        """The scan was slow: fetch the latest value of each lease to steal (KCL
        ``updateStaleLeasesWithLatestState``), keeping the scanned value if the read fails."""
        fresh: list[Lease] = []
        for lease in leases:
            try:
                latest = self._store.get_lease(lease.lease_key)
            except ShardwiseError as exc:
                logger.warning(
                    "Worker %s failed to fetch the latest state of lease %s that needs to be stolen, "
                    "using the scanned state: %s",
                    self._worker_id,
                    lease.lease_key,
                    exc,
                )
                fresh.append(lease)
                continue
            if latest is None:
                logger.debug("Worker %s will not steal lease %s: it no longer exists", self._worker_id, lease.lease_key)
                continue
            fresh.append(latest)
        return tuple(fresh)

    def _take(self, lease: Lease) -> Lease | None:
        """``take_lease`` with KCL's retries on throttling; None if the race was lost or the write failed."""
        for attempt in range(1, TAKE_ATTEMPTS + 1):
            try:
                new = self._store.take_lease(lease, self._worker_id)
            except ThrottlingError:
                logger.info(
                    "Could not take lease with key %s for worker %s on try %d out of %d due to capacity",
                    lease.lease_key,
                    self._worker_id,
                    attempt,
                    TAKE_ATTEMPTS,
                )
                continue
            except ShardwiseError as exc:  # one lease's fault stays with that lease
                logger.warning(
                    "Worker %s could not take lease %s: %s: %s",
                    self._worker_id,
                    lease.lease_key,
                    type(exc).__name__,
                    exc,
                )
                return None
            except Exception:
                logger.exception("Worker %s: unexpected error taking lease %s", self._worker_id, lease.lease_key)
                return None
            if new is None:
                logger.debug(
                    "Worker %s lost the race for lease %s: its counter is no longer %d (owner was %s)",
                    self._worker_id,
                    lease.lease_key,
                    lease.lease_counter,
                    lease.lease_owner,
                )
            return new
        return None

    def _log_decision(self, decision: TakeDecision, scan_duration_ns: int) -> None:
        worker = self._worker_id
        logger.debug(
            "Worker %s taker run: scanned %d leases in %d ms; %d available, %d expired, %d very old; "
            "%d workers, target %d, I have %d, I need %d",
            worker,
            decision.total_leases,
            scan_duration_ns // _NS_PER_MS,
            len(decision.available_keys),
            len(decision.expired_keys),
            len(decision.very_old_keys),
            decision.num_workers,
            decision.target,
            decision.my_count,
            decision.needed,
        )
        if decision.spillover > 0:
            max_leases = self._config.max_leases_for_worker
            logger.warning(
                "Worker %s target is %d leases and maxLeasesForWorker is %d. Resetting target to %d, lease "
                "spillover is %d. Note that some shards may not be processed if no other workers are able to "
                "pick them up.",
                worker,
                decision.target + decision.spillover,
                max_leases,
                max_leases,
                decision.spillover,
            )
        if decision.priority:
            if decision.to_take:
                logger.info(
                    "Worker %s taking %d leases that have been expired for a long time: %s",
                    worker,
                    len(decision.to_take),
                    ", ".join(lease.lease_key for lease in decision.to_take),
                )
            return
        if decision.most_loaded is not None and not decision.to_steal:
            victim, victim_count = decision.most_loaded
            logger.debug(
                "Worker %s not stealing from most loaded worker %s. He has %d, target is %d, and I need %d",
                worker,
                victim,
                victim_count,
                decision.target,
                decision.needed,
            )
        for lease in decision.to_steal:
            logger.info(
                "Worker %s needed %d leases but none were expired, so it will steal lease %s from %s",
                worker,
                decision.needed,
                lease.lease_key,
                lease.lease_owner,
            )
        if decision.leases:
            logger.info(
                "Worker %s saw %d total leases, %d available leases, %d workers. Target is %d leases, "
                "I have %d leases, I will take %d leases",
                worker,
                decision.total_leases,
                len(decision.available_keys),
                decision.num_workers,
                decision.target,
                decision.my_count,
                len(decision.leases),
            )
