"""A rollback's clean-up (kcl-protocol.md §1.4): wait until no worker runs in a KCL 3.x mode any more, then delete
the KCL 3.x resources — the owner index (GSI) and, in the legacy layout, the worker-metrics table, never the
coordinator state table — and verify they are gone.

Where the tool sleeps 120 s blindly, shardwise watches the worker metrics (KCL workers stop reporting in 2.x
compatible mode), with a timeout; where the tool swallows errors, shardwise reports them. Deletions go through
the backend's :class:`~shardwise.backends.port.TableAdmin`; the service's error codes decide the tool's line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from shardwise.admin.migrate.application import App, error_text, is_number
from shardwise.admin.migrate.messages import (
    ACCESS_DENIED,
    GSI_NAME,
    IN_USE,
    NOT_FOUND,
    gsi_absent,
    gsi_check_error,
    gsi_delete_error,
    gsi_deleting,
    gsi_in_use,
    gsi_lease_table_missing,
    gsi_not_found,
    metrics_table_absent,
    metrics_table_access_denied,
    metrics_table_check_error,
    metrics_table_client_error,
    metrics_table_deleting,
    metrics_table_error,
)
from shardwise.admin.migrate.results import CleanupReport, Log, StepOutcome, WaitOutcome
from shardwise.backends import TableAdmin, service_error
from shardwise.errors import ResourceNotFoundError, ShardwiseError
from shardwise.versions.migration_state import ClientVersion

__all__ = [
    "DEFAULT_ACTIVE_WINDOW_S",
    "DEFAULT_GSI_TIMEOUT_S",
    "DEFAULT_POLL_INTERVAL_S",
    "DEFAULT_WAIT_TIMEOUT_S",
    "Pacing",
    "clean_up",
]

DEFAULT_WAIT_TIMEOUT_S = 300.0
DEFAULT_POLL_INTERVAL_S = 5.0
DEFAULT_GSI_TIMEOUT_S = 600.0
#: A worker-metrics entry is active while its ``lut`` is at most 2 × the reporter period (30 s) old (§5.3).
DEFAULT_ACTIVE_WINDOW_S = 60.0

#: Worker-reported versions (attribute ``cv`` of a metrics entry) that mean "no longer in a 3.x mode".
_LEFT_3X_VERSIONS = frozenset({ClientVersion.V2X.value, ClientVersion.INIT.value})


@dataclass(frozen=True, slots=True)
class Pacing:
    """How a rollback's clean-up waits: for workers to leave KCL 3.x mode (``wait``, up to
    ``wait_timeout_s``), for deletions to finish (up to ``gsi_timeout_s``), polling every ``poll_s``."""

    wait: bool
    wait_timeout_s: float
    poll_s: float
    gsi_timeout_s: float
    active_window_s: float
    clock: Callable[[], float]
    sleep: Callable[[float], None]


def _workers_in_3x_mode(app: App, now_s: float, active_window_s: float) -> list[str]:
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
        if not is_number(lut) or now_s - float(lut) > active_window_s:
            continue
        cv = record.attributes.get("cv")
        if isinstance(cv, str) and cv in _LEFT_3X_VERSIONS:
            continue
        found.append(record.key)
    return sorted(found)


def clean_up(log: Log, app: App, pacing: Pacing, *, dry_run: bool) -> CleanupReport:
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

    resources = app.capabilities.kcl_3x_resources
    if not resources:
        owner_index: StepOutcome = "not-applicable"
        log.own(
            f"The embedded (SQLite) backend has no GSI {GSI_NAME} to delete (its owner index is part of the "
            "schema) and keeps worker metrics in the lease table: nothing to clean up."
        )
    else:
        owner_index = _delete(_OWNER_INDEX, log, app, pacing, dry_run=dry_run)
    metrics_table: StepOutcome = "not-applicable"
    if resources and app.layout == "legacy" and app.worker_metrics_table is not None:
        metrics_table = _delete(_METRICS_TABLE, log, app, pacing, dry_run=dry_run)
        log.own(f"The coordinator state table {app.state_table} is kept: it holds the migration state.")
    return CleanupReport(wait_outcome, waited, remaining, owner_index, metrics_table)


def _wait_for_workers(log: Log, app: App, pacing: Pacing) -> tuple[WaitOutcome, float, tuple[str, ...]]:
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
            if app.capabilities.kcl_3x_resources:
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
    table: Callable[[App], str | None]
    #: Its status; ``None`` when it does not exist. Raises ``ResourceNotFoundError`` when the table it lives in
    #: does not exist (the GSI's lease table), other ``ShardwiseError``\ s when the check fails.
    status: Callable[[TableAdmin, str], str | None]
    #: Start deleting it.
    delete: Callable[[TableAdmin, str], None]
    #: Its status while deleting; ``None`` when it is gone. May raise ``ShardwiseError``, shown with
    #: ``verify_error_text``.
    probe: Callable[[TableAdmin, str], str | None]
    verify_error_text: Callable[[BaseException], str]
    tool_check_error: Callable[[str, str], str]
    #: The line when the table itself does not exist, which fails the step; ``None``: then it is absent too.
    tool_table_missing: Callable[[str], str] | None
    tool_absent: Callable[[str], str]
    tool_deleting: Callable[[str], str]
    #: The line when the service answers the delete with ``ResourceNotFoundException``, if the tool prints one.
    tool_not_found: Callable[[str], str] | None
    #: The line when the service refuses the delete (given its error code and the error's text).
    tool_client_error: Callable[[str, str, str], str]
    #: The line when the delete gets no answer (given the error's text).
    tool_error: Callable[[str, str], str]
    own_would_delete: Callable[[str, str], str]
    own_already_deleting: Callable[[str], str]
    own_busy: Callable[[str, float], str]
    own_verify_error: Callable[[str, str], str]
    own_gone: Callable[[str], str]
    own_still_there: Callable[[str, str, float], str]
    #: The line announcing the wait for the deletion to finish (given the status), if one is shown.
    own_waiting: Callable[[str, str], str] | None


def _delete(spec: _Deletion, log: Log, app: App, pacing: Pacing, *, dry_run: bool) -> StepOutcome:
    """Delete what ``spec`` describes (retrying while its table is being modified) and verify it is gone."""
    admin, table = app.admin, spec.table(app)
    assert table is not None
    clock, sleep, poll_s, timeout_s = pacing.clock, pacing.sleep, pacing.poll_s, pacing.gsi_timeout_s
    status: str | None
    try:
        status = spec.status(admin, table)
    except ResourceNotFoundError:
        if spec.tool_table_missing is not None:
            log.tool(spec.tool_table_missing(table))
            return "failed"
        status = None
    except ShardwiseError as exc:
        log.tool(spec.tool_check_error(table, error_text(exc)))
        return "failed"
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
                spec.delete(admin, table)
            except ShardwiseError as exc:
                fault = service_error(exc)
                if fault is None or not fault.answered:
                    log.tool(spec.tool_error(table, error_text(exc)))
                    return "failed"
                if fault.code == NOT_FOUND:
                    if spec.tool_not_found is not None:
                        log.tool(spec.tool_not_found(table))
                    break  # gone already, or the table is: the verification below tells which
                if fault.code == IN_USE and clock() < deadline:
                    log.own(spec.own_busy(table, poll_s))
                    sleep(poll_s)
                    continue
                log.tool(spec.tool_client_error(table, fault.code, fault.text))
                return "failed"
            break
    announced = False
    while True:
        try:
            current = spec.probe(admin, table)
        except ShardwiseError as exc:
            log.own(spec.own_verify_error(table, spec.verify_error_text(exc)))
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


_OWNER_INDEX = _Deletion(
    table=lambda app: app.lease_table,
    status=lambda admin, table: admin.owner_index_status(table),
    delete=lambda admin, table: admin.delete_owner_index(table),
    probe=lambda admin, table: admin.owner_index_status(table),
    verify_error_text=str,
    tool_check_error=gsi_check_error,
    tool_table_missing=gsi_lease_table_missing,
    tool_absent=gsi_absent,
    tool_deleting=gsi_deleting,
    tool_not_found=gsi_not_found,
    tool_client_error=lambda table, code, error: (
        gsi_in_use(table) if code == IN_USE else gsi_delete_error(table, error)
    ),
    tool_error=gsi_delete_error,
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
    status=lambda admin, table: admin.table_status(table),
    delete=lambda admin, table: admin.delete_table(table),
    probe=lambda admin, table: admin.table_status(table),
    verify_error_text=error_text,
    tool_check_error=metrics_table_check_error,
    tool_table_missing=None,
    tool_absent=metrics_table_absent,
    tool_deleting=metrics_table_deleting,
    tool_not_found=None,
    tool_client_error=lambda table, code, error: (
        metrics_table_access_denied(table) if code == ACCESS_DENIED else metrics_table_client_error(error)
    ),
    tool_error=lambda _table, error: metrics_table_error(error),
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
