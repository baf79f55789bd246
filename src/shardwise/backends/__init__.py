"""Open the lease store and the stream source a :class:`~shardwise.config.BackendConfig` names.

The AWS backend imports boto3 only when it is used (it is the optional ``aws`` extra).
"""

from __future__ import annotations

from shardwise.backends.config import BackendConfig
from shardwise.errors import ConfigurationError
from shardwise.leases.store import LeaseStore
from shardwise.retrieval.source import StreamSource

__all__ = ["open_lease_store", "open_stream_source"]


def open_lease_store(backend: BackendConfig, table_name: str) -> LeaseStore:
    if backend.backend == "local":
        from shardwise.backends.sqlite.leases import SQLiteLeaseStore  # noqa: PLC0415

        return SQLiteLeaseStore(backend.db, table_name)
    try:
        from shardwise.backends.aws.leases import DynamoDBLeaseStore, DynamoDBLeaseStoreConfig  # noqa: PLC0415
    except ImportError as exc:
        raise ConfigurationError(f"the aws backend needs boto3: pip install 'shardwise[aws]' ({exc})") from exc
    return DynamoDBLeaseStore(
        DynamoDBLeaseStoreConfig(table_name=table_name),
        endpoint_url=backend.dynamodb_endpoint,
        region_name=backend.region,
    )


def open_stream_source(backend: BackendConfig, stream_name: str) -> StreamSource:
    if backend.backend == "local":
        from shardwise.backends.sqlite.stream import LocalStreamStore  # noqa: PLC0415

        return LocalStreamStore(backend.db).stream(stream_name)
    try:
        from shardwise.backends.aws.kinesis import KinesisStream  # noqa: PLC0415
    except ImportError as exc:
        raise ConfigurationError(f"the aws backend needs boto3: pip install 'shardwise[aws]' ({exc})") from exc
    return KinesisStream(stream_name, endpoint_url=backend.kinesis_endpoint, region_name=backend.region)
