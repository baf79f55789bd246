"""Conversion between :class:`~shardwise.leases.model.Lease` and a DynamoDB lease item.

Items are in boto3 *client* form (``{"leaseCounter": {"N": "4"}}``) and carry exactly the attributes KCL 3.x
writes (kcl-protocol.md §2.2), so that tables are shared with Java KCL workers in both directions:

* always: ``leaseKey`` (S), ``leaseCounter`` (N), ``checkpoint`` (S) + ``checkpointSubSequenceNumber`` (N),
  ``ownerSwitchesSinceCheckpoint`` (N);
* when set: ``leaseOwner`` (S), ``pendingCheckpoint`` (S) + ``pendingCheckpointSubSequenceNumber`` (N),
  ``pendingCheckpointState`` (B), ``startingHashKey`` / ``endingHashKey`` (S, decimal), ``throughputKBps``
  (N, a double), ``checkpointOwner`` (S);
* when non-empty: ``parentShardId`` and ``childShardIds`` (SS);
* on request: ``entityType`` = ``LEASE`` (S), which KCL 3.5 writes on create only.

Reading tolerates KCL's create quirk (``pendingCheckpointState`` written as N: treated as no state) and
ignores attributes it does not know (``streamName``, ``shardId``, …). Numbers are parsed as Python ints.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Literal, TypeAlias, cast

from shardwise.checkpoint.sequence import ExtendedSequenceNumber
from shardwise.errors import MalformedItemError
from shardwise.hashkeys import HashKeyRange
from shardwise.leases.model import RESERVED_KEYS, Lease
from shardwise.leases.store import repair_hint

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef

__all__ = [
    "ATTR_CHECKPOINT",
    "ATTR_CHECKPOINT_OWNER",
    "ATTR_CHECKPOINT_SUB",
    "ATTR_CHILD_SHARD_IDS",
    "ATTR_ENDING_HASH_KEY",
    "ATTR_ENTITY_TYPE",
    "ATTR_LEASE_COUNTER",
    "ATTR_LEASE_KEY",
    "ATTR_LEASE_OWNER",
    "ATTR_OWNER_SWITCHES",
    "ATTR_PARENT_SHARD_IDS",
    "ATTR_PENDING_CHECKPOINT",
    "ATTR_PENDING_CHECKPOINT_STATE",
    "ATTR_PENDING_CHECKPOINT_SUB",
    "ATTR_STARTING_HASH_KEY",
    "ATTR_THROUGHPUT_KBPS",
    "ENTITY_TYPE_LEASE",
    "LEASE_ATTRIBUTES",
    "Item",
    "ItemKind",
    "check_writable",
    "classify_item",
    "item_key",
    "lease_from_item",
    "lease_to_item",
    "number_value",
    "raw_fields",
    "representable",
]

#: A DynamoDB item in boto3 client form.
Item: TypeAlias = dict[str, "AttributeValueTypeDef"]
ItemKind: TypeAlias = Literal["lease", "other"]

ATTR_LEASE_KEY = "leaseKey"
ATTR_LEASE_OWNER = "leaseOwner"
ATTR_LEASE_COUNTER = "leaseCounter"
ATTR_CHECKPOINT = "checkpoint"
ATTR_CHECKPOINT_SUB = "checkpointSubSequenceNumber"
ATTR_PENDING_CHECKPOINT = "pendingCheckpoint"
ATTR_PENDING_CHECKPOINT_SUB = "pendingCheckpointSubSequenceNumber"
ATTR_PENDING_CHECKPOINT_STATE = "pendingCheckpointState"
ATTR_OWNER_SWITCHES = "ownerSwitchesSinceCheckpoint"
ATTR_PARENT_SHARD_IDS = "parentShardId"
ATTR_CHILD_SHARD_IDS = "childShardIds"
ATTR_STARTING_HASH_KEY = "startingHashKey"
ATTR_ENDING_HASH_KEY = "endingHashKey"
ATTR_THROUGHPUT_KBPS = "throughputKBps"
ATTR_CHECKPOINT_OWNER = "checkpointOwner"
ATTR_ENTITY_TYPE = "entityType"
ENTITY_TYPE_LEASE = "LEASE"

_MISSING_KEY = "<no leaseKey>"

#: The attributes of a lease item (all but ``leaseKey`` and ``entityType``).
LEASE_ATTRIBUTES = (
    ATTR_LEASE_OWNER,
    ATTR_LEASE_COUNTER,
    ATTR_CHECKPOINT,
    ATTR_CHECKPOINT_SUB,
    ATTR_PENDING_CHECKPOINT,
    ATTR_PENDING_CHECKPOINT_SUB,
    ATTR_PENDING_CHECKPOINT_STATE,
    ATTR_OWNER_SWITCHES,
    ATTR_PARENT_SHARD_IDS,
    ATTR_CHILD_SHARD_IDS,
    ATTR_STARTING_HASH_KEY,
    ATTR_ENDING_HASH_KEY,
    ATTR_THROUGHPUT_KBPS,
    ATTR_CHECKPOINT_OWNER,
)

#: DynamoDB numbers: up to 38 significant digits, magnitude below 10^126.
_MAX_DIGITS = 38
_MAX_MAGNITUDE = 10**126


def representable(value: int) -> bool:
    """Whether DynamoDB can store the integer ``value`` as a number (38 significant digits, below 10^126)."""
    magnitude = abs(value)
    return magnitude < _MAX_MAGNITUDE and len(str(magnitude).rstrip("0") or "0") <= _MAX_DIGITS


def check_writable(table_name: str, lease: Lease) -> None:
    """Refuse, naming the item, a lease whose numbers a write would take beyond what DynamoDB stores."""
    numbers = {
        ATTR_LEASE_COUNTER: lease.lease_counter + 1,
        ATTR_OWNER_SWITCHES: lease.owner_switches_since_checkpoint + 1,
        ATTR_CHECKPOINT_SUB: lease.checkpoint.sub_sequence_number,
    }
    if lease.pending_checkpoint is not None:
        numbers[ATTR_PENDING_CHECKPOINT_SUB] = lease.pending_checkpoint.sub_sequence_number
    for name, value in numbers.items():
        if not representable(value):
            raise MalformedItemError(
                lease.lease_key,
                f"{name} would be {value}, more than DynamoDB's 38 significant digits; "
                f"repair the item: {repair_hint(table_name, lease.lease_key)}",
            )


def _plain(value: Mapping[str, object]) -> object:
    """An attribute value as a plain Python value (N as ``Decimal`` when it parses, sets as sorted lists)."""
    for type_name, raw in value.items():
        if type_name == "N" and isinstance(raw, str):
            try:
                return Decimal(raw)
            except InvalidOperation:
                return raw
        if type_name in ("SS", "NS", "BS") and isinstance(raw, list | tuple | set | frozenset):
            return sorted(raw, key=str)
        if type_name == "NULL":
            return None
        return raw
    return None


def raw_fields(item: Mapping[str, AttributeValueTypeDef]) -> dict[str, object]:
    """The item's lease attributes as plain values under their names, absent ones left out (for repair)."""
    plain = cast("Mapping[str, Mapping[str, object]]", item)
    return {name: _plain(plain[name]) for name in LEASE_ATTRIBUTES if name in plain}


# --------------------------------------------------------------------------------------------------- writing


def number_value(value: int | float) -> AttributeValueTypeDef:
    """An N attribute value: ints in decimal, floats as ``repr`` (shortest round-tripping form)."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"DynamoDB cannot store the number {value!r}")
        return {"N": repr(value)}
    return {"N": str(value)}


def lease_to_item(lease: Lease, *, entity_type: bool = True) -> Item:
    """The DynamoDB item for ``lease``; ``entity_type`` adds ``entityType: LEASE`` (KCL 3.5, create only)."""
    item: Item = {
        ATTR_LEASE_KEY: {"S": lease.lease_key},
        ATTR_LEASE_COUNTER: number_value(lease.lease_counter),
        ATTR_CHECKPOINT: {"S": lease.checkpoint.sequence_number},
        ATTR_CHECKPOINT_SUB: number_value(lease.checkpoint.sub_sequence_number),
        ATTR_OWNER_SWITCHES: number_value(lease.owner_switches_since_checkpoint),
    }
    if lease.lease_owner is not None:
        item[ATTR_LEASE_OWNER] = {"S": lease.lease_owner}
    if lease.pending_checkpoint is not None:
        item[ATTR_PENDING_CHECKPOINT] = {"S": lease.pending_checkpoint.sequence_number}
        item[ATTR_PENDING_CHECKPOINT_SUB] = number_value(lease.pending_checkpoint.sub_sequence_number)
    if lease.pending_checkpoint_state is not None:
        item[ATTR_PENDING_CHECKPOINT_STATE] = {"B": bytes(lease.pending_checkpoint_state)}
    if lease.parent_shard_ids:
        item[ATTR_PARENT_SHARD_IDS] = {"SS": sorted(lease.parent_shard_ids)}
    if lease.child_shard_ids:
        item[ATTR_CHILD_SHARD_IDS] = {"SS": sorted(lease.child_shard_ids)}
    if lease.hash_key_range is not None:
        item[ATTR_STARTING_HASH_KEY] = {"S": str(lease.hash_key_range.start)}
        item[ATTR_ENDING_HASH_KEY] = {"S": str(lease.hash_key_range.end)}
    if lease.throughput_kbps is not None:
        item[ATTR_THROUGHPUT_KBPS] = number_value(float(lease.throughput_kbps))
    if lease.checkpoint_owner is not None:
        item[ATTR_CHECKPOINT_OWNER] = {"S": lease.checkpoint_owner}
    if entity_type:
        item[ATTR_ENTITY_TYPE] = {"S": ENTITY_TYPE_LEASE}
    return item


# --------------------------------------------------------------------------------------------------- reading


def item_key(item: Mapping[str, AttributeValueTypeDef]) -> str:
    """The item's ``leaseKey`` for messages (whatever its type), or a placeholder if it has none."""
    value = item.get(ATTR_LEASE_KEY)
    if value is None:
        return _MISSING_KEY
    for type_name in ("S", "N"):
        text = value.get(type_name)
        if isinstance(text, str):
            return text
    return _MISSING_KEY


def classify_item(item: Mapping[str, AttributeValueTypeDef]) -> ItemKind:
    """``"other"`` for coordinator items sharing the lease table, else ``"lease"``.

    An item is not a lease if it has an ``entityType`` other than ``LEASE`` (KCL 3.5) or its key is one of
    :data:`~shardwise.leases.model.RESERVED_KEYS` (items written without ``entityType``).
    """
    entity = item.get(ATTR_ENTITY_TYPE)
    if entity is not None and entity.get("S") != ENTITY_TYPE_LEASE:
        return "other"
    key = item.get(ATTR_LEASE_KEY)
    if key is not None and key.get("S") in RESERVED_KEYS:
        return "other"
    return "lease"


def _type_of(value: Mapping[str, object]) -> str:
    return "/".join(sorted(value)) or "no type"


class _Reader:
    """Typed access to one item's attributes; every problem raises ``MalformedItemError`` naming the key."""

    def __init__(self, item: Mapping[str, AttributeValueTypeDef]) -> None:
        self._item = cast("Mapping[str, Mapping[str, object]]", item)
        self.key = item_key(item)

    def fail(self, problem: str) -> MalformedItemError:
        return MalformedItemError(self.key, problem)

    def _raw(self, name: str, type_name: str) -> object:
        value = self._item.get(name)
        if value is None:
            return None
        if type_name not in value:
            raise self.fail(f"attribute {name!r} has type {_type_of(value)}, expected {type_name}")
        return value[type_name]

    def string(self, name: str) -> str | None:
        raw = self._raw(name, "S")
        if raw is not None and not isinstance(raw, str):
            raise self.fail(f"attribute {name!r} is not a string")
        return raw

    def required_string(self, name: str) -> str:
        text = self.string(name)
        if text is None:
            raise self.fail(f"required attribute {name!r} is missing")
        return text

    def integer(self, name: str) -> int | None:
        raw = self._raw(name, "N")
        if raw is None:
            return None
        number = self._decimal(name, raw)
        if number != number.to_integral_value():
            raise self.fail(f"attribute {name!r} is {raw!r}, expected an integer")
        return int(number)

    def required_integer(self, name: str) -> int:
        number = self.integer(name)
        if number is None:
            raise self.fail(f"required attribute {name!r} is missing")
        return number

    def real(self, name: str) -> float | None:
        raw = self._raw(name, "N")
        if raw is None:
            return None
        return float(self._decimal(name, raw))

    def _decimal(self, name: str, raw: object) -> Decimal:
        number: Decimal | None = None
        if isinstance(raw, str):
            try:
                number = Decimal(raw)
            except InvalidOperation:
                number = None
        if number is None or not number.is_finite():
            raise self.fail(f"attribute {name!r} is {raw!r}, expected a number")
        return number

    def string_set(self, name: str) -> frozenset[str]:
        raw = self._raw(name, "SS")
        if raw is None:
            return frozenset()
        if not isinstance(raw, list | tuple | set | frozenset) or not all(isinstance(e, str) for e in raw):
            raise self.fail(f"attribute {name!r} is not a string set")
        return frozenset(raw)

    def state(self, name: str) -> bytes | None:
        value = self._item.get(name)
        if value is None or "N" in value:
            # KCL's create writes the checkpoint's sub-sequence number (N) here; it carries no state.
            return None
        raw = self._raw(name, "B")
        if not isinstance(raw, bytes | bytearray):
            raise self.fail(f"attribute {name!r} is not binary")
        return bytes(raw)

    def sequence(self, name: str, sub_name: str, text: str) -> ExtendedSequenceNumber:
        try:
            return ExtendedSequenceNumber(text, self.integer(sub_name) or 0)
        except ValueError as exc:
            raise self.fail(f"attribute {name!r}: {exc}") from None

    def hash_key_range(self) -> HashKeyRange | None:
        start = self.string(ATTR_STARTING_HASH_KEY)
        end = self.string(ATTR_ENDING_HASH_KEY)
        if not start or not end:
            # KCL reads a range only when both ends are present.
            return None
        try:
            return HashKeyRange.from_strings(start, end)
        except ValueError as exc:
            raise self.fail(f"startingHashKey/endingHashKey [{start}, {end}]: {exc}") from None


def lease_from_item(item: Mapping[str, AttributeValueTypeDef]) -> Lease:
    """The lease an item holds. Raises :class:`~shardwise.errors.MalformedItemError` naming the key when a
    required attribute (``leaseKey``, ``leaseCounter``, ``checkpoint``) is missing or any known attribute has
    the wrong type or an unparsable value. Unknown attributes are ignored."""
    reader = _Reader(item)
    lease_key = reader.required_string(ATTR_LEASE_KEY)
    lease_counter = reader.required_integer(ATTR_LEASE_COUNTER)
    owner_switches = reader.integer(ATTR_OWNER_SWITCHES) or 0
    for name, number in ((ATTR_LEASE_COUNTER, lease_counter), (ATTR_OWNER_SWITCHES, owner_switches)):
        if number < 0:
            raise reader.fail(f"attribute {name!r} is {number}, expected an integer >= 0")
        if not representable(number + 1):
            raise reader.fail(f"attribute {name!r} is {number}: DynamoDB cannot store it incremented (38 digits)")
    checkpoint = reader.sequence(ATTR_CHECKPOINT, ATTR_CHECKPOINT_SUB, reader.required_string(ATTR_CHECKPOINT))
    pending_text = reader.string(ATTR_PENDING_CHECKPOINT)
    # An empty pendingCheckpoint means "none", as in KCL.
    pending = (
        reader.sequence(ATTR_PENDING_CHECKPOINT, ATTR_PENDING_CHECKPOINT_SUB, pending_text) if pending_text else None
    )
    try:
        return Lease(
            lease_key=lease_key,
            checkpoint=checkpoint,
            lease_owner=reader.string(ATTR_LEASE_OWNER),
            lease_counter=lease_counter,
            pending_checkpoint=pending,
            pending_checkpoint_state=reader.state(ATTR_PENDING_CHECKPOINT_STATE),
            owner_switches_since_checkpoint=owner_switches,
            parent_shard_ids=reader.string_set(ATTR_PARENT_SHARD_IDS),
            child_shard_ids=reader.string_set(ATTR_CHILD_SHARD_IDS),
            hash_key_range=reader.hash_key_range(),
            throughput_kbps=reader.real(ATTR_THROUGHPUT_KBPS),
            checkpoint_owner=reader.string(ATTR_CHECKPOINT_OWNER),
        )
    except ValueError as exc:
        raise reader.fail(str(exc)) from None
