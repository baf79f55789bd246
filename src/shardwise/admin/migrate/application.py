"""The application ``shardwise migrate`` acts on, opened through the backend seam: its lease store, the item table
holding the ``Migration3.0`` item, the worker metrics, and its backend's table administration.

Nothing here knows a backend's classes: the layout is the one the backend detects (KCL 3.5's rule) unless the
legacy table names were given, the backend's capabilities say what exists, and an error's text is the
service's own where a service answered (:func:`shardwise.backends.service_error`), as the tool prints it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeGuard

from shardwise.admin.migrate.messages import (
    UNKNOWN,
    Mode,
    coordinator_table_not_found,
    lease_table_not_found,
    table_check_error,
    table_missing,
)
from shardwise.admin.migrate.results import Log
from shardwise.admin.migrate.target import MigrationTarget
from shardwise.backends import Backend, BackendConfig, Capabilities, TableAdmin, open_backend, service_error
from shardwise.errors import ConfigurationError, ShardwiseError
from shardwise.leases.store import LeaseStore
from shardwise.tables.items import ItemTable, Layout
from shardwise.versions.migration_state import MIGRATION_KEY, ClientVersion

if TYPE_CHECKING:
    from shardwise.backends import DynamoDBClient

__all__ = [
    "App",
    "State",
    "check_tables",
    "code_and_message",
    "error_text",
    "is_number",
    "open_application",
    "read_state",
    "table_exists",
]

_LEGACY_ON_SINGLE_TABLE_BACKEND = (
    "--coordinator_state_table_name / --worker_metrics_table_name name DynamoDB tables of the legacy layout; the "
    "embedded (SQLite) backend keeps the migration state in the lease table: pass --backend aws (with --region "
    "or --endpoint-url) or drop these options"
)


def _no_client(error: str) -> str:
    return f"cannot create a DynamoDB client: {error}; pass --region (or set AWS_REGION)"


def is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def error_text(exc: BaseException) -> str:
    """The error as the tool prints it: the service's error (botocore's text) behind a translated error, else
    the error itself."""
    fault = service_error(exc)
    return str(exc) if fault is None else fault.text


def code_and_message(exc: BaseException) -> tuple[str, str]:
    """The service's error code and message (the error's class name and text when no service answered)."""
    fault = service_error(exc)
    return (type(exc).__name__, str(exc)) if fault is None else (fault.code, fault.message)


@dataclass
class App:
    """The opened tables of one application.

    ``store``, ``coordinator`` and ``worker_metrics`` are ``None`` when the embedded backend's database file
    does not exist (``database_missing``: opening them would create it) — and ``store`` also for a legacy
    roll-forward named by its coordinator state table alone, ``worker_metrics`` when no worker-metrics table
    can be named.
    """

    backend: Backend
    admin: TableAdmin
    layout: Layout
    detected: bool
    lease_table: str | None
    state_table: str
    worker_metrics_table: str | None
    store: LeaseStore | None
    coordinator: ItemTable | None
    worker_metrics: ItemTable | None
    database_missing: bool = False

    @property
    def capabilities(self) -> Capabilities:
        return self.backend.capabilities

    @property
    def backend_name(self) -> str:
        """``local`` or ``aws``, as ``--backend`` and the JSON result name it."""
        return self.capabilities.name

    def describe(self) -> str:
        database = self.admin.database_file
        where = "DynamoDB" if database is None else f"the embedded (SQLite) backend, {database}"
        if self.layout == "single-table":
            table = f"lease table '{self.state_table}' (single-table layout, KCL 3.5"
        else:
            table = f"coordinator state table '{self.state_table}' (legacy layout, KCL 3.0–3.4"
        how = ", detected" if self.detected else ""
        return f"Migration state: item '{MIGRATION_KEY}' in {table}{how}) in {where}."

    def values(self, values: dict[str, Any]) -> dict[str, Any]:
        """``values`` with the backend, layout and table names of a result added where not given."""
        values.setdefault("backend", self.backend_name)
        values.setdefault("layout", self.layout)
        values.setdefault("lease_table", self.lease_table)
        values.setdefault("state_table", self.state_table)
        values.setdefault("worker_metrics_table", self.worker_metrics_table)
        return values


def _open_backend(config: BackendConfig, client: DynamoDBClient | None) -> Backend:
    try:
        return open_backend(config, dynamodb_client=client)
    except ConfigurationError as exc:
        fault = service_error(exc)  # the SDK could not build a client: say so in the CLI's terms
        if fault is None:
            raise
        raise ConfigurationError(_no_client(fault.text)) from exc


def open_application(
    target: MigrationTarget, config: BackendConfig, client: DynamoDBClient | None
) -> App | ShardwiseError:
    """Open the application's tables; a ``ShardwiseError`` (returned, not raised) if the layout could not be
    determined. Invalid arguments raise ``ConfigurationError``."""
    backend = _open_backend(config, client)
    capabilities = backend.capabilities
    if target.legacy_arguments and not capabilities.legacy_layout:
        raise ConfigurationError(_LEGACY_ON_SINGLE_TABLE_BACKEND)
    admin = backend.table_admin()
    lease_table = target.lease_table
    if not admin.database_exists():
        if lease_table is None:  # pragma: no cover - excluded by validation_error
            raise ConfigurationError("a lease table name or application name is required")
        return App(backend, admin, "single-table", False, lease_table, lease_table, lease_table, None, None, None, True)
    store = backend.open_lease_store(lease_table) if lease_table else None
    coordinator_name = target.coordinator_table
    if not target.legacy_arguments:
        if store is None or lease_table is None:  # pragma: no cover - excluded by validation_error
            raise ConfigurationError("a lease table name or application name is required")
        detect = capabilities.legacy_layout and bool(target.application_name) and coordinator_name is not None
        try:
            tables = backend.open_coordinator_tables(
                store, target.application_name or lease_table, layout=None if detect else "single-table"
            )
        except ShardwiseError as exc:
            if not detect:
                raise
            return exc
        if tables.layout == "single-table":
            return App(
                backend,
                admin,
                "single-table",
                detect,
                lease_table,
                lease_table,
                lease_table,
                store,
                tables.coordinator,
                tables.worker_metrics,
            )
        assert coordinator_name is not None
        return App(
            backend,
            admin,
            "legacy",
            True,
            lease_table,
            coordinator_name,
            target.worker_metrics_table,
            store,
            tables.coordinator,
            tables.worker_metrics,
        )
    if coordinator_name is None:  # pragma: no cover - excluded by validation_error
        raise ConfigurationError("a coordinator state table name or application name is required")
    metrics_name = target.worker_metrics_table
    return App(
        backend,
        admin,
        "legacy",
        False,
        lease_table,
        coordinator_name,
        metrics_name,
        store,
        backend.open_legacy_item_table(coordinator_name, "coordinator"),
        None if metrics_name is None else backend.open_legacy_item_table(metrics_name, "worker-metrics"),
    )


@dataclass(frozen=True, slots=True)
class State:
    """The ``Migration3.0`` item as the tool reads it (missing values as the tool defaults them): unlike
    :class:`~shardwise.versions.migration_state.MigrationState`, which a worker parses strictly, any item is
    readable here, so that the tool can say what it found."""

    exists: bool
    client_version: str
    modified_by: str | None
    modified_at: object
    history: tuple[Any, ...]

    @property
    def version(self) -> ClientVersion | None:
        """The client version, if ``cv`` names one."""
        try:
            return ClientVersion(self.client_version)
        except ValueError:
            return None

    def history_entry(self, now_ms: int) -> dict[str, Any]:
        """``{cv, mb, mts}`` of the current values ('Unknown' / now when missing), as the tool builds it."""
        mts = self.modified_at if is_number(self.modified_at) else now_ms
        return {"cv": self.client_version, "mb": self.modified_by or UNKNOWN, "mts": mts}


def read_state(app: App) -> State:
    assert app.coordinator is not None
    record = app.coordinator.get(MIGRATION_KEY)
    if record is None:
        return State(False, UNKNOWN, None, None, ())
    attributes = record.attributes
    cv = attributes.get("cv")
    mb = attributes.get("mb")
    history = attributes.get("h")
    return State(
        True,
        cv if isinstance(cv, str) else UNKNOWN,
        mb if isinstance(mb, str) else None,
        attributes.get("mts"),
        tuple(history) if isinstance(history, list) else (),
    )


def table_exists(app: App, table: str) -> bool:
    """Whether the table exists (any status, as the tool's ``DescribeTable`` check). Errors propagate."""
    return not app.database_missing and app.admin.table_status(table) is not None


def check_tables(log: Log, app: App, mode: Mode) -> str | None:
    """The tool's ``validate_tables``: the lease table (unless a legacy roll-forward, which the KCL 3.0–3.4
    tool does without it), then, in the legacy layout, the coordinator state table. An outcome on failure."""
    checks: list[tuple[str, str]] = []
    if app.layout == "single-table" or mode == "rollback":
        assert app.lease_table is not None
        checks.append(("lease", app.lease_table))
    if app.layout == "legacy":
        checks.append(("coordinator", app.state_table))
    for kind, table in checks:
        failed = False
        try:
            exists = table_exists(app, table)
        except ShardwiseError as exc:
            log.tool(table_check_error(table, error_text(exc)))
            exists, failed = False, True
        else:
            if not exists:
                log.tool(table_missing(table))
        if exists:
            continue
        if kind == "lease":
            log.tool(lease_table_not_found(mode, table))
            if app.database_missing:
                log.own(
                    f"(There is no database file {app.admin.database_file}: pass the --db of the application's "
                    "workers.)"
                )
        else:
            log.tool(coordinator_table_not_found(mode, table))
        if failed:
            return "table-check-failed"
        return "lease-table-missing" if kind == "lease" else "coordinator-table-missing"
    return None
