"""The DynamoDB lease store: a KCL 3.x-compatible lease table, through boto3's low-level client.

Items are read and written attribute-for-attribute as KCL does (:mod:`shardwise.backends.aws.lease_items`), and every
mutation carries the condition KCL's ``DynamoDBLeaseRefresher`` uses (kcl-protocol.md §2.3), written as
condition expressions (:mod:`shardwise.backends.aws.expressions`). A failed condition is a lost race and
returns ``None``; backend faults are translated into :mod:`shardwise.errors` at this boundary
(:mod:`shardwise.backends.aws.errors`). The table itself — its settings, creation and owner index — is
:mod:`shardwise.backends.aws.lease_table`'s.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Literal, cast

from shardwise.backends.aws.backend import AwsBackend
from shardwise.backends.aws.client import dynamodb_client
from shardwise.backends.aws.errors import ConditionFailed, TableErrors
from shardwise.backends.aws.expressions import Expression
from shardwise.backends.aws.lease_items import (
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
    LEASE_ATTRIBUTES,
    Item,
    check_writable,
    classify_item,
    item_key,
    lease_from_item,
    lease_to_item,
    number_value,
    raw_fields,
)
from shardwise.backends.aws.lease_signals import ATTR_ASSIGNMENT_SIGNAL, SignalBook
from shardwise.backends.aws.lease_table import OWNER_INDEX_NAME, DynamoDBLeaseStoreConfig, LeaseTable
from shardwise.backends.aws.lease_writes import update_item_function
from shardwise.backends.aws.table import CapacityMeter, check_table_name
from shardwise.backends.config import DataClient, check_data_client
from shardwise.checkpoint.sequence import ExtendedSequenceNumber
from shardwise.errors import ConfigurationError, MalformedItemError, TableNotFoundError
from shardwise.hashkeys import HashKeyRange
from shardwise.leases.model import RESERVED_KEYS, Lease
from shardwise.leases.store import LeaseScan, MalformedLease, RawLeaseItem

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef, ScanInputTypeDef, UpdateItemInputTypeDef

# The store's own name, and the names callers have always imported from here although they now live with
# the table (lease_table, table) and the error boundary (errors).
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

_ONE: AttributeValueTypeDef = {"N": "1"}


class DynamoDBLeaseStore:
    """A :class:`~shardwise.leases.store.LeaseStore` on a DynamoDB table, table-compatible with KCL 3.x.

    Pass a boto3 DynamoDB ``client`` (thread-safe; shared freely), or let the store build one from boto3's
    default credential and region chain, with ``endpoint_url`` / ``region_name`` if given, and standard
    retries (10 attempts). The store itself is safe to use from several threads.

    ``data_client``: ``"fast"`` writes the conditional updates (renewals, takes, evictions,
    assignments, hand-offs, checkpoints) with the direct signed client beside ``client``
    (:mod:`shardwise.backends.aws.lease_writes`: same requests, same retries, same errors); ``"boto3"`` (the
    default here, so a store around a client you stub or instrument sees every call) sends everything through
    ``client``. The worker's backend passes ``retrieval.client`` (``"fast"`` by default).
    """

    def __init__(
        self,
        config: DynamoDBLeaseStoreConfig,
        *,
        client: DynamoDBClient | None = None,
        endpoint_url: str | None = None,
        region_name: str | None = None,
        data_client: DataClient = "boto3",
    ) -> None:
        if client is not None and (endpoint_url is not None or region_name is not None):
            raise ConfigurationError(
                "pass either client or endpoint_url/region_name, not both: configure the client you pass instead"
            )
        self._config = config
        self._client = (
            client if client is not None else dynamodb_client(endpoint_url=endpoint_url, region_name=region_name)
        )
        check_data_client(data_client, "data_client")
        self._data_client: DataClient = data_client
        self._update_item = update_item_function(self._client, data_client)
        self._lock = threading.Lock()
        self._capacity = CapacityMeter()
        self._errors = TableErrors(
            f"lease table {config.table_name!r}",
            "create it with create_table_if_not_exists(), or check the table name, region and endpoint",
            missing_error=TableNotFoundError,
        )
        self._table = LeaseTable(self._client, config, self._errors, self._capacity)
        self._reported: set[tuple[str, str]] = set()
        self._scans = 0
        self._last_others: list[Item] = []
        self._last_malformed: tuple[int, list[MalformedLease]] = (0, [])
        self._signals = SignalBook()

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
        return AwsBackend(self._client, region_name=self._client.meta.region_name, data_client=self._data_client)

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

    # ------------------------------------------------------------------------------- table and owner index

    def create_table_if_not_exists(self) -> bool:
        """Create the table as KCL does if it does not exist, wait until it is ACTIVE and, if this call
        created it and the config asks for it, enable point-in-time recovery. True iff this call created it.

        Raises :class:`~shardwise.errors.InvalidStateError` if the table is not ACTIVE within
        ``table_creation_timeout_s``.
        """
        return self._table.create_if_not_exists()

    def table_exists(self) -> bool:
        return self._table.exists()

    def owner_index_status(self) -> str | None:
        """The ``IndexStatus`` of ``LeaseOwnerToLeaseKeyIndex``, or ``None`` if the index does not exist
        (:meth:`LeaseTable.owner_index_status <shardwise.backends.aws.lease_table.LeaseTable.owner_index_status>`)."""
        return self._table.owner_index_status()

    def create_owner_index(self) -> bool:
        """Start creating ``LeaseOwnerToLeaseKeyIndex`` as KCL does; False if it exists or is being created
        (:meth:`LeaseTable.create_owner_index <shardwise.backends.aws.lease_table.LeaseTable.create_owner_index>`)."""
        return self._table.create_owner_index()

    def delete_owner_index(self) -> bool:
        """Start deleting ``LeaseOwnerToLeaseKeyIndex`` if it exists (does not wait). False if it does not
        exist, or the table is busy with another change (``ResourceInUseException``)."""
        return self._table.delete_owner_index()

    def list_lease_keys_for_owner(self, owner: str) -> list[str]:
        """Keys of the leases whose ``leaseOwner`` is ``owner``, in key order: a paginated, eventually
        consistent ``Query`` on ``LeaseOwnerToLeaseKeyIndex`` (as KCL's lease discoverer does)."""
        return self._table.list_lease_keys_for_owner(owner)

    # ---------------------------------------------------------------------------------------------- reading

    def is_empty(self) -> bool:
        return not any(self._lease_or_skip(item) is not None for item in self._scan())

    def list_leases(self) -> list[Lease]:
        return self._full_scan(report="all")[0].leases

    def list_leases_and_other_items(self) -> tuple[list[Lease], list[Mapping[str, Any]]]:
        """Every lease and every raw non-lease item (coordinator, worker metrics) of the table, one scan."""
        scan, others = self._full_scan(report="malformed")
        raw: list[Mapping[str, Any]] = list(others)
        return scan.leases, raw

    def last_scan_others(self) -> tuple[int, list[Mapping[str, Any]]]:
        """How many complete scans this store has made, and the raw non-lease items of the last one."""
        with self._lock:
            return self._scans, list(self._last_others)

    def last_scan_malformed(self) -> tuple[int, list[MalformedLease]]:
        """The number of the last complete scan that read every item (0: none yet), and its malformed items."""
        with self._lock:
            number, malformed = self._last_malformed
            return number, list(malformed)

    def signal_assignment(self, lease: Lease) -> bool:
        """Add 1 to the assignment signal of ``lease`` if it is still owned by its observed owner (no counter
        change: see :mod:`shardwise.backends.aws.lease_signals`). True if written."""
        if lease.lease_owner is None:
            return False
        request = Expression()
        request.require_equal(ATTR_LEASE_OWNER, {"S": lease.lease_owner})
        request.add(ATTR_ASSIGNMENT_SIGNAL, _ONE)
        return self._update(lease.lease_key, request) is not None

    def assignment_signals_seen(self) -> int:
        """How many changed assignment signals this store's reads and writes of lease items have returned."""
        return self._signals.changes

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
        if item is None:
            return None
        self._signals.observe(lease_key, item)
        return self._lease_or_skip(item)

    def scan_leases(self) -> LeaseScan:
        return self._full_scan(report="none")[0]

    def _full_scan(self, *, report: Literal["all", "malformed", "none"]) -> tuple[LeaseScan, list[Item]]:
        """One complete scan, each item read once: the leases and malformed lease items (key order) and the raw
        non-lease items. ``report``: which skipped items to log (once per key and reason)."""
        scan = LeaseScan()
        others: list[Item] = []
        for item in self._scan():
            if classify_item(item) == "other":
                others.append(item)
                if report == "all":
                    self._lease_or_skip(item)
                continue
            try:
                scan.leases.append(lease_from_item(item))
            except MalformedItemError as exc:
                scan.malformed.append(MalformedLease(exc.key, exc.problem))
                if report != "none":
                    self._report_skip(exc.key, f"malformed lease: {exc.problem}")
        scan.leases.sort(key=lambda lease: lease.lease_key)
        scan.malformed.sort(key=lambda bad: bad.key)
        with self._lock:
            self._last_malformed = (self._scans, scan.malformed)
        return scan, others

    def _get_item(self, lease_key: str, *, consistent: bool) -> Item | None:
        with self._translating("GetItem"):
            response = self._client.get_item(
                TableName=self.table_name,
                Key=self._key(lease_key),
                ConsistentRead=consistent,
                ReturnConsumedCapacity="TOTAL",
            )
        self._record_capacity(response.get("ConsumedCapacity"), write=False)
        item = response.get("Item")
        return None if item is None or classify_item(item) == "other" else item

    def read_lease_item(self, lease_key: str) -> Lease | MalformedLease | None:
        item = self._get_item(lease_key, consistent=self._config.consistent_reads)
        if item is None:
            return None
        try:
            return lease_from_item(item)
        except MalformedItemError as exc:
            return MalformedLease(exc.key, exc.problem)

    def read_raw_lease(self, lease_key: str) -> RawLeaseItem | None:
        item = self._get_item(lease_key, consistent=True)
        if item is None:
            return None
        try:
            lease_from_item(item)
            problem = None
        except MalformedItemError as exc:
            problem = exc.problem
        return RawLeaseItem(lease_key, raw_fields(item), problem, dict(item))

    def replace_raw_lease(self, raw: RawLeaseItem, lease: Lease) -> bool:
        """A conditional ``PutItem``: every attribute of the item as read, the lease attributes it lacked still
        absent. Attributes the store does not know (``streamName``…) are kept."""
        if lease.lease_key != raw.key:
            raise ValueError(f"cannot replace item {raw.key!r} by lease {lease.lease_key!r}")
        check_writable(self.table_name, lease)
        old = cast("Item", raw.version)
        if not isinstance(old, dict):
            raise ValueError("raw lease item was not read from this store")
        item = lease_to_item(lease, entity_type=ATTR_ENTITY_TYPE in old)
        for name, value in old.items():
            if name not in LEASE_ATTRIBUTES and name not in item:
                item[name] = value
        condition = Expression()
        for name, value in old.items():
            condition.require_equal(name, value)
        for name in LEASE_ATTRIBUTES:
            if name not in old:
                condition.require_absent(name)
        try:
            with self._translating("PutItem", conditional=True):
                response = self._client.put_item(
                    TableName=self.table_name,
                    Item=item,
                    ConditionExpression=condition.condition_expression,
                    ExpressionAttributeNames=condition.names,
                    ExpressionAttributeValues=condition.values,
                    ReturnConsumedCapacity="TOTAL",
                )
        except ConditionFailed:
            return False
        self._record_capacity(response.get("ConsumedCapacity"), write=True)
        return True

    def get_checkpoint(self, lease_key: str) -> ExtendedSequenceNumber | None:
        lease = self.get_lease(lease_key)
        return None if lease is None else lease.checkpoint

    def _scan(self) -> Iterator[Item]:
        request: ScanInputTypeDef = {
            "TableName": self.table_name,
            "ConsistentRead": self._config.consistent_reads,
            "ReturnConsumedCapacity": "TOTAL",
        }
        others: list[Item] = []
        while True:
            with self._translating("Scan"):
                page = self._client.scan(**request)
            self._record_capacity(page.get("ConsumedCapacity"), write=False)
            items = page.get("Items", [])
            others.extend(item for item in items if classify_item(item) == "other")
            yield from items
            last_key = page.get("LastEvaluatedKey")
            if not last_key:
                with self._lock:  # only a scan read to its end counts (is_empty stops at the first lease)
                    self._scans += 1
                    self._last_others = others
                return
            request["ExclusiveStartKey"] = last_key

    def _lease_or_skip(self, item: Item) -> Lease | None:
        """The item's lease, or ``None`` if it is not one: a coordinator item sharing the table (the single-table
        layout's ``Leader``, worker and feature items: expected, logged at debug level only) or a malformed lease
        (a warning, once per key and problem)."""
        if classify_item(item) == "other":
            entity = item.get(ATTR_ENTITY_TYPE, {}).get("S") or "none, a reserved key"
            logger.debug(
                "lease table %r: item %r is a coordinator item (entityType %s)", self.table_name, item_key(item), entity
            )
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
        check_writable(self.table_name, lease)
        item = lease_to_item(lease, entity_type=self._config.write_entity_type)
        absent = Expression()
        absent.require_absent(ATTR_LEASE_KEY)
        try:
            with self._translating("PutItem", conditional=True):
                response = self._client.put_item(
                    TableName=self.table_name,
                    Item=item,
                    ConditionExpression=absent.condition_expression,
                    ExpressionAttributeNames=absent.names,
                    ReturnConsumedCapacity="TOTAL",
                )
        except ConditionFailed:
            return None
        self._record_capacity(response.get("ConsumedCapacity"), write=True)
        return lease_from_item(item)

    def renew_lease(self, lease: Lease, *, throughput_kbps: float | None = None) -> Lease | None:
        check_writable(self.table_name, lease)
        request = Expression()
        request.require_equal(ATTR_LEASE_COUNTER, number_value(lease.lease_counter))
        if lease.checkpoint_owner is None:
            request.require_absent(ATTR_CHECKPOINT_OWNER)
        request.set(ATTR_LEASE_COUNTER, number_value(lease.lease_counter + 1))
        if throughput_kbps is not None:
            request.set(ATTR_THROUGHPUT_KBPS, number_value(float(throughput_kbps)))
        return self._update(lease.lease_key, request)

    def take_lease(self, lease: Lease, owner: str) -> Lease | None:
        check_writable(self.table_name, lease)
        request = Expression()
        request.require_equal(ATTR_LEASE_COUNTER, number_value(lease.lease_counter))
        request.set(ATTR_LEASE_COUNTER, number_value(lease.lease_counter + 1))
        request.set(ATTR_LEASE_OWNER, {"S": owner})
        request.remove(ATTR_CHECKPOINT_OWNER)
        if lease.counts_as_owner_switch(owner):
            request.add(ATTR_OWNER_SWITCHES, _ONE)
        return self._update(lease.lease_key, request)

    def evict_lease(self, lease: Lease) -> Lease | None:
        check_writable(self.table_name, lease)
        request = self._owners_unchanged(lease)
        if lease.checkpoint_owner is None:
            request.remove(ATTR_LEASE_OWNER)
        request.remove(ATTR_CHECKPOINT_OWNER)
        request.add(ATTR_LEASE_COUNTER, _ONE)
        return self._update(lease.lease_key, request)

    def assign_lease(self, lease: Lease, new_owner: str) -> Lease | None:
        check_writable(self.table_name, lease)
        request = self._owners_unchanged(lease)
        request.set(ATTR_LEASE_OWNER, {"S": new_owner})
        request.remove(ATTR_CHECKPOINT_OWNER)
        request.add(ATTR_LEASE_COUNTER, _ONE)
        if lease.counts_as_owner_switch(new_owner):
            request.add(ATTR_OWNER_SWITCHES, _ONE)
        return self._update(lease.lease_key, request)

    def initiate_graceful_handoff(self, lease: Lease, new_owner: str) -> Lease | None:
        check_writable(self.table_name, lease)
        if lease.lease_owner is None:
            # Nobody to hand off from: the condition "owner == observed owner" cannot name an owner.
            return None
        request = Expression()
        request.require_exists(ATTR_LEASE_KEY)
        request.require_equal(ATTR_LEASE_OWNER, {"S": lease.lease_owner})
        request.require_absent(ATTR_CHECKPOINT_OWNER)
        request.set(ATTR_LEASE_OWNER, {"S": new_owner})
        request.set(ATTR_CHECKPOINT_OWNER, {"S": lease.lease_owner})
        return self._update(lease.lease_key, request)

    def update_lease(self, lease: Lease) -> Lease | None:
        check_writable(self.table_name, lease)
        request = Expression()
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
        request = Expression()
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
    def _owners_unchanged(lease: Lease) -> Expression:
        """A request conditioned on the item existing with the observed ``leaseOwner`` and
        ``checkpointOwner`` (each absent where ``lease`` has ``None``)."""
        request = Expression()
        request.require_exists(ATTR_LEASE_KEY)
        for attribute, observed in (
            (ATTR_LEASE_OWNER, lease.lease_owner),
            (ATTR_CHECKPOINT_OWNER, lease.checkpoint_owner),
        ):
            request.require_equal_or_absent(attribute, None if observed is None else {"S": observed})
        return request

    @staticmethod
    def _set_hash_key_range(request: Expression, hash_key_range: HashKeyRange) -> None:
        request.set(ATTR_STARTING_HASH_KEY, {"S": str(hash_key_range.start)})
        request.set(ATTR_ENDING_HASH_KEY, {"S": str(hash_key_range.end)})

    def _update(self, lease_key: str, request: Expression) -> Lease | None:
        """Run a conditional UpdateItem; the new lease, or ``None`` if the condition did not hold.

        Besides the operation's own condition, the item must be a lease (no ``entityType``, or ``LEASE``),
        so that no update ever lands on a coordinator or worker-metrics item sharing the table.
        """
        if lease_key in RESERVED_KEYS:
            return None
        entity = request.name(ATTR_ENTITY_TYPE)
        request.require(f"attribute_not_exists({entity}) OR {entity} = {request.value({'S': ENTITY_TYPE_LEASE})}")
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
                response = self._update_item(**params)
        except ConditionFailed:
            return None
        self._record_capacity(response.get("ConsumedCapacity"), write=True)
        attributes = response["Attributes"]
        self._signals.observe(lease_key, attributes)
        return lease_from_item(attributes)

    def _record_capacity(self, consumed: Mapping[str, object] | None, *, write: bool) -> None:
        self._capacity.record(consumed, write=write)

    def _translating(self, operation: str, *, conditional: bool = False) -> contextlib.AbstractContextManager[None]:
        """Translate botocore errors raised inside into :mod:`shardwise.errors` (or ``ConditionFailed``)."""
        return self._errors.translating(operation, conditional=conditional)
