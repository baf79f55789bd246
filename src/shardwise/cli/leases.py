"""``shardwise leases``: the lease table of an application (readable or as JSON), its malformed lease items,
and ``shardwise leases repair``, which rewrites a malformed lease item from its valid fields."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import click

from shardwise.admin.repair import RepairPlan, repair_lease
from shardwise.backends import open_coordinator_tables, open_lease_store
from shardwise.checkpoint.sequence import ExtendedSequenceNumber
from shardwise.cli._options import BACKEND_OPTIONS
from shardwise.cli._output import echo_table
from shardwise.config import BackendConfig
from shardwise.errors import ConfigurationError, ShardwiseError
from shardwise.leadership.lock import LEADER_KEY, lock_from_record
from shardwise.leases.model import Lease
from shardwise.leases.store import LeaseStore
from shardwise.worker_metrics import classify_workers

__all__ = ["leases"]


def _backend(flags: Mapping[str, Any]) -> BackendConfig:
    return BackendConfig(
        backend=flags["backend"] or "local",
        db=flags["db"] or "shardwise.db",
        region=flags["region"],
        endpoint_url=flags["endpoint_url"],
        kinesis_endpoint_url=flags["kinesis_endpoint_url"],
        dynamodb_endpoint_url=flags["dynamodb_endpoint_url"],
    )


def _open_existing(application_name: str, table_name: str | None, flags: Mapping[str, Any]) -> LeaseStore:
    backend = _backend(flags)
    store = open_lease_store(backend, table_name or application_name)
    if not store.table_exists():
        raise ConfigurationError(
            f"application {application_name!r} has no lease table {table_name or application_name!r} "
            f"({'in ' + backend.db if backend.backend == 'local' else 'in DynamoDB'}); check --app/--table/--db"
        )
    return store


def _repair_command(application_name: str, table_name: str | None, key: str) -> str:
    table = f" --table {table_name}" if table_name else ""
    return f"shardwise leases repair --app {application_name}{table} --shard {key}"


def _lease_row(lease: Lease) -> dict[str, Any]:
    return {
        "leaseKey": lease.lease_key,
        "leaseOwner": lease.lease_owner,
        "leaseCounter": lease.lease_counter,
        "checkpoint": lease.checkpoint.sequence_number,
        "checkpointSubSequenceNumber": lease.checkpoint.sub_sequence_number,
        "pendingCheckpoint": None if lease.pending_checkpoint is None else str(lease.pending_checkpoint),
        "ownerSwitchesSinceCheckpoint": lease.owner_switches_since_checkpoint,
        "parentShardIds": sorted(lease.parent_shard_ids),
        "childShardIds": sorted(lease.child_shard_ids),
        "throughputKBps": lease.throughput_kbps,
        "checkpointOwner": lease.checkpoint_owner,
    }


def _coordination_view(store: LeaseStore, application_name: str, now_epoch_s: float) -> dict[str, Any]:
    """Layout, leader and worker-metrics entries of the application (KCL 3.x items; empty for a 2.x fleet)."""
    tables = open_coordinator_tables(store, application_name)
    leader_record = tables.coordinator.get(LEADER_KEY) if tables.coordinator.exists() else None
    leader = None if leader_record is None else lock_from_record(leader_record, 120_000).owner_name
    workers: list[dict[str, Any]] = []
    if tables.worker_metrics.exists():
        snapshot = classify_workers(tables.worker_metrics, now_epoch_s)
        for status in ("active", "failing", "inactive", "invalid", "stale"):
            for entry in getattr(snapshot, status):
                workers.append(
                    {
                        "workerId": entry.worker_id,
                        "status": status,
                        "lastUpdate": entry.lut,
                        "secondsSinceUpdate": round(now_epoch_s - entry.lut, 1) if entry.lut else None,
                        "metrics": {name: list(values) for name, values in entry.stats.items()},
                        "operatingRange": {name: list(values) for name, values in entry.operating_range.items()},
                        "leader": entry.worker_id == leader,
                    }
                )
        for key in snapshot.malformed:
            workers.append(
                {
                    "workerId": key,
                    "status": "malformed",
                    "lastUpdate": None,
                    "secondsSinceUpdate": None,
                    "metrics": {},
                    "operatingRange": {},
                    "leader": key == leader,
                }
            )
    workers.sort(key=lambda w: str(w["workerId"]))
    return {
        "layout": tables.layout,
        "coordinatorTable": tables.coordinator.table_name,
        "workerMetricsTable": tables.worker_metrics.table_name,
        "leader": leader,
        "workers": workers,
    }


def _metrics_text(metrics: dict[str, list[float]]) -> str:
    if not metrics:
        return "throughput only"
    return " ".join(f"{name}={values[-1]:g}" if values else f"{name}=-" for name, values in sorted(metrics.items()))


@click.group(invoke_without_command=True)
@click.option("--app", "application_name", default=None, help="Application name (the lease table).  [required]")
@click.option("--table", "table_name", default=None, help="Lease table name if it differs from the app name.")
@BACKEND_OPTIONS
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.pass_context
def leases(
    ctx: click.Context, /, application_name: str | None, table_name: str | None, as_json: bool, **flags: Any
) -> None:
    """Show the lease table of an application (owner, counter, checkpoint, parents and children), the lease
    items that cannot be read and what is wrong with them, its coordination layout and leader, and the
    workers' reported metrics (KCL 3.x). Exits 1 if a lease item cannot be read (repair it with
    `shardwise leases repair`)."""
    ctx.obj = {"application_name": application_name, "table_name": table_name, **flags}
    if ctx.invoked_subcommand is not None:
        return
    if application_name is None:
        raise click.UsageError("Missing option '--app': give the application whose leases to show.")
    try:
        store = _open_existing(application_name, table_name, flags)
        scan = store.scan_leases()
        rows = [_lease_row(lease) for lease in scan.leases]
        coordination = _coordination_view(store, application_name, time.time())
    except ShardwiseError as exc:
        raise click.ClickException(str(exc)) from exc
    malformed = [{"leaseKey": bad.key, "problem": bad.problem} for bad in scan.malformed]
    owners: dict[str, int] = {}
    for row in rows:
        owner = row["leaseOwner"] or "(unassigned)"
        owners[owner] = owners.get(owner, 0) + 1
    if as_json:
        click.echo(
            json.dumps(
                {
                    "application": application_name,
                    "table": table_name or application_name,
                    "leases": rows,
                    "malformed": malformed,
                    "leasesPerOwner": owners,
                    **coordination,
                },
                indent=2,
            )
        )
    else:
        _echo_view(rows, malformed, owners, coordination)
    if malformed:
        example = _repair_command(
            application_name, table_name, malformed[0]["leaseKey"] if len(malformed) == 1 else "KEY"
        )
        raise click.ClickException(
            f"{len(malformed)} lease item(s) cannot be read ({', '.join(m['leaseKey'] for m in malformed)}); their "
            f"shards are not processed until repaired: {example} (add --dry-run to see the change first)"
        )


def _echo_view(
    rows: list[dict[str, Any]], malformed: list[dict[str, str]], owners: dict[str, int], coordination: dict[str, Any]
) -> None:
    headers = ["LEASE KEY", "OWNER", "COUNTER", "CHECKPOINT", "PARENTS", "CHILDREN"]
    table = [
        [
            row["leaseKey"],
            row["leaseOwner"] or "-",
            str(row["leaseCounter"]),
            row["checkpoint"]
            + (f"/{row['checkpointSubSequenceNumber']}" if row["checkpointSubSequenceNumber"] else ""),
            ",".join(row["parentShardIds"]) or "-",
            ",".join(row["childShardIds"]) or "-",
        ]
        for row in rows
    ]
    echo_table(headers, table)
    click.echo(f"\n{len(rows)} lease(s); per owner: " + ", ".join(f"{o}={n}" for o, n in sorted(owners.items())))
    if malformed:
        click.echo("")
        echo_table(["MALFORMED LEASE ITEM", "PROBLEM"], [[m["leaseKey"], m["problem"]] for m in malformed])
    click.echo(
        f"layout: {coordination['layout']} (coordinator items in {coordination['coordinatorTable']}, "
        f"worker metrics in {coordination['workerMetricsTable']}); leader: {coordination['leader'] or '-'}"
    )
    if coordination["workers"]:
        click.echo("")
        echo_table(
            ["WORKER", "STATUS", "LAST UPDATE", "METRICS (latest)", "LEADER"],
            [
                [
                    str(w["workerId"]),
                    str(w["status"]),
                    "-" if w["secondsSinceUpdate"] is None else f"{w['secondsSinceUpdate']:.0f} s ago",
                    _metrics_text(w["metrics"]),
                    "yes" if w["leader"] else "",
                ]
                for w in coordination["workers"]
            ],
        )


def _parse_checkpoint(_ctx: click.Context, _param: click.Parameter, value: str | None) -> ExtendedSequenceNumber | None:
    if value is None:
        return None
    text, _, sub = value.partition("/")
    try:
        return ExtendedSequenceNumber(text, int(sub) if sub else 0)
    except ValueError as exc:
        raise click.BadParameter(
            f"{value!r} is not a checkpoint ({exc}): give a sequence number (optionally /SUB), TRIM_HORIZON or LATEST"
        ) from None


def _plain(value: object) -> object:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else str(value)
    if isinstance(value, bytes | bytearray):
        return f"<{len(value)} bytes>"
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _echo_plan(plan: RepairPlan) -> None:
    before = {"leaseKey": plan.raw.key, **{name: _plain(value) for name, value in plan.raw.fields.items()}}
    click.echo(f"problem: {plan.raw.problem}")
    click.echo("before: " + json.dumps(before, default=repr))
    click.echo("after:  " + json.dumps(_lease_row(plan.lease), default=repr))
    for change in plan.changes:
        click.echo(f"  - {change}")


@leases.command()
@click.option("--app", "application_name", default=None, help="Application name (the lease table).  [required]")
@click.option("--table", "table_name", default=None, help="Lease table name if it differs from the app name.")
@click.option("--shard", "lease_key", required=True, help="Key of the lease item to repair (the shard id).")
@click.option(
    "--checkpoint",
    "checkpoint",
    default=None,
    callback=_parse_checkpoint,
    help="Checkpoint to write (SEQUENCE[/SUB], TRIM_HORIZON, LATEST). [default: the item's if readable, "
    "else TRIM_HORIZON: no record is lost, some may be processed again]",
)
@click.option("--dry-run", is_flag=True, help="Print the item before and after; write nothing.")
@BACKEND_OPTIONS
@click.pass_context
def repair(
    ctx: click.Context,
    /,
    application_name: str | None,
    table_name: str | None,
    lease_key: str,
    checkpoint: ExtendedSequenceNumber | None,
    dry_run: bool,
    **flags: Any,
) -> None:
    """Rewrite a malformed lease item from its valid fields (owner, counter, checkpoint, pending checkpoint,
    parents, children, hash range), on condition that nobody changed it since it was read."""
    outer: Mapping[str, Any] = ctx.obj or {}
    application_name = application_name or outer.get("application_name")
    table_name = table_name or outer.get("table_name")
    flags = {name: value if value is not None else outer.get(name) for name, value in flags.items()}
    if application_name is None:
        raise click.UsageError("Missing option '--app': give the application whose lease to repair.")
    table = table_name or application_name
    try:
        store = _open_existing(application_name, table_name, flags)
        outcome = repair_lease(store, lease_key, checkpoint=checkpoint, dry_run=dry_run)
    except ShardwiseError as exc:
        raise click.ClickException(str(exc)) from exc
    if outcome.status == "missing":
        raise click.ClickException(
            f"lease table {table} has no lease item {lease_key!r}: check --shard "
            f"(shardwise leases --app {application_name} lists the keys)"
        )
    if outcome.status == "valid":
        click.echo(f"lease {lease_key!r} in lease table {table} is readable: nothing to repair")
        return
    assert outcome.plan is not None
    _echo_plan(outcome.plan)
    if outcome.status == "planned":
        click.echo(f"dry run: lease item {lease_key!r} not written")
    elif outcome.status == "changed":
        raise click.ClickException(
            f"lease item {lease_key!r} changed since it was read (a worker or another repair wrote it); "
            "nothing written: run the command again"
        )
    else:
        click.echo(f"repaired lease item {lease_key!r} in lease table {table}")
