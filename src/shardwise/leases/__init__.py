"""Leases: the model, the ``LeaseStore`` port and its backends (SQLite, DynamoDB)."""

from shardwise.leases.model import RESERVED_KEYS, Lease
from shardwise.leases.store import LeaseStore

__all__ = ["RESERVED_KEYS", "Lease", "LeaseStore"]
