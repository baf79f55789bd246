"""The DynamoDB lease table itself: its settings, its creation as KCL creates it, and KCL 3.x's owner index.

:class:`DynamoDBLeaseStoreConfig` holds the table's settings (KCL's ``LeaseManagementConfig`` defaults);
:class:`LeaseTable` creates the table (``leaseKey`` HASH, kcl-protocol.md §2.1), enables point-in-time
recovery when asked, and creates, deletes and queries ``LeaseOwnerToLeaseKeyIndex``. The lease store
(:mod:`shardwise.backends.aws.leases`) owns one and reads and writes the lease items.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Literal, cast

from botocore.exceptions import BotoCoreError, ClientError

from shardwise.backends.aws.errors import TableErrors, error_code, error_message
from shardwise.backends.aws.expressions import Expression
from shardwise.backends.aws.lease_items import ATTR_LEASE_KEY, ATTR_LEASE_OWNER
from shardwise.backends.aws.table import CapacityMeter, TableLifecycle, check_table_name
from shardwise.errors import ConfigurationError

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import (
        CreateTableInputTypeDef,
        GlobalSecondaryIndexUpdateTypeDef,
        QueryInputTypeDef,
    )

__all__ = ["OWNER_INDEX_NAME", "BillingMode", "DynamoDBLeaseStoreConfig", "LeaseTable"]

logger = logging.getLogger(__name__)

BillingMode = Literal["PAY_PER_REQUEST", "PROVISIONED"]

_MAX_TAGS = 50

#: KCL 3.x's owner index on the lease table (kcl-protocol.md §2.1).
OWNER_INDEX_NAME = "LeaseOwnerToLeaseKeyIndex"


@dataclass(frozen=True)
class DynamoDBLeaseStoreConfig:
    """Settings of one DynamoDB lease table. Defaults are KCL's (``LeaseManagementConfig``).

    ``consistent_reads`` applies to ``GetItem`` and ``Scan``; ``write_entity_type`` adds ``entityType: LEASE``
    to created leases as KCL 3.5 does (KCL ≤ 3.4 and 2.x ignore it).
    """

    table_name: str
    billing_mode: BillingMode = "PAY_PER_REQUEST"
    read_capacity_units: int = 10
    write_capacity_units: int = 10
    tags: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    point_in_time_recovery: bool = False
    deletion_protection: bool = False
    consistent_reads: bool = False
    table_creation_timeout_s: float = 600.0
    table_poll_interval_s: float = 1.0
    write_entity_type: bool = True

    def __post_init__(self) -> None:
        check_table_name(self.table_name)
        if self.billing_mode not in ("PAY_PER_REQUEST", "PROVISIONED"):
            raise ConfigurationError(
                f"billing_mode {self.billing_mode!r} is not supported: use 'PAY_PER_REQUEST' or 'PROVISIONED'"
            )
        for name in ("read_capacity_units", "write_capacity_units"):
            units = getattr(self, name)
            if isinstance(units, bool) or not isinstance(units, int) or units < 1:
                raise ConfigurationError(f"{name} must be a whole number >= 1, got {units!r}")
        self._check_tags()
        for name in (
            "point_in_time_recovery",
            "deletion_protection",
            "consistent_reads",
            "write_entity_type",
        ):
            if not isinstance(getattr(self, name), bool):
                raise ConfigurationError(f"{name} must be True or False, got {getattr(self, name)!r}")
        for name in ("table_creation_timeout_s", "table_poll_interval_s"):
            seconds = getattr(self, name)
            if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not seconds > 0:
                raise ConfigurationError(f"{name} must be a number of seconds > 0, got {seconds!r}")

    def _check_tags(self) -> None:
        tags: object = self.tags
        if not isinstance(tags, Mapping):
            raise ConfigurationError(f"tags must be a mapping of tag key to value, got {type(tags).__name__}")
        if len(tags) > _MAX_TAGS:
            raise ConfigurationError(f"tags has {len(tags)} entries; DynamoDB allows at most {_MAX_TAGS}")
        for key, value in tags.items():
            if not isinstance(key, str) or not 1 <= len(key) <= 128 or key.startswith("aws:"):
                raise ConfigurationError(
                    f"tag key {key!r} is invalid: use 1 to 128 characters not starting with 'aws:'"
                )
            if not isinstance(value, str) or len(value) > 256:
                raise ConfigurationError(f"tag {key!r} has an invalid value: use a string of at most 256 characters")
        # Freeze a private copy so later changes to the caller's dict cannot alter the config.
        object.__setattr__(self, "tags", MappingProxyType(dict(tags)))


class LeaseTable:
    """The lease table's control plane and its owner index, through the lease store's client, error
    translation and capacity meter."""

    def __init__(
        self, client: DynamoDBClient, config: DynamoDBLeaseStoreConfig, errors: TableErrors, capacity: CapacityMeter
    ) -> None:
        self._client = client
        self._config = config
        self._errors = errors
        self._capacity = capacity
        self._lifecycle = TableLifecycle(
            client,
            config.table_name,
            errors,
            creation_timeout_s=config.table_creation_timeout_s,
            poll_interval_s=config.table_poll_interval_s,
            timeout_hint=" or raise table_creation_timeout_s",
        )

    @property
    def table_name(self) -> str:
        return self._config.table_name

    # ------------------------------------------------------------------------------------------------ table

    def create_if_not_exists(self) -> bool:
        """Create the table as KCL does if it does not exist, wait until it is ACTIVE and, if this call
        created it and the config asks for it, enable point-in-time recovery. True iff this call created it."""
        deadline = time.monotonic() + self._config.table_creation_timeout_s
        created = self._lifecycle.status() is None and self._lifecycle.create(self._create_request())
        self._lifecycle.wait_until_usable(deadline)
        if created and self._config.point_in_time_recovery:
            self._enable_point_in_time_recovery(deadline)
        return created

    def exists(self) -> bool:
        return self._lifecycle.usable()

    def _create_request(self) -> CreateTableInputTypeDef:
        config = self._config
        request: CreateTableInputTypeDef = {
            "TableName": config.table_name,
            "AttributeDefinitions": [{"AttributeName": ATTR_LEASE_KEY, "AttributeType": "S"}],
            "KeySchema": [{"AttributeName": ATTR_LEASE_KEY, "KeyType": "HASH"}],
            "BillingMode": config.billing_mode,
            "DeletionProtectionEnabled": config.deletion_protection,
        }
        if config.billing_mode == "PROVISIONED":
            request["ProvisionedThroughput"] = {
                "ReadCapacityUnits": config.read_capacity_units,
                "WriteCapacityUnits": config.write_capacity_units,
            }
        if config.tags:
            request["Tags"] = [{"Key": key, "Value": value} for key, value in config.tags.items()]
        return request

    def _enable_point_in_time_recovery(self, deadline: float) -> None:
        while True:
            try:
                self._client.update_continuous_backups(
                    TableName=self.table_name,
                    PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True},
                )
            except ClientError as exc:
                # Continuous backups can be briefly unavailable right after the table becomes ACTIVE.
                if error_code(exc) == "ContinuousBackupsUnavailableException" and time.monotonic() < deadline:
                    time.sleep(self._config.table_poll_interval_s)
                    continue
                raise self._errors.client_error("UpdateContinuousBackups", exc) from exc
            except BotoCoreError as exc:
                raise self._errors.botocore_error("UpdateContinuousBackups", exc) from exc
            logger.info("enabled point-in-time recovery on lease table %r", self.table_name)
            return

    # ------------------------------------------------------------------------------------------ owner index

    def owner_index_status(self) -> str | None:
        """The ``IndexStatus`` of ``LeaseOwnerToLeaseKeyIndex`` from ``DescribeTable``, or ``None`` if the
        index does not exist. Raises :class:`~shardwise.errors.ResourceNotFoundError` if the table does not."""
        table = self._lifecycle.describe()
        if table is None:
            raise self._errors.missing("DescribeTable")
        for index in table.get("GlobalSecondaryIndexes", []):
            if index.get("IndexName") == OWNER_INDEX_NAME:
                return index.get("IndexStatus", "UNKNOWN")
        return None

    def create_owner_index(self) -> bool:
        """Start creating ``LeaseOwnerToLeaseKeyIndex`` (``leaseOwner`` HASH, ``leaseKey`` RANGE, KEYS_ONLY) as
        KCL does: on-demand when the table is on-demand, else with the table's current read/write capacity.

        Does not wait. False if the index already exists or is being created (``ResourceInUseException``, or
        a validation error saying it already exists) — several workers may race to create it.
        """
        table = self._lifecycle.describe()
        if table is None:
            raise self._errors.missing("DescribeTable")
        if any(index.get("IndexName") == OWNER_INDEX_NAME for index in table.get("GlobalSecondaryIndexes", [])):
            return False
        create: dict[str, object] = {
            "IndexName": OWNER_INDEX_NAME,
            "KeySchema": [
                {"AttributeName": ATTR_LEASE_OWNER, "KeyType": "HASH"},
                {"AttributeName": ATTR_LEASE_KEY, "KeyType": "RANGE"},
            ],
            "Projection": {"ProjectionType": "KEYS_ONLY"},
        }
        billing_mode = table.get("BillingModeSummary", {}).get("BillingMode", "PROVISIONED")
        if billing_mode != "PAY_PER_REQUEST":
            throughput = table.get("ProvisionedThroughput", {})
            create["ProvisionedThroughput"] = {
                "ReadCapacityUnits": throughput.get("ReadCapacityUnits", self._config.read_capacity_units),
                "WriteCapacityUnits": throughput.get("WriteCapacityUnits", self._config.write_capacity_units),
            }
        update = cast("GlobalSecondaryIndexUpdateTypeDef", {"Create": create})
        try:
            self._client.update_table(
                TableName=self.table_name,
                AttributeDefinitions=[
                    {"AttributeName": ATTR_LEASE_OWNER, "AttributeType": "S"},
                    {"AttributeName": ATTR_LEASE_KEY, "AttributeType": "S"},
                ],
                GlobalSecondaryIndexUpdates=[update],
            )
        except ClientError as exc:
            if error_code(exc) == "ResourceInUseException" or "already exists" in error_message(exc).lower():
                logger.info("owner index of lease table %r already exists or is being changed", self.table_name)
                return False
            raise self._errors.client_error("UpdateTable", exc) from exc
        except BotoCoreError as exc:
            raise self._errors.botocore_error("UpdateTable", exc) from exc
        logger.info("creating %s on lease table %r (%s)", OWNER_INDEX_NAME, self.table_name, billing_mode)
        return True

    def delete_owner_index(self) -> bool:
        """Start deleting ``LeaseOwnerToLeaseKeyIndex`` if it exists (does not wait). False if it does not
        exist, or the table is busy with another change (``ResourceInUseException``)."""
        if self.owner_index_status() is None:
            return False
        try:
            self._client.update_table(
                TableName=self.table_name,
                GlobalSecondaryIndexUpdates=[{"Delete": {"IndexName": OWNER_INDEX_NAME}}],
            )
        except ClientError as exc:
            if error_code(exc) in ("ResourceInUseException", "ResourceNotFoundException"):
                logger.info("owner index of lease table %r is gone or being changed", self.table_name)
                return False
            raise self._errors.client_error("UpdateTable", exc) from exc
        except BotoCoreError as exc:
            raise self._errors.botocore_error("UpdateTable", exc) from exc
        logger.info("deleting %s on lease table %r", OWNER_INDEX_NAME, self.table_name)
        return True

    def list_lease_keys_for_owner(self, owner: str) -> list[str]:
        """Keys of the leases whose ``leaseOwner`` is ``owner``, in key order: a paginated, eventually
        consistent ``Query`` on ``LeaseOwnerToLeaseKeyIndex`` (as KCL's lease discoverer does)."""
        expression = Expression()
        expression.require_equal(ATTR_LEASE_OWNER, {"S": owner})
        request: QueryInputTypeDef = {
            "TableName": self.table_name,
            "IndexName": OWNER_INDEX_NAME,
            "KeyConditionExpression": expression.condition_expression,
            "ExpressionAttributeNames": expression.names,
            "ExpressionAttributeValues": expression.values,
            "ConsistentRead": False,
            "ReturnConsumedCapacity": "TOTAL",
        }
        keys: list[str] = []
        while True:
            with self._errors.translating("Query"):
                page = self._client.query(**request)
            self._capacity.record(page.get("ConsumedCapacity"), write=False)
            keys.extend(key for item in page.get("Items", []) if (key := item.get(ATTR_LEASE_KEY, {}).get("S")))
            last_key = page.get("LastEvaluatedKey")
            if not last_key:
                return keys
            request["ExclusiveStartKey"] = last_key
