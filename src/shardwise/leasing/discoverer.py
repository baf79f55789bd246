"""Lease discovery (KCL 3.x): a non-leader finds the leases the leader assigned to it.

Every ``lease_assignment_interval/2 − ε`` the worker queries the owner index (``LeaseOwnerToLeaseKeyIndex``)
for its own id, fetches each key it does not hold yet with a consistent read, and accepts a lease only if the
table still names it as owner and no graceful handoff is in progress (``checkpointOwner`` absent: until the
old owner has checkpointed and transferred, the lease is not ours to process).

Before a discovered lease is processed it is renewed once (conditionally on the counter just read). A lease the
renewer dropped because it expired on this worker's clock (a partition) may still name this worker in the table;
taking it back without a renewal would start a fresh local expiry on a lease the leader already sees as expired
and may be reassigning — two workers would process the shard. The renewal decides it: if it succeeds the
leader sees the counter move (the lease is alive again), if the leader reassigned first it fails and the lease
is left alone.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from shardwise.errors import ShardwiseError
from shardwise.leases.model import Lease
from shardwise.leases.store import LeaseStore, OwnerIndex

__all__ = ["LeaseDiscoverer"]

logger = logging.getLogger(__name__)


class LeaseDiscoverer:
    def __init__(
        self,
        store: LeaseStore,
        index: OwnerIndex,
        worker_id: str,
        held_keys: Callable[[], set[str]],
        *,
        clock_ns: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        self._store = store
        self._index = index
        self._worker_id = worker_id
        self._held_keys = held_keys
        self._clock_ns = clock_ns
        #: When each lease the latest run found was renewed: the clock read right before its renewal request,
        #: from which the renewer counts the lease's local expiry.
        self.last_stamps: dict[str, int] = {}
        #: How many leases the latest run found assigned to this worker but could not take yet (a handoff not
        #: finished, index lag, a failed renewal): worth another look soon.
        self.waiting = 0

    def discover(self, owned_keys: Iterable[str] | None = None) -> list[Lease]:
        """Leases newly assigned to this worker and ready to process (not held yet, not in handoff). The keys
        this worker owns come from the owner index, or from ``owned_keys`` when the caller knows them (the
        leader, from its own scan and assignments)."""
        held = self._held_keys()
        found: list[Lease] = []
        self.last_stamps = {}
        self.waiting = 0
        keys = self._index.list_lease_keys_for_owner(self._worker_id) if owned_keys is None else owned_keys
        for key in keys:
            if key in held:
                continue
            lease = self._store.get_lease(key)
            if lease is None or lease.lease_owner != self._worker_id:
                logger.debug("discovered lease %s is no longer assigned to %s (index lag)", key, self._worker_id)
                self.waiting += 1
                continue
            if lease.checkpoint_owner is not None:
                logger.debug("lease %s waits for %s to finish its handoff", key, lease.checkpoint_owner)
                self.waiting += 1
                continue
            renewed = self._renew(lease)
            if renewed is not None:
                found.append(renewed)
            else:
                self.waiting += 1
        return found

    def _renew(self, lease: Lease) -> Lease | None:
        """Renew a discovered lease once before it is processed; ``None`` if it is not ours after all."""
        self.last_stamps[lease.lease_key] = self._clock_ns()
        try:
            renewed = self._store.renew_lease(lease)
        except ShardwiseError as exc:  # this lease only: the next discovery run tries it again
            logger.warning("could not renew discovered lease %s (will retry): %s", lease.lease_key, exc)
            return None
        if renewed is None:
            logger.info("discovered lease %s changed before it could be renewed; leaving it", lease.lease_key)
        return renewed
