"""The rows of ``shardwise_leases``: reading one as a :class:`~shardwise.leases.model.Lease` (strictly: every
column's type and range, so a lease no write could renew is reported, not half-read), as a raw item for repair,
and the range check every write makes before it reaches SQLite."""

from __future__ import annotations

import contextlib
import json
import sqlite3

from shardwise.checkpoint.sequence import ExtendedSequenceNumber
from shardwise.errors import MalformedItemError
from shardwise.hashkeys import HashKeyRange
from shardwise.leases.model import Lease
from shardwise.leases.store import repair_hint

__all__ = [
    "ALL_COLUMNS",
    "COLUMNS",
    "INTEGER_MAX",
    "INTEGER_MIN",
    "check_writable",
    "encode_ids",
    "lease_from_row",
    "raw_fields",
]

COLUMNS = (
    "lease_key, entity_type, lease_owner, lease_counter, checkpoint, checkpoint_sub, pending_checkpoint, "
    "pending_checkpoint_sub, pending_checkpoint_state, owner_switches, parent_shard_ids, child_shard_ids, "
    "starting_hash_key, ending_hash_key, throughput_kbps, checkpoint_owner"
)


#: SQLite's INTEGER range.
INTEGER_MIN = -(2**63)
INTEGER_MAX = 2**63 - 1

#: Column → KCL attribute name (the names problems and raw items use).
_ATTRIBUTES = {
    "lease_owner": "leaseOwner",
    "lease_counter": "leaseCounter",
    "checkpoint": "checkpoint",
    "checkpoint_sub": "checkpointSubSequenceNumber",
    "pending_checkpoint": "pendingCheckpoint",
    "pending_checkpoint_sub": "pendingCheckpointSubSequenceNumber",
    "pending_checkpoint_state": "pendingCheckpointState",
    "owner_switches": "ownerSwitchesSinceCheckpoint",
    "parent_shard_ids": "parentShardId",
    "child_shard_ids": "childShardIds",
    "starting_hash_key": "startingHashKey",
    "ending_hash_key": "endingHashKey",
    "throughput_kbps": "throughputKBps",
    "checkpoint_owner": "checkpointOwner",
}
ALL_COLUMNS = tuple(name.strip() for name in COLUMNS.split(","))


def _describe(value: object) -> str:
    kind = {int: "integer", float: "real", str: "text", bytes: "blob"}.get(type(value), type(value).__name__)
    return f"{value!r} ({kind})"


def encode_ids(ids: frozenset[str]) -> str | None:
    return json.dumps(sorted(ids)) if ids else None


def _decode_ids(column: str, text: object) -> frozenset[str]:
    if text is None:
        return frozenset()
    name = _ATTRIBUTES[column]
    if not isinstance(text, str):
        raise ValueError(f"{name} is {_describe(text)}, expected a JSON list of shard ids")
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{name} is not a JSON list: {exc}") from exc
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{name} must be a list of shard ids, got {text!r}")
    return frozenset(value)


def _text(row: sqlite3.Row, column: str, *, required: bool = False) -> str | None:
    value = row[column]
    if value is None:
        if required:
            raise ValueError(f"required attribute {_ATTRIBUTES[column]} is missing")
        return None
    if not isinstance(value, str):
        raise ValueError(f"{_ATTRIBUTES[column]} is {_describe(value)}, expected text")
    return value


def _integer(row: sqlite3.Row, column: str, *, incremented: bool = False) -> int | None:
    value = row[column]
    if value is None:
        return None
    if not isinstance(value, int):
        raise ValueError(f"{_ATTRIBUTES[column]} is {_describe(value)}, expected an integer")
    if value < 0:
        raise ValueError(f"{_ATTRIBUTES[column]} is {value}, expected an integer >= 0")
    if incremented and value >= INTEGER_MAX:
        raise ValueError(
            f"{_ATTRIBUTES[column]} is {value}, at the top of SQLite's integer range (2^63-1): it cannot be incremented"
        )
    return value


def _sequence(row: sqlite3.Row, column: str, text: str, sub_column: str) -> ExtendedSequenceNumber:
    sub = _integer(row, sub_column) or 0
    try:
        return ExtendedSequenceNumber(text, sub)
    except ValueError as exc:
        raise ValueError(f"{_ATTRIBUTES[column]}: {exc}") from None


def lease_from_row(row: sqlite3.Row) -> Lease:
    """The lease a row holds; ``MalformedItemError`` naming the key and the problem for a row that is not one."""
    key = str(row["lease_key"])
    try:
        pending = None
        pending_text = _text(row, "pending_checkpoint")
        if pending_text is not None:
            pending = _sequence(row, "pending_checkpoint", pending_text, "pending_checkpoint_sub")
        hash_range = None
        start, end = _text(row, "starting_hash_key"), _text(row, "ending_hash_key")
        if start is not None or end is not None:
            try:
                hash_range = HashKeyRange.from_strings(str(start), str(end))
            except ValueError as exc:
                raise ValueError(f"startingHashKey/endingHashKey [{start}, {end}]: {exc}") from None
        counter = _integer(row, "lease_counter", incremented=True)
        if counter is None:
            raise ValueError("required attribute leaseCounter is missing")
        throughput = row["throughput_kbps"]
        if throughput is not None and (isinstance(throughput, bool) or not isinstance(throughput, int | float)):
            raise ValueError(f"throughputKBps is {_describe(throughput)}, expected a number")
        state = row["pending_checkpoint_state"]
        if state is not None and not isinstance(state, bytes):
            raise ValueError(f"pendingCheckpointState is {_describe(state)}, expected a blob")
        return Lease(
            lease_key=key,
            lease_owner=_text(row, "lease_owner"),
            lease_counter=counter,
            checkpoint=_sequence(row, "checkpoint", str(_text(row, "checkpoint", required=True)), "checkpoint_sub"),
            pending_checkpoint=pending,
            pending_checkpoint_state=state if pending is not None else None,
            owner_switches_since_checkpoint=_integer(row, "owner_switches", incremented=True) or 0,
            parent_shard_ids=_decode_ids("parent_shard_ids", row["parent_shard_ids"]),
            child_shard_ids=_decode_ids("child_shard_ids", row["child_shard_ids"]),
            hash_key_range=hash_range,
            throughput_kbps=None if throughput is None else float(throughput),
            checkpoint_owner=_text(row, "checkpoint_owner"),
        )
    except (TypeError, ValueError) as exc:
        raise MalformedItemError(key, str(exc)) from exc


def raw_fields(row: sqlite3.Row) -> dict[str, object]:
    """A row's attributes under KCL's names (id lists decoded when they are JSON), absent ones left out."""
    fields: dict[str, object] = {}
    for column, name in _ATTRIBUTES.items():
        value = row[column]
        if value is None:
            continue
        if column in ("parent_shard_ids", "child_shard_ids") and isinstance(value, str):
            with contextlib.suppress(ValueError):
                value = json.loads(value)
        fields[name] = value
    return fields


def check_writable(table: str, lease: Lease) -> None:
    """Refuse, naming the item, a lease whose numbers the write would take outside SQLite's INTEGER range."""
    numbers = {
        "leaseCounter": lease.lease_counter + 1,
        "ownerSwitchesSinceCheckpoint": lease.owner_switches_since_checkpoint + 1,
        "checkpointSubSequenceNumber": lease.checkpoint.sub_sequence_number,
    }
    if lease.pending_checkpoint is not None:
        numbers["pendingCheckpointSubSequenceNumber"] = lease.pending_checkpoint.sub_sequence_number
    for name, value in numbers.items():
        if not INTEGER_MIN <= value <= INTEGER_MAX:
            raise MalformedItemError(
                lease.lease_key,
                f"{name} would be {value}, outside SQLite's integer range (-2^63..2^63-1); "
                f"repair the item: {repair_hint(table, lease.lease_key)}",
            )
