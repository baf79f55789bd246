"""The ``Migration3.0`` item: which lease-assignment generation a KCL 3.x fleet runs (kcl-protocol.md §1, §3.2, §4).

The item lives in the coordinator namespace of whichever layout the application uses (single-table: in the
lease table, ``entityType = CLIENT_VERSION_MIGRATION``; legacy: in ``<app>-CoordinatorState`` keyed ``key``).
Attributes: ``cv`` (client version), ``mb`` (modified by), ``mts`` (modified, epoch **milliseconds**), ``h``
(history: at most 10 maps ``{cv, mb, mts}`` of the previous values, newest first).

Every transition is a conditional write on the previous ``cv``, so of two concurrent writers exactly one wins;
the loser gets ``None`` and decides again from what it reads.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from shardwise.errors import MalformedItemError
from shardwise.tables.items import ItemTable

__all__ = [
    "HISTORY_LIMIT",
    "MIGRATION_KEY",
    "ClientVersion",
    "HistoryEntry",
    "MigrationState",
    "MigrationStore",
]

MIGRATION_KEY = "Migration3.0"
HISTORY_LIMIT = 10


class ClientVersion(str, enum.Enum):
    """KCL's ``ClientVersion``, persisted by name. ``INIT`` is transient and never written as ``cv``."""

    INIT = "CLIENT_VERSION_INIT"
    UPGRADE_FROM_2X = "CLIENT_VERSION_UPGRADE_FROM_2X"
    V2X = "CLIENT_VERSION_2X"
    V3X_WITH_ROLLBACK = "CLIENT_VERSION_3X_WITH_ROLLBACK"
    V3X = "CLIENT_VERSION_3X"


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    client_version: str
    modified_by: str
    modified_at_ms: int

    def to_attribute(self) -> dict[str, Any]:
        return {"cv": self.client_version, "mb": self.modified_by, "mts": self.modified_at_ms}


@dataclass(frozen=True, slots=True)
class MigrationState:
    """The parsed ``Migration3.0`` item. ``client_version`` keeps the raw text when it is not a known
    version (KCL treats an unknown value as an error to log, not to act on); ``version`` is the enum or None."""

    client_version: str
    modified_by: str
    modified_at_ms: int
    history: tuple[HistoryEntry, ...] = field(default_factory=tuple)

    @property
    def version(self) -> ClientVersion | None:
        try:
            return ClientVersion(self.client_version)
        except ValueError:
            return None

    @classmethod
    def from_attributes(cls, attributes: Mapping[str, Any]) -> MigrationState:
        """Parse the item; KCL requires ``cv``, ``mb`` and ``mts`` ("Unexpected state found not confirming to
        MigrationState schema")."""
        for name in ("cv", "mb", "mts"):
            if name not in attributes:
                raise MalformedItemError(
                    MIGRATION_KEY,
                    f"missing {name!r}: unexpected state found not conforming to the MigrationState schema "
                    "(cv, mb, mts); fix or delete the item",
                )
        cv, mb, mts = attributes["cv"], attributes["mb"], attributes["mts"]
        if not isinstance(cv, str) or not isinstance(mb, str):
            raise MalformedItemError(MIGRATION_KEY, "cv and mb must be strings")
        if not isinstance(mts, int) or isinstance(mts, bool):
            raise MalformedItemError(MIGRATION_KEY, f"mts must be a number (epoch milliseconds), got {mts!r}")
        history: list[HistoryEntry] = []
        raw_history = attributes.get("h", [])
        if not isinstance(raw_history, list):
            raise MalformedItemError(MIGRATION_KEY, "h must be a list of {cv, mb, mts} maps")
        for entry in raw_history:
            if not isinstance(entry, Mapping):
                raise MalformedItemError(MIGRATION_KEY, f"history entry {entry!r} is not a map")
            when = entry.get("mts", 0)
            history.append(
                HistoryEntry(
                    str(entry.get("cv", "Unknown")),
                    str(entry.get("mb", "Unknown")),
                    when if isinstance(when, int) and not isinstance(when, bool) else 0,
                )
            )
        return cls(cv, mb, mts, tuple(history))


class MigrationStore:
    """Reads and conditionally writes the ``Migration3.0`` item in a coordinator :class:`ItemTable`."""

    def __init__(self, items: ItemTable, *, clock_ms: Callable[[], int] = lambda: int(time.time() * 1000)) -> None:
        self._items = items
        self._clock_ms = clock_ms

    @property
    def items(self) -> ItemTable:
        return self._items

    def read(self) -> MigrationState | None:
        """The current state (strongly consistent), or ``None`` when there is no ``Migration3.0`` item."""
        record = self._items.get(MIGRATION_KEY)
        return None if record is None else MigrationState.from_attributes(record.attributes)

    def create(self, version: ClientVersion, modified_by: str) -> MigrationState | None:
        """Create the item (KCL: history holds one ``CLIENT_VERSION_INIT`` entry). ``None`` if it exists."""
        now = self._clock_ms()
        init = HistoryEntry(ClientVersion.INIT.value, modified_by, now)
        attributes = {"cv": version.value, "mb": modified_by, "mts": now, "h": [init.to_attribute()]}
        if not self._items.put_if_absent(MIGRATION_KEY, attributes):
            return None
        return MigrationState(version.value, modified_by, now, (init,))

    def transition(
        self, current: MigrationState, to: ClientVersion, modified_by: str, *, allowed_from: tuple[str, ...] = ()
    ) -> MigrationState | None:
        """Set ``cv = to`` on condition that ``cv`` is still ``current.client_version`` (or, with
        ``allowed_from``, any of those), pushing the previous values onto the history (capped at 10).
        ``None`` when the condition failed: someone else changed the state first."""
        if allowed_from and current.client_version not in allowed_from:
            return None
        now = self._clock_ms()
        previous = HistoryEntry(current.client_version, current.modified_by, current.modified_at_ms)
        history = (previous, *current.history)[:HISTORY_LIMIT]
        record = self._items.update(
            MIGRATION_KEY,
            set_attributes={
                "cv": to.value,
                "mb": modified_by,
                "mts": now,
                "h": [entry.to_attribute() for entry in history],
            },
            expect={"cv": current.client_version},
        )
        if record is None:
            return None
        return MigrationState.from_attributes(record.attributes)

    def delete(self) -> bool:
        return self._items.delete(MIGRATION_KEY)
