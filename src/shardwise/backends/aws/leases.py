"""The DynamoDB lease store: a KCL 3.x-compatible lease table, through boto3's low-level client.

Items are read and written attribute-for-attribute as KCL does (:mod:`shardwise.leases.items`), and every
mutation carries the condition KCL's ``DynamoDBLeaseRefresher`` uses (kcl-protocol.md §2.3), written as
condition expressions. A failed condition is a lost race and returns ``None``; backend faults are translated
into :mod:`shardwise.errors` at this boundary:

* ``ProvisionedThroughputExceededException``, ``ThrottlingException``, ``RequestLimitExceeded``
  → :class:`~shardwise.errors.ThrottlingError` (after botocore's own retries);
* ``ResourceNotFoundException`` → :class:`~shardwise.errors.ResourceNotFoundError`;
* any other service error, and connection or protocol errors → :class:`~shardwise.errors.DependencyError`.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, cast

from botocore.exceptions import BotoCoreError, ClientError

from shardwise.backends.aws.backend import AwsBackend
from shardwise.backends.aws.client import dynamodb_client
from shardwise.checkpoint.sequence import ExtendedSequenceNumber
from shardwise.errors import (
    ConfigurationError,
    DependencyError,
    InvalidStateError,
    MalformedItemError,
    ResourceNotFoundError,
    ThrottlingError,
)
from shardwise.hashkeys import HashKeyRange
from shardwise.leases.items import (
    ATTR_CHECKPOINT,
    ATTR_CHECKPOINT_OWNER,
    ATTR_CHECKPOINT_SUB,
    ATTR_CHILD_SHARD_IDS,
    ATTR_ENDING_HASH_KEY,
    ATTR_ENTITY_TYPE,
    ATTR_LEASE_COUNTER,
    ATTR_LEASE_KEY,
    ATTR_LEASE_OWNER,
    ATTR_OWNER_SWITCHES,
    ATTR_PENDING_CHECKPOINT,
    ATTR_PENDING_CHECKPOINT_STATE,
    ATTR_PENDING_CHECKPOINT_SUB,
    ATTR_STARTING_HASH_KEY,
    ATTR_THROUGHPUT_KBPS,
    ENTITY_TYPE_LEASE,
    Item,
    classify_item,
    item_key,
    lease_from_item,
    lease_to_item,
    number_value,
)
from shardwise.leases.model import RESERVED_KEYS, Lease

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import (
        AttributeValueTypeDef,
        CreateTableInputTypeDef,
        GlobalSecondaryIndexUpdateTypeDef,
        QueryInputTypeDef,
        ScanInputTypeDef,
        TableDescriptionTypeDef,
        UpdateItemInputTypeDef,
    )

__all__ = [
    "OWNER_INDEX_NAME",
    "CapacityMeter",
    "ConditionFailed",
    "DynamoDBLeaseStore",
    "DynamoDBLeaseStoreConfig",
    "TableErrors",
    "check_table_name",
]

logger = logging.getLogger(__name__)

BillingMode = Literal["PAY_PER_REQUEST", "PROVISIONED"]

_TABLE_NAME = re.compile(r"[A-Za-z0-9_.\-]{3,255}")
_MAX_TAGS = 50
_THROTTLING_CODES = frozenset({"ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded"})
_CONDITION_FAILED = "ConditionalCheckFailedException"
_USABLE_STATUSES = frozenset({"ACTIVE", "UPDATING"})
# Statuses from which a table never becomes ACTIVE on its own; waiting for them is pointless.
_DEAD_STATUSES = frozenset({"DELETING", "ARCHIVING", "ARCHIVED", "INACCESSIBLE_ENCRYPTION_CREDENTIALS"})
_ONE: AttributeValueTypeDef = {"N": "1"}

#: KCL 3.x's owner index on the lease table (kcl-protocol.md §2.1).
OWNER_INDEX_NAME = "LeaseOwnerToLeaseKeyIndex"


def check_table_name(table_name: object, setting: str = "table_name") -> str:
    """``table_name`` if it is a valid DynamoDB table name, else a ``ConfigurationError`` naming ``setting``."""
    if not isinstance(table_name, str) or not _TABLE_NAME.fullmatch(table_name):
        raise ConfigurationError(
            f"{setting} {table_name!r} is not a valid DynamoDB table name: use 3 to 255 characters "
            "from A-Z, a-z, 0-9, '_', '-' and '.'"
        )
    return table_name


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


class ConditionFailed(Exception):
    """Raised inside a :meth:`TableErrors.translating` block whose conditional request lost its race."""


class CapacityMeter:
    """A thread-safe tally of the read and write capacity units one worker consumed (``ReturnConsumedCapacity``).

    The lease store owns one; the coordinator item tables that live in the lease table share it, so a worker's
    consumption of that table is summed in one place.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._read_units = 0.0
        self._write_units = 0.0

    def record(self, consumed: Mapping[str, object] | None, *, write: bool) -> None:
        """Add a response's ``ConsumedCapacity`` (``TOTAL``); a response without one adds nothing."""
        units = consumed.get("CapacityUnits") if consumed else None
        if not isinstance(units, int | float):
            return
        with self._lock:
            if write:
                self._write_units += units
            else:
                self._read_units += units

    @property
    def totals(self) -> tuple[float, float]:
        """Read and write capacity units recorded so far."""
        with self._lock:
            return (self._read_units, self._write_units)


@dataclass(frozen=True)
class TableErrors:
    """Translation of botocore errors for one table into :mod:`shardwise.errors` (see the module docstring).

    ``subject`` names the table in messages (``"lease table 'app'"``); ``missing_hint`` is the fix suggested
    when the table does not exist.
    """

    subject: str
    missing_hint: str

    @staticmethod
    def code(exc: ClientError) -> str:
        return _error_code(exc)

    @contextlib.contextmanager
    def translating(self, operation: str, *, conditional: bool = False) -> Iterator[None]:
        """Translate botocore errors raised inside; a failed condition raises :class:`ConditionFailed` when
        ``conditional``."""
        try:
            yield
        except ClientError as exc:
            if conditional and _error_code(exc) == _CONDITION_FAILED:
                raise ConditionFailed from None
            raise self.client_error(operation, exc) from exc
        except BotoCoreError as exc:
            raise self.botocore_error(operation, exc) from exc

    def client_error(self, operation: str, exc: ClientError) -> Exception:
        code = _error_code(exc)
        message = _error_message(exc)
        if code in _THROTTLING_CODES:
            return ThrottlingError(f"DynamoDB {operation} on {self.subject} was throttled ({code}): {message}")
        if code == "ResourceNotFoundException":
            return self.missing(operation)
        return DependencyError(f"DynamoDB {operation} on {self.subject} failed ({code or 'unknown error'}): {message}")

    def missing(self, operation: str) -> ResourceNotFoundError:
        """The error for "the table does not exist", as ``ResourceNotFoundException`` is translated."""
        return ResourceNotFoundError(f"{self.subject} does not exist (DynamoDB {operation}): {self.missing_hint}")

    def botocore_error(self, operation: str, exc: BotoCoreError) -> Exception:
        return DependencyError(f"DynamoDB {operation} on {self.subject} failed: {exc}")


class _Request:
    """Collects an update and its condition as expressions with placeholder names and values."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}
        self.values: dict[str, AttributeValueTypeDef] = {}
        self._set: list[str] = []
        self._remove: list[str] = []
        self._add: list[str] = []
        self._conditions: list[str] = []

    def _name(self, attribute: str) -> str:
        placeholder = f"#{attribute}"
        self.names[placeholder] = attribute
        return placeholder

    def _value(self, value: AttributeValueTypeDef) -> str:
        placeholder = f":v{len(self.values)}"
        self.values[placeholder] = value
        return placeholder

    def set(self, attribute: str, value: AttributeValueTypeDef) -> None:
        self._set.append(f"{self._name(attribute)} = {self._value(value)}")

    def remove(self, attribute: str) -> None:
        self._remove.append(self._name(attribute))

    def add(self, attribute: str, value: AttributeValueTypeDef) -> None:
        self._add.append(f"{self._name(attribute)} {self._value(value)}")

    def require_equal(self, attribute: str, value: AttributeValueTypeDef) -> None:
        self._conditions.append(f"{self._name(attribute)} = {self._value(value)}")

    def require_exists(self, attribute: str) -> None:
        self._conditions.append(f"attribute_exists({self._name(attribute)})")

    def require_absent(self, attribute: str) -> None:
        self._conditions.append(f"attribute_not_exists({self._name(attribute)})")

    def require_lease_entity(self) -> None:
        """The item has no ``entityType`` or ``entityType`` is ``LEASE``."""
        name = self._name(ATTR_ENTITY_TYPE)
        self._conditions.append(f"(attribute_not_exists({name}) OR {name} = {self._value({'S': ENTITY_TYPE_LEASE})})")

    def require_string_or_absent(self, attribute: str, value: str | None) -> None:
        """``attribute == value``, or ``attribute`` does not exist when ``value`` is ``None``."""
        if value is None:
            self.require_absent(attribute)
        else:
            self.require_equal(attribute, {"S": value})

    @property
    def update_expression(self) -> str:
        clauses = []
        if self._set:
            clauses.append("SET " + ", ".join(self._set))
        if self._remove:
            clauses.append("REMOVE " + ", ".join(self._remove))
        if self._add:
            clauses.append("ADD " + ", ".join(self._add))
        return " ".join(clauses)

    @property
    def condition_expression(self) -> str:
        return " AND ".join(self._conditions)


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _error_message(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Message", "")) or str(exc)


class DynamoDBLeaseStore:
    """A :class:`~shardwise.leases.store.LeaseStore` on a DynamoDB table, table-compatible with KCL 3.x.

    Pass a boto3 DynamoDB ``client`` (thread-safe; shared freely), or let the store build one from boto3's
    default credential and region chain, with ``endpoint_url`` / ``region_name`` if given, and standard
    retries (10 attempts). The store itself is safe to use from several threads.
    """

    def __init__(
        self,
        config: DynamoDBLeaseStoreConfig,
        *,
        client: DynamoDBClient | None = None,
        endpoint_url: str | None = None,
        region_name: str | None = None,
    ) -> None:
        if client is not None and (endpoint_url is not None or region_name is not None):
            raise ConfigurationError(
                "pass either client or endpoint_url/region_name, not both: configure the client you pass instead"
            )
        self._config = config
        self._client = (
            client if client is not None else dynamodb_client(endpoint_url=endpoint_url, region_name=region_name)
        )
        self._lock = threading.Lock()
        self._capacity = CapacityMeter()
        self._errors = TableErrors(
            f"lease table {config.table_name!r}",
            "create it with create_table_if_not_exists(), or check the table name, region and endpoint",
        )
        self._reported: set[tuple[str, str]] = set()

    def __repr__(self) -> str:
        return f"DynamoDBLeaseStore(table_name={self.table_name!r})"

    # ------------------------------------------------------------------------------------------- properties

    @property
    def table_name(self) -> str:
        return self._config.table_name

    @property
    def config(self) -> DynamoDBLeaseStoreConfig:
        return self._config

    @property
    def backend(self) -> AwsBackend:
        """The AWS backend this store's client reaches (the seam's :class:`BackendBound`)."""
        return AwsBackend(self._client, region_name=self._client.meta.region_name)

    @property
    def client(self) -> DynamoDBClient:
        """The boto3 DynamoDB client this store uses (shared by the coordinator item tables)."""
        return self._client

    @property
    def capacity_meter(self) -> CapacityMeter:
        """The tally behind :attr:`consumed_capacity`, shared with item tables living in the lease table."""
        return self._capacity

    @property
    def consumed_capacity(self) -> tuple[float, float]:
        """Read and write capacity units consumed by item operations on the lease table so far (this store's,
        plus those of coordinator item tables sharing its :attr:`capacity_meter`)."""
        return self._capacity.totals

    # ------------------------------------------------------------------------------------------------ table

    def create_table_if_not_exists(self) -> bool:
        """Create the table as KCL does if it does not exist, wait until it is ACTIVE and, if this call
        created it and the config asks for it, enable point-in-time recovery. True iff this call created it.

        Raises :class:`~shardwise.errors.InvalidStateError` if the table is not ACTIVE within
        ``table_creation_timeout_s``.
        """
        deadline = time.monotonic() + self._config.table_creation_timeout_s
        created = self._table_status() is None and self._create_table()
        self._wait_until_usable(deadline)
        if created and self._config.point_in_time_recovery:
            self._enable_point_in_time_recovery(deadline)
        return created

    def table_exists(self) -> bool:
        return self._table_status() in _USABLE_STATUSES

    def _create_table(self) -> bool:
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
        try:
            self._client.create_table(**request)
        except ClientError as exc:
            if _error_code(exc) == "ResourceInUseException":
                logger.info("lease table %r is already being created or exists", config.table_name)
                return False
            raise self._translate_client_error("CreateTable", exc) from exc
        except BotoCoreError as exc:
            raise self._translate_botocore_error("CreateTable", exc) from exc
        logger.info("created lease table %r (%s)", config.table_name, config.billing_mode)
        return True

    def _table_status(self) -> str | None:
        """The table's status, or ``None`` if it does not exist."""
        table = self._describe_table()
        return None if table is None else table.get("TableStatus", "UNKNOWN")

    def _describe_table(self) -> TableDescriptionTypeDef | None:
        """The table's description, or ``None`` if it does not exist."""
        try:
            response = self._client.describe_table(TableName=self.table_name)
        except ClientError as exc:
            if _error_code(exc) == "ResourceNotFoundException":
                return None
            raise self._translate_client_error("DescribeTable", exc) from exc
        except BotoCoreError as exc:
            raise self._translate_botocore_error("DescribeTable", exc) from exc
        return response["Table"]

    def _wait_until_usable(self, deadline: float) -> None:
        while True:
            status = self._table_status()
            if status in _USABLE_STATUSES:
                return
            if status in _DEAD_STATUSES:
                raise InvalidStateError(
                    f"lease table {self.table_name!r} is {status} and will not become ACTIVE: "
                    "wait for the operation to finish or use another table"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise InvalidStateError(
                    f"lease table {self.table_name!r} is {status or 'not visible'}, not ACTIVE, after "
                    f"{self._config.table_creation_timeout_s:g}s: check the table in the DynamoDB console "
                    "or raise table_creation_timeout_s"
                )
            time.sleep(min(self._config.table_poll_interval_s, remaining))

    def _enable_point_in_time_recovery(self, deadline: float) -> None:
        while True:
            try:
                self._client.update_continuous_backups(
                    TableName=self.table_name,
                    PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True},
                )
            except ClientError as exc:
                # Continuous backups can be briefly unavailable right after the table becomes ACTIVE.
                if _error_code(exc) == "ContinuousBackupsUnavailableException" and time.monotonic() < deadline:
                    time.sleep(self._config.table_poll_interval_s)
                    continue
                raise self._translate_client_error("UpdateContinuousBackups", exc) from exc
            except BotoCoreError as exc:
                raise self._translate_botocore_error("UpdateContinuousBackups", exc) from exc
            logger.info("enabled point-in-time recovery on lease table %r", self.table_name)
            return

    # ------------------------------------------------------------------------------------------ owner index

    def owner_index_status(self) -> str | None:
        """The ``IndexStatus`` of ``LeaseOwnerToLeaseKeyIndex`` from ``DescribeTable``, or ``None`` if the
        index does not exist. Raises :class:`~shardwise.errors.ResourceNotFoundError` if the table does not."""
        table = self._describe_table()
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
        table = self._describe_table()
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
            if _error_code(exc) == "ResourceInUseException" or "already exists" in _error_message(exc).lower():
                logger.info("owner index of lease table %r already exists or is being changed", self.table_name)
                return False
            raise self._translate_client_error("UpdateTable", exc) from exc
        except BotoCoreError as exc:
            raise self._translate_botocore_error("UpdateTable", exc) from exc
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
            if _error_code(exc) in ("ResourceInUseException", "ResourceNotFoundException"):
                logger.info("owner index of lease table %r is gone or being changed", self.table_name)
                return False
            raise self._translate_client_error("UpdateTable", exc) from exc
        except BotoCoreError as exc:
            raise self._translate_botocore_error("UpdateTable", exc) from exc
        logger.info("deleting %s on lease table %r", OWNER_INDEX_NAME, self.table_name)
        return True

    def list_lease_keys_for_owner(self, owner: str) -> list[str]:
        """Keys of the leases whose ``leaseOwner`` is ``owner``, in key order: a paginated, eventually
        consistent ``Query`` on ``LeaseOwnerToLeaseKeyIndex`` (as KCL's lease discoverer does)."""
        request: QueryInputTypeDef = {
            "TableName": self.table_name,
            "IndexName": OWNER_INDEX_NAME,
            "KeyConditionExpression": "#owner = :owner",
            "ExpressionAttributeNames": {"#owner": ATTR_LEASE_OWNER},
            "ExpressionAttributeValues": {":owner": {"S": owner}},
            "ConsistentRead": False,
            "ReturnConsumedCapacity": "TOTAL",
        }
        keys: list[str] = []
        while True:
            with self._translating("Query"):
                page = self._client.query(**request)
            self._record_capacity(page.get("ConsumedCapacity"), write=False)
            keys.extend(key for item in page.get("Items", []) if (key := item.get(ATTR_LEASE_KEY, {}).get("S")))
            last_key = page.get("LastEvaluatedKey")
            if not last_key:
                return keys
            request["ExclusiveStartKey"] = last_key

    # ---------------------------------------------------------------------------------------------- reading

    def is_empty(self) -> bool:
        return not any(self._lease_or_skip(item) is not None for item in self._scan())

    def list_leases(self) -> list[Lease]:
        leases = [lease for item in self._scan() if (lease := self._lease_or_skip(item)) is not None]
        leases.sort(key=lambda lease: lease.lease_key)
        return leases

    def list_leases_and_other_items(self) -> tuple[list[Lease], list[Mapping[str, Any]]]:
        """Every lease and every raw non-lease item (coordinator, worker metrics) of the table, one scan."""
        leases: list[Lease] = []
        others: list[Mapping[str, Any]] = []
        for item in self._scan():
            if classify_item(item) == "other":
                others.append(item)
            elif (lease := self._lease_or_skip(item)) is not None:
                leases.append(lease)
        leases.sort(key=lambda lease: lease.lease_key)
        return leases, others

    def get_lease(self, lease_key: str) -> Lease | None:
        with self._translating("GetItem"):
            response = self._client.get_item(
                TableName=self.table_name,
                Key=self._key(lease_key),
                ConsistentRead=self._config.consistent_reads,
                ReturnConsumedCapacity="TOTAL",
            )
        self._record_capacity(response.get("ConsumedCapacity"), write=False)
        item = response.get("Item")
        return None if item is None else self._lease_or_skip(item)

    def get_checkpoint(self, lease_key: str) -> ExtendedSequenceNumber | None:
        lease = self.get_lease(lease_key)
        return None if lease is None else lease.checkpoint

    def _scan(self) -> Iterator[Item]:
        request: ScanInputTypeDef = {
            "TableName": self.table_name,
            "ConsistentRead": self._config.consistent_reads,
            "ReturnConsumedCapacity": "TOTAL",
        }
        while True:
            with self._translating("Scan"):
                page = self._client.scan(**request)
            self._record_capacity(page.get("ConsumedCapacity"), write=False)
            yield from page.get("Items", [])
            last_key = page.get("LastEvaluatedKey")
            if not last_key:
                return
            request["ExclusiveStartKey"] = last_key

    def _lease_or_skip(self, item: Item) -> Lease | None:
        """The item's lease, or ``None`` (reported once per key and reason) if it is not a valid lease."""
        if classify_item(item) == "other":
            entity = item.get(ATTR_ENTITY_TYPE, {}).get("S")
            reason = f"not a lease (entityType {entity})" if entity else "not a lease (reserved coordinator key)"
            self._report_skip(item_key(item), reason)
            return None
        try:
            return lease_from_item(item)
        except MalformedItemError as exc:
            self._report_skip(exc.key, f"malformed lease: {exc.problem}")
            return None

    def _report_skip(self, key: str, reason: str) -> None:
        with self._lock:
            first = (key, reason) not in self._reported
            self._reported.add((key, reason))
        level = logging.WARNING if first else logging.DEBUG
        logger.log(level, "lease table %r: skipping item %r: %s", self.table_name, key, reason)

    # ---------------------------------------------------------------------------------------------- writing

    def create_lease_if_not_exists(self, lease: Lease) -> Lease | None:
        """Write ``lease`` if no item has its key. Raises ``ValueError`` for a reserved coordinator key."""
        if lease.lease_key in RESERVED_KEYS:
            raise ValueError(f"{lease.lease_key!r} is a reserved coordinator key and cannot be a lease key")
        item = lease_to_item(lease, entity_type=self._config.write_entity_type)
        try:
            with self._translating("PutItem", conditional=True):
                response = self._client.put_item(
                    TableName=self.table_name,
                    Item=item,
                    ConditionExpression="attribute_not_exists(#leaseKey)",
                    ExpressionAttributeNames={"#leaseKey": ATTR_LEASE_KEY},
                    ReturnConsumedCapacity="TOTAL",
                )
        except ConditionFailed:
            return None
        self._record_capacity(response.get("ConsumedCapacity"), write=True)
        return lease_from_item(item)

    def renew_lease(self, lease: Lease, *, throughput_kbps: float | None = None) -> Lease | None:
        request = _Request()
        request.require_equal(ATTR_LEASE_COUNTER, number_value(lease.lease_counter))
        if lease.checkpoint_owner is None:
            request.require_absent(ATTR_CHECKPOINT_OWNER)
        request.set(ATTR_LEASE_COUNTER, number_value(lease.lease_counter + 1))
        if throughput_kbps is not None:
            request.set(ATTR_THROUGHPUT_KBPS, number_value(float(throughput_kbps)))
        return self._update(lease.lease_key, request)

    def take_lease(self, lease: Lease, owner: str) -> Lease | None:
        request = _Request()
        request.require_equal(ATTR_LEASE_COUNTER, number_value(lease.lease_counter))
        request.set(ATTR_LEASE_COUNTER, number_value(lease.lease_counter + 1))
        request.set(ATTR_LEASE_OWNER, {"S": owner})
        request.remove(ATTR_CHECKPOINT_OWNER)
        if lease.counts_as_owner_switch(owner):
            request.add(ATTR_OWNER_SWITCHES, _ONE)
        return self._update(lease.lease_key, request)

    def evict_lease(self, lease: Lease) -> Lease | None:
        request = self._owners_unchanged(lease)
        if lease.checkpoint_owner is None:
            request.remove(ATTR_LEASE_OWNER)
        request.remove(ATTR_CHECKPOINT_OWNER)
        request.add(ATTR_LEASE_COUNTER, _ONE)
        return self._update(lease.lease_key, request)

    def assign_lease(self, lease: Lease, new_owner: str) -> Lease | None:
        request = self._owners_unchanged(lease)
        request.set(ATTR_LEASE_OWNER, {"S": new_owner})
        request.remove(ATTR_CHECKPOINT_OWNER)
        request.add(ATTR_LEASE_COUNTER, _ONE)
        if lease.counts_as_owner_switch(new_owner):
            request.add(ATTR_OWNER_SWITCHES, _ONE)
        return self._update(lease.lease_key, request)

    def initiate_graceful_handoff(self, lease: Lease, new_owner: str) -> Lease | None:
        if lease.lease_owner is None:
            # Nobody to hand off from: the condition "owner == observed owner" cannot name an owner.
            return None
        request = _Request()
        request.require_exists(ATTR_LEASE_KEY)
        request.require_equal(ATTR_LEASE_OWNER, {"S": lease.lease_owner})
        request.require_absent(ATTR_CHECKPOINT_OWNER)
        request.set(ATTR_LEASE_OWNER, {"S": new_owner})
        request.set(ATTR_CHECKPOINT_OWNER, {"S": lease.lease_owner})
        return self._update(lease.lease_key, request)

    def update_lease(self, lease: Lease) -> Lease | None:
        request = _Request()
        request.require_equal(ATTR_LEASE_COUNTER, number_value(lease.lease_counter))
        request.set(ATTR_LEASE_COUNTER, number_value(lease.lease_counter + 1))
        request.set(ATTR_CHECKPOINT, {"S": lease.checkpoint.sequence_number})
        request.set(ATTR_CHECKPOINT_SUB, number_value(lease.checkpoint.sub_sequence_number))
        request.set(ATTR_OWNER_SWITCHES, number_value(lease.owner_switches_since_checkpoint))
        if lease.pending_checkpoint is not None:
            request.set(ATTR_PENDING_CHECKPOINT, {"S": lease.pending_checkpoint.sequence_number})
            request.set(ATTR_PENDING_CHECKPOINT_SUB, number_value(lease.pending_checkpoint.sub_sequence_number))
        else:
            request.remove(ATTR_PENDING_CHECKPOINT)
            request.remove(ATTR_PENDING_CHECKPOINT_SUB)
        if lease.pending_checkpoint_state is not None:
            request.set(ATTR_PENDING_CHECKPOINT_STATE, {"B": bytes(lease.pending_checkpoint_state)})
        else:
            request.remove(ATTR_PENDING_CHECKPOINT_STATE)
        if lease.child_shard_ids:
            request.set(ATTR_CHILD_SHARD_IDS, {"SS": sorted(lease.child_shard_ids)})
        if lease.hash_key_range is not None:
            self._set_hash_key_range(request, lease.hash_key_range)
        return self._update(lease.lease_key, request)

    def update_lease_meta(
        self,
        lease_key: str,
        *,
        child_shard_ids: Iterable[str] | None = None,
        hash_key_range: HashKeyRange | None = None,
    ) -> Lease | None:
        """Write ``childShardIds`` (an empty collection removes the attribute) and/or the hash range."""
        if child_shard_ids is None and hash_key_range is None:
            raise ValueError("update_lease_meta needs child_shard_ids and/or hash_key_range")
        request = _Request()
        request.require_exists(ATTR_LEASE_KEY)
        if child_shard_ids is not None:
            children = sorted(set(child_shard_ids))
            if children:
                request.set(ATTR_CHILD_SHARD_IDS, {"SS": children})
            else:
                request.remove(ATTR_CHILD_SHARD_IDS)
        if hash_key_range is not None:
            self._set_hash_key_range(request, hash_key_range)
        return self._update(lease_key, request)

    def delete_lease(self, lease_key: str) -> None:
        with self._translating("DeleteItem"):
            response = self._client.delete_item(
                TableName=self.table_name, Key=self._key(lease_key), ReturnConsumedCapacity="TOTAL"
            )
        self._record_capacity(response.get("ConsumedCapacity"), write=True)

    # ------------------------------------------------------------------------------------------- internals

    @staticmethod
    def _key(lease_key: str) -> dict[str, AttributeValueTypeDef]:
        return {ATTR_LEASE_KEY: {"S": lease_key}}

    @staticmethod
    def _owners_unchanged(lease: Lease) -> _Request:
        """A request conditioned on the item existing with the observed ``leaseOwner`` and
        ``checkpointOwner`` (each absent where ``lease`` has ``None``)."""
        request = _Request()
        request.require_exists(ATTR_LEASE_KEY)
        request.require_string_or_absent(ATTR_LEASE_OWNER, lease.lease_owner)
        request.require_string_or_absent(ATTR_CHECKPOINT_OWNER, lease.checkpoint_owner)
        return request

    @staticmethod
    def _set_hash_key_range(request: _Request, hash_key_range: HashKeyRange) -> None:
        request.set(ATTR_STARTING_HASH_KEY, {"S": str(hash_key_range.start)})
        request.set(ATTR_ENDING_HASH_KEY, {"S": str(hash_key_range.end)})

    def _update(self, lease_key: str, request: _Request) -> Lease | None:
        """Run a conditional UpdateItem; the new lease, or ``None`` if the condition did not hold.

        Besides the operation's own condition, the item must be a lease (no ``entityType``, or ``LEASE``),
        so that no update ever lands on a coordinator or worker-metrics item sharing the table.
        """
        if lease_key in RESERVED_KEYS:
            return None
        request.require_lease_entity()
        params: UpdateItemInputTypeDef = {
            "TableName": self.table_name,
            "Key": self._key(lease_key),
            "UpdateExpression": request.update_expression,
            "ConditionExpression": request.condition_expression,
            "ExpressionAttributeNames": request.names,
            "ReturnValues": "ALL_NEW",
            "ReturnConsumedCapacity": "TOTAL",
        }
        if request.values:
            params["ExpressionAttributeValues"] = request.values
        try:
            with self._translating("UpdateItem", conditional=True):
                response = self._client.update_item(**params)
        except ConditionFailed:
            return None
        self._record_capacity(response.get("ConsumedCapacity"), write=True)
        return lease_from_item(response["Attributes"])

    def _record_capacity(self, consumed: Mapping[str, object] | None, *, write: bool) -> None:
        self._capacity.record(consumed, write=write)

    def _translating(self, operation: str, *, conditional: bool = False) -> contextlib.AbstractContextManager[None]:
        """Translate botocore errors raised inside into :mod:`shardwise.errors` (or ``ConditionFailed``)."""
        return self._errors.translating(operation, conditional=conditional)

    def _translate_client_error(self, operation: str, exc: ClientError) -> Exception:
        return self._errors.client_error(operation, exc)

    def _translate_botocore_error(self, operation: str, exc: BotoCoreError) -> Exception:
        return self._errors.botocore_error(operation, exc)
