"""``ItemTable``: the port behind every coordinator item (leader lock, worker metrics, migration state).

KCL 3.x keeps its coordinator items in one of two layouts (kcl-protocol.md §3.1, §5.1):

* **single-table** (KCL 3.5, our default for new applications): the items live in the lease table, keyed by
  ``leaseKey`` and told apart by ``entityType`` (``LEADER``, ``CLIENT_VERSION_MIGRATION``,
  ``WORKER_METRIC_STATS``);
* **legacy** (KCL 3.0–3.4): coordinator items in ``<app>-CoordinatorState`` keyed ``key``, worker metrics in
  ``<app>-WorkerMetricStats`` keyed ``wid``.

An ``ItemTable`` is one namespace of items — "coordinator" or "worker metrics" — in whichever layout; the
lock, metrics and migration code above it never knows which. Attribute values are plain Python values that
map one-to-one onto DynamoDB types: ``str`` → S, ``int``/``float``/``Decimal`` → N, ``bytes`` → B,
``bool`` → BOOL, ``list`` → L, ``dict`` → M, ``set[str]`` → SS, ``None`` → NULL. Numbers read back as ``int``
when integral, else ``float``.

Conditional writes take ``expect``: attribute name → required value, or :data:`ABSENT` for "must not exist".
A failed condition returns ``None``/``False`` (a lost race); only infrastructure faults raise.
:meth:`ItemTable.transact` applies several such writes (:class:`ItemWrite`) all-or-nothing.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

__all__ = [
    "ABSENT",
    "Absent",
    "CoordinatorTables",
    "ItemRecord",
    "ItemTable",
    "ItemWrite",
    "Layout",
    "Namespace",
    "SharesLeaseTable",
]

Layout = Literal["single-table", "legacy"]
Namespace = Literal["coordinator", "worker-metrics"]


class Absent(enum.Enum):
    """Marker for "this attribute must not exist" in ``expect``."""

    ABSENT = "ABSENT"


ABSENT = Absent.ABSENT


@dataclass(frozen=True, slots=True)
class ItemRecord:
    """One item: its key (``leaseKey`` / ``key`` / ``wid`` value) and its other attributes.

    ``entity_type`` is the item's ``entityType`` attribute (``None`` when the item has none, as in the legacy
    tables and in items written by KCL before 3.5); it is not repeated in ``attributes``.
    """

    key: str
    attributes: Mapping[str, Any] = field(default_factory=dict)
    entity_type: str | None = None


@dataclass(frozen=True, slots=True)
class ItemWrite:
    """One conditional write of an :meth:`ItemTable.transact` transaction.

    * ``create=True``: put the whole item (``set_attributes``) on condition that no item has this key, as
      :meth:`ItemTable.put_if_absent` does; ``expect`` and ``remove_attributes`` must be empty.
    * ``create=False``: update the existing item (it must exist) as :meth:`ItemTable.update` does — set
      ``set_attributes``, remove ``remove_attributes`` — on condition that every ``expect`` entry holds
      (values compared for equality, :data:`ABSENT` = the attribute must not exist).
    """

    key: str
    set_attributes: Mapping[str, Any]
    expect: Mapping[str, Any] | None = None
    create: bool = False
    remove_attributes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.create and self.expect is not None:
            raise ValueError(
                f"write of {self.key!r}: a create is conditioned on the item not existing and takes no expect"
            )
        if self.create and self.remove_attributes:
            raise ValueError(f"write of {self.key!r}: a create puts a whole item and takes no remove_attributes")


@runtime_checkable
class ItemTable(Protocol):
    """A namespace of keyed items with conditional writes (see the module docstring)."""

    @property
    def table_name(self) -> str:
        """The DynamoDB table (or SQLite partition) the items live in, for messages and ``shardwise leases``."""
        ...

    @property
    def layout(self) -> Layout: ...

    @property
    def namespace(self) -> Namespace: ...

    def exists(self) -> bool:
        """Whether the underlying table exists (the legacy tables may not)."""
        ...

    def create_if_not_exists(self) -> bool:
        """Create the underlying table if this layout owns one (legacy tables; no-op for single-table)."""
        ...

    def get(self, key: str, *, consistent: bool = True) -> ItemRecord | None:
        """A read of one item (``None`` if absent or of another namespace): strongly consistent unless
        ``consistent`` is False (an eventually consistent read, half the read units on DynamoDB)."""
        ...

    def scan(self) -> list[ItemRecord]:
        """Every item of this namespace (single-table: filtered by ``entityType``), in key order."""
        ...

    def put_if_absent(self, key: str, attributes: Mapping[str, Any]) -> bool:
        """Create the item if no item has this key. True if created."""
        ...

    def update(
        self,
        key: str,
        *,
        set_attributes: Mapping[str, Any],
        remove_attributes: Iterable[str] = (),
        expect: Mapping[str, Any] | None = None,
    ) -> ItemRecord | None:
        """Update an existing item if every ``expect`` condition holds; the new item, or ``None``.

        The item must exist (an update never creates one); ``expect`` values are compared for equality, or
        must be absent when given as :data:`ABSENT`.
        """
        ...

    def upsert(self, key: str, attributes: Mapping[str, Any]) -> None:
        """Set these attributes, creating the item if needed (a partial write: other attributes stay),
        unconditionally — KCL's worker-metrics writes (``ignoreNulls`` update)."""
        ...

    def delete(self, key: str, *, expect: Mapping[str, Any] | None = None) -> bool:
        """Delete the item if it exists and every ``expect`` condition holds. True if deleted."""
        ...

    def transact(self, writes: Sequence[ItemWrite]) -> bool:
        """Apply every write atomically, or none. True if applied; False if any condition failed (a lost
        race: a created key exists, an updated item is missing or an ``expect`` does not hold), and then no
        write is applied. Infrastructure faults raise as the other methods do.

        One to 25 writes, with distinct keys (``ValueError`` otherwise); each write is validated as
        ``put_if_absent`` / ``update`` validate theirs, before anything is written.
        """
        ...


@runtime_checkable
class SharesLeaseTable(Protocol):
    """An item table whose items live in the lease table (single-table layout) and can be picked out of the
    raw items of a lease-table scan, so one scan serves both (see ``LeaseStore`` ``SharedTableScan``)."""

    @property
    def shares_lease_table(self) -> bool: ...

    def records_from(self, raw_items: Iterable[Mapping[str, Any]]) -> list[ItemRecord]: ...


@dataclass(frozen=True, slots=True)
class CoordinatorTables:
    """The item tables of one application: coordinator items, worker metrics, and the layout they are in."""

    coordinator: ItemTable
    worker_metrics: ItemTable
    layout: Layout
