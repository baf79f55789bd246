"""``SQLiteItemTable``: the embedded :class:`~shardwise.coordinator.items.ItemTable`, next to the SQLite leases.

Items live in one ``shardwise_items`` table of the lease store's database file, partitioned like the lease
table they belong to: ``(table_name, item_key)`` is the key, as ``leaseKey`` is in KCL 3.5's single-table
layout, so coordinator and worker-metrics items share one key space (the layout is reported as
``"single-table"``). Attributes are stored as JSON in a tagged form that mirrors DynamoDB's types
(``{"S": …}``, ``{"N": "1.5"}``, ``{"B": <base64>}``, ``{"SS": […]}``, …), so bytes, sets and numbers read back
exactly as the DynamoDB backend returns them, and ``expect`` compares values by DynamoDB's rules (numbers by
value, sets without order, a ``bool`` never equal to a number).

Every write runs inside a ``BEGIN IMMEDIATE`` transaction (read, check ``expect``, write), so conditional
writes are atomic across threads and processes sharing the file; ``transact`` checks all its writes, then
applies them, in one such transaction.

This module also holds the rules every ``ItemTable`` backend applies — which ``entityType`` an item gets,
which keys a namespace accepts, which attribute names are reserved — because it has no optional dependency
and the DynamoDB backend can import it freely.
"""

from __future__ import annotations

import base64
import decimal
import json
import math
import re
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from shardwise._sqlite import SQLiteDatabase
from shardwise.coordinator.items import ABSENT, ItemRecord, ItemWrite, Layout, Namespace
from shardwise.errors import ConfigurationError, MalformedItemError, ResourceNotFoundError
from shardwise.leases.model import RESERVED_KEYS
from shardwise.leases.sqlite import SQLiteLeaseStore

__all__ = [
    "COORDINATOR_ENTITY_TYPES",
    "ENTITY_TYPE_WORKER_METRIC_STATS",
    "MAX_TRANSACTION_WRITES",
    "RESERVED_ATTRIBUTES",
    "SQLiteItemTable",
    "check_attribute_names",
    "check_item_key",
    "check_transaction",
    "check_update",
    "entity_type_for",
    "in_namespace",
    "open_sqlite_item_tables",
    "storable_number",
]

# ----------------------------------------------------------------------------------- rules of every backend

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


# ------------------------------------------------------------------------------------------- value codec


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


def _number_text(value: int | float | Decimal) -> str:
    number = storable_number(value)
    return str(value) if isinstance(value, int) else str(number)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float | Decimal) and not isinstance(value, bool)


def encode_value(value: object) -> dict[str, Any]:
    """The tagged (DynamoDB-typed) JSON form of a Python attribute value."""
    if value is None:
        return {"NULL": True}
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, str):
        return {"S": value}
    if _is_number(value):
        return {"N": _number_text(value)}  # type: ignore[arg-type]
    if isinstance(value, bytes | bytearray):
        return {"B": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, Mapping):
        encoded: dict[str, Any] = {}
        for name, member in value.items():
            if not isinstance(name, str):
                raise TypeError(f"map keys must be strings, got {name!r}")
            encoded[name] = encode_value(member)
        return {"M": encoded}
    if isinstance(value, list | tuple):
        return {"L": [encode_value(member) for member in value]}
    if isinstance(value, set | frozenset):
        if not value:
            raise ValueError("cannot store an empty set (DynamoDB has no empty sets): omit the attribute instead")
        if all(isinstance(member, str) for member in value):
            return {"SS": sorted(value)}
        if all(_is_number(member) for member in value):
            return {"NS": sorted(_number_text(member) for member in value)}
        if all(isinstance(member, bytes | bytearray) for member in value):
            return {"BS": sorted(base64.b64encode(bytes(member)).decode("ascii") for member in value)}
        raise TypeError("a set must hold only strings, only numbers or only bytes")
    raise TypeError(f"cannot store a value of type {type(value).__name__}: {value!r}")


def _number(text: str) -> int | float:
    number = Decimal(text)
    if not number.is_finite():
        raise ValueError(f"not a finite number: {text!r}")
    return int(number) if number == number.to_integral_value() else float(number)


def decode_value(tagged: Mapping[str, Any]) -> Any:
    """The Python value of a tagged JSON value (numbers as ``int`` when integral, else ``float``)."""
    if len(tagged) != 1:
        raise ValueError(f"not a tagged value: {tagged!r}")
    ((tag, raw),) = tagged.items()
    if tag == "NULL":
        return None
    if tag in ("S", "BOOL"):
        return raw
    if tag == "N":
        return _number(raw)
    if tag == "B":
        return base64.b64decode(raw)
    if tag == "M":
        return {name: decode_value(member) for name, member in raw.items()}
    if tag == "L":
        return [decode_value(member) for member in raw]
    if tag == "SS":
        return set(raw)
    if tag == "NS":
        return {_number(member) for member in raw}
    if tag == "BS":
        return {base64.b64decode(member) for member in raw}
    raise ValueError(f"unknown value tag {tag!r}")


def _canonical(tagged: Mapping[str, Any]) -> object:
    """A hashable form of a tagged value for equality as DynamoDB compares (numbers by value, sets unordered)."""
    ((tag, raw),) = tagged.items()
    if tag == "N":
        return (tag, Decimal(raw))
    if tag == "NS":
        return (tag, frozenset(Decimal(member) for member in raw))
    if tag in ("SS", "BS"):
        return (tag, frozenset(raw))
    if tag == "L":
        return (tag, tuple(_canonical(member) for member in raw))
    if tag == "M":
        return (tag, frozenset((name, _canonical(member)) for name, member in raw.items()))
    return (tag, raw)


# ------------------------------------------------------------------------------------------------ the table

_SCHEMA = """
CREATE TABLE IF NOT EXISTS shardwise_items (
    table_name TEXT NOT NULL,
    namespace TEXT NOT NULL,
    item_key TEXT NOT NULL,
    entity_type TEXT,
    attributes TEXT NOT NULL,
    PRIMARY KEY (table_name, item_key)
);
"""

_NAMESPACES: tuple[Namespace, ...] = ("coordinator", "worker-metrics")

_Attributes = dict[str, dict[str, Any]]
_Expected = Any  # a tagged value, or ABSENT


@dataclass(frozen=True, slots=True)
class _Update:
    """A validated update: encoded values to set, names to remove, encoded ``expect``."""

    encoded: _Attributes
    removed: list[str]
    expected: dict[str, _Expected]


class SQLiteItemTable:
    """One namespace of coordinator items, in the database file of a SQLite lease store.

    ``table_name`` is the lease table the items belong to; the lease table must exist (operations raise
    :class:`~shardwise.errors.ResourceNotFoundError` otherwise, as the lease store does).
    """

    def __init__(self, database: SQLiteDatabase, table_name: str, namespace: Namespace) -> None:
        if not table_name:
            raise ConfigurationError("table_name must not be empty (the lease table the items belong to)")
        if namespace not in _NAMESPACES:
            raise ConfigurationError(f"namespace must be one of {', '.join(_NAMESPACES)}, got {namespace!r}")
        self._db = database
        self._table = table_name
        self._namespace: Namespace = namespace
        with self._db.reading() as conn:
            conn.executescript(_SCHEMA)

    def __repr__(self) -> str:
        return f"SQLiteItemTable(table_name={self._table!r}, namespace={self._namespace!r})"

    @property
    def table_name(self) -> str:
        return self._table

    @property
    def layout(self) -> Layout:
        return "single-table"

    @property
    def namespace(self) -> Namespace:
        return self._namespace

    # -- table -----------------------------------------------------------------------------------------

    def exists(self) -> bool:
        with self._db.reading() as conn:
            return self._table_exists(conn)

    def create_if_not_exists(self) -> bool:
        """A no-op: the items live in the lease table, which the lease store creates."""
        return False

    def _table_exists(self, conn: sqlite3.Connection) -> bool:
        row = conn.execute("SELECT 1 FROM shardwise_lease_tables WHERE table_name = ?", (self._table,)).fetchone()
        return row is not None

    def _require_table(self, conn: sqlite3.Connection) -> None:
        if not self._table_exists(conn):
            raise ResourceNotFoundError(
                f"lease table {self._table!r} does not exist in {self._db.path}, so its {self._namespace} items "
                "cannot be used: create the lease table first (create_table_if_not_exists)"
            )

    # -- rows ------------------------------------------------------------------------------------------

    def _select(self, conn: sqlite3.Connection, key: str) -> tuple[str, str | None, _Attributes] | None:
        """``(namespace, entity_type, attributes)`` of the item with this key in the lease table, if any."""
        row = conn.execute(
            "SELECT namespace, entity_type, attributes FROM shardwise_items WHERE table_name = ? AND item_key = ?",
            (self._table, key),
        ).fetchone()
        if row is None:
            return None
        return str(row[0]), row[1], self._load(key, row[2])

    @staticmethod
    def _load(key: str, text: str) -> _Attributes:
        try:
            attributes = json.loads(text)
        except ValueError as exc:
            raise MalformedItemError(key, f"attributes are not JSON: {exc}") from exc
        if not isinstance(attributes, dict):
            raise MalformedItemError(key, "attributes are not a JSON object")
        return attributes

    def _record(self, key: str, entity_type: str | None, attributes: _Attributes) -> ItemRecord:
        try:
            values = {name: decode_value(tagged) for name, tagged in attributes.items()}
        except (ValueError, TypeError, AttributeError, InvalidOperation) as exc:
            raise MalformedItemError(key, f"attribute value cannot be read: {exc}") from exc
        return ItemRecord(key, values, entity_type)

    def _write(self, conn: sqlite3.Connection, key: str, attributes: _Attributes) -> None:
        conn.execute(
            "INSERT INTO shardwise_items (table_name, namespace, item_key, entity_type, attributes) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (table_name, item_key) DO UPDATE SET attributes = excluded.attributes",
            (
                self._table,
                self._namespace,
                key,
                entity_type_for(self._namespace, key),
                json.dumps(attributes, sort_keys=True, separators=(",", ":")),
            ),
        )

    @staticmethod
    def _expect_holds(attributes: _Attributes, expect: Mapping[str, _Expected]) -> bool:
        for name, wanted in expect.items():
            present = attributes.get(name)
            if wanted is ABSENT:
                if present is not None:
                    return False
            elif present is None or _canonical(present) != _canonical(wanted):
                return False
        return True

    def _encode_expect(self, expect: Mapping[str, Any] | None) -> dict[str, _Expected]:
        if not expect:
            return {}
        check_attribute_names(expect, "expect")
        return {name: ABSENT if value is ABSENT else encode_value(value) for name, value in expect.items()}

    def _check_key(self, key: str) -> None:
        check_item_key(self._namespace, key, single_table=True)

    def _is_lease(self, conn: sqlite3.Connection, key: str) -> bool:
        """Whether a lease has this key (items share the lease table's key space, as in DynamoDB)."""
        row = conn.execute(
            "SELECT 1 FROM shardwise_leases WHERE table_name = ? AND lease_key = ?", (self._table, key)
        ).fetchone()
        return row is not None

    # -- reads -----------------------------------------------------------------------------------------

    def get(self, key: str) -> ItemRecord | None:
        with self._db.reading() as conn:
            self._require_table(conn)
            found = self._select(conn, key)
        if found is None or found[0] != self._namespace:
            return None
        return self._record(key, found[1], found[2])

    def scan(self) -> list[ItemRecord]:
        with self._db.reading() as conn:
            self._require_table(conn)
            rows = conn.execute(
                "SELECT item_key, entity_type, attributes FROM shardwise_items WHERE table_name = ? AND namespace = ?",
                (self._table, self._namespace),
            ).fetchall()
        records = [self._record(str(key), entity, self._load(str(key), text)) for key, entity, text in rows]
        records.sort(key=lambda record: record.key)
        return records

    # -- writes ----------------------------------------------------------------------------------------

    def _prepare_put(self, key: str, attributes: Mapping[str, Any], what: str) -> _Attributes:
        """Validate a put (key, attribute names, values); the item's encoded attributes."""
        self._check_key(key)
        check_attribute_names(attributes, what)
        return {name: encode_value(value) for name, value in attributes.items()}

    def _prepare_update(
        self,
        key: str,
        set_attributes: Mapping[str, Any],
        remove_attributes: Iterable[str],
        expect: Mapping[str, Any] | None,
    ) -> _Update:
        """Validate an update (key, attribute names, values, ``expect``); its encoded form."""
        self._check_key(key)
        removed = check_update(set_attributes, remove_attributes)
        encoded = {name: encode_value(value) for name, value in set_attributes.items()}
        return _Update(encoded, removed, self._encode_expect(expect))

    def _can_put(self, conn: sqlite3.Connection, key: str) -> bool:
        """Whether no item and no lease has this key (the condition of a put), inside a transaction."""
        return self._select(conn, key) is None and not self._is_lease(conn, key)

    def _updated(self, conn: sqlite3.Connection, key: str, update: _Update) -> tuple[str | None, _Attributes] | None:
        """``(entity_type, new attributes)`` of the item after ``update``, inside a transaction, without writing
        them; ``None`` if the item is missing, of another namespace, or an ``expect`` does not hold."""
        found = self._select(conn, key)
        if found is None or found[0] != self._namespace:
            return None
        _, entity_type, attributes = found
        if not self._expect_holds(attributes, update.expected):
            return None
        attributes.update(update.encoded)
        for name in update.removed:
            attributes.pop(name, None)
        return entity_type, attributes

    def put_if_absent(self, key: str, attributes: Mapping[str, Any]) -> bool:
        encoded = self._prepare_put(key, attributes, "put_if_absent")
        with self._db.transaction() as conn:
            self._require_table(conn)
            if not self._can_put(conn, key):
                return False
            self._write(conn, key, encoded)
        return True

    def update(
        self,
        key: str,
        *,
        set_attributes: Mapping[str, Any],
        remove_attributes: Iterable[str] = (),
        expect: Mapping[str, Any] | None = None,
    ) -> ItemRecord | None:
        update = self._prepare_update(key, set_attributes, remove_attributes, expect)
        with self._db.transaction() as conn:
            self._require_table(conn)
            updated = self._updated(conn, key, update)
            if updated is None:
                return None
            entity_type, attributes = updated
            self._write(conn, key, attributes)
        return self._record(key, entity_type, attributes)

    def transact(self, writes: Sequence[ItemWrite]) -> bool:
        """Check every write's condition, then apply them all, in one ``BEGIN IMMEDIATE`` transaction (the keys
        are distinct, so no write's check depends on another's write)."""
        prepared: list[tuple[str, _Attributes | _Update]] = []
        for write in check_transaction(writes):
            if write.create:
                prepared.append((write.key, self._prepare_put(write.key, write.set_attributes, "transact")))
            else:
                update = self._prepare_update(write.key, write.set_attributes, write.remove_attributes, write.expect)
                prepared.append((write.key, update))
        with self._db.transaction() as conn:
            self._require_table(conn)
            planned: list[tuple[str, _Attributes]] = []
            for key, change in prepared:
                if isinstance(change, _Update):
                    updated = self._updated(conn, key, change)
                    if updated is None:
                        return False
                    planned.append((key, updated[1]))
                else:
                    if not self._can_put(conn, key):
                        return False
                    planned.append((key, change))
            for key, attributes in planned:
                self._write(conn, key, attributes)
        return True

    def upsert(self, key: str, attributes: Mapping[str, Any]) -> None:
        self._check_key(key)
        if not attributes:
            raise ValueError("upsert needs at least one attribute to set")
        check_attribute_names(attributes, "upsert")
        encoded = {name: encode_value(value) for name, value in attributes.items()}
        with self._db.transaction() as conn:
            self._require_table(conn)
            found = self._select(conn, key)
            current: _Attributes = {}
            if (found is not None and found[0] != self._namespace) or self._is_lease(conn, key):
                raise ConfigurationError(
                    f"item {key!r} of lease table {self._table!r} is not a {self._namespace} item (a lease or "
                    "another kind of item has this key); refusing to overwrite it: use another key (worker id)"
                )
            if found is not None:
                current = found[2]
            current.update(encoded)
            self._write(conn, key, current)

    def delete(self, key: str, *, expect: Mapping[str, Any] | None = None) -> bool:
        self._check_key(key)
        expected = self._encode_expect(expect)
        with self._db.transaction() as conn:
            self._require_table(conn)
            found = self._select(conn, key)
            if found is None or found[0] != self._namespace or not self._expect_holds(found[2], expected):
                return False
            conn.execute("DELETE FROM shardwise_items WHERE table_name = ? AND item_key = ?", (self._table, key))
        return True


def open_sqlite_item_tables(
    lease_store: SQLiteLeaseStore, application_name: str
) -> tuple[SQLiteItemTable, SQLiteItemTable, Layout]:
    """The coordinator and worker-metrics item tables of a SQLite lease store's application, sharing its
    database (and per-thread connections). The items belong to the lease table (``lease_store.table_name``);
    ``application_name`` is accepted for symmetry with the DynamoDB opener and must not be empty."""
    if not application_name:
        raise ConfigurationError("application_name must not be empty")
    database = lease_store.database
    return (
        SQLiteItemTable(database, lease_store.table_name, "coordinator"),
        SQLiteItemTable(database, lease_store.table_name, "worker-metrics"),
        "single-table",
    )
