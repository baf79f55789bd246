"""Rollback and roll-forward: the tool's preconditions and its conditional write of the ``Migration3.0`` item
(kcl-protocol.md §1.2–§1.3), then, for a rollback, the clean-up (:mod:`~shardwise.admin.migrate.cleanup`).

Both directions share one flow — check the arguments, open and check the tables, read the state, refuse the
client versions the direction does not act on, write the new version — and differ only in a
:class:`_Direction`: the versions accepted and refused, the version written, and the tool's lines. The write is
conditional on the ``cv`` **and** ``mts`` that were read, so a concurrent writer (or an A→B→A sequence in
between) makes it fail with the tool's conditional-failure message instead of overwriting a state — and a
history — it never saw.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shardwise.admin.migrate.application import (
    App,
    State,
    check_tables,
    code_and_message,
    error_text,
    open_application,
    read_state,
)
from shardwise.admin.migrate.cleanup import (
    DEFAULT_ACTIVE_WINDOW_S,
    DEFAULT_GSI_TIMEOUT_S,
    DEFAULT_POLL_INTERVAL_S,
    DEFAULT_WAIT_TIMEOUT_S,
    Pacing,
    clean_up,
)
from shardwise.admin.migrate.messages import (
    ALREADY_2X,
    GSI_NAME,
    MODIFIED_BY_ROLLBACK,
    MODIFIED_BY_ROLLFORWARD,
    READ_RETRY,
    ROLLBACK_ALREADY_DONE,
    ROLLBACK_CONDITION_FAILED,
    ROLLBACK_DONE_FROM_3X,
    ROLLBACK_DONE_FROM_UPGRADE,
    ROLLBACK_NOT_IN_PROGRESS,
    ROLLBACK_REFUSED_3X,
    ROLLFORWARD_ALREADY_MIGRATED,
    ROLLFORWARD_CONDITION_FAILED,
    ROLLFORWARD_INITIATED,
    ROLLFORWARD_NOT_IN_PROGRESS,
    ROLLFORWARD_NOT_ROLLED_BACK,
    THROUGHPUT_EXCEEDED,
    UNKNOWN,
    Mode,
    operation,
    rollback_error,
    rollforward_error,
    rolling_back,
)
from shardwise.admin.migrate.results import Log, Message, MigrationResult
from shardwise.admin.migrate.target import MigrationTarget
from shardwise.backends import BackendConfig
from shardwise.errors import ConfigurationError, ShardwiseError
from shardwise.tables.items import ABSENT
from shardwise.versions.migration_state import HISTORY_LIMIT, MIGRATION_KEY, ClientVersion

if TYPE_CHECKING:
    from shardwise.backends import DynamoDBClient

__all__ = ["rollback", "rollforward"]


def _result(
    log: Log,
    mode: Mode,
    dry_run: bool,
    end: tuple[bool, str],
    app: App | None = None,
    /,
    **values: Any,
) -> MigrationResult:
    ok, outcome = end
    if app is not None:
        values = app.values(values)
    return MigrationResult(mode=mode, ok=ok, outcome=outcome, dry_run=dry_run, messages=tuple(log.messages), **values)


def _read_failed(log: Log, mode: Mode, exc: BaseException) -> None:
    log.tool(f"{operation(mode)} could not be performed.")
    code, message = code_and_message(exc)
    if code == THROUGHPUT_EXCEEDED:
        log.tool(f"Throughput exceeded even after retries: {message}")
    else:
        log.tool(f"Unexpected client error occurred: {code} - {message}")
    log.tool(READ_RETRY)


def _not_a_version_note(app: App, state: State) -> str:
    if not state.exists:
        return (
            f"(There is no '{MIGRATION_KEY}' item in table '{app.state_table}': the application never started a "
            "KCL 3.x migration, runs KCL 3.5 in Phase 1, or the names are wrong — see `shardwise migrate status`.)"
        )
    if state.client_version == UNKNOWN:
        return f"(The '{MIGRATION_KEY}' item in table '{app.state_table}' has no string attribute cv.)"
    return f"(The '{MIGRATION_KEY}' item in table '{app.state_table}' has cv {state.client_version!r}.)"


def _transition(
    app: App, state: State, to: ClientVersion, modified_by: str, now_ms: int
) -> tuple[bool, dict[str, Any]]:
    """Write ``cv = to`` conditional on ``cv`` and ``mts`` being what was read; (won, history entry)."""
    assert app.coordinator is not None
    entry = state.history_entry(now_ms)
    history = [entry, *state.history][:HISTORY_LIMIT]
    record = app.coordinator.update(
        MIGRATION_KEY,
        set_attributes={"cv": to.value, "mts": now_ms, "mb": modified_by, "h": history},
        expect={"cv": state.client_version, "mts": ABSENT if state.modified_at is None else state.modified_at},
    )
    return record is not None, entry


def _report_lost_race(log: Log, app: App) -> None:
    try:
        now = read_state(app)
    except ShardwiseError:
        return
    log.own(
        f"(The migration state changed after it was read: cv is now {now.client_version}, modified by "
        f"{now.modified_by or UNKNOWN}. Check `shardwise migrate status` before trying again.)"
    )


@dataclass(frozen=True, slots=True)
class _Direction:
    """What differs between a rollback and a roll-forward up to the write of the new client version (see
    :func:`_start` and :func:`_write`): the versions acted on, the refusals and the tool's lines."""

    mode: Mode
    #: The client versions it acts on; any other is refused.
    accepts: frozenset[ClientVersion]
    #: Refused versions → (outcome, the tool's line, shardwise's note or ``None``); any other version not
    #: accepted (or a ``cv`` that is no version) is "not-in-progress" with ``not_in_progress`` and a note on
    #: what was found.
    refusals: Mapping[ClientVersion, tuple[str, str, str | None]]
    not_in_progress: str
    to: ClientVersion
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
    log: Log,
    target: MigrationTarget,
    backend: BackendConfig | None,
    client: DynamoDBClient | None,
    *,
    dry_run: bool,
) -> tuple[App, State] | MigrationResult:
    """Validate, open and check the tables, read the migration state and refuse the versions ``direction``
    does not act on: the app and the state, or the result of an early end."""
    mode = direction.mode
    invalid = target.validation_error(mode)
    if invalid is not None:
        log.tool(invalid)
        return _result(log, mode, dry_run, (False, "invalid-arguments"))
    try:
        opened = open_application(target, backend if backend is not None else BackendConfig(), client)
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
    failure = check_tables(log, app, mode)
    if failure is not None:
        return _result(log, mode, dry_run, (False, failure), app)
    try:
        state = read_state(app)
    except ShardwiseError as exc:
        _read_failed(log, mode, exc)
        return _result(log, mode, dry_run, (False, "read-failed"), app)
    version = state.version
    if version in direction.accepts:
        return app, state
    refusal = None if version is None else direction.refusals.get(version)
    if refusal is None:
        refusal = ("not-in-progress", direction.not_in_progress, _not_a_version_note(app, state))
    outcome, line, note = refusal
    log.tool(line)
    if note is not None:
        log.own(note)
    previous = state.client_version
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
    direction: _Direction, log: Log, app: App, state: State, *, dry_run: bool, clock: Callable[[], float]
) -> dict[str, Any] | MigrationResult:
    """Write ``cv = direction.to`` conditional on the ``cv`` and ``mts`` read (in a dry run: say what would be
    written): the history entry pushed, or the result of a failed write."""
    previous = state.client_version
    to = direction.to.value
    now_ms = int(clock() * 1000)
    if dry_run:
        entry = state.history_entry(now_ms)
        log.own(
            f"Would roll {direction.verb} the client version in table '{app.state_table}': cv {previous} -> "
            f"{to}, mb {direction.modified_by}, history entry {entry} pushed (conditional on cv = "
            f"{previous} and mts unchanged)."
        )
        return entry
    if direction.writing is not None:
        log.tool(direction.writing(app.state_table))
    mode = direction.mode
    try:
        won, entry = _transition(app, state, direction.to, direction.modified_by, now_ms)
    except ShardwiseError as exc:
        log.tool(direction.write_error(error_text(exc)))
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
    log.own(f"Client version in table '{app.state_table}' is now {to} (was {previous}).")
    return entry


# ------------------------------------------------------------------------------------------------- rollback

_ROLLBACK = _Direction(
    mode="rollback",
    accepts=frozenset({ClientVersion.V2X, ClientVersion.UPGRADE_FROM_2X, ClientVersion.V3X_WITH_ROLLBACK}),
    refusals={
        ClientVersion.V3X: (
            "not-rollbackable",
            ROLLBACK_REFUSED_3X,
            "(CLIENT_VERSION_3X is final: the migration has completed and cannot be rolled back.)",
        )
    },
    not_in_progress=ROLLBACK_NOT_IN_PROGRESS,
    to=ClientVersion.V2X,
    modified_by=MODIFIED_BY_ROLLBACK,
    verb="back",
    writing=rolling_back,
    write_error=rollback_error,
    condition_failed=ROLLBACK_CONDITION_FAILED,
    written=None,
)


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
    pacing = Pacing(wait, wait_timeout_s, poll_interval_s, gsi_timeout_s, active_window_s, clock, sleep)
    log = Log(on_message)
    started = _start(_ROLLBACK, log, target, backend, dynamodb_client, dry_run=dry_run)
    if isinstance(started, MigrationResult):
        return started
    app, state = started
    previous = state.client_version
    version = state.version
    entry: dict[str, Any] | None = None
    if version is ClientVersion.V2X:
        log.tool(ALREADY_2X)
    else:
        written = _write(_ROLLBACK, log, app, state, dry_run=dry_run, clock=clock)
        if isinstance(written, MigrationResult):
            return written
        entry = written

    cleanup = clean_up(log, app, pacing, dry_run=dry_run)
    outcome = "already-rolled-back" if version is ClientVersion.V2X else "rolled-back"
    if dry_run:
        verdict = "would succeed" if cleanup.ok else "would not complete its clean-up"
        log.own(f"Dry run complete: nothing was changed. The rollback {verdict}.")
    else:
        if version is ClientVersion.UPGRADE_FROM_2X:
            log.tool(*ROLLBACK_DONE_FROM_UPGRADE)
        elif version is ClientVersion.V3X_WITH_ROLLBACK:
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
        client_version=previous if dry_run else ClientVersion.V2X.value,
        history_entry=entry,
        cleanup=cleanup,
    )


# ---------------------------------------------------------------------------------------------- roll-forward

_ROLLFORWARD = _Direction(
    mode="rollforward",
    accepts=frozenset({ClientVersion.V2X}),
    refusals={
        ClientVersion.UPGRADE_FROM_2X: ("not-rolled-back", ROLLFORWARD_NOT_ROLLED_BACK, None),
        ClientVersion.V3X_WITH_ROLLBACK: ("not-rolled-back", ROLLFORWARD_NOT_ROLLED_BACK, None),
        ClientVersion.V3X: ("already-migrated", ROLLFORWARD_ALREADY_MIGRATED, None),
    },
    not_in_progress=ROLLFORWARD_NOT_IN_PROGRESS,
    to=ClientVersion.UPGRADE_FROM_2X,
    modified_by=MODIFIED_BY_ROLLFORWARD,
    verb="forward",
    writing=None,
    write_error=rollforward_error,
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
    log = Log(on_message)
    started = _start(_ROLLFORWARD, log, target, backend, dynamodb_client, dry_run=dry_run)
    if isinstance(started, MigrationResult):
        return started
    app, state = started
    entry = _write(_ROLLFORWARD, log, app, state, dry_run=dry_run, clock=clock)
    if isinstance(entry, MigrationResult):
        return entry
    if dry_run:
        log.own("Dry run complete: nothing was changed. The roll-forward would succeed.")
    elif app.capabilities.kcl_3x_resources:
        recreated = f"GSI {GSI_NAME}"
        if app.layout == "legacy":
            recreated += f" and the worker metrics table {app.worker_metrics_table or ''}".rstrip()
        log.own(
            f"KCL workers re-create {recreated} and report worker metrics again once they see the new version "
            "(they check every 60 s); the switch to 3.x follows after every worker reports for 10 minutes."
        )
    v2x = ClientVersion.V2X.value
    return _result(
        log,
        "rollforward",
        dry_run,
        (True, "rolled-forward"),
        app,
        previous_client_version=v2x,
        client_version=v2x if dry_run else ClientVersion.UPGRADE_FROM_2X.value,
        history_entry=entry,
    )
