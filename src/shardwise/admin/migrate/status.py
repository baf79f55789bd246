"""``shardwise migrate status``: where a KCL 2.x → 3.x migration stands — the ``Migration3.0`` item and its history,
the owner index (GSI), and each live worker's mode as far as the tables tell. Reads only; something the tool
itself does not offer."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from shardwise.admin.migrate.application import (
    App,
    State,
    error_text,
    is_number,
    open_application,
    read_state,
    table_exists,
)
from shardwise.admin.migrate.cleanup import DEFAULT_ACTIVE_WINDOW_S
from shardwise.admin.migrate.results import Log, MigrationStatus, WorkerMode
from shardwise.admin.migrate.target import MigrationTarget
from shardwise.backends import BackendConfig
from shardwise.errors import ConfigurationError, ResourceNotFoundError, ShardwiseError
from shardwise.versions.migration_state import MIGRATION_KEY, ClientVersion

if TYPE_CHECKING:
    from shardwise.backends import DynamoDBClient

__all__ = ["format_epoch_ms", "status"]

_MEANINGS = {
    ClientVersion.V2X: (
        "rolled back: 2.x compatible mode (no worker metrics, no GSI needed); `rollforward` resumes the migration"
    ),
    ClientVersion.UPGRADE_FROM_2X: (
        "upgrading from 2.x: 2.x compatible assignment while workers report metrics; KCL switches to 3.x when "
        "every lease owner reports and the GSI is ACTIVE for 10 minutes; can be rolled back"
    ),
    ClientVersion.V3X_WITH_ROLLBACK: "KCL 3.x functionality, can still be rolled back",
    ClientVersion.V3X: "migration complete (KCL 3.x); cannot be rolled back",
}


def _meaning(state: State) -> str:
    if not state.exists:
        return f"no {MIGRATION_KEY} item: a KCL 2.x application, KCL 3.5 in Phase 1, or wrong application/table names"
    version = state.version
    meaning = None if version is None else _MEANINGS.get(version)
    return "not a KCL client version: the tool refuses to act on it" if meaning is None else meaning


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
    if not is_number(value):
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
    log = Log(None)

    def ended(ok: bool, outcome: str, app: App | None = None, **values: Any) -> MigrationStatus:
        if app is not None:
            values = app.values(values)
        return MigrationStatus(ok=ok, outcome=outcome, messages=tuple(log.messages), **values)

    invalid = target.validation_error("status")
    if invalid is not None:
        log.own(invalid)
        return ended(False, "invalid-arguments")
    try:
        opened = open_application(target, backend if backend is not None else BackendConfig(), dynamodb_client)
    except ConfigurationError as exc:
        log.own(str(exc))
        return ended(False, "invalid-arguments")
    if isinstance(opened, ShardwiseError):
        log.own(f"Could not determine the layout: {error_text(opened)}")
        return ended(False, "read-failed")
    app = opened
    log.own(app.describe())
    assert app.lease_table is not None
    tables = [("lease", app.lease_table)]
    if app.layout == "legacy":
        tables.append(("coordinator state", app.state_table))
    for kind, table in tables:
        try:
            exists = table_exists(app, table)
        except ShardwiseError as exc:
            log.own(f"Could not check {kind} table '{table}': {error_text(exc)}")
            return ended(False, "table-check-failed", app)
        if not exists:
            where = f" (no database file {app.admin.database_file})" if app.database_missing else ""
            log.own(f"The {kind} table '{table}' does not exist{where}: check the application and table names.")
            return ended(False, "lease-table-missing" if kind == "lease" else "coordinator-table-missing", app)
    try:
        state = read_state(app)
    except ShardwiseError as exc:
        log.own(f"Could not read the {MIGRATION_KEY} item: {error_text(exc)}")
        return ended(False, "read-failed", app)

    # GSI
    owner_index: str | None
    embedded = not app.capabilities.kcl_3x_resources
    if embedded:
        owner_index = "ACTIVE"
    else:
        try:
            owner_index = app.admin.owner_index_status(app.lease_table)
        except ShardwiseError as exc:
            log.own(f"Could not read the GSI status: {error_text(exc)}")
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
            log.own(f"Could not read the worker metrics: {error_text(exc)}")
    for record in records:
        lut = record.attributes.get("lut")
        age = now - float(lut) if is_number(lut) else None
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
        log.own(f"Could not list the leases: {error_text(exc)}")
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
