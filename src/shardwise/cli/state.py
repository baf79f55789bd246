"""``shardwise state``: the state stores of a stateful application per shard (``describe``), and incident
handling: ``restore`` rebuilds a shard's local store from its changelog, ``wipe`` deletes it (and with
``--changelog`` the shard's changelog too). Both refuse a shard whose lease is held unless ``--force``."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import click

from shardwise.admin.state import ENGINES, ShardState, describe_state, restore_shard, wipe_shard
from shardwise.backends import backend_of
from shardwise.cli._options import BACKEND_OPTIONS, apply_options
from shardwise.cli._output import echo_table
from shardwise.cli.leases import _open_existing
from shardwise.errors import ChangelogMissingError, ShardwiseError
from shardwise.leases.store import LeaseStore
from shardwise.state.port import Changelog

__all__ = ["state"]

_COMMON = apply_options(
    [
        click.option("--app", "application_name", required=True, help="Application name (the lease table)."),
        click.option("--table", "table_name", default=None, help="Lease table name if it differs from the app name."),
        click.option(
            "--changelog-table",
            default=None,
            help="The state changelog table (state.changelog_table). [default: <app>-state on DynamoDB, tables in "
            "the --db file on the local backend]",
        ),
        click.option(
            "--state-dir",
            type=click.Path(file_okay=False, path_type=Path),
            default=Path("shardwise-state"),
            show_default=True,
            help="The workers' state directory (state.dir); stores are in <state-dir>/<app>/<shard>/.",
        ),
        click.option(
            "--engine",
            type=click.Choice(ENGINES),
            default="sqlite",
            show_default=True,
            help="The local store engine (state.engine) restore writes; describe and wipe find it on disk.",
        ),
        BACKEND_OPTIONS,
    ]
)


def _open(flags: Mapping[str, Any]) -> tuple[LeaseStore, Changelog]:
    app = flags["application_name"]
    leases = _open_existing(app, flags["table_name"], flags)
    changelog = backend_of(leases).open_changelog(app, table_name=flags["changelog_table"])
    return leases, changelog


def _guarded(action: Callable[[], None]) -> None:
    try:
        action()
    except ChangelogMissingError as exc:
        raise click.ClickException(
            f"{exc} (has the application run a stateful processor yet? else check --changelog-table)"
        ) from exc
    except ShardwiseError as exc:
        raise click.ClickException(str(exc)) from exc


@click.group()
def state() -> None:
    """The state stores of a stateful application: describe them per shard, rebuild or delete one."""


def _row(shard: ShardState) -> dict[str, Any]:
    lease, head, local = shard.lease, shard.head, shard.local
    return {
        "shardId": shard.shard_id,
        "formatLevel": shard.format_level,
        "formatFrom": shard.format_source,
        "committedPosition": None if head is None else str(head.position),
        "commit": None if head is None else head.commit,
        "lineage": None if head is None else head.lineage,
        "localPosition": None if local is None or local.committed is None else str(local.committed.position),
        "localCommit": None if local is None or local.committed is None else local.committed.commit,
        "localSizeBytes": None if local is None else local.size_bytes,
        "localProblem": None if local is None else local.problem,
        "changelogProblem": shard.changelog_problem,
        "leaseCheckpoint": None if lease is None else str(lease.checkpoint),
        "leaseOwner": None if lease is None else lease.lease_owner,
        "keyCount": shard.key_count,
        "changelogItems": shard.changelog_items,
        "changelogBytes": shard.changelog_bytes,
    }


def _changelog_cell(row: dict[str, Any]) -> str:
    if row["changelogProblem"]:
        return "malformed"
    return "-" if row["changelogItems"] is None else f"{row['changelogItems']} items, {row['changelogBytes']} B"


def _text(value: object) -> str:
    return "-" if value is None else str(value)


@state.command()
@_COMMON
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def describe(as_json: bool, **flags: Any) -> None:
    """Per shard: format level (of the local store in --state-dir, else of the changelog), committed position
    and commit (the changelog's), lease checkpoint, key count, changelog size and lease owner. Exits 1 when a
    local store cannot be opened (a worker would wipe it and restore it from the changelog)."""
    rows: list[dict[str, Any]] = []

    def run() -> None:
        leases, changelog = _open(flags)
        shards = describe_state(
            leases,
            changelog,
            application_name=flags["application_name"],
            state_dir=flags["state_dir"],
        )
        rows.extend(_row(shard) for shard in shards)

    _guarded(run)
    if as_json:
        click.echo(json.dumps({"application": flags["application_name"], "shards": rows}, indent=2))
    else:
        headers = ["SHARD", "FORMAT", "COMMITTED", "COMMIT", "LEASE CHECKPOINT", "KEYS", "CHANGELOG", "OWNER"]
        echo_table(
            headers,
            [
                [
                    row["shardId"],
                    "-" if row["formatLevel"] is None else f"{row['formatLevel']} ({row['formatFrom']})",
                    _text(row["committedPosition"]),
                    _text(row["commit"]),
                    _text(row["leaseCheckpoint"]),
                    _text(row["keyCount"]),
                    _changelog_cell(row),
                    _text(row["leaseOwner"]),
                ]
                for row in rows
            ],
        )
        click.echo(f"\n{len(rows)} shard(s)")
    malformed = [row for row in rows if row["changelogProblem"]]
    for row in malformed:
        click.echo(f"changelog of {row['shardId']}: {row['changelogProblem']}", err=True)
    if malformed:
        raise click.ClickException(
            f"{len(malformed)} shard(s) have a malformed changelog ({', '.join(r['shardId'] for r in malformed)}); "
            "workers wait on them: repair the items, or start a shard's state over with: shardwise state wipe "
            f"--app {flags['application_name']} --shard {malformed[0]['shardId']} --changelog"
        )
    bad = [row for row in rows if row["localProblem"]]
    for row in bad:
        click.echo(f"local store of {row['shardId']}: {row['localProblem']}", err=True)
    if bad:
        raise click.ClickException(
            f"{len(bad)} local store(s) cannot be opened ({', '.join(r['shardId'] for r in bad)}); a worker wipes "
            f"and restores each from the changelog, or: shardwise state restore --app {flags['application_name']} "
            f"--shard {bad[0]['shardId'] if len(bad) == 1 else 'SHARD'} --state-dir {flags['state_dir']}"
        )


@state.command()
@_COMMON
@click.option("--shard", "shard_id", required=True, help="The shard whose local store to rebuild.")
@click.option("--force", is_flag=True, help="Even if the shard's lease is held by a worker.")
def restore(shard_id: str, force: bool, **flags: Any) -> None:
    """Rebuild a shard's local store from its changelog (deleted, then filled with the committed state)."""

    def run() -> None:
        leases, changelog = _open(flags)
        head, applied = restore_shard(
            leases,
            changelog,
            application_name=flags["application_name"],
            shard_id=shard_id,
            state_dir=flags["state_dir"],
            engine=flags["engine"],
            force=force,
        )
        click.echo(
            f"restored {shard_id}: {applied} key(s) at commit {head.commit} (position {head.position}, format "
            f"level {head.format_level}) from {changelog.name} into {flags['state_dir'] / flags['application_name']}"
        )

    _guarded(run)


@state.command()
@_COMMON
@click.option("--shard", "shard_id", required=True, help="The shard whose local store to delete.")
@click.option(
    "--changelog",
    "with_changelog",
    is_flag=True,
    help="Delete the shard's changelog too: its state starts over empty at the lease checkpoint.",
)
@click.option("--force", is_flag=True, help="Even if the shard's lease is held by a worker.")
def wipe(shard_id: str, with_changelog: bool, force: bool, **flags: Any) -> None:
    """Delete a shard's local store (a worker restores it from the changelog when it next opens the shard)."""

    def run() -> None:
        leases, changelog = _open(flags)
        local, logged = wipe_shard(
            leases,
            changelog,
            application_name=flags["application_name"],
            shard_id=shard_id,
            state_dir=flags["state_dir"],
            with_changelog=with_changelog,
            force=force,
        )
        done = [
            "deleted its local store" if local else f"no local store in {flags['state_dir']}",
            *(["deleted its changelog"] if logged else []),
        ]
        click.echo(f"{shard_id}: " + "; ".join(done))

    _guarded(run)
