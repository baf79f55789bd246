"""``shardwise features``: cluster-wide feature versions, the way Kafka's ``kafka-features`` tool manages them.

::

    shardwise features describe            --application-name APP [--db FILE | --region R]
    shardwise features upgrade             --application-name APP --feature lease.assignment=2 [--dry-run]
    shardwise features downgrade           --application-name APP --release-version 0.2 [--unsafe] [--dry-run]
    shardwise features disable             --application-name APP --feature NAME [--unsafe] [--dry-run]
    shardwise features version-mapping     [--release-version 0.2]
    shardwise features feature-dependencies --feature lease.assignment=2

Output lines are Kafka's; any failure ends with "N out of M operation(s) failed." on stderr and exit status 1.
"""

from __future__ import annotations

import json
from typing import Any, NoReturn

import click

from shardwise.admin import features as admin
from shardwise.cli._options import DB_OPTION, apply_options, backend_from_target_options
from shardwise.config import BackendConfig
from shardwise.errors import ConfigurationError

__all__ = ["features"]

_TARGET_OPTIONS = [
    click.option(
        "--application-name",
        "--app",
        "application_name",
        required=True,
        help="The application (names the lease table and, in the legacy layout, the coordinator table).",
    ),
    click.option("--lease-table-name", default=None, help="Lease table, if it is not named after the application."),
    click.option(
        "--coordinator-state-table-name",
        default=None,
        help="Legacy layout: the coordinator state table [default: <app>-CoordinatorState].",
    ),
    click.option(
        "--worker-metrics-table-name",
        default=None,
        help="Legacy layout: the worker metrics table [default: <app>-WorkerMetricStats].",
    ),
    click.option(
        "--backend",
        type=click.Choice(["local", "aws"]),
        default=None,
        help="local: the SQLite file --db; aws: DynamoDB. [default: aws when --region or --endpoint-url is given]",
    ),
    DB_OPTION,
    click.option("--region", default=None, help="AWS region (selects the aws backend)."),
    click.option("--endpoint-url", default=None, help="DynamoDB endpoint override (aws)."),
    click.option("--json", "as_json", is_flag=True, default=False, help="Print one JSON object on stdout."),
]

_FEATURE_OPTION = click.option(
    "--feature",
    "feature_specs",
    multiple=True,
    metavar="NAME=LEVEL",
    help="A feature and the level to set (repeatable).",
)
_RELEASE_OPTION = click.option(
    "--release-version",
    default=None,
    metavar="RELEASE",
    help="Set every feature to the default level of this shardwise release (see version-mapping).",
)
_DRY_RUN_OPTION = click.option(
    "--dry-run", is_flag=True, default=False, help="Validate this update, but do not perform it."
)
_UNSAFE_OPTION = click.option(
    "--unsafe",
    is_flag=True,
    default=False,
    help="Perform this downgrade even if it may lose data, and even if live workers cannot run the new level "
    "(they stop cleanly).",
)


def _fail(message: str) -> NoReturn:
    click.echo(message, err=True)
    raise SystemExit(1)


def _backend(params: dict[str, Any]) -> BackendConfig:
    """Called inside the commands' ``except ConfigurationError``: a conflict ends as any configuration error."""
    return backend_from_target_options(
        params, local_with_aws="--region and --endpoint-url select DynamoDB; with --backend local drop them."
    )


def _target(params: dict[str, Any]) -> admin.FeaturesTarget:
    return admin.FeaturesTarget(
        application_name=params["application_name"],
        lease_table_name=params.get("lease_table_name"),
        coordinator_table_name=params.get("coordinator_state_table_name"),
        worker_metrics_table_name=params.get("worker_metrics_table_name"),
    )


@click.group(
    help="Manage cluster-wide feature versions of an application: the levels its workers support and the "
    "levels the fleet has finalized (Kafka's kafka-features, for shardwise fleets). lease.assignment and "
    "lease.discovery are kept in step with KCL's Migration3.0 item, so `shardwise migrate` and "
    "KclMigrationTool.py see the same state."
)
def features() -> None:
    pass


@features.command("describe")
@apply_options(_TARGET_OPTIONS)
def describe_command(**params: Any) -> None:
    """Describes the current active feature flags."""
    try:
        result = admin.describe(_target(params), _backend(params))
    except ConfigurationError as exc:
        _fail(str(exc))
    if params["as_json"]:
        click.echo(json.dumps(result.to_dict(), indent=2))
    elif result.ok:
        for line in result.lines():
            click.echo(line)
    if not result.ok:
        _fail(result.error or "describe failed")


def _levels(operation: admin.Operation, specs: tuple[str, ...], release: str | None) -> dict[str, int]:
    if release is not None:
        if specs:
            raise ConfigurationError("Can not specify `release-version` with other feature flags.")
        return admin.release_updates(operation, release)
    if not specs:
        raise ConfigurationError(f"You must specify at least one feature to {operation}")
    levels: dict[str, int] = {}
    for spec in specs:
        if operation == "disable":
            if "=" in spec:
                raise ConfigurationError(f"disable takes feature names without a level, got {spec}")
            name, level = spec.strip(), 0
        else:
            name, level = admin.parse_feature_level(spec)
        if name in levels:
            raise ConfigurationError(f"Feature {name} was specified more than once.")
        levels[name] = level
    return levels


def _update(operation: admin.Operation, params: dict[str, Any]) -> None:
    try:
        levels = _levels(operation, params["feature_specs"], params.get("release_version"))
        result = admin.update(
            _target(params),
            _backend(params),
            operation,
            levels,
            unsafe=bool(params.get("unsafe")),
            dry_run=bool(params.get("dry_run")),
            from_release=params.get("release_version") is not None,
        )
    except ConfigurationError as exc:
        _fail(str(exc))
    if params["as_json"]:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        for line in result.lines():
            click.echo(line)
    for warning in result.warnings:
        click.echo(f"Warning: {warning}", err=True)
    if result.trailer is not None:
        _fail(result.trailer)


@features.command("upgrade")
@apply_options([*_TARGET_OPTIONS, _FEATURE_OPTION, _RELEASE_OPTION, _DRY_RUN_OPTION])
def upgrade_command(**params: Any) -> None:
    """Upgrade one or more feature flags."""
    _update("upgrade", params)


@features.command("downgrade")
@apply_options([*_TARGET_OPTIONS, _FEATURE_OPTION, _RELEASE_OPTION, _UNSAFE_OPTION, _DRY_RUN_OPTION])
def downgrade_command(**params: Any) -> None:
    """Downgrade one or more feature flags."""
    _update("downgrade", params)


@features.command("disable")
@apply_options(
    [
        *_TARGET_OPTIONS,
        click.option("--feature", "feature_specs", multiple=True, metavar="NAME", help="A feature to disable."),
        _UNSAFE_OPTION,
        _DRY_RUN_OPTION,
    ]
)
def disable_command(**params: Any) -> None:
    """Disable one or more feature flags. This is the same as downgrading the version to zero."""
    _update("disable", params)


@features.command("version-mapping")
@click.option("--release-version", default=None, metavar="RELEASE", help="A shardwise release [default: this one].")
def version_mapping_command(release_version: str | None) -> None:
    """Look up the feature levels a shardwise release sets by default (offline)."""
    try:
        lines = admin.version_mapping(release_version)
    except ConfigurationError as exc:
        _fail(str(exc))
    for line in lines:
        click.echo(line)


@features.command("feature-dependencies")
@click.option("--feature", "feature_specs", multiple=True, metavar="NAME=LEVEL", help="A feature and level.")
def feature_dependencies_command(feature_specs: tuple[str, ...]) -> None:
    """Look up the dependencies of feature levels (offline)."""
    try:
        lines = admin.feature_dependencies(feature_specs)
    except ConfigurationError as exc:
        _fail(str(exc))
    for line in lines:
        click.echo(line)
