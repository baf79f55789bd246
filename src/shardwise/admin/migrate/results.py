"""What ``shardwise migrate`` reports: the printed lines (:class:`Message`), the outcome of a rollback or
roll-forward (:class:`MigrationResult`, with its :class:`CleanupReport`), and where a migration stands
(:class:`MigrationStatus`, with each live worker's :class:`WorkerMode`). Every result converts to the JSON
``--json`` prints."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from shardwise.admin.migrate.messages import GSI_NAME, Mode
from shardwise.tables.items import Layout

__all__ = [
    "CleanupReport",
    "Log",
    "Message",
    "MigrationResult",
    "MigrationStatus",
    "Mode",
    "Origin",
    "StepOutcome",
    "WaitOutcome",
    "WorkerMode",
]

Origin = Literal["tool", "shardwise"]
StepOutcome = Literal["deleted", "absent", "would-delete", "failed", "skipped", "not-applicable"]
WaitOutcome = Literal["done", "timed-out", "failed", "not-waited", "dry-run"]


@dataclass(frozen=True, slots=True)
class Message:
    """One printed line. ``origin == "tool"``: exactly what ``KclMigrationTool.py`` prints in this case
    (leading ``\\n`` included); ``"shardwise"``: shardwise's own explanation."""

    text: str
    origin: Origin

    def to_dict(self) -> dict[str, str]:
        return {"text": self.text, "origin": self.origin}


@dataclass(frozen=True, slots=True)
class CleanupReport:
    """What a rollback did after the client version was (or already was) ``CLIENT_VERSION_2X``.

    ``wait``: ``done`` (no worker in a 3.x mode any more), ``timed-out`` / ``failed`` (nothing was deleted),
    ``not-waited`` (``wait=False``), ``dry-run``. ``workers_in_3x_mode``: those still seen in a 3.x mode when
    the wait ended (or, in a dry run, now). ``owner_index`` / ``worker_metrics_table``: ``deleted`` (and
    verified gone), ``absent`` (nothing to delete), ``would-delete`` (dry run), ``failed``, ``skipped`` (the
    wait did not finish), ``not-applicable`` (SQLite; single-table layout for the metrics table).
    """

    wait: WaitOutcome
    waited_s: float
    workers_in_3x_mode: tuple[str, ...]
    owner_index: StepOutcome
    worker_metrics_table: StepOutcome

    @property
    def ok(self) -> bool:
        return (
            self.wait not in ("timed-out", "failed")
            and self.owner_index not in ("failed", "skipped")
            and self.worker_metrics_table not in ("failed", "skipped")
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "wait": self.wait,
            "waitedSeconds": round(self.waited_s, 1),
            "workersIn3xMode": list(self.workers_in_3x_mode),
            "ownerIndex": self.owner_index,
            "workerMetricsTable": self.worker_metrics_table,
        }


@dataclass(frozen=True, slots=True)
class MigrationResult:
    """The outcome of :func:`rollback` or :func:`rollforward`.

    ``outcome`` is one of: ``rolled-back``, ``already-rolled-back``, ``rolled-forward`` (``ok``; in a dry run:
    what would happen), ``cleanup-incomplete`` (the version was rolled back but clean-up did not finish),
    ``invalid-arguments``, ``lease-table-missing``, ``coordinator-table-missing``, ``table-check-failed``,
    ``read-failed``, ``not-in-progress``, ``not-rollbackable`` (cv is ``CLIENT_VERSION_3X``),
    ``not-rolled-back`` / ``already-migrated`` (roll-forward refused), ``conditional-check-failed`` (someone
    changed the state between our read and our write), ``write-failed``.
    """

    mode: Mode
    ok: bool
    outcome: str
    dry_run: bool
    messages: tuple[Message, ...]
    backend: str | None = None
    layout: Layout | None = None
    lease_table: str | None = None
    state_table: str | None = None
    worker_metrics_table: str | None = None
    previous_client_version: str | None = None
    client_version: str | None = None
    history_entry: Mapping[str, Any] | None = None
    cleanup: CleanupReport | None = None

    @property
    def exit_status(self) -> int:
        """0 on success, 2 for invalid arguments, else 1."""
        if self.ok:
            return 0
        return 2 if self.outcome == "invalid-arguments" else 1

    @property
    def tool_lines(self) -> tuple[str, ...]:
        """The lines ``KclMigrationTool.py`` would print in this case."""
        return tuple(m.text for m in self.messages if m.origin == "tool")

    @property
    def text(self) -> str:
        return "\n".join(m.text for m in self.messages)

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "ok": self.ok,
            "outcome": self.outcome,
            "exitStatus": self.exit_status,
            "dryRun": self.dry_run,
            "backend": self.backend,
            "layout": self.layout,
            "leaseTable": self.lease_table,
            "migrationStateTable": self.state_table,
            "workerMetricsTable": self.worker_metrics_table,
            "previousClientVersion": self.previous_client_version,
            "clientVersion": self.client_version,
            "historyEntry": None if self.history_entry is None else dict(self.history_entry),
            "cleanup": None if self.cleanup is None else self.cleanup.to_dict(),
            "messages": [m.to_dict() for m in self.messages],
        }


@dataclass(frozen=True, slots=True)
class WorkerMode:
    """A live worker and the mode it runs in, as far as the tables tell.

    ``reports_metrics``: it has a fresh worker-metrics entry, so it runs ``UPGRADE_FROM_2X``,
    ``3X_WITH_ROLLBACK`` or ``3X`` (KCL workers stop reporting in ``2X``); ``client_version`` is the ``cv`` its
    entry carries, if any. A lease owner without a fresh entry is shown as ``2.x (no metrics)``.
    """

    worker_id: str
    mode: str
    reports_metrics: bool
    client_version: str | None
    seconds_since_metrics: float | None
    leases: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "workerId": self.worker_id,
            "mode": self.mode,
            "reportsMetrics": self.reports_metrics,
            "clientVersion": self.client_version,
            "secondsSinceMetrics": None if self.seconds_since_metrics is None else round(self.seconds_since_metrics, 1),
            "leases": self.leases,
        }


@dataclass(frozen=True, slots=True)
class MigrationStatus:
    """Where the migration of one application stands (see :func:`status`)."""

    ok: bool
    outcome: str
    messages: tuple[Message, ...]
    backend: str | None = None
    layout: Layout | None = None
    lease_table: str | None = None
    state_table: str | None = None
    worker_metrics_table: str | None = None
    migration_item_exists: bool = False
    client_version: str | None = None
    meaning: str | None = None
    modified_by: str | None = None
    modified_at_ms: int | None = None
    history: tuple[Mapping[str, Any], ...] = ()
    owner_index_status: str | None = None
    owner_index_embedded: bool = False
    workers: tuple[WorkerMode, ...] = ()
    stale_worker_metrics: tuple[str, ...] = ()
    unassigned_leases: int = 0

    @property
    def exit_status(self) -> int:
        if self.ok:
            return 0
        return 2 if self.outcome == "invalid-arguments" else 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "outcome": self.outcome,
            "exitStatus": self.exit_status,
            "backend": self.backend,
            "layout": self.layout,
            "leaseTable": self.lease_table,
            "migrationStateTable": self.state_table,
            "workerMetricsTable": self.worker_metrics_table,
            "migrationItemExists": self.migration_item_exists,
            "clientVersion": self.client_version,
            "meaning": self.meaning,
            "modifiedBy": self.modified_by,
            "modifiedAtMs": self.modified_at_ms,
            "history": [dict(entry) for entry in self.history],
            "ownerIndex": {
                "name": GSI_NAME,
                "status": self.owner_index_status,
                "embedded": self.owner_index_embedded,
            },
            "workers": [w.to_dict() for w in self.workers],
            "staleWorkerMetrics": list(self.stale_worker_metrics),
            "unassignedLeases": self.unassigned_leases,
            "messages": [m.to_dict() for m in self.messages],
        }


class Log:
    """The lines of one operation, in order; each is also passed to ``on_message`` as it is produced."""

    def __init__(self, on_message: Callable[[Message], None] | None) -> None:
        self.messages: list[Message] = []
        self._on_message = on_message

    def _add(self, text: str, origin: Origin) -> None:
        message = Message(text, origin)
        self.messages.append(message)
        if self._on_message is not None:
            self._on_message(message)

    def tool(self, *lines: str) -> None:
        for line in lines:
            self._add(line, "tool")

    def own(self, *lines: str) -> None:
        for line in lines:
            self._add(line, "shardwise")
