"""``SQLiteItemTable``: the embedded :class:`~shardwise.tables.items.ItemTable`, next to the SQLite leases.

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

The rules every ``ItemTable`` backend applies — which ``entityType`` an item gets, which keys a namespace
accepts, which attribute names are reserved — live in :mod:`shardwise.tables.rules`; the public ones
are re-exported here.
"""

from __future__ import annotations

import base64
import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from shardwise.backends.sqlite.connection import SQLiteDatabase
from shardwise.backends.sqlite.leases import SQLiteLeaseStore
from shardwise.errors import ConfigurationError, MalformedItemError, ResourceNotFoundError
from shardwise.tables.items import ABSENT, ItemRecord, ItemWrite, Layout, Namespace
from shardwise.tables.rules import (
    COORDINATOR_ENTITY_TYPES,
    ENTITY_TYPE_WORKER_METRIC_STATS,
    MAX_TRANSACTION_WRITES,
    RESERVED_ATTRIBUTES,
    by_key,
    check_attribute_names,
    check_item_key,
    check_map_key,
    check_namespace,
    check_transaction,
    check_update,
    check_upsert,
    entity_type_for,
    in_namespace,
    is_number,
    not_in_namespace_error,
    set_kind,
    storable_number,
    unstorable_type_error,
)

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

# ------------------------------------------------------------------------------------------- value codec


def _number_text(value: int | float | Decimal) -> str:
    number = storable_number(value)
    return str(value) if isinstance(value, int) else str(number)


def encode_value(value: object) -> dict[str, Any]:
    """The tagged (DynamoDB-typed) JSON form of a Python attribute value."""
    if value is None:
        return {"NULL": True}
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, str):
        return {"S": value}
    if is_number(value):
        return {"N": _number_text(value)}  # type: ignore[arg-type]
    if isinstance(value, bytes | bytearray):
        return {"B": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, Mapping):
        return {"M": {check_map_key(name): encode_value(member) for name, member in value.items()}}
    if isinstance(value, list | tuple):
        return {"L": [encode_value(member) for member in value]}
    if isinstance(value, set | frozenset):
        kind = set_kind(value)
        if kind == "S":
            return {"SS": sorted(value)}
        if kind == "N":
            return {"NS": sorted(_number_text(member) for member in value)}
        return {"BS": sorted(base64.b64encode(bytes(member)).decode("ascii") for member in value)}
    raise unstorable_type_error(value)


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
        check_namespace(namespace)
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

    def get(self, key: str, *, consistent: bool = True) -> ItemRecord | None:
        # One database: every read is consistent.
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
        return by_key(self._record(str(key), entity, self._load(str(key), text)) for key, entity, text in rows)

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
        check_upsert(attributes)
        encoded = {name: encode_value(value) for name, value in attributes.items()}
        with self._db.transaction() as conn:
            self._require_table(conn)
            found = self._select(conn, key)
            current: _Attributes = {}
            if (found is not None and found[0] != self._namespace) or self._is_lease(conn, key):
                raise not_in_namespace_error(key, f"lease table {self._table!r}", self._namespace)
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
