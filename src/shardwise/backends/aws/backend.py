"""The AWS backend behind the seam: DynamoDB for leases, coordinator items and table administration, Kinesis for
records."""

from __future__ import annotations

from typing import TYPE_CHECKING

from shardwise.backends.config import CallLimits, DataClient
from shardwise.backends.port import Capabilities, TableAdmin
from shardwise.errors import ConfigurationError
from shardwise.leases.store import LeaseStore
from shardwise.retrieval.source import StreamSource
from shardwise.state.port import Changelog
from shardwise.tables.items import CoordinatorTables, ItemTable, Layout, Namespace

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient

__all__ = ["CAPABILITIES", "AwsBackend"]

#: KCL's own tables: Java KCL 2.x workers may share the lease table, both layouts exist, and KCL 3.x adds a GSI
#: (and, in the legacy layout, a worker-metrics table) that a rollback to 2.x deletes.
CAPABILITIES = Capabilities(
    name="aws", layouts=("single-table", "legacy"), kcl_2x_peers=True, owner_index=True, kcl_3x_resources=True
)


class AwsBackend:
    """Opens DynamoDB lease stores and item tables through one DynamoDB client, and Kinesis streams."""

    def __init__(
        self,
        dynamodb: DynamoDBClient,
        *,
        region_name: str | None = None,
        kinesis_endpoint_url: str | None = None,
        kinesis_limits: CallLimits | None = None,
        data_client: DataClient = "fast",
    ) -> None:
        self._dynamodb = dynamodb
        self._data_client: DataClient = data_client
        self._region = region_name
        self._kinesis_endpoint = kinesis_endpoint_url
        self._kinesis_limits = kinesis_limits

    def __repr__(self) -> str:
        return f"AwsBackend(region={self._region!r})"

    @property
    def capabilities(self) -> Capabilities:
        return CAPABILITIES

    @property
    def dynamodb(self) -> DynamoDBClient:
        return self._dynamodb

    def open_lease_store(self, table_name: str) -> LeaseStore:
        from shardwise.backends.aws.leases import DynamoDBLeaseStore, DynamoDBLeaseStoreConfig  # noqa: PLC0415

        return DynamoDBLeaseStore(
            DynamoDBLeaseStoreConfig(table_name=table_name), client=self._dynamodb, data_client=self._data_client
        )

    def open_stream(self, stream_name: str) -> StreamSource:
        from shardwise.backends.aws.client import kinesis_client  # noqa: PLC0415
        from shardwise.backends.aws.kinesis import KinesisStream  # noqa: PLC0415

        client = kinesis_client(
            endpoint_url=self._kinesis_endpoint,
            region_name=self._region,
            for_what=f"stream {stream_name!r}",
            limits=self._kinesis_limits,
        )
        return KinesisStream(stream_name, client=client, data_client=self._data_client)

    def open_coordinator_tables(
        self,
        store: LeaseStore,
        application_name: str,
        *,
        layout: Layout | None = None,
        coordinator_table_name: str | None = None,
        worker_metrics_table_name: str | None = None,
    ) -> CoordinatorTables:
        from shardwise.backends.aws.items import open_dynamodb_item_tables  # noqa: PLC0415
        from shardwise.backends.aws.leases import DynamoDBLeaseStore  # noqa: PLC0415

        if not isinstance(store, DynamoDBLeaseStore):
            raise ConfigurationError(f"no DynamoDB coordinator item tables next to a {type(store).__name__}")
        coordinator, metrics, found = open_dynamodb_item_tables(
            store,
            application_name,
            coordinator_table_name=coordinator_table_name,
            worker_metrics_table_name=worker_metrics_table_name,
            layout=layout,
        )
        return CoordinatorTables(coordinator, metrics, found)

    def open_legacy_item_table(self, table_name: str, namespace: Namespace) -> ItemTable:
        from shardwise.backends.aws.items import DynamoDBItemTable  # noqa: PLC0415

        return DynamoDBItemTable(self._dynamodb, table_name, layout="legacy", namespace=namespace)

    def table_admin(self) -> TableAdmin:
        from shardwise.backends.aws.admin import DynamoDBTableAdmin  # noqa: PLC0415 - admin imports leases

        return DynamoDBTableAdmin(self._dynamodb)

    def open_changelog(self, application_name: str, *, table_name: str | None = None) -> Changelog:
        from shardwise.backends.aws.changelog import DynamoDBChangelog  # noqa: PLC0415

        return DynamoDBChangelog(self._dynamodb, table_name or f"{application_name}-state")
