"""The rules every :class:`~shardwise.tables.items.ItemTable` backend applies, whatever its storage.

Which ``entityType`` an item gets and which namespace an item belongs to, which keys a namespace accepts, which
attribute names are reserved, what a valid update and transaction look like, and which values DynamoDB can
store (the SQLite backend stores exactly what DynamoDB could). Both backends import them from here; this
module has no optional dependency.
"""

from __future__ import annotations

import decimal
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any, Literal

from shardwise.errors import ConfigurationError
from shardwise.leases.model import RESERVED_KEYS
from shardwise.tables.items import ItemRecord, ItemWrite, Namespace

__all__ = [
    "COORDINATOR_ENTITY_TYPES",
    "ENTITY_TYPE_WORKER_METRIC_STATS",
    "MAX_TRANSACTION_WRITES",
    "NAMESPACES",
    "RESERVED_ATTRIBUTES",
    "by_key",
    "check_attribute_names",
    "check_item_key",
    "check_map_key",
    "check_namespace",
    "check_transaction",
    "check_update",
    "check_upsert",
    "entity_type_for",
    "in_namespace",
    "is_number",
    "not_in_namespace_error",
    "set_kind",
    "storable_number",
    "unstorable_type_error",
]

# ----------------------------------------------------------------------------------------- namespaces and keys

#: ``entityType`` of each coordinator item KCL 3.5 writes (kcl-protocol.md §3.2), by key.
COORDINATOR_ENTITY_TYPES: Mapping[str, str] = {
    "Leader": "LEADER",
    "Migration3.0": "CLIENT_VERSION_MIGRATION",
    "TableMigration3.5": "TABLE_MIGRATION",
    # shardwise's finalized feature levels (coordinator/feature_store.py); KCL 3.5 skips unknown entity types.
    "ShardwiseFeatures": "SHARDWISE_FEATURES",
}
ENTITY_TYPE_WORKER_METRIC_STATS = "WORKER_METRIC_STATS"

#: Most writes one ``ItemTable.transact`` call may hold.
MAX_TRANSACTION_WRITES = 25

#: Attribute names an item's attributes may not use: the key attributes of every layout, and ``entityType``
#: (reported separately as :attr:`ItemRecord.entity_type`).
RESERVED_ATTRIBUTES = frozenset({"leaseKey", "key", "wid", "entityType"})

# A lease key: ``shardId-…``, or ``<account>:<stream>:<epoch>:shardId-…`` for multi-stream applications.
_SHARD_ID_LIKE = re.compile(r"(?:^|:)shardId-")


#: The namespaces an item table may hold.
NAMESPACES: tuple[Namespace, ...] = ("coordinator", "worker-metrics")


def check_namespace(namespace: object) -> None:
    if namespace not in NAMESPACES:
        raise ConfigurationError(f"namespace must be one of {', '.join(NAMESPACES)}, got {namespace!r}")


def entity_type_for(namespace: Namespace, key: str) -> str:
    """The ``entityType`` KCL gives the item ``key`` of ``namespace``."""
    if namespace == "worker-metrics":
        return ENTITY_TYPE_WORKER_METRIC_STATS
    try:
        return COORDINATOR_ENTITY_TYPES[key]
    except KeyError:
        raise ValueError(
            f"{key!r} is not a coordinator item key; KCL's coordinator items are "
            f"{', '.join(sorted(COORDINATOR_ENTITY_TYPES))}"
        ) from None


def in_namespace(namespace: Namespace, key: str, entity_type: str | None) -> bool:
    """Whether an item of the single-table layout belongs to ``namespace``: worker metrics by
    ``entityType``; coordinator items by the ``entityType`` of their well-known key, or by the key alone for
    items written without ``entityType`` (KCL before 3.5, the migration tool)."""
    if namespace == "worker-metrics":
        return entity_type == ENTITY_TYPE_WORKER_METRIC_STATS
    expected = COORDINATOR_ENTITY_TYPES.get(key)
    return expected is not None and entity_type in (None, expected)


def check_item_key(namespace: Namespace, key: object, *, single_table: bool) -> None:
    """Reject keys an item of ``namespace`` may not be written under.

    Coordinator items must use KCL's well-known keys. In the single-table layout a worker-metrics item is
    keyed by the worker id in the lease table's key space, so a worker id that looks like a lease key
    (``shardId-…``) or equals a reserved coordinator key would collide with a lease or coordinator item:
    that is a configuration error naming the fix.
    """
    if not isinstance(key, str) or not key:
        raise ValueError(f"an item key must be a non-empty string, got {key!r}")
    if namespace == "coordinator":
        entity_type_for(namespace, key)
        return
    if not single_table:
        return
    if key in RESERVED_KEYS:
        raise ConfigurationError(
            f"worker id {key!r} is a reserved coordinator key of the lease table and cannot key the worker's "
            "metrics item in the single-table layout: configure another worker id (e.g. '<host>-<uuid>')"
        )
    if _SHARD_ID_LIKE.search(key):
        raise ConfigurationError(
            f"worker id {key!r} looks like a shard id (lease key) and would share the lease table's key space "
            "with leases in the single-table layout: configure a worker id that does not contain 'shardId-' "
            "(e.g. '<host>-<uuid>')"
        )


def check_attribute_names(names: Iterable[object], what: str) -> None:
    """Reject attribute names that are not non-empty strings or are reserved (key attributes, ``entityType``)."""
    for name in names:
        if not isinstance(name, str) or not name:
            raise ValueError(f"{what}: attribute names must be non-empty strings, got {name!r}")
        if name in RESERVED_ATTRIBUTES:
            raise ValueError(
                f"{what}: attribute name {name!r} is reserved (item keys and entityType are managed by the item table)"
            )


def check_update(set_attributes: Mapping[str, Any], remove_attributes: Iterable[str]) -> list[str]:
    """Validate an update's attribute names (non-empty, not reserved, not both set and removed); the names to
    remove, as a list."""
    if isinstance(remove_attributes, str):
        raise TypeError("remove_attributes must be a collection of names, not a string")
    removed = list(remove_attributes)
    if not set_attributes and not removed:
        raise ValueError("update needs set_attributes and/or remove_attributes")
    check_attribute_names(set_attributes, "update")
    check_attribute_names(removed, "update")
    both = set(set_attributes) & set(removed)
    if both:
        raise ValueError(f"update cannot both set and remove {', '.join(sorted(both))}")
    return removed


def check_transaction(writes: Sequence[ItemWrite]) -> list[ItemWrite]:
    """Validate the shape of a transaction (1 to :data:`MAX_TRANSACTION_WRITES` writes, distinct keys); the
    writes, as a list. Each write's key and attributes are checked by the backend, as its single writes are."""
    if isinstance(writes, ItemWrite):
        raise TypeError("transact takes a sequence of ItemWrite, not a single ItemWrite")
    listed = list(writes)
    if not listed:
        raise ValueError("transact needs at least one write")
    if len(listed) > MAX_TRANSACTION_WRITES:
        raise ValueError(f"transact takes at most {MAX_TRANSACTION_WRITES} writes, got {len(listed)}")
    seen: set[str] = set()
    for write in listed:
        if not isinstance(write, ItemWrite):
            raise TypeError(f"transact takes ItemWrite objects, got {type(write).__name__}")
        if write.key in seen:
            raise ValueError(f"transact writes {write.key!r} more than once: a transaction's keys must be distinct")
        seen.add(write.key)
    return listed


def check_upsert(attributes: Mapping[str, Any]) -> None:
    """Validate an upsert's attributes: at least one, names non-empty and not reserved."""
    if not attributes:
        raise ValueError("upsert needs at least one attribute to set")
    check_attribute_names(attributes, "upsert")


def not_in_namespace_error(key: str, subject: str, namespace: Namespace) -> ConfigurationError:
    """The error of an upsert refused because a lease or an item of another kind has ``key`` in ``subject``."""
    return ConfigurationError(
        f"item {key!r} of {subject} is not a {namespace} item (a lease or another kind of item has this key); "
        "refusing to overwrite it: use another key (worker id)"
    )


def by_key(records: Iterable[ItemRecord | None]) -> list[ItemRecord]:
    """The records (``None`` entries, items of another namespace, left out) in key order, as ``scan`` returns them."""
    return sorted((record for record in records if record is not None), key=lambda record: record.key)


# ------------------------------------------------------------------------------------------------- values

# DynamoDB's number type (boto3's DYNAMODB_CONTEXT): 38 significant digits, magnitudes about 1e-130 to 1e126;
# anything that would be rounded, clamped, overflow or underflow cannot be stored exactly.
_DYNAMODB_NUMBERS = decimal.Context(
    Emin=-128,
    Emax=126,
    prec=38,
    traps=[decimal.Clamped, decimal.Overflow, decimal.Inexact, decimal.Rounded, decimal.Underflow],
)


def storable_number(value: int | float | Decimal) -> Decimal:
    """``value`` as the exact decimal DynamoDB stores; ``ValueError`` if DynamoDB cannot store it exactly."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"cannot store the number {value!r}: only finite numbers are allowed")
    if isinstance(value, Decimal) and not value.is_finite():
        raise ValueError(f"cannot store the number {value!r}: only finite numbers are allowed")
    try:
        return _DYNAMODB_NUMBERS.create_decimal(repr(value) if isinstance(value, float) else value)
    except decimal.DecimalException:
        raise ValueError(
            f"cannot store the number {value!r}: DynamoDB numbers have at most 38 significant digits and a "
            "magnitude between 1e-130 and 1e126"
        ) from None


def is_number(value: object) -> bool:
    return isinstance(value, int | float | Decimal) and not isinstance(value, bool)


def check_map_key(name: object) -> str:
    """A map attribute's member name, which must be a string."""
    if not isinstance(name, str):
        raise TypeError(f"map keys must be strings, got {name!r}")
    return name


def set_kind(members: Iterable[object]) -> Literal["S", "N", "B"]:
    """The DynamoDB set type that can hold ``members`` (strings, numbers or bytes); an error if none can."""
    listed = list(members)
    if not listed:
        raise ValueError("cannot store an empty set (DynamoDB has no empty sets): omit the attribute instead")
    if all(isinstance(member, str) for member in listed):
        return "S"
    if all(is_number(member) for member in listed):
        return "N"
    if all(isinstance(member, bytes | bytearray) for member in listed):
        return "B"
    raise TypeError("a set must hold only strings, only numbers or only bytes")


def unstorable_type_error(value: object) -> TypeError:
    return TypeError(f"cannot store a value of type {type(value).__name__}: {value!r}")
