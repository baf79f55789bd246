"""What a shard consumer needs from whoever holds its lease: the :class:`LeaseHolder` port.

The worker's lease renewer (:class:`shardwise.leasing.renewer.LeaseRenewer`) implements it; the consumer never
imports the renewer, so the lifecycle sits below leasing in the layer order.
"""

from __future__ import annotations

from typing import Protocol

from shardwise.checkpoint.checkpointer import CheckpointWriter
from shardwise.leases.model import HeldLease

__all__ = ["LeaseHolder"]


class LeaseHolder(CheckpointWriter, Protocol):
    """The held leases of this worker, each under the token of one acquisition."""

    def get(self, lease_key: str) -> HeldLease | None:
        """The lease as held now, or ``None`` when it is not held."""
        ...

    def holds(self, lease_key: str, token: str) -> bool:
        """Whether the lease is still held under ``token``."""
        ...

    def drop(self, lease_key: str, token: str | None = None) -> HeldLease | None:
        """Stop holding (and renewing) the lease, without writing anything."""
        ...

    def in_handoff(self, lease_key: str) -> bool:
        """Whether the leader asked for a graceful handoff of this lease."""
        ...

    def complete_handoff(self, lease_key: str, token: str) -> bool:
        """Give the lease to the owner the leader chose; True if the transfer was written."""
        ...

    def release(self, lease_key: str, token: str) -> bool:
        """Give the lease back (owner cleared) so another worker can take it at once."""
        ...
