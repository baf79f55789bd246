"""The backend seam: open a backend from a :class:`~shardwise.backends.config.BackendConfig`, or reach the backend a
lease store belongs to, and ask it for lease stores, streams, coordinator item tables and the administration of
its tables; read what a backend's service said behind an error it translated (:func:`service_error`).

Only this package imports the concrete backends (``backends/sqlite``, ``backends/aws``); everything above it
uses the ports (:mod:`shardwise.backends.port`) and the capability flags. The AWS backend imports boto3 only
when it is used (it is the optional ``aws`` extra).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shardwise.backends.config import BackendConfig
from shardwise.backends.port import Backend, BackendBound, Capabilities, ServiceError, TableAdmin
from shardwise.errors import ConfigurationError
from shardwise.leases.store import LeaseStore
from shardwise.retrieval.source import StreamSource
from shardwise.state.port import Changelog
from shardwise.tables.items import CoordinatorTables, Layout

if TYPE_CHECKING:
    # Re-exported for annotations above the seam (admin takes an injected client), which names no AWS package.
    from shardwise.backends.aws.client import DynamoDBClient as DynamoDBClient

__all__ = [
    "Backend",
    "BackendBound",
    "BackendConfig",
    "Capabilities",
    "CoordinatorTables",
    "ServiceError",
    "TableAdmin",
    "backend_of",
    "open_backend",
    "open_changelog",
    "open_coordinator_tables",
    "open_lease_store",
    "open_stream_source",
    "service_error",
]


def open_backend(config: BackendConfig, *, dynamodb_client: DynamoDBClient | None = None) -> Backend:
    """The backend ``config`` names: the embedded SQLite file, or DynamoDB + Kinesis.

    ``dynamodb_client``: a configured boto3 DynamoDB client for the aws backend to use instead of building
    one from ``config`` (a custom session; tests); the local backend has no use for it.
    """
    if config.backend == "local":
        from shardwise.backends.sqlite.backend import SQLiteBackend  # noqa: PLC0415

        return SQLiteBackend(config.db, busy_timeout_ms=config.busy_timeout_ms)
    try:
        from shardwise.backends.aws.backend import AwsBackend  # noqa: PLC0415
        from shardwise.backends.aws.client import dynamodb_client as new_dynamodb_client  # noqa: PLC0415
    except ImportError as exc:
        raise ConfigurationError(f"the aws backend needs boto3: pip install 'shardwise[aws]' ({exc})") from exc
    if dynamodb_client is None:
        dynamodb_client = new_dynamodb_client(
            endpoint_url=config.dynamodb_endpoint, region_name=config.region, limits=config.dynamodb_limits
        )
    return AwsBackend(
        dynamodb_client,
        region_name=config.region,
        kinesis_endpoint_url=config.kinesis_endpoint,
        kinesis_limits=config.kinesis_limits,
        data_client=config.retrieval.client,
    )


def service_error(exc: BaseException) -> ServiceError | None:
    """What the service said behind ``exc`` — a shardwise error a backend translated (its ``__cause__``), or the
    service's error itself — or ``None`` when no service error is behind it (the embedded backend's errors,
    shardwise's own checks). A :class:`~shardwise.errors.ConfigurationError` raised while building a client
    carries the SDK's complaint here too (no region, a broken profile)."""
    try:
        from shardwise.backends.aws.admin import service_error as aws_service_error  # noqa: PLC0415
    except ImportError:  # without boto3 no service error can have been raised
        return None
    return aws_service_error(exc)


def backend_of(store: LeaseStore) -> Backend:
    """The backend a lease store belongs to; a store that does not say is a configuration error."""
    if isinstance(store, BackendBound):
        return store.backend
    raise ConfigurationError(
        f"{type(store).__name__} does not name its backend: open lease stores through shardwise.backends"
    )


def open_lease_store(backend: BackendConfig, table_name: str) -> LeaseStore:
    return open_backend(backend).open_lease_store(table_name)


def open_changelog(backend: BackendConfig, application_name: str, *, table_name: str | None = None) -> Changelog:
    """The state changelog of ``application_name`` on the backend ``backend`` names (``<app>-state`` by default)."""
    return open_backend(backend).open_changelog(application_name, table_name=table_name)


def open_stream_source(backend: BackendConfig, stream_name: str) -> StreamSource:
    return open_backend(backend).open_stream(stream_name)


def open_coordinator_tables(
    store: LeaseStore,
    application_name: str,
    *,
    layout: Layout | None = None,
    coordinator_table_name: str | None = None,
    worker_metrics_table_name: str | None = None,
) -> CoordinatorTables:
    """The coordinator and worker-metrics item tables next to ``store``, in the layout its backend finds."""
    return backend_of(store).open_coordinator_tables(
        store,
        application_name,
        layout=layout,
        coordinator_table_name=coordinator_table_name,
        worker_metrics_table_name=worker_metrics_table_name,
    )
