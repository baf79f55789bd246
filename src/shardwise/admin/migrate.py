"""Roll a KCL 2.x → 3.x client-version migration back or forward, and show where it stands.

This is the library behind ``shardwise migrate rollback | rollforward | status``. It behaves like AWS's
``KclMigrationTool.py`` (kcl-protocol.md §1): the same preconditions, the same conditional writes of the
``Migration3.0`` item (``cv``, ``mts``, ``mb`` = ``KclMigrationTool-rollback`` / ``-rollforward``, and the
history ``h``: the previous ``{cv, mb, mts}`` pushed first, at most 10), the same clean-up after a rollback
(the GSI ``LeaseOwnerToLeaseKeyIndex``; in the legacy layout also the worker-metrics table; never the
coordinator state table) and, for each outcome, the tool's printed lines word for word — so runbooks keep
working. Shardwise adds lines of its own (``Message.origin == "shardwise"``) and differs where the tool is
unsafe or silent:

* every failure is a result with ``ok = False`` (the CLI exits 1), never a bare print;
* ``dry_run`` reads everything and reports what would change, writing nothing;
* the write is conditional on the ``cv`` **and** ``mts`` that were read, not only on ``cv`` being one of the
  allowed versions: a concurrent rollback/roll-forward (or an A→B→A sequence) in between makes it fail
  with the tool's conditional-failure message instead of overwriting a state — and a history — it never saw;
* instead of a blind 120 s sleep, clean-up waits until no worker is in a KCL 3.x mode any more (no fresh
  worker-metrics entry — KCL workers stop reporting in 2.x compatible mode —, or, where entries carry the
  worker's own ``cv``, none reports a 3.x version), with a timeout; then deletes the GSI and verifies it is
  gone; errors the tool swallows are reported;
* both layouts: the KCL 3.5 single-table layout (the item in the lease table, keyed ``leaseKey``; the tool
  at HEAD) and the legacy layout (the item in ``<app>-CoordinatorState``, keyed ``key``; the tool of KCL
  3.0–3.4), detected per application (legacy while ``<app>-CoordinatorState`` exists and the 3.5 table
  migration has not completed), or forced by passing the legacy table names as the old tool took them;
* the embedded SQLite backend (single-table; no GSI or table to delete).

Expected outcomes — refused preconditions, missing tables, lost races, backend errors — are results, never
exceptions; only programming errors raise.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeGuard

from shardwise.backends.config import BackendConfig
from shardwise.errors import ConfigurationError, ResourceNotFoundError, ShardwiseError
from shardwise.leases.store import LeaseStore, OwnerIndex
from shardwise.tables.items import ABSENT, ItemTable, Layout
from shardwise.versions.migration_state import HISTORY_LIMIT, MIGRATION_KEY, ClientVersion

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import TableDescriptionTypeDef

__all__ = [
    "DEFAULT_ACTIVE_WINDOW_S",
    "DEFAULT_GSI_TIMEOUT_S",
    "DEFAULT_POLL_INTERVAL_S",
    "DEFAULT_WAIT_TIMEOUT_S",
    "GSI_NAME",
    "MODIFIED_BY_ROLLBACK",
    "MODIFIED_BY_ROLLFORWARD",
    "UNKNOWN",
    "CleanupReport",
    "Message",
    "MigrationResult",
    "MigrationStatus",
    "MigrationTarget",
    "WorkerMode",
    "format_epoch_ms",
    "rollback",
    "rollforward",
    "status",
]

Mode = Literal["rollback", "rollforward"]
Origin = Literal["tool", "shardwise"]
StepOutcome = Literal["deleted", "absent", "would-delete", "failed", "skipped", "not-applicable"]
WaitOutcome = Literal["done", "timed-out", "failed", "not-waited", "dry-run"]

#: KCL 3.x's owner index on the lease table (same as ``shardwise.backends.aws.leases.OWNER_INDEX_NAME``; repeated
#: here so that this module imports without boto3).
GSI_NAME = "LeaseOwnerToLeaseKeyIndex"
MODIFIED_BY_ROLLBACK = "KclMigrationTool-rollback"
MODIFIED_BY_ROLLFORWARD = "KclMigrationTool-rollforward"
UNKNOWN = "Unknown"

DEFAULT_WAIT_TIMEOUT_S = 300.0
DEFAULT_POLL_INTERVAL_S = 5.0
DEFAULT_GSI_TIMEOUT_S = 600.0
#: A worker-metrics entry is active while its ``lut`` is at most 2 × the reporter period (30 s) old (§5.3).
DEFAULT_ACTIVE_WINDOW_S = 60.0

_V2X = ClientVersion.V2X.value
_UPGRADE = ClientVersion.UPGRADE_FROM_2X.value
_V3X_WITH_ROLLBACK = ClientVersion.V3X_WITH_ROLLBACK.value
_V3X = ClientVersion.V3X.value
#: Worker-reported versions (attribute ``cv`` of a metrics entry) that mean "no longer in a 3.x mode".
_LEFT_3X_VERSIONS = frozenset({_V2X, ClientVersion.INIT.value})

# ------------------------------------------------------------------------------ KclMigrationTool's messages
# Word for word as the tool prints them (kcl-protocol.md §1.2–§1.5), typos included, so that runbooks that
# look for them keep working.

ARGS_ROLLFORWARD = "For rollforward mode, application_name must be provided."
ARGS_ROLLBACK = "For rollback mode, either application_name or lease_table_name must be provided."
ARGS_ROLLFORWARD_LEGACY = (
    "For rollforward mode, either application_name or coordinator_state_table_name must be provided."
)
ARGS_ROLLBACK_LEGACY = (
    "For rollback mode, either application_name or all three table names (lease_table_name, "
    "coordinator_state_table_name, and worker_metrics_table_name) must be provided."
)
ARGS_STATUS = "For status, either application_name or lease_table_name must be provided."

ALREADY_2X = (
    "Your KCL application already runs in a mode compatible with KCL 2.x. You can deploy the code with the "
    "previous KCL version if you still experience an issue."
)
ROLLBACK_REFUSED_3X = "Cannot roll back the KCL application. It is not in a state that supports rollback."
ROLLBACK_NOT_IN_PROGRESS = (
    "Migration to KCL 3.0 not in progress or application_name / coordinator_state_table_name is incorrect. "
    "Please double check and run again with correct arguments."
)
ROLLFORWARD_NOT_ROLLED_BACK = "Cannot roll-forward application. It is not in a rolled back state."
ROLLFORWARD_ALREADY_MIGRATED = "Cannot roll-forward the KCL application. Application has already migrated."
ROLLFORWARD_NOT_IN_PROGRESS = (
    "Cannot roll-forward because migration to KCL 3.0 is not in progress or application_name / "
    "coordinator_state_table_name is incorrect. Please double check and run again with correct arguments."
)
ROLLBACK_CONDITION_FAILED = (
    "Unable to rollback, as application is not in a state that allows rollback."
    "Ensure that the given application_name or coordinator_state_table_name is correct and you have followed "
    "all prior migration steps."
)
ROLLFORWARD_INITIATED = (
    "Roll-forward has been initiated. KCL application will monitor for 3.0 readiness and automatically switch "
    "to 3.0 functionality when readiness criteria have been met."
)
ROLLFORWARD_CONDITION_FAILED = (
    "Unable to roll-forward because application is not in rolled back state. Ensure that the given "
    "application_name or coordinator_state_table_name is correct and you have followed all prior migration "
    "steps."
)
ROLLBACK_DONE_FROM_UPGRADE = (
    "\nRollback completed. Your application was running 2x compatible functionality.",
    "Please rollback to your previous application binaries by deploying the code with your previous KCL version.",
)
ROLLBACK_DONE_FROM_3X = (
    "\nRollback completed. Your KCL Application was running 3x functionality and will rollback to 2x compatible "
    "functionality.",
    "If you don't see mitigation after a short period of time, please rollback to your previous application "
    "binaries by deploying the code with your previous KCL version.",
)
ROLLBACK_ALREADY_DONE = (
    "\nApplication was already rolled back. Any KCLv3 resources that could be deleted were cleaned up to avoid "
    "charges until the application can be rolled forward with migration.",
)
READ_RETRY = "Please resolve the issue and run the KclMigrationTool again."


def _operation(mode: Mode) -> str:
    return "Rollback" if mode == "rollback" else "Roll-forward"


def _table_missing(table: str) -> str:
    return f"Table '{table}' does not exist."


def _table_check_error(table: str, error: str) -> str:
    return f"An error occurred while checking table '{table}': {error}."


def _lease_table_not_found(mode: Mode, table: str) -> str:
    return (
        f"{_operation(mode)} failed. Could not find a KCL Application DDB lease table with name {table}. Please "
        "pass in the correct application_name and/or lease_table_name that matches your KCL application "
        "configuration."
    )


def _coordinator_table_not_found(mode: Mode, table: str) -> str:
    return (
        f"{_operation(mode)} failed. Could not find a coordinator state table {table}. Please pass in the correct "
        "application_name or coordinator_state_table_name that matches your KCL application configuration."
    )


def _rolling_back(table: str) -> str:
    return f"Rolling back client version in table '{table}'..."


def _rollback_error(error: str) -> str:
    return (
        f"An unexpected error occurred while rolling back: {error}Please resolve and run this migration script again."
    )


def _rollforward_error(error: str) -> str:
    return f"Unable to roll-forward due to error: {error}. Please resolve and run this migration script again."


def _gsi_absent(table: str) -> str:
    return (
        f"GSI {GSI_NAME} is not present on lease table {table}. It may already be successfully deleted. Or if "
        "lease table name is incorrect, please re-run the KclMigrationTool with correct application_name or "
        "lease_table_name."
    )


def _gsi_lease_table_missing(table: str) -> str:
    return (
        f"Lease table {table} does not exist, please check application_name or lease_table_name configuration "
        "and try again."
    )


def _gsi_check_error(table: str, error: str) -> str:
    return (
        f"An unexpected error occurred while checking if GSI {GSI_NAME} exists on lease table {table}: {error}. "
        "Please rectify the error and try again."
    )


def _gsi_deleting(table: str) -> str:
    return f"Deleting GSI '{GSI_NAME}' from table '{table}'..."


def _gsi_not_found(table: str) -> str:
    return f"{GSI_NAME} not found or table '{table}' not found."


def _gsi_in_use(table: str) -> str:
    return f"Unable to delete GSI: '{table}' is currently being modified."


def _gsi_delete_error(table: str, error: str) -> str:
    return (
        f"An unexpected error occurred while deleting GSI {GSI_NAME} on lease table {table}: {error}. Please "
        "manually confirm the GSI is removed from the lease table, or resolve the error and rerun the migration "
        "script."
    )


def _metrics_table_absent(table: str) -> str:
    return (
        f"Worker metrics table {table} does not exist. It may already be successfully deleted. Please check that "
        "the application_name or worker_metrics_table_name is correct. If not, correct this and rerun the "
        "migration script."
    )


def _metrics_table_check_error(table: str, error: str) -> str:
    return (
        f"An unexpected error occurred when checking if {table} table exists: {error}. Please manually confirm "
        "the table is deleted, or resolve the error and rerun the migration script."
    )


def _metrics_table_deleting(table: str) -> str:
    return f"Deleting worker metrics table {table}..."


def _metrics_table_access_denied(table: str) -> str:
    return (
        f"No permissions to delete table {table}. Please manually delete it if you want to avoid any charges "
        "until you are ready to rollforward with migration."
    )


def _metrics_table_client_error(error: str) -> str:
    return (
        f"An unexpected client error occurred while deleting worker metrics table: {error}. Please manually "
        "confirm the table is deleted, or resolve the error and rerun the migration script."
    )


def _metrics_table_error(error: str) -> str:
    return (
        f"An unexpected error occurred while deleting worker metrics table: {error}. Please manually confirm the "
        "table is deleted, or resolve the error and rerun the migration script."
    )


# ------------------------------------------------------------------------------------------------ the target


@dataclass(frozen=True, slots=True)
class MigrationTarget:
    """Which application to act on, named as ``KclMigrationTool.py`` takes it.

    Without ``coordinator_state_table_name`` / ``worker_metrics_table_name`` the arguments follow the tool at
    HEAD (KCL 3.5) and the layout is detected; passing either of them selects the KCL 3.0–3.4 tool's rules
    and the legacy layout with those tables. Empty strings count as not given.
    """

    application_name: str | None = None
    lease_table_name: str | None = None
    coordinator_state_table_name: str | None = None
    worker_metrics_table_name: str | None = None

    @property
    def legacy_arguments(self) -> bool:
        """Whether the legacy tables were named (the KCL 3.0–3.4 tool's arguments)."""
        return bool(self.coordinator_state_table_name or self.worker_metrics_table_name)

    @property
    def lease_table(self) -> str | None:
        return self.lease_table_name or self.application_name or None

    @property
    def coordinator_table(self) -> str | None:
        """The legacy coordinator state table (default ``<app>-CoordinatorState``)."""
        if self.coordinator_state_table_name:
            return self.coordinator_state_table_name
        return f"{self.application_name}-CoordinatorState" if self.application_name else None

    @property
    def worker_metrics_table(self) -> str | None:
        """The legacy worker metrics table (default ``<app>-WorkerMetricStats``)."""
        if self.worker_metrics_table_name:
            return self.worker_metrics_table_name
        return f"{self.application_name}-WorkerMetricStats" if self.application_name else None

    def validation_error(self, mode: Literal["rollback", "rollforward", "status"]) -> str | None:
        """The tool's argument error for ``mode`` (its exact wording), or ``None`` if the arguments suffice.

        HEAD: roll-forward needs the application name (even with a lease table name — the tool's quirk, kept);
        rollback the application name or the lease table name. KCL 3.0–3.4 (legacy table names given):
        roll-forward needs the application name or the coordinator state table name; rollback the application
        name or all three table names.
        """
        if self.application_name:
            return None
        if mode == "status":
            return None if self.lease_table_name else ARGS_STATUS
        if self.legacy_arguments:
            if mode == "rollforward":
                return None if self.coordinator_state_table_name else ARGS_ROLLFORWARD_LEGACY
            complete = self.lease_table_name and self.coordinator_state_table_name and self.worker_metrics_table_name
            return None if complete else ARGS_ROLLBACK_LEGACY
        if mode == "rollforward":
            return ARGS_ROLLFORWARD
        return None if self.lease_table_name else ARGS_ROLLBACK


# ------------------------------------------------------------------------------------------------- results


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


# ------------------------------------------------------------------------------------------------ internals


class _Log:
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


@dataclass
class _App:
    """The opened tables of one application."""

    backend: Literal["local", "aws"]
    layout: Layout
    detected: bool
    lease_table: str | None
    state_table: str
    worker_metrics_table: str | None
    store: LeaseStore | None
    coordinator: ItemTable | None
    worker_metrics: ItemTable | None
    client: DynamoDBClient | None = None
    owner_index: OwnerIndex | None = None
    db_path: str | None = None

    def describe(self) -> str:
        where = f"the embedded (SQLite) backend, {self.db_path}" if self.backend == "local" else "DynamoDB"
        if self.layout == "single-table":
            table = f"lease table '{self.state_table}' (single-table layout, KCL 3.5"
        else:
            table = f"coordinator state table '{self.state_table}' (legacy layout, KCL 3.0–3.4"
        how = ", detected" if self.detected else ""
        return f"Migration state: item '{MIGRATION_KEY}' in {table}{how}) in {where}."


@dataclass(frozen=True, slots=True)
class _State:
    """The ``Migration3.0`` item as the tool reads it (missing values as the tool defaults them)."""

    exists: bool
    client_version: str
    modified_by: str | None
    modified_at: object
    history: tuple[Any, ...]

    def history_entry(self, now_ms: int) -> dict[str, Any]:
        """``{cv, mb, mts}`` of the current values ('Unknown' / now when missing), as the tool builds it."""
        mts = self.modified_at if _is_number(self.modified_at) else now_ms
        return {"cv": self.client_version, "mb": self.modified_by or UNKNOWN, "mts": mts}


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _botocore_errors() -> tuple[type[Exception], ...]:
    try:
        from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415
    except ImportError:  # pragma: no cover - only without boto3
        return ()
    return (ClientError, BotoCoreError)


def _error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, Mapping):
        error = response.get("Error", {})
        if isinstance(error, Mapping):
            return str(error.get("Code", ""))
    return ""


def _underlying(exc: BaseException) -> BaseException:
    """The botocore error behind a translated shardwise error, else the error itself."""
    cause = exc.__cause__
    if isinstance(exc, ShardwiseError) and cause is not None and type(cause).__module__.startswith("botocore"):
        return cause
    return exc


def _error_text(exc: BaseException) -> str:
    return str(_underlying(exc))


def _code_and_message(exc: BaseException) -> tuple[str, str]:
    raw = _underlying(exc)
    response = getattr(raw, "response", None)
    if isinstance(response, Mapping):
        error = response.get("Error", {})
        if isinstance(error, Mapping):
            return str(error.get("Code", "")), str(error.get("Message", ""))
    return type(raw).__name__, str(raw)


def _dynamodb_client(backend: BackendConfig) -> DynamoDBClient:
    try:
        import boto3  # noqa: PLC0415
        from botocore.config import Config  # noqa: PLC0415
        from botocore.exceptions import BotoCoreError  # noqa: PLC0415
    except ImportError as exc:  # pragma: no cover - only without boto3
        raise ConfigurationError(f"the aws backend needs boto3: pip install 'shardwise[aws]' ({exc})") from exc
    try:
        return boto3.session.Session().client(
            "dynamodb",
            region_name=backend.region,
            endpoint_url=backend.dynamodb_endpoint,
            config=Config(retries={"max_attempts": 10, "mode": "standard"}),
        )
    except BotoCoreError as exc:
        raise ConfigurationError(f"cannot create a DynamoDB client: {exc}; pass --region (or set AWS_REGION)") from exc


def _open(target: MigrationTarget, backend: BackendConfig, client: DynamoDBClient | None) -> _App | ShardwiseError:
    """Open the application's tables; a ``ShardwiseError`` (returned, not raised) if the layout could not be
    determined. Invalid arguments raise ``ConfigurationError``."""
    lease_table = target.lease_table
    if backend.backend == "local":
        if target.legacy_arguments:
            raise ConfigurationError(
                "--coordinator_state_table_name / --worker_metrics_table_name name DynamoDB tables of the legacy "
                "layout; the embedded (SQLite) backend keeps the migration state in the lease table: pass "
                "--backend aws (with --region or --endpoint-url) or drop these options"
            )
        if lease_table is None:  # pragma: no cover - excluded by validation_error
            raise ConfigurationError("a lease table name or application name is required")
        db = str(backend.db)
        if not Path(db).is_file():
            return _App(
                "local", "single-table", False, lease_table, lease_table, lease_table, None, None, None, db_path=db
            )
        from shardwise.backends import open_coordinator_tables  # noqa: PLC0415
        from shardwise.backends.sqlite.leases import SQLiteLeaseStore  # noqa: PLC0415

        store = SQLiteLeaseStore(db, lease_table)
        tables = open_coordinator_tables(store, target.application_name or lease_table)
        return _App(
            "local",
            "single-table",
            False,
            lease_table,
            lease_table,
            lease_table,
            store,
            tables.coordinator,
            tables.worker_metrics,
            db_path=db,
        )
    try:
        from shardwise.backends.aws.items import DynamoDBItemTable, detect_layout  # noqa: PLC0415
        from shardwise.backends.aws.leases import DynamoDBLeaseStore, DynamoDBLeaseStoreConfig  # noqa: PLC0415
    except ImportError as exc:  # pragma: no cover - only without boto3
        raise ConfigurationError(f"the aws backend needs boto3: pip install 'shardwise[aws]' ({exc})") from exc
    client = client if client is not None else _dynamodb_client(backend)
    lease_store = (
        DynamoDBLeaseStore(DynamoDBLeaseStoreConfig(table_name=lease_table), client=client) if lease_table else None
    )
    coordinator_name = target.coordinator_table
    layout: Layout
    detected = False
    if target.legacy_arguments:
        layout = "legacy"
    elif target.application_name and lease_store is not None and coordinator_name is not None:
        try:
            layout = detect_layout(lease_store, coordinator_name)
        except ShardwiseError as exc:
            return exc
        detected = True
    else:
        layout = "single-table"
    if layout == "single-table":
        if lease_store is None or lease_table is None:  # pragma: no cover - excluded by validation_error
            raise ConfigurationError("a lease table name or application name is required")
        meter = lease_store.capacity_meter
        return _App(
            "aws",
            layout,
            detected,
            lease_table,
            lease_table,
            lease_table,
            lease_store,
            DynamoDBItemTable(client, lease_table, layout=layout, namespace="coordinator", capacity_meter=meter),
            DynamoDBItemTable(client, lease_table, layout=layout, namespace="worker-metrics", capacity_meter=meter),
            client=client,
            owner_index=lease_store,
        )
    if coordinator_name is None:  # pragma: no cover - excluded by validation_error
        raise ConfigurationError("a coordinator state table name or application name is required")
    metrics_name = target.worker_metrics_table
    return _App(
        "aws",
        layout,
        detected,
        lease_table,
        coordinator_name,
        metrics_name,
        lease_store,
        DynamoDBItemTable(client, coordinator_name, layout="legacy", namespace="coordinator"),
        None
        if metrics_name is None
        else DynamoDBItemTable(client, metrics_name, layout="legacy", namespace="worker-metrics"),
        client=client,
        owner_index=lease_store,
    )


def _describe_table(client: DynamoDBClient, table: str) -> TableDescriptionTypeDef | None:
    """``DescribeTable``; ``None`` if the table does not exist. Other botocore errors propagate."""
    from botocore.exceptions import ClientError  # noqa: PLC0415

    try:
        return client.describe_table(TableName=table)["Table"]
    except ClientError as exc:
        if _error_code(exc) == "ResourceNotFoundException":
            return None
        raise


def _table_exists(app: _App, table: str) -> bool:
    """Whether the table exists (any status, as the tool's ``DescribeTable`` check). Errors propagate."""
    if app.backend == "local":
        return app.store is not None and app.store.table_exists()
    assert app.client is not None
    return _describe_table(app.client, table) is not None


def _check_tables(log: _Log, app: _App, mode: Mode) -> str | None:
    """The tool's ``validate_tables``: the lease table (unless a legacy roll-forward, which the KCL 3.0–3.4
    tool does without it), then, in the legacy layout, the coordinator state table. An outcome on failure."""
    checks: list[tuple[str, str]] = []
    if app.layout == "single-table" or mode == "rollback":
        assert app.lease_table is not None
        checks.append(("lease", app.lease_table))
    if app.layout == "legacy":
        checks.append(("coordinator", app.state_table))
    errors: tuple[type[Exception], ...] = (ShardwiseError, *_botocore_errors())
    for kind, table in checks:
        failed = False
        try:
            exists = _table_exists(app, table)
        except errors as exc:
            log.tool(_table_check_error(table, _error_text(exc)))
            exists, failed = False, True
        else:
            if not exists:
                log.tool(_table_missing(table))
        if exists:
            continue
        if kind == "lease":
            log.tool(_lease_table_not_found(mode, table))
            if app.backend == "local" and app.store is None:
                log.own(f"(There is no database file {app.db_path}: pass the --db of the application's workers.)")
        else:
            log.tool(_coordinator_table_not_found(mode, table))
        if failed:
            return "table-check-failed"
        return "lease-table-missing" if kind == "lease" else "coordinator-table-missing"
    return None


def _read_state(app: _App) -> _State:
    assert app.coordinator is not None
    record = app.coordinator.get(MIGRATION_KEY)
    if record is None:
        return _State(False, UNKNOWN, None, None, ())
    attributes = record.attributes
    cv = attributes.get("cv")
    mb = attributes.get("mb")
    history = attributes.get("h")
    return _State(
        True,
        cv if isinstance(cv, str) else UNKNOWN,
        mb if isinstance(mb, str) else None,
        attributes.get("mts"),
        tuple(history) if isinstance(history, list) else (),
    )


def _read_failed(log: _Log, mode: Mode, exc: BaseException) -> None:
    log.tool(f"{_operation(mode)} could not be performed.")
    code, message = _code_and_message(exc)
    if code == "ProvisionedThroughputExceededException":
        log.tool(f"Throughput exceeded even after retries: {message}")
    else:
        log.tool(f"Unexpected client error occurred: {code} - {message}")
    log.tool(READ_RETRY)


def _not_a_version_note(app: _App, state: _State) -> str:
    if not state.exists:
        return (
            f"(There is no '{MIGRATION_KEY}' item in table '{app.state_table}': the application never started a "
            "KCL 3.x migration, runs KCL 3.5 in Phase 1, or the names are wrong — see `shardwise migrate status`.)"
        )
    if state.client_version == UNKNOWN:
        return f"(The '{MIGRATION_KEY}' item in table '{app.state_table}' has no string attribute cv.)"
    return f"(The '{MIGRATION_KEY}' item in table '{app.state_table}' has cv {state.client_version!r}.)"


def _transition(app: _App, state: _State, to: str, modified_by: str, now_ms: int) -> tuple[bool, dict[str, Any]]:
    """Write ``cv = to`` conditional on ``cv`` and ``mts`` being what was read; (won, history entry)."""
    assert app.coordinator is not None
    entry = state.history_entry(now_ms)
    history = [entry, *state.history][:HISTORY_LIMIT]
    record = app.coordinator.update(
        MIGRATION_KEY,
        set_attributes={"cv": to, "mts": now_ms, "mb": modified_by, "h": history},
        expect={"cv": state.client_version, "mts": ABSENT if state.modified_at is None else state.modified_at},
    )
    return record is not None, entry


def _report_lost_race(log: _Log, app: _App) -> None:
    try:
        now = _read_state(app)
    except ShardwiseError:
        return
    log.own(
        f"(The migration state changed after it was read: cv is now {now.client_version}, modified by "
        f"{now.modified_by or UNKNOWN}. Check `shardwise migrate status` before trying again.)"
    )


def _app_values(app: _App | None, values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with the application's backend, layout and table names added where not given."""
    if app is not None:
        for name in ("backend", "layout", "lease_table", "state_table", "worker_metrics_table"):
            values.setdefault(name, getattr(app, name))
    return values


def _result(
    log: _Log,
    mode: Mode,
    dry_run: bool,
    end: tuple[bool, str],
    app: _App | None = None,
    /,
    **values: Any,
) -> MigrationResult:
    ok, outcome = end
    return MigrationResult(
        mode=mode, ok=ok, outcome=outcome, dry_run=dry_run, messages=tuple(log.messages), **_app_values(app, values)
    )


@dataclass(frozen=True, slots=True)
class _Direction:
    """What differs between a rollback and a roll-forward up to the write of the new client version (see
    :func:`_start` and :func:`_write`): the versions acted on, the refusals and the tool's lines."""

    mode: Mode
    #: The client versions it acts on; any other is refused.
    accepts: frozenset[str]
    #: Refused versions → (outcome, the tool's line, shardwise's note or ``None``); any other version not
    #: accepted is "not-in-progress" with ``not_in_progress`` and a note on what was found.
    refusals: Mapping[str, tuple[str, str, str | None]]
    not_in_progress: str
    to: str
    modified_by: str
    #: "back" / "forward", as in "Would roll back the client version...".
    verb: str
    #: The tool's line before the write (given the state table), if it prints one.
    writing: Callable[[str], str] | None
    #: The tool's line when the write fails (given the error).
    write_error: Callable[[str], str]
    condition_failed: str
    #: The tool's line after a successful write, if it prints one.
    written: str | None


def _start(
    direction: _Direction,
    log: _Log,
    target: MigrationTarget,
    backend: BackendConfig | None,
    client: DynamoDBClient | None,
    *,
    dry_run: bool,
) -> tuple[_App, _State] | MigrationResult:
    """Validate, open and check the tables, read the migration state and refuse the versions ``direction``
    does not act on: the app and the state, or the result of an early end."""
    mode = direction.mode
    invalid = target.validation_error(mode)
    if invalid is not None:
        log.tool(invalid)
        return _result(log, mode, dry_run, (False, "invalid-arguments"))
    try:
        opened = _open(target, backend if backend is not None else BackendConfig(), client)
    except ConfigurationError as exc:
        log.own(str(exc))
        return _result(log, mode, dry_run, (False, "invalid-arguments"))
    if isinstance(opened, ShardwiseError):
        _read_failed(log, mode, opened)
        return _result(log, mode, dry_run, (False, "read-failed"))
    app = opened
    log.own(app.describe())
    if dry_run:
        log.own("Dry run: nothing will be changed.")
    failure = _check_tables(log, app, mode)
    if failure is not None:
        return _result(log, mode, dry_run, (False, failure), app)
    try:
        state = _read_state(app)
    except ShardwiseError as exc:
        _read_failed(log, mode, exc)
        return _result(log, mode, dry_run, (False, "read-failed"), app)
    previous = state.client_version
    if previous in direction.accepts:
        return app, state
    refusal = direction.refusals.get(previous)
    if refusal is None:
        refusal = ("not-in-progress", direction.not_in_progress, _not_a_version_note(app, state))
    outcome, line, note = refusal
    log.tool(line)
    if note is not None:
        log.own(note)
    return _result(
        log,
        mode,
        dry_run,
        (False, outcome),
        app,
        previous_client_version=previous,
        client_version=previous if state.exists else None,
    )


def _write(
    direction: _Direction, log: _Log, app: _App, state: _State, *, dry_run: bool, clock: Callable[[], float]
) -> dict[str, Any] | MigrationResult:
    """Write ``cv = direction.to`` conditional on the ``cv`` and ``mts`` read (in a dry run: say what would be
    written): the history entry pushed, or the result of a failed write."""
    previous = state.client_version
    now_ms = int(clock() * 1000)
    if dry_run:
        entry = state.history_entry(now_ms)
        log.own(
            f"Would roll {direction.verb} the client version in table '{app.state_table}': cv {previous} -> "
            f"{direction.to}, mb {direction.modified_by}, history entry {entry} pushed (conditional on cv = "
            f"{previous} and mts unchanged)."
        )
        return entry
    if direction.writing is not None:
        log.tool(direction.writing(app.state_table))
    mode = direction.mode
    try:
        won, entry = _transition(app, state, direction.to, direction.modified_by, now_ms)
    except ShardwiseError as exc:
        log.tool(direction.write_error(_error_text(exc)))
        return _result(
            log,
            mode,
            dry_run,
            (False, "write-failed"),
            app,
            previous_client_version=previous,
            client_version=previous,
        )
    if not won:
        log.tool(direction.condition_failed)
        _report_lost_race(log, app)
        return _result(log, mode, dry_run, (False, "conditional-check-failed"), app, previous_client_version=previous)
    if direction.written is not None:
        log.tool(direction.written)
    log.own(f"Client version in table '{app.state_table}' is now {direction.to} (was {previous}).")
    return entry


# ------------------------------------------------------------------------------------------------- rollback

_ROLLBACK = _Direction(
    mode="rollback",
    accepts=frozenset({_V2X, _UPGRADE, _V3X_WITH_ROLLBACK}),
    refusals={
        _V3X: (
            "not-rollbackable",
            ROLLBACK_REFUSED_3X,
            "(CLIENT_VERSION_3X is final: the migration has completed and cannot be rolled back.)",
        )
    },
    not_in_progress=ROLLBACK_NOT_IN_PROGRESS,
    to=_V2X,
    modified_by=MODIFIED_BY_ROLLBACK,
    verb="back",
    writing=_rolling_back,
    write_error=_rollback_error,
    condition_failed=ROLLBACK_CONDITION_FAILED,
    written=None,
)


@dataclass(frozen=True, slots=True)
class _Pacing:
    """How a rollback's clean-up waits: for workers to leave KCL 3.x mode (``wait``, up to
    ``wait_timeout_s``), for deletions to finish (up to ``gsi_timeout_s``), polling every ``poll_s``."""

    wait: bool
    wait_timeout_s: float
    poll_s: float
    gsi_timeout_s: float
    active_window_s: float
    clock: Callable[[], float]
    sleep: Callable[[float], None]


def rollback(
    target: MigrationTarget,
    backend: BackendConfig | None = None,
    *,
    dynamodb_client: DynamoDBClient | None = None,
    dry_run: bool = False,
    wait: bool = True,
    wait_timeout_s: float = DEFAULT_WAIT_TIMEOUT_S,
    poll_interval_s: float = DEFAULT_POLL_INTERVAL_S,
    gsi_timeout_s: float = DEFAULT_GSI_TIMEOUT_S,
    active_window_s: float = DEFAULT_ACTIVE_WINDOW_S,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
    on_message: Callable[[Message], None] | None = None,
) -> MigrationResult:
    """Roll the application back to ``CLIENT_VERSION_2X`` and clean up the KCL 3.x resources.

    From ``UPGRADE_FROM_2X`` or ``3X_WITH_ROLLBACK``: conditional write of ``cv = CLIENT_VERSION_2X`` (``mb =
    KclMigrationTool-rollback``, history pushed). From ``2X``: no write ("already rolled back"), clean-up
    only. Then (unless ``wait`` is false) wait up to ``wait_timeout_s`` until no worker runs in a 3.x mode,
    delete the GSI and verify it is gone (up to ``gsi_timeout_s``), and in the legacy layout delete the
    worker-metrics table. ``backend`` defaults to the local one (``BackendConfig()``); ``dynamodb_client``
    overrides the client built from it. ``clock`` (epoch seconds) stamps ``mts`` and judges the freshness of
    worker-metrics entries and all timeouts; ``sleep`` waits between polls; ``on_message`` sees each line
    as it is produced (the result holds them all).
    """
    for name, value in (
        ("wait_timeout_s", wait_timeout_s),
        ("poll_interval_s", poll_interval_s),
        ("gsi_timeout_s", gsi_timeout_s),
        ("active_window_s", active_window_s),
    ):
        if not value >= 0:
            raise ValueError(f"{name} must be >= 0 seconds, got {value!r}")
    pacing = _Pacing(wait, wait_timeout_s, poll_interval_s, gsi_timeout_s, active_window_s, clock, sleep)
    log = _Log(on_message)
    started = _start(_ROLLBACK, log, target, backend, dynamodb_client, dry_run=dry_run)
    if isinstance(started, MigrationResult):
        return started
    app, state = started
    previous = state.client_version
    entry: dict[str, Any] | None = None
    if previous == _V2X:
        log.tool(ALREADY_2X)
    else:
        written = _write(_ROLLBACK, log, app, state, dry_run=dry_run, clock=clock)
        if isinstance(written, MigrationResult):
            return written
        entry = written

    cleanup = _clean_up(log, app, pacing, dry_run=dry_run)
    outcome = "already-rolled-back" if previous == _V2X else "rolled-back"
    if dry_run:
        verdict = "would succeed" if cleanup.ok else "would not complete its clean-up"
        log.own(f"Dry run complete: nothing was changed. The rollback {verdict}.")
    else:
        if previous == _UPGRADE:
            log.tool(*ROLLBACK_DONE_FROM_UPGRADE)
        elif previous == _V3X_WITH_ROLLBACK:
            log.tool(*ROLLBACK_DONE_FROM_3X)
        else:
            log.tool(*ROLLBACK_ALREADY_DONE)
        if not cleanup.ok:
            log.own(
                "The client version is rolled back, but workers may still run in KCL 3.x mode or the clean-up of "
                "KCL 3.x resources did not complete (see above): resolve the problem and run the rollback again; "
                "it only waits and cleans up from now on."
            )
    if not cleanup.ok:
        outcome = "cleanup-incomplete"
    return _result(
        log,
        "rollback",
        dry_run,
        (cleanup.ok, outcome),
        app,
        previous_client_version=previous,
        client_version=previous if dry_run else _V2X,
        history_entry=entry,
        cleanup=cleanup,
    )


def _workers_in_3x_mode(app: _App, now_s: float, active_window_s: float) -> list[str]:
    """Workers whose metrics entry is fresh and does not report a 2.x version (sorted ids)."""
    if app.worker_metrics is None:
        return []
    try:
        records = app.worker_metrics.scan()
    except ResourceNotFoundError:
        return []  # legacy table gone: nobody reports
    found: list[str] = []
    for record in records:
        lut = record.attributes.get("lut")
        if not _is_number(lut) or now_s - float(lut) > active_window_s:
            continue
        cv = record.attributes.get("cv")
        if isinstance(cv, str) and cv in _LEFT_3X_VERSIONS:
            continue
        found.append(record.key)
    return sorted(found)


def _clean_up(log: _Log, app: _App, pacing: _Pacing, *, dry_run: bool) -> CleanupReport:
    waited = 0.0
    remaining: tuple[str, ...] = ()
    wait_outcome: WaitOutcome
    if dry_run:
        wait_outcome = "dry-run"
        try:
            remaining = tuple(_workers_in_3x_mode(app, pacing.clock(), pacing.active_window_s))
        except ShardwiseError as exc:
            log.own(f"Could not read the workers' metrics: {exc}.")
        if not pacing.wait:
            log.own("Would not wait for workers to leave KCL 3.x mode (--no-wait).")
        elif remaining:
            log.own(
                f"Would wait (up to {pacing.wait_timeout_s:g} seconds) for {len(remaining)} worker(s) still "
                f"reporting worker metrics (a KCL 3.x mode) to leave it: {', '.join(remaining)}."
            )
        else:
            log.own("No worker reports worker metrics (a KCL 3.x mode): clean-up would start at once.")
    elif not pacing.wait:
        wait_outcome = "not-waited"
        log.own(
            "Not waiting for workers to leave KCL 3.x mode (--no-wait): KCL 3.0 resources are cleaned up now; "
            "workers still running 3.x functionality may fail to discover their leases until their next "
            "client-version check (every 60 s) switches them to 2.x compatible mode."
        )
    else:
        wait_outcome, waited, remaining = _wait_for_workers(log, app, pacing)
        if wait_outcome != "done":
            return CleanupReport(wait_outcome, waited, remaining, "skipped", "skipped")

    if app.backend == "local":
        owner_index: StepOutcome = "not-applicable"
        log.own(
            f"The embedded (SQLite) backend has no GSI {GSI_NAME} to delete (its owner index is part of the "
            "schema) and keeps worker metrics in the lease table: nothing to clean up."
        )
    else:
        owner_index = _delete(_OWNER_INDEX, log, app, pacing, dry_run=dry_run)
    metrics_table: StepOutcome = "not-applicable"
    if app.backend == "aws" and app.layout == "legacy" and app.worker_metrics_table is not None:
        metrics_table = _delete(_METRICS_TABLE, log, app, pacing, dry_run=dry_run)
        log.own(f"The coordinator state table {app.state_table} is kept: it holds the migration state.")
    return CleanupReport(wait_outcome, waited, remaining, owner_index, metrics_table)


def _wait_for_workers(log: _Log, app: _App, pacing: _Pacing) -> tuple[WaitOutcome, float, tuple[str, ...]]:
    timeout_s, active_window_s = pacing.wait_timeout_s, pacing.active_window_s
    log.own(
        "Waiting for workers to leave KCL 3.x mode before cleaning up KCL 3.0 resources after rollback (up to "
        f"{timeout_s:g} seconds; a KCL worker stops reporting worker metrics in 2.x compatible mode, and its "
        f"entry stays active for {active_window_s:g} seconds after its last report)..."
    )
    start = pacing.clock()
    shown: list[str] | None = None
    while True:
        now = pacing.clock()
        elapsed = now - start
        try:
            remaining = _workers_in_3x_mode(app, now, active_window_s)
        except ShardwiseError as exc:
            log.own(
                f"Could not read the workers' metrics while waiting: {exc}. KCL 3.0 resources were not cleaned "
                "up: resolve the error and run the rollback again."
            )
            return "failed", elapsed, ()
        if not remaining:
            log.own(f"No worker runs in KCL 3.x mode any more (waited {elapsed:.0f} seconds).")
            return "done", elapsed, ()
        if remaining != shown:
            log.own(f"Still in KCL 3.x mode (reporting worker metrics): {', '.join(remaining)}")
            shown = remaining
        if elapsed >= timeout_s:
            if app.backend == "aws":
                advice = (
                    "KCL 3.0 resources were not cleaned up: once these workers run in 2.x compatible mode (or are "
                    "stopped), run the rollback again to clean up."
                )
            else:
                advice = "`shardwise migrate status` shows when they run in 2.x compatible mode (or are stopped)."
            log.own(
                f"Timed out after {timeout_s:g} seconds waiting for workers to leave KCL 3.x mode; still "
                f"reporting: {', '.join(remaining)}. {advice}"
            )
            return "timed-out", elapsed, tuple(remaining)
        pacing.sleep(max(0.0, min(pacing.poll_s, timeout_s - elapsed)))


@dataclass(frozen=True, slots=True)
class _Deletion:
    """What differs between deleting the GSI and deleting the legacy worker-metrics table (see :func:`_delete`).

    The messages take the table's name first: ``tool_*`` are KclMigrationTool.py's lines (word for word),
    ``own_*`` shardwise's.
    """

    #: The table it lives in (the lease table / the worker-metrics table).
    table: Callable[[_App], str | None]
    #: Its status in the table's ``DescribeTable`` answer; ``None`` when it does not exist.
    status_in: Callable[[TableDescriptionTypeDef], str | None]
    #: Start deleting it.
    delete: Callable[[DynamoDBClient, str], object]
    #: Its status while deleting; ``None`` when it is gone. May raise ``ShardwiseError`` or botocore errors.
    probe: Callable[[_App, str], str | None]
    tool_check_error: Callable[[str, str], str]
    #: The line when the table itself does not exist, which fails the step; ``None``: then it is absent too.
    tool_table_missing: Callable[[str], str] | None
    tool_absent: Callable[[str], str]
    tool_deleting: Callable[[str], str]
    #: The line when the delete call answers ``ResourceNotFoundException``, if the tool prints one.
    tool_not_found: Callable[[str], str] | None
    #: The line when the delete call fails with a ``ClientError`` (given its code and text).
    tool_client_error: Callable[[str, str, str], str]
    #: The line when the delete call fails with a ``BotoCoreError`` (given its text).
    tool_error: Callable[[str, str], str]
    own_would_delete: Callable[[str, str], str]
    own_already_deleting: Callable[[str], str]
    own_busy: Callable[[str, float], str]
    own_verify_error: Callable[[str, str], str]
    own_gone: Callable[[str], str]
    own_still_there: Callable[[str, str, float], str]
    #: The line announcing the wait for the deletion to finish (given the status), if one is shown.
    own_waiting: Callable[[str, str], str] | None


def _delete(spec: _Deletion, log: _Log, app: _App, pacing: _Pacing, *, dry_run: bool) -> StepOutcome:
    """Delete what ``spec`` describes (retrying while its table is being modified) and verify it is gone."""
    from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

    client, table = app.client, spec.table(app)
    assert client is not None
    assert table is not None
    clock, sleep, poll_s, timeout_s = pacing.clock, pacing.sleep, pacing.poll_s, pacing.gsi_timeout_s
    try:
        description = _describe_table(client, table)
    except (ClientError, BotoCoreError) as exc:
        log.tool(spec.tool_check_error(table, str(exc)))
        return "failed"
    if description is None and spec.tool_table_missing is not None:
        log.tool(spec.tool_table_missing(table))
        return "failed"
    status = None if description is None else spec.status_in(description)
    if status is None:
        log.tool(spec.tool_absent(table))
        return "absent"
    if dry_run:
        log.own(spec.own_would_delete(table, status))
        return "would-delete"
    deadline = clock() + timeout_s
    if status == "DELETING":
        log.own(spec.own_already_deleting(table))
    else:
        log.tool(spec.tool_deleting(table))
        while True:
            try:
                spec.delete(client, table)
            except ClientError as exc:
                code = _error_code(exc)
                if code == "ResourceNotFoundException":
                    if spec.tool_not_found is not None:
                        log.tool(spec.tool_not_found(table))
                    break  # gone already, or the table is: the verification below tells which
                if code == "ResourceInUseException" and clock() < deadline:
                    log.own(spec.own_busy(table, poll_s))
                    sleep(poll_s)
                    continue
                log.tool(spec.tool_client_error(table, code, str(exc)))
                return "failed"
            except BotoCoreError as exc:
                log.tool(spec.tool_error(table, str(exc)))
                return "failed"
            break
    announced = False
    while True:
        try:
            current = spec.probe(app, table)
        except (ShardwiseError, ClientError, BotoCoreError) as exc:
            log.own(spec.own_verify_error(table, str(exc)))
            return "failed"
        if current is None:
            log.own(spec.own_gone(table))
            return "deleted"
        if clock() >= deadline:
            log.own(spec.own_still_there(table, current, timeout_s))
            return "failed"
        if not announced and spec.own_waiting is not None:
            log.own(spec.own_waiting(table, current))
            announced = True
        sleep(max(0.0, min(poll_s, deadline - clock())))


def _owner_index_status_in(description: TableDescriptionTypeDef) -> str | None:
    return next(
        (
            index.get("IndexStatus", "UNKNOWN")
            for index in description.get("GlobalSecondaryIndexes", [])
            if index.get("IndexName") == GSI_NAME
        ),
        None,
    )


def _owner_index_probe(app: _App, _table: str) -> str | None:
    assert app.owner_index is not None
    return app.owner_index.owner_index_status()


def _table_probe(app: _App, table: str) -> str | None:
    assert app.client is not None
    description = _describe_table(app.client, table)
    return None if description is None else description.get("TableStatus", "UNKNOWN")


_OWNER_INDEX = _Deletion(
    table=lambda app: app.lease_table,
    status_in=_owner_index_status_in,
    delete=lambda client, table: client.update_table(
        TableName=table, GlobalSecondaryIndexUpdates=[{"Delete": {"IndexName": GSI_NAME}}]
    ),
    probe=_owner_index_probe,
    tool_check_error=_gsi_check_error,
    tool_table_missing=_gsi_lease_table_missing,
    tool_absent=_gsi_absent,
    tool_deleting=_gsi_deleting,
    tool_not_found=_gsi_not_found,
    tool_client_error=lambda table, code, error: (
        _gsi_in_use(table) if code == "ResourceInUseException" else _gsi_delete_error(table, error)
    ),
    tool_error=_gsi_delete_error,
    own_would_delete=lambda table, status: (
        f"Would delete GSI {GSI_NAME} (now {status}) from lease table '{table}' and verify it is gone."
    ),
    own_already_deleting=lambda table: f"GSI {GSI_NAME} on lease table '{table}' is already being deleted.",
    own_busy=lambda table, poll_s: f"Lease table '{table}' is being modified; retrying in {poll_s:g} seconds...",
    own_verify_error=lambda table, error: (
        f"Could not verify that GSI {GSI_NAME} is gone from lease table '{table}': {error}"
    ),
    own_gone=lambda table: f"Verified: GSI {GSI_NAME} is gone from lease table '{table}'.",
    own_still_there=lambda table, status, timeout_s: (
        f"GSI {GSI_NAME} is still {status} on lease table '{table}' after {timeout_s:g} seconds. Check "
        "`shardwise migrate status` later; if it is not DELETING, run the rollback again."
    ),
    own_waiting=lambda _table, status: f"Waiting for DynamoDB to finish deleting GSI {GSI_NAME} (now {status})...",
)

_METRICS_TABLE = _Deletion(
    table=lambda app: app.worker_metrics_table,
    status_in=lambda description: description.get("TableStatus", "UNKNOWN"),
    delete=lambda client, table: client.delete_table(TableName=table),
    probe=_table_probe,
    tool_check_error=_metrics_table_check_error,
    tool_table_missing=None,
    tool_absent=_metrics_table_absent,
    tool_deleting=_metrics_table_deleting,
    tool_not_found=None,
    tool_client_error=lambda table, code, error: (
        _metrics_table_access_denied(table) if code == "AccessDeniedException" else _metrics_table_client_error(error)
    ),
    tool_error=lambda _table, error: _metrics_table_error(error),
    own_would_delete=lambda table, status: (
        f"Would delete worker metrics table {table} (now {status}) and verify it is gone."
    ),
    own_already_deleting=lambda table: f"Worker metrics table {table} is already being deleted.",
    own_busy=lambda table, poll_s: f"Worker metrics table {table} is being modified; retrying in {poll_s:g} seconds...",
    own_verify_error=lambda table, error: f"Could not verify that worker metrics table {table} is gone: {error}",
    own_gone=lambda table: f"Verified: worker metrics table {table} is gone.",
    own_still_there=lambda table, status, timeout_s: (
        f"Worker metrics table {table} is still {status} after {timeout_s:g} seconds. Check again later; if it "
        "is not DELETING, run the rollback again."
    ),
    own_waiting=None,
)


# ---------------------------------------------------------------------------------------------- roll-forward

_ROLLFORWARD = _Direction(
    mode="rollforward",
    accepts=frozenset({_V2X}),
    refusals={
        _UPGRADE: ("not-rolled-back", ROLLFORWARD_NOT_ROLLED_BACK, None),
        _V3X_WITH_ROLLBACK: ("not-rolled-back", ROLLFORWARD_NOT_ROLLED_BACK, None),
        _V3X: ("already-migrated", ROLLFORWARD_ALREADY_MIGRATED, None),
    },
    not_in_progress=ROLLFORWARD_NOT_IN_PROGRESS,
    to=_UPGRADE,
    modified_by=MODIFIED_BY_ROLLFORWARD,
    verb="forward",
    writing=None,
    write_error=_rollforward_error,
    condition_failed=ROLLFORWARD_CONDITION_FAILED,
    written=ROLLFORWARD_INITIATED,
)


def rollforward(
    target: MigrationTarget,
    backend: BackendConfig | None = None,
    *,
    dynamodb_client: DynamoDBClient | None = None,
    dry_run: bool = False,
    clock: Callable[[], float] = time.time,
    on_message: Callable[[Message], None] | None = None,
) -> MigrationResult:
    """Resume a rolled-back migration: ``cv`` ``CLIENT_VERSION_2X`` → ``CLIENT_VERSION_UPGRADE_FROM_2X``
    (conditional; ``mb = KclMigrationTool-rollforward``; history pushed). Creates nothing: KCL workers
    re-create the GSI (and, KCL ≤ 3.4, the worker-metrics table) when they see the new version."""
    log = _Log(on_message)
    started = _start(_ROLLFORWARD, log, target, backend, dynamodb_client, dry_run=dry_run)
    if isinstance(started, MigrationResult):
        return started
    app, state = started
    entry = _write(_ROLLFORWARD, log, app, state, dry_run=dry_run, clock=clock)
    if isinstance(entry, MigrationResult):
        return entry
    if dry_run:
        log.own("Dry run complete: nothing was changed. The roll-forward would succeed.")
    elif app.backend == "aws":
        recreated = f"GSI {GSI_NAME}"
        if app.layout == "legacy":
            recreated += f" and the worker metrics table {app.worker_metrics_table or ''}".rstrip()
        log.own(
            f"KCL workers re-create {recreated} and report worker metrics again once they see the new version "
            "(they check every 60 s); the switch to 3.x follows after every worker reports for 10 minutes."
        )
    return _result(
        log,
        "rollforward",
        dry_run,
        (True, "rolled-forward"),
        app,
        previous_client_version=_V2X,
        client_version=_V2X if dry_run else _UPGRADE,
        history_entry=entry,
    )


# ---------------------------------------------------------------------------------------------------- status

_MEANINGS = {
    _V2X: "rolled back: 2.x compatible mode (no worker metrics, no GSI needed); `rollforward` resumes the migration",
    _UPGRADE: (
        "upgrading from 2.x: 2.x compatible assignment while workers report metrics; KCL switches to 3.x when "
        "every lease owner reports and the GSI is ACTIVE for 10 minutes; can be rolled back"
    ),
    _V3X_WITH_ROLLBACK: "KCL 3.x functionality, can still be rolled back",
    _V3X: "migration complete (KCL 3.x); cannot be rolled back",
}


def _meaning(state: _State) -> str:
    if not state.exists:
        return f"no {MIGRATION_KEY} item: a KCL 2.x application, KCL 3.5 in Phase 1, or wrong application/table names"
    return _MEANINGS.get(state.client_version, "not a KCL client version: the tool refuses to act on it")


def _history_rows(history: Sequence[Any]) -> tuple[Mapping[str, Any], ...]:
    rows: list[Mapping[str, Any]] = []
    for entry in history:
        if isinstance(entry, Mapping):
            rows.append({"cv": entry.get("cv"), "mb": entry.get("mb"), "mts": entry.get("mts")})
        else:
            rows.append({"cv": None, "mb": None, "mts": None, "raw": repr(entry)})
    return tuple(rows)


def format_epoch_ms(value: object) -> str:
    """``mts`` as an ISO 8601 UTC time (or as given when it is not a number)."""
    if not _is_number(value):
        return "-" if value is None else str(value)
    assert isinstance(value, int | float)
    try:
        moment = datetime.fromtimestamp(value / 1000, tz=timezone.utc)
    except (OverflowError, OSError, ValueError):
        return str(value)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def status(
    target: MigrationTarget,
    backend: BackendConfig | None = None,
    *,
    dynamodb_client: DynamoDBClient | None = None,
    active_window_s: float = DEFAULT_ACTIVE_WINDOW_S,
    clock: Callable[[], float] = time.time,
) -> MigrationStatus:
    """Where the migration stands: the client version and its history, the GSI, and each live worker's mode
    (workers with a fresh metrics entry report a 3.x or upgrade mode — with their own ``cv`` when the entry
    carries one —; lease owners without one run 2.x). Reads only."""
    log = _Log(None)

    def ended(ok: bool, outcome: str, app: _App | None = None, **values: Any) -> MigrationStatus:
        return MigrationStatus(ok=ok, outcome=outcome, messages=tuple(log.messages), **_app_values(app, values))

    invalid = target.validation_error("status")
    if invalid is not None:
        log.own(invalid)
        return ended(False, "invalid-arguments")
    try:
        opened = _open(target, backend if backend is not None else BackendConfig(), dynamodb_client)
    except ConfigurationError as exc:
        log.own(str(exc))
        return ended(False, "invalid-arguments")
    if isinstance(opened, ShardwiseError):
        log.own(f"Could not determine the layout: {_error_text(opened)}")
        return ended(False, "read-failed")
    app = opened
    log.own(app.describe())
    errors: tuple[type[Exception], ...] = (ShardwiseError, *_botocore_errors())
    assert app.lease_table is not None
    tables = [("lease", app.lease_table)]
    if app.layout == "legacy":
        tables.append(("coordinator state", app.state_table))
    for kind, table in tables:
        try:
            exists = _table_exists(app, table)
        except errors as exc:
            log.own(f"Could not check {kind} table '{table}': {_error_text(exc)}")
            return ended(False, "table-check-failed", app)
        if not exists:
            where = f" (no database file {app.db_path})" if app.backend == "local" and app.store is None else ""
            log.own(f"The {kind} table '{table}' does not exist{where}: check the application and table names.")
            return ended(False, "lease-table-missing" if kind == "lease" else "coordinator-table-missing", app)
    try:
        state = _read_state(app)
    except ShardwiseError as exc:
        log.own(f"Could not read the {MIGRATION_KEY} item: {_error_text(exc)}")
        return ended(False, "read-failed", app)

    # GSI
    owner_index: str | None
    embedded = app.backend == "local"
    if embedded:
        owner_index = "ACTIVE"
    else:
        try:
            assert app.owner_index is not None
            owner_index = app.owner_index.owner_index_status()
        except ShardwiseError as exc:
            log.own(f"Could not read the GSI status: {_error_text(exc)}")
            owner_index = "UNKNOWN"

    # workers
    now = clock()
    fresh: dict[str, tuple[float, str | None]] = {}
    seen: dict[str, float | None] = {}
    records = []
    if app.worker_metrics is not None:
        try:
            records = app.worker_metrics.scan()
        except ResourceNotFoundError:
            records = []
            if app.layout == "legacy":
                log.own(f"The worker metrics table {app.worker_metrics_table} does not exist (no worker reports).")
        except ShardwiseError as exc:
            log.own(f"Could not read the worker metrics: {_error_text(exc)}")
    for record in records:
        lut = record.attributes.get("lut")
        age = now - float(lut) if _is_number(lut) else None
        seen[record.key] = age
        cv = record.attributes.get("cv")
        if age is not None and age <= active_window_s:
            fresh[record.key] = (age, cv if isinstance(cv, str) else None)
    owners: dict[str, int] = {}
    unassigned = 0
    assert app.store is not None
    try:
        for lease in app.store.list_leases():
            if lease.lease_owner:
                owners[lease.lease_owner] = owners.get(lease.lease_owner, 0) + 1
            else:
                unassigned += 1
    except ShardwiseError as exc:
        log.own(f"Could not list the leases: {_error_text(exc)}")
    workers: list[WorkerMode] = []
    for worker_id in sorted(set(fresh) | set(owners)):
        if worker_id in fresh:
            age, cv = fresh[worker_id]
            mode = cv if cv is not None else "reports metrics (UPGRADE_FROM_2X, 3X_WITH_ROLLBACK or 3X)"
            workers.append(WorkerMode(worker_id, mode, True, cv, age, owners.get(worker_id, 0)))
        else:
            workers.append(
                WorkerMode(worker_id, "2.x (no metrics)", False, None, seen.get(worker_id), owners[worker_id])
            )
    stale = tuple(sorted(key for key in seen if key not in fresh and key not in owners))
    modified_at = (
        state.modified_at if isinstance(state.modified_at, int) and not isinstance(state.modified_at, bool) else None
    )
    return ended(
        True,
        "ok",
        app,
        migration_item_exists=state.exists,
        client_version=state.client_version if state.exists else None,
        meaning=_meaning(state),
        modified_by=state.modified_by,
        modified_at_ms=modified_at,
        history=_history_rows(state.history),
        owner_index_status=owner_index,
        owner_index_embedded=embedded,
        workers=tuple(workers),
        stale_worker_metrics=stale,
        unassigned_leases=unassigned,
    )
