"""``shardwise migrate rollback | rollforward | status``: KclMigrationTool.py's job, from the shardwise CLI.

Both spellings work::

    shardwise migrate rollback --application-name orders --region eu-west-1
    shardwise migrate --mode rollback --application_name orders --region eu-west-1   # the tool's arguments

Exit status: 0 on success (including "already rolled back"), 1 on any failure or refused precondition,
2 on usage errors (the tool's argument messages included).
"""

from __future__ import annotations

import json
from typing import Any, Literal

import click

from shardwise.admin import migrate as admin
from shardwise.cli._options import DB_OPTION, apply_options, backend_from_target_options
from shardwise.cli._output import echo_table
from shardwise.config import BackendConfig
from shardwise.errors import ConfigurationError

__all__ = ["migrate"]

Command = Literal["rollback", "rollforward", "status"]

_BACKEND_HELP = (
    "local: the SQLite file --db; aws: DynamoDB. [default: aws when --region or --endpoint-url is given, "
    "else local — unlike other commands, whose default is always local]"
)

_TARGET_OPTIONS = [
    click.option(
        "--application-name",
        "--application_name",
        "--app",
        "application_name",
        default=None,
        help="The KCL application name (names the lease table and, in the legacy layout, the coordinator "
        "state and worker metrics tables).",
    ),
    click.option(
        "--lease-table-name",
        "--lease_table_name",
        "lease_table_name",
        default=None,
        help="Lease table, if it is not named after the application.",
    ),
    click.option(
        "--coordinator-state-table-name",
        "--coordinator_state_table_name",
        "coordinator_state_table_name",
        default=None,
        help="Legacy layout (KCL 3.0–3.4): the coordinator state table [default: <app>-CoordinatorState]. "
        "Giving it (or --worker_metrics_table_name) selects the legacy layout and the 3.0–3.4 tool's rules.",
    ),
    click.option(
        "--worker-metrics-table-name",
        "--worker_metrics_table_name",
        "worker_metrics_table_name",
        default=None,
        help="Legacy layout: the worker metrics table [default: <app>-WorkerMetricStats].",
    ),
    click.option("--backend", type=click.Choice(["local", "aws"]), default=None, help=_BACKEND_HELP),
    DB_OPTION,
    click.option("--region", default=None, help="AWS region (selects the aws backend)."),
    click.option(
        "--endpoint-url", "--endpoint_url", "endpoint_url", default=None, help="DynamoDB endpoint override (aws)."
    ),
    click.option(
        "--json",
        "as_json",
        is_flag=True,
        default=False,
        help="Print one JSON object on stdout (progress lines go to stderr).",
    ),
]

_CHANGE_OPTIONS = [
    click.option(
        "--dry-run",
        "--dry_run",
        "dry_run",
        is_flag=True,
        default=False,
        help="Read everything, print what would change, write nothing.",
    ),
]

_ROLLBACK_OPTIONS = [
    click.option(
        "--no-wait",
        "no_wait",
        is_flag=True,
        default=False,
        help="Clean up at once instead of waiting for workers to leave KCL 3.x mode.",
    ),
    click.option(
        "--wait-timeout",
        type=click.FloatRange(min=0),
        default=None,
        help=f"Seconds to wait for workers to leave KCL 3.x mode. [default: {admin.DEFAULT_WAIT_TIMEOUT_S:g}]",
    ),
    click.option(
        "--gsi-timeout",
        type=click.FloatRange(min=0),
        default=None,
        help=f"Seconds to wait for DynamoDB to finish deleting the GSI (and the legacy worker metrics table). "
        f"[default: {admin.DEFAULT_GSI_TIMEOUT_S:g}]",
    ),
    click.option(
        "--poll-interval",
        type=click.FloatRange(min=0.01),
        default=None,
        help=f"Seconds between checks while waiting. [default: {admin.DEFAULT_POLL_INTERVAL_S:g}]",
    ),
]


def _merged(ctx: click.Context, params: dict[str, Any]) -> dict[str, Any]:
    """Subcommand values, completed by those given before the subcommand (``migrate --app X rollback``)."""
    parent = ctx.parent.params if ctx.parent is not None else {}
    merged = dict(parent)
    merged.pop("mode", None)
    for name, value in params.items():
        if value is not None and value is not False:
            merged[name] = value
        else:
            merged.setdefault(name, value)
    return merged


def _backend(params: dict[str, Any]) -> BackendConfig:
    try:
        return backend_from_target_options(
            params,
            local_with_aws="--region and --endpoint-url select DynamoDB; with --backend local the migration state "
            "is read from the SQLite file --db. Drop one or the other.",
        )
    except ConfigurationError as exc:
        raise click.UsageError(str(exc)) from None


def _target(params: dict[str, Any]) -> admin.MigrationTarget:
    return admin.MigrationTarget(
        application_name=params.get("application_name") or None,
        lease_table_name=params.get("lease_table_name") or None,
        coordinator_state_table_name=params.get("coordinator_state_table_name") or None,
        worker_metrics_table_name=params.get("worker_metrics_table_name") or None,
    )


def _echo(message: admin.Message) -> None:
    click.echo(message.text)


def _echo_progress(message: admin.Message) -> None:
    """With --json, stdout carries the one JSON object; the lines still show progress on stderr."""
    click.echo(message.text, err=True)


def _execute(ctx: click.Context, command: Command, params: dict[str, Any]) -> None:
    target = _target(params)
    problem = target.validation_error(command)
    if problem is not None:
        raise click.UsageError(problem, ctx=ctx)
    backend = _backend(params)
    as_json = bool(params.get("as_json"))
    on_message = _echo_progress if as_json else _echo
    if command == "status":
        report = admin.status(target, backend)
        if as_json:
            click.echo(json.dumps(report.to_dict(), indent=2))
        else:
            _print_status(report)
        ctx.exit(report.exit_status)
    if command == "rollback":
        result = admin.rollback(
            target,
            backend,
            dry_run=bool(params.get("dry_run")),
            wait=not params.get("no_wait"),
            wait_timeout_s=_or(params.get("wait_timeout"), admin.DEFAULT_WAIT_TIMEOUT_S),
            poll_interval_s=_or(params.get("poll_interval"), admin.DEFAULT_POLL_INTERVAL_S),
            gsi_timeout_s=_or(params.get("gsi_timeout"), admin.DEFAULT_GSI_TIMEOUT_S),
            on_message=on_message,
        )
    else:
        result = admin.rollforward(target, backend, dry_run=bool(params.get("dry_run")), on_message=on_message)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    ctx.exit(result.exit_status)


def _or(value: object, default: float) -> float:
    return float(value) if isinstance(value, int | float) else default


def _print_status(report: admin.MigrationStatus) -> None:
    for message in report.messages:
        click.echo(message.text)
    if not report.ok:
        return
    if report.migration_item_exists:
        click.echo(f"Client version: {report.client_version} ({report.meaning})")
        modified = admin.format_epoch_ms(report.modified_at_ms)
        click.echo(f"Last modified by {report.modified_by or admin.UNKNOWN} at {modified}")
    else:
        click.echo(f"Client version: none ({report.meaning})")
    if report.history:
        click.echo("History (newest first):")
        echo_table(
            ["  CLIENT VERSION", "MODIFIED BY", "MODIFIED AT"],
            [
                ["  " + str(entry.get("cv")), str(entry.get("mb")), admin.format_epoch_ms(entry.get("mts"))]
                for entry in report.history
            ],
        )
    if report.owner_index_embedded:
        index = "embedded owner index (SQLite), always present"
    else:
        index = report.owner_index_status or "absent"
    click.echo(f"GSI {admin.GSI_NAME}: {index}")
    if report.workers:
        click.echo("Workers:")
        echo_table(
            ["  WORKER", "MODE", "LEASES", "LAST METRICS"],
            [
                [
                    "  " + worker.worker_id,
                    worker.mode,
                    str(worker.leases),
                    "-" if worker.seconds_since_metrics is None else f"{worker.seconds_since_metrics:.0f} s ago",
                ]
                for worker in report.workers
            ],
        )
    else:
        click.echo("Workers: none live (no lease owner, no fresh worker metrics)")
    if report.unassigned_leases:
        click.echo(f"Unassigned leases: {report.unassigned_leases}")
    if report.stale_worker_metrics:
        click.echo(
            "Stale worker-metrics entries (workers no longer reporting): " + ", ".join(report.stale_worker_metrics)
        )


_GROUP_HELP = """Roll a KCL 2.x -> 3.x migration back or forward, or show where it stands — what AWS's
KclMigrationTool.py does, with its arguments and messages, for both table layouts.

\b
  shardwise migrate rollback    --application-name APP --region REGION
  shardwise migrate rollforward --application-name APP --region REGION
  shardwise migrate status      --application-name APP --region REGION
  shardwise migrate --mode rollback --application_name APP --region REGION   (the tool's spelling)

The migration state item Migration3.0 is found where the application keeps it: in the legacy
<app>-CoordinatorState table if it exists (KCL 3.0-3.4) and KCL 3.5's table migration has not
completed, else in the lease table (KCL 3.5). The backend is
DynamoDB when --region or --endpoint-url is given, else the SQLite file --db (shardwise's embedded backend).

Exit status: 0 on success (including "already rolled back"), 1 on any failure or refused precondition,
2 on usage errors.
"""


@click.group(invoke_without_command=True, help=_GROUP_HELP)
@click.option(
    "--mode",
    type=click.Choice(["rollback", "rollforward"]),
    default=None,
    help="KclMigrationTool.py's spelling of the command.",
)
@apply_options(_TARGET_OPTIONS + _CHANGE_OPTIONS + _ROLLBACK_OPTIONS)
@click.pass_context
def migrate(ctx: click.Context, /, mode: str | None, **params: Any) -> None:
    if ctx.invoked_subcommand is not None:
        if mode is not None:
            raise click.UsageError(f"give either --mode {mode} or the command {ctx.invoked_subcommand}, not both")
        return
    if mode is None:
        raise click.UsageError("missing command: rollback, rollforward or status (or --mode rollback|rollforward)")
    if mode == "rollforward":
        for name in ("no_wait", "wait_timeout", "gsi_timeout", "poll_interval"):
            if params.get(name) not in (None, False):
                option = "--" + name.replace("_", "-")
                raise click.UsageError(f"{option} applies to rollback only")
    _execute(ctx, "rollback" if mode == "rollback" else "rollforward", params)


@migrate.command("rollback")
@apply_options(_TARGET_OPTIONS + _CHANGE_OPTIONS + _ROLLBACK_OPTIONS)
@click.pass_context
def rollback_command(ctx: click.Context, /, **params: Any) -> None:
    """Set the client version back to CLIENT_VERSION_2X (from UPGRADE_FROM_2X or 3X_WITH_ROLLBACK), wait
    until no worker runs in a KCL 3.x mode, then delete the GSI LeaseOwnerToLeaseKeyIndex (verified) and,
    in the legacy layout, the worker metrics table. The coordinator state table is kept."""
    _execute(ctx, "rollback", _merged(ctx, params))


@migrate.command("rollforward")
@apply_options(_TARGET_OPTIONS + _CHANGE_OPTIONS)
@click.pass_context
def rollforward_command(ctx: click.Context, /, **params: Any) -> None:
    """Set the client version from CLIENT_VERSION_2X to CLIENT_VERSION_UPGRADE_FROM_2X: KCL workers then
    re-create the GSI (and the legacy worker metrics table) and resume the migration."""
    _execute(ctx, "rollforward", _merged(ctx, params))


@migrate.command("status")
@apply_options(_TARGET_OPTIONS)
@click.pass_context
def status_command(ctx: click.Context, /, **params: Any) -> None:
    """Show the client version and its history, the GSI, and each live worker's mode. Reads only."""
    _execute(ctx, "status", _merged(ctx, params))
