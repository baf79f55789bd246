"""The lease renewer: keeps the leases this worker holds alive, and is the only writer of their counters.

Every ``failover/3 − epsilon`` it renews each held lease (``leaseCounter = c`` → ``c + 1``). A lease is held
under a *token* — a random id per acquisition, never persisted — so that a shard consumer started for an
earlier acquisition cannot checkpoint a lease that was lost and taken again. Checkpoints go through the
renewer too (``write_checkpoint``), serialized with renewals per lease, because both are conditional on the
counter that only this worker moves while it holds the lease.

A renewal that fails its condition is re-read once: if the table shows this worker still owns the lease with
exactly the counter the renewal would have written (a retried write that did succeed), the renewal counts as
done; if it shows a graceful handoff started by the KCL 3.x leader (``checkpointOwner`` = this worker,
``leaseOwner`` = the next owner), the renewer adopts it, keeps renewing, and tells the worker (``on_handoff``)
so the shard consumer can shut down gracefully and then transfer the lease (:meth:`complete_handoff`);
otherwise the lease is lost.

**Local expiry.** A lease this worker has not renewed for ``local_expiry`` (the failover time minus a safety
margin, see :func:`shardwise.leases.model.default_expiry_margin_ms`) on its own monotonic clock is no longer
held, whatever the renewal thread is blocked on: :meth:`held`, :meth:`get` and :meth:`holds` stop showing it
(so its consumer delivers no further batch and its processor gets ``lease_lost``), :meth:`write_checkpoint`
refuses it, and the next :meth:`renew_all` drops it as lost without asking the table. A renewal is stamped with
the time *before* its request is sent, so the stamp is never later than what other workers observe.

**Faults stay per lease.** An error renewing, releasing or transferring one lease is logged (a shardwise error
as one line, anything else with its traceback) and affects that lease only; the others are renewed as usual.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from shardwise.checkpoint.sequence import ExtendedSequenceNumber
from shardwise.errors import ConfigurationError, LeaseLostError, ShardwiseError
from shardwise.leases.model import HeldLease, Lease, default_expiry_margin_ms
from shardwise.leases.store import LeaseStore

__all__ = ["HeldLease", "LeaseRenewer", "RenewalResult"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RenewalResult:
    renewed: tuple[str, ...]
    lost: tuple[str, ...]


class LeaseRenewer:
    def __init__(
        self,
        store: LeaseStore,
        worker_id: str,
        *,
        failover_time_ms: int,
        local_expiry_margin_ms: int | None = None,
        clock_ns: Callable[[], int] = time.monotonic_ns,
        throughput_kbps: Callable[[str], float | None] | None = None,
        on_handoff: Callable[[str, str], None] | None = None,
        max_renewal_threads: int = 20,
    ) -> None:
        if max_renewal_threads < 1:
            raise ConfigurationError(f"max_renewal_threads must be >= 1, got {max_renewal_threads}")
        self._store = store
        self._max_renewal_threads = max_renewal_threads
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._worker_id = worker_id
        margin_ms = local_expiry_margin_ms
        if margin_ms is None:
            margin_ms = default_expiry_margin_ms(failover_time_ms)
        if not 0 <= margin_ms < failover_time_ms:
            raise ConfigurationError(f"local_expiry_margin_ms must be in [0, {failover_time_ms}), got {margin_ms}")
        self._local_expiry_ns = (failover_time_ms - margin_ms) * 1_000_000
        self._clock_ns = clock_ns
        self._throughput_kbps = throughput_kbps
        self._on_handoff = on_handoff
        self._held: dict[str, HeldLease] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._map_lock = threading.Lock()

    @property
    def worker_id(self) -> str:
        return self._worker_id

    def _lock_for(self, key: str) -> threading.Lock:
        with self._map_lock:
            return self._locks.setdefault(key, threading.Lock())

    def add_leases(self, leases: Iterable[Lease], *, acquired_at_ns: Mapping[str, int] | None = None) -> dict[str, str]:
        """Start holding freshly acquired leases; returns the new token of each.

        ``acquired_at_ns``: when each lease was acquired (read before the take's or the discovery's request for
        it, per lease key), so the local expiry counts from no later than other workers'
        observation of the new counter; default (and for a key the mapping lacks): now."""
        now = self._clock_ns()
        tokens: dict[str, str] = {}
        with self._map_lock:
            for lease in leases:
                at = now if acquired_at_ns is None else acquired_at_ns.get(lease.lease_key, now)
                token = uuid.uuid4().hex
                self._held[lease.lease_key] = HeldLease(lease, token, at)
                tokens[lease.lease_key] = token
        return tokens

    @property
    def local_expiry_ms(self) -> int:
        """How long a lease stays held here without a renewal (the failover time minus the safety margin)."""
        return self._local_expiry_ns // 1_000_000

    def _live(self, held: HeldLease | None, now_ns: int) -> HeldLease | None:
        return None if held is None or held.expired(now_ns, self._local_expiry_ns) else held

    def held(self) -> dict[str, HeldLease]:
        """A snapshot of the held leases (not yet expired on this worker's clock)."""
        now = self._clock_ns()
        with self._map_lock:
            return {key: held for key, held in self._held.items() if not held.expired(now, self._local_expiry_ns)}

    def get(self, lease_key: str) -> HeldLease | None:
        """The lease as held now, or ``None`` when it is not held (or expired on this worker's clock)."""
        now = self._clock_ns()
        with self._map_lock:
            return self._live(self._held.get(lease_key), now)

    def holds(self, lease_key: str, token: str) -> bool:
        """Whether the lease is held under ``token`` and not expired on this worker's clock."""
        held = self.get(lease_key)
        return held is not None and held.token == token

    def _entry(self, lease_key: str) -> HeldLease | None:
        """The entry as kept, expired or not (for the renewer's own bookkeeping)."""
        with self._map_lock:
            return self._held.get(lease_key)

    def drop(self, lease_key: str, token: str | None = None) -> HeldLease | None:
        """Stop holding a lease (lost, or released by the caller). With ``token``, only that acquisition."""
        with self._map_lock:
            held = self._held.get(lease_key)
            if held is None or (token is not None and held.token != token):
                return None
            return self._held.pop(lease_key)

    def renew_all(self) -> RenewalResult:
        """Renew every lease kept — expired ones too, so they are dropped and reported as lost here. An error on
        one lease is that lease's alone: it is logged, the lease is not renewed this time (it expires if the
        error persists), and the other leases are renewed as usual."""
        renewed: list[str] = []
        lost: list[str] = []
        with self._map_lock:
            keys = sorted(self._held)
        if len(keys) > 1 and self._max_renewal_threads > 1:
            # In parallel, as KCL's renewer does (maxLeaseRenewalThreads): one slow call against a loaded store
            # must not hold the other leases' renewals back past their local expiry.
            outcomes = list(self._renewal_pool().map(self._renew_kept_per_lease, keys))
        else:
            outcomes = [self._renew_kept_per_lease(key) for key in keys]
        for key, outcome in zip(keys, outcomes, strict=True):
            if outcome is True:
                renewed.append(key)
            elif outcome is False:
                lost.append(key)
        if lost:
            logger.warning("worker %s lost leases %s", self._worker_id, ", ".join(lost))
        return RenewalResult(tuple(renewed), tuple(lost))

    def _renewal_pool(self) -> concurrent.futures.ThreadPoolExecutor:
        with self._map_lock:
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(
                    max_workers=self._max_renewal_threads, thread_name_prefix="lease-renewal"
                )
            return self._pool

    def _renew_kept_per_lease(self, key: str) -> bool | None:
        """:meth:`_renew_one`, with an error on this lease logged and kept to it (``None``: not renewed)."""
        try:
            return self._renew_one(key)
        except ShardwiseError as exc:
            logger.warning(
                "could not renew lease %s (%s: %s); it expires unless a later renewal succeeds",
                key,
                type(exc).__name__,
                exc,
            )
        except Exception:
            logger.exception("unexpected error renewing lease %s; it expires unless a later renewal succeeds", key)
        return None

    def _renew_one(self, key: str) -> bool | None:
        """True renewed, False lost, None not renewed this time; errors propagate (renew_all keeps them per
        lease)."""
        with self._lock_for(key):
            held = self._entry(key)
            if held is None:
                return None
            now = self._clock_ns()  # stamped before the request: never later than what other workers observe
            if held.expired(now, self._local_expiry_ns):
                logger.warning(
                    "lease %s expired on this worker's clock (not renewed for %d ms); dropped as lost",
                    key,
                    (now - held.last_renewal_ns) // 1_000_000,
                )
                self.drop(key, held.token)
                return False
            kbps = self._throughput_kbps(key) if self._throughput_kbps is not None else None
            handoff_to: str | None = None
            renewed = self._store.renew_lease(held.lease, throughput_kbps=kbps)
            if renewed is None:
                current = self._store.get_lease(key)
                renewed = self._spurious_failure_check(held.lease, current)
                if renewed is None and self._is_handoff_from_me(current):
                    assert current is not None
                    # Adopt the leader's handoff (owner = next, checkpointOwner = me) and renew on.
                    renewed = self._store.renew_lease(current, throughput_kbps=kbps)
                    handoff_to = current.lease_owner if renewed is not None else None
            if renewed is None:
                self.drop(key, held.token)
                return False
            self._replace(key, held.token, renewed, now)
        if handoff_to is not None:
            logger.info("lease %s is being handed off to %s; shutting its consumer down gracefully", key, handoff_to)
            if self._on_handoff is not None:
                self._on_handoff(key, handoff_to)
        return True

    def _is_handoff_from_me(self, current: Lease | None) -> bool:
        return (
            current is not None
            and current.checkpoint_owner == self._worker_id
            and current.lease_owner is not None
            and current.lease_owner != self._worker_id
        )

    def _spurious_failure_check(self, lease: Lease, current: Lease | None) -> Lease | None:
        if (
            current is not None
            and current.lease_owner == self._worker_id
            and current.lease_counter == lease.lease_counter + 1
        ):
            return current
        return None

    def _replace(self, key: str, token: str, lease: Lease, renewed_at_ns: int) -> None:
        with self._map_lock:
            held = self._held.get(key)
            if held is not None and held.token == token:
                self._held[key] = HeldLease(lease, token, renewed_at_ns)

    def write_checkpoint(
        self,
        lease_key: str,
        token: str,
        checkpoint: ExtendedSequenceNumber,
        *,
        pending: ExtendedSequenceNumber | None,
        pending_state: bytes | None,
    ) -> None:
        """Conditionally write a checkpoint (or a pending one) on a held lease; see ``CheckpointWriter``.

        Waits for a renewal of the same lease under way only until the lease would expire on this worker's
        clock: a renewal blocked on an unreachable table cannot keep a checkpoint waiting past the lease."""
        held = self._held_under(lease_key, token)
        lock = self._lock_for(lease_key)
        remaining_ns = held.last_renewal_ns + self._local_expiry_ns - self._clock_ns()
        if not lock.acquire(timeout=max(0, remaining_ns) / 1e9):
            raise LeaseLostError(
                f"Can't update checkpoint - instance doesn't hold the lease for this shard ({lease_key}): "
                "it expired on this worker's clock while its renewal was under way"
            )
        try:
            held = self._held_under(lease_key, token)
            now = self._clock_ns()  # the update moves the counter: stamped before the request, as a renewal
            committing = pending is None
            updated_lease = held.lease.with_changes(
                checkpoint=checkpoint,
                pending_checkpoint=pending,
                pending_checkpoint_state=pending_state if pending is not None else None,
                owner_switches_since_checkpoint=0 if committing else held.lease.owner_switches_since_checkpoint,
            )
            result = self._store.update_lease(updated_lease)
            if result is None:
                self.drop(lease_key)
                raise LeaseLostError(
                    f"Can't update checkpoint - instance doesn't hold the lease for this shard ({lease_key}): "
                    "another worker changed it"
                )
            # Keep our view of the owners (as KCL's authoritative lease does): a handoff the leader started meanwhile
            # must still fail the next renewal's "checkpointOwner absent" condition, or it would never be noticed.
            mine = result.with_changes(lease_owner=held.lease.lease_owner, checkpoint_owner=held.lease.checkpoint_owner)
            self._replace(lease_key, token, mine, now)
        finally:
            lock.release()

    def _held_under(self, lease_key: str, token: str) -> HeldLease:
        held = self.get(lease_key)
        if held is not None and held.token == token:
            return held
        expired = self._entry(lease_key)
        why = (
            ": not renewed in time, it expired on this worker's clock"
            if expired is not None and expired.token == token
            else ""
        )
        raise LeaseLostError(
            f"Can't update checkpoint - instance doesn't hold the lease for this shard ({lease_key}){why}"
        )

    def complete_handoff(self, lease_key: str, token: str) -> bool:
        """Finish a graceful handoff: give the lease to the owner the leader chose (``assign_lease`` clears
        ``checkpointOwner``) and stop holding it. True if the transfer was written."""
        with self._lock_for(lease_key):
            held = self.get(lease_key)
            if held is None or held.token != token:
                return False
            self.drop(lease_key)
            next_owner = held.lease.lease_owner
            if held.lease.checkpoint_owner != self._worker_id or next_owner is None:
                return False
            try:
                return self._store.assign_lease(held.lease, next_owner) is not None
            except ShardwiseError as exc:
                logger.warning(
                    "could not transfer lease %s to %s (the leader will reassign it after the handoff timeout): %s: %s",
                    lease_key,
                    next_owner,
                    type(exc).__name__,
                    exc,
                )
                return False
            except Exception:
                logger.exception(
                    "unexpected error transferring lease %s to %s (the leader will reassign it after the handoff "
                    "timeout)",
                    lease_key,
                    next_owner,
                )
                return False

    def in_handoff(self, lease_key: str) -> bool:
        held = self.get(lease_key)
        return held is not None and held.lease.checkpoint_owner == self._worker_id

    def release(self, lease_key: str, token: str) -> bool:
        """Give a held lease back (evict it) so another worker can take it at once. True if released."""
        with self._lock_for(lease_key):
            held = self.get(lease_key)
            if held is None or held.token != token:
                return False
            self.drop(lease_key)
            try:
                return self._store.evict_lease(held.lease) is not None
            except ShardwiseError as exc:
                logger.warning(
                    "could not release lease %s (it will expire instead): %s: %s", lease_key, type(exc).__name__, exc
                )
                return False
            except Exception:
                logger.exception("unexpected error releasing lease %s (it will expire instead)", lease_key)
                return False
