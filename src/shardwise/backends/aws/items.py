"""``DynamoDBItemTable``: coordinator items in DynamoDB, in either of KCL 3.x's layouts (kcl-protocol.md §3, §5.1).

* **single-table** (KCL 3.5): items live in the lease table keyed by ``leaseKey``; puts and upserts write
  ``entityType`` (``LEADER``, ``CLIENT_VERSION_MIGRATION``, ``TABLE_MIGRATION`` by coordinator key,
  ``WORKER_METRIC_STATS`` for worker metrics). Reads see only items of their namespace — by ``entityType``,
  or, for coordinator items written without one, by their well-known key — and every write is conditioned on
  the namespace too, so no operation ever lands on a lease or on an item of the other namespace.
* **legacy** (KCL 3.0–3.4): coordinator items in ``<app>-CoordinatorState`` keyed ``key``, worker metrics in
  ``<app>-WorkerMetricStats`` keyed ``wid``; no ``entityType`` is written. ``create_if_not_exists`` creates
  these tables as KCL does (on-demand, then waits until ACTIVE).

Values go through :func:`~shardwise.backends.aws.expressions.to_attribute_value` and back (floats as exact
decimals on the way in; numbers back as ``int`` when integral, else ``float``; binary back as ``bytes``), and
requests are built with the expression builder the lease store uses. Gets and scans are strongly consistent; scans
are paginated; every item operation asks for ``ReturnConsumedCapacity="TOTAL"`` and adds it to a
:class:`~shardwise.backends.aws.table.CapacityMeter` — the lease store's own when the items live in the lease
table. Errors are translated exactly as the lease store translates them (:mod:`shardwise.backends.aws.errors`).

``transact`` sends one ``TransactWriteItems`` request of the same puts and updates ``put_if_absent`` and
``update`` send (with the same conditions); a cancellation for a failed condition is a lost race (``False``).

:func:`open_dynamodb_item_tables` picks the layout as KCL 3.5 does.
"""

from __future__ import annotations

import decimal
import logging
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from shardwise.backends.aws.errors import ConditionFailed, TableErrors, cancellation_reason_codes, error_code
from shardwise.backends.aws.expressions import Expression, from_attribute_value, to_attribute_value
from shardwise.backends.aws.lease_items import ATTR_ENTITY_TYPE, ATTR_LEASE_KEY
from shardwise.backends.aws.leases import DynamoDBLeaseStore
from shardwise.backends.aws.table import CapacityMeter, TableLifecycle, check_table_name
from shardwise.errors import ConfigurationError, MalformedItemError, ResourceNotFoundError
from shardwise.tables.items import ABSENT, ItemRecord, ItemWrite, Layout, Namespace
from shardwise.tables.rules import (
    COORDINATOR_ENTITY_TYPES,
    ENTITY_TYPE_WORKER_METRIC_STATS,
    by_key,
    check_attribute_names,
    check_item_key,
    check_namespace,
    check_transaction,
    check_update,
    check_upsert,
    entity_type_for,
    in_namespace,
    not_in_namespace_error,
)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import (
        AttributeValueTypeDef,
        DeleteItemInputTypeDef,
        PutTypeDef,
        ScanInputTypeDef,
        TransactWriteItemTypeDef,
        UpdateItemInputTypeDef,
        UpdateTypeDef,
    )

__all__ = [
    "LEGACY_COORDINATOR_KEY",
    "LEGACY_WORKER_METRICS_KEY",
    "TABLE_MIGRATION_COMPLETE",
    "DynamoDBItemTable",
    "detect_layout",
    "open_dynamodb_item_tables",
]

logger = logging.getLogger(__name__)

#: Key attribute of the legacy ``<app>-CoordinatorState`` table.
LEGACY_COORDINATOR_KEY = "key"
#: Key attribute of the legacy ``<app>-WorkerMetricStats`` table.
LEGACY_WORKER_METRICS_KEY = "wid"
#: ``tm`` of the ``TableMigration3.5`` item once KCL 3.5 moved everything into the lease table.
TABLE_MIGRATION_COMPLETE = "TABLE_MIGRATION_STATUS_COMPLETE"
_TABLE_MIGRATION_KEY = "TableMigration3.5"

_LAYOUTS: tuple[Layout, ...] = ("single-table", "legacy")

# Cancellation reason of a transaction item whose condition failed (TransactionCanceledException).
_TRANSACTION_CANCELED = "TransactionCanceledException"
_CONDITION_FAILED_REASON = "ConditionalCheckFailed"

Item = dict[str, "AttributeValueTypeDef"]


# ------------------------------------------------------------------------------------------------- the table


class DynamoDBItemTable:
    """One namespace of coordinator items in a DynamoDB table, in the single-table or the legacy layout.

    ``client`` is a boto3 DynamoDB client (usually the lease store's); ``capacity_meter`` receives the
    consumed capacity (a new meter if not given — pass the lease store's for the single-table layout).
    """

    def __init__(
        self,
        client: DynamoDBClient,
        table_name: str,
        *,
        layout: Layout,
        namespace: Namespace,
        capacity_meter: CapacityMeter | None = None,
        table_creation_timeout_s: float = 600.0,
        table_poll_interval_s: float = 1.0,
    ) -> None:
        if layout not in _LAYOUTS:
            raise ConfigurationError(f"layout must be one of {', '.join(_LAYOUTS)}, got {layout!r}")
        check_namespace(namespace)
        timings: tuple[tuple[str, object], ...] = (
            ("table_creation_timeout_s", table_creation_timeout_s),
            ("table_poll_interval_s", table_poll_interval_s),
        )
        for setting, seconds in timings:
            if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not seconds > 0:
                raise ConfigurationError(f"{setting} must be a number of seconds > 0, got {seconds!r}")
        self._client = client
        self._table = check_table_name(table_name)
        self._layout: Layout = layout
        self._namespace: Namespace = namespace
        self._capacity = capacity_meter if capacity_meter is not None else CapacityMeter()
        if layout == "single-table":
            self._key_attribute = ATTR_LEASE_KEY
            subject = f"lease table {table_name!r}"
            hint = "create the lease table first, or check the table name, region and endpoint"
        else:
            self._key_attribute = LEGACY_COORDINATOR_KEY if namespace == "coordinator" else LEGACY_WORKER_METRICS_KEY
            kind = "coordinator state table" if namespace == "coordinator" else "worker metrics table"
            subject = f"{kind} {table_name!r}"
            hint = "create it with create_if_not_exists(), or check the table name, region and endpoint"
        self._errors = TableErrors(subject, hint)
        self._lifecycle = TableLifecycle(
            client,
            self._table,
            self._errors,
            creation_timeout_s=float(table_creation_timeout_s),
            poll_interval_s=float(table_poll_interval_s),
        )

    def __repr__(self) -> str:
        return f"DynamoDBItemTable(table_name={self._table!r}, layout={self._layout!r}, namespace={self._namespace!r})"

    # -- properties ------------------------------------------------------------------------------------

    @property
    def table_name(self) -> str:
        return self._table

    @property
    def layout(self) -> Layout:
        return self._layout

    @property
    def namespace(self) -> Namespace:
        return self._namespace

    @property
    def key_attribute(self) -> str:
        """``leaseKey`` (single-table), ``key`` (legacy coordinator) or ``wid`` (legacy worker metrics)."""
        return self._key_attribute

    @property
    def capacity_meter(self) -> CapacityMeter:
        return self._capacity

    @property
    def consumed_capacity(self) -> tuple[float, float]:
        """Read and write capacity units recorded by this table's meter (shared with the lease store in the
        single-table layout)."""
        return self._capacity.totals

    @property
    def _single_table(self) -> bool:
        return self._layout == "single-table"

    # -- table -----------------------------------------------------------------------------------------

    def table_status(self) -> str | None:
        """The table's ``TableStatus`` from ``DescribeTable``, or ``None`` if it does not exist."""
        return self._lifecycle.status()

    def exists(self) -> bool:
        return self._lifecycle.usable()

    def create_if_not_exists(self) -> bool:
        """Legacy layout: create the table as KCL ≤ 3.4 does (``key``/``wid`` HASH S, on-demand) if it does
        not exist, and wait until it is ACTIVE. True iff this call created it. Single-table: a no-op (the lease
        store creates the lease table)."""
        if self._single_table:
            return False
        deadline = time.monotonic() + self._lifecycle.creation_timeout_s
        created = self.table_status() is None and self._lifecycle.create(
            {
                "TableName": self._table,
                "AttributeDefinitions": [{"AttributeName": self._key_attribute, "AttributeType": "S"}],
                "KeySchema": [{"AttributeName": self._key_attribute, "KeyType": "HASH"}],
                "BillingMode": "PAY_PER_REQUEST",
            }
        )
        self._lifecycle.wait_until_usable(deadline)
        return created

    # -- items -----------------------------------------------------------------------------------------

    def _key(self, key: str) -> Item:
        return {self._key_attribute: {"S": key}}

    def _record(self, item: Mapping[str, AttributeValueTypeDef]) -> ItemRecord | None:
        """The record of a raw item, or ``None`` if it is not an item of this namespace."""
        raw_key = item.get(self._key_attribute, {}).get("S")
        raw_entity = item.get(ATTR_ENTITY_TYPE, {}).get("S")
        if not isinstance(raw_key, str):
            return None
        if self._single_table and not in_namespace(self._namespace, raw_key, raw_entity):
            return None
        attributes: dict[str, Any] = {}
        for name, value in item.items():
            if name in (self._key_attribute, ATTR_ENTITY_TYPE):
                continue
            try:
                attributes[name] = from_attribute_value(value)
            except (TypeError, ValueError, decimal.DecimalException) as exc:
                raise MalformedItemError(raw_key, f"attribute {name!r} cannot be read: {exc}") from exc
        return ItemRecord(raw_key, attributes, raw_entity)

    def _check_key(self, key: str) -> None:
        check_item_key(self._namespace, key, single_table=self._single_table)

    def _namespace_condition(self, expression: Expression, key: str) -> str | None:
        """Single-table: the condition "the item with this key belongs to this namespace" (``None`` for the
        legacy layout, whose tables hold one namespace each)."""
        if not self._single_table:
            return None
        entity = expression.name(ATTR_ENTITY_TYPE)
        value = expression.value({"S": entity_type_for(self._namespace, key)})
        if self._namespace == "worker-metrics":
            return f"{entity} = {value}"
        return f"attribute_not_exists({entity}) OR {entity} = {value}"

    def _require_existing(self, expression: Expression, key: str, expect: Mapping[str, Any] | None) -> None:
        """Condition ``expression`` on the item existing in this namespace with every ``expect`` value."""
        expression.require_exists(self._key_attribute)
        namespace = self._namespace_condition(expression, key)
        if namespace is not None:
            expression.require(namespace)
        if expect:
            check_attribute_names(expect, "expect")
            for attribute, wanted in expect.items():
                expression.require_equal_or_absent(attribute, None if wanted is ABSENT else to_attribute_value(wanted))

    def get(self, key: str, *, consistent: bool = True) -> ItemRecord | None:
        with self._errors.translating("GetItem"):
            response = self._client.get_item(
                TableName=self._table, Key=self._key(key), ConsistentRead=consistent, ReturnConsumedCapacity="TOTAL"
            )
        self._capacity.record(response.get("ConsumedCapacity"), write=False)
        item = response.get("Item")
        return None if item is None else self._record(item)

    def scan(self) -> list[ItemRecord]:
        return by_key(self._record(item) for item in self._scan())

    @property
    def shares_lease_table(self) -> bool:
        """Single-table layout: these items come back from a scan of the lease table."""
        return self._single_table

    def records_from(self, raw_items: Iterable[Mapping[str, AttributeValueTypeDef]]) -> list[ItemRecord]:
        """The records of this namespace among raw items of the table (read by someone else's scan)."""
        return by_key(self._record(item) for item in raw_items)

    def _scan(self) -> Iterator[Mapping[str, AttributeValueTypeDef]]:
        request: ScanInputTypeDef = {
            "TableName": self._table,
            "ConsistentRead": True,
            "ReturnConsumedCapacity": "TOTAL",
        }
        if self._single_table:
            # Server-side filter (no capacity saved, less transfer); _record filters again exactly.
            expression = Expression()
            if self._namespace == "worker-metrics":
                expression.require_equal(ATTR_ENTITY_TYPE, {"S": ENTITY_TYPE_WORKER_METRIC_STATS})
            else:
                entity = expression.name(ATTR_ENTITY_TYPE)
                types = ", ".join(expression.value({"S": t}) for t in COORDINATOR_ENTITY_TYPES.values())
                keys = ", ".join(expression.value({"S": k}) for k in COORDINATOR_ENTITY_TYPES)
                key = expression.name(self._key_attribute)
                expression.require(f"{entity} IN ({types}) OR (attribute_not_exists({entity}) AND {key} IN ({keys}))")
            request["FilterExpression"] = expression.condition_expression
            request["ExpressionAttributeNames"] = expression.names
            request["ExpressionAttributeValues"] = expression.values
        while True:
            with self._errors.translating("Scan"):
                page = self._client.scan(**request)
            self._capacity.record(page.get("ConsumedCapacity"), write=False)
            yield from page.get("Items", [])
            last_key = page.get("LastEvaluatedKey")
            if not last_key:
                return
            request["ExclusiveStartKey"] = last_key

    def _put_request(self, key: str, attributes: Mapping[str, Any], what: str) -> PutTypeDef:
        """The put of a new item (with ``entityType`` in the single-table layout), on condition that no item has
        this key — ``put_if_absent``'s request, and a create in a transaction."""
        self._check_key(key)
        check_attribute_names(attributes, what)
        item: Item = {name: to_attribute_value(value) for name, value in attributes.items()}
        item.update(self._key(key))
        if self._single_table:
            item[ATTR_ENTITY_TYPE] = {"S": entity_type_for(self._namespace, key)}
        absent = Expression()
        absent.require_absent(self._key_attribute)
        return {
            "TableName": self._table,
            "Item": item,
            "ConditionExpression": absent.condition_expression,
            "ExpressionAttributeNames": absent.names,
        }

    def _update_request(
        self,
        key: str,
        set_attributes: Mapping[str, Any],
        remove_attributes: Iterable[str],
        expect: Mapping[str, Any] | None,
    ) -> UpdateTypeDef:
        """The update of an existing item of this namespace on condition that every ``expect`` holds —
        ``update``'s request, and an update in a transaction."""
        self._check_key(key)
        removed = check_update(set_attributes, remove_attributes)
        expression = Expression()
        for name, value in set_attributes.items():
            expression.set(name, to_attribute_value(value))
        for name in removed:
            expression.remove(name)
        self._require_existing(expression, key, expect)
        request: UpdateTypeDef = {
            "TableName": self._table,
            "Key": self._key(key),
            "UpdateExpression": expression.update_expression,
            "ConditionExpression": expression.condition_expression,
            "ExpressionAttributeNames": expression.names,
        }
        if expression.values:
            request["ExpressionAttributeValues"] = expression.values
        return request

    def put_if_absent(self, key: str, attributes: Mapping[str, Any]) -> bool:
        request = self._put_request(key, attributes, "put_if_absent")
        try:
            with self._errors.translating("PutItem", conditional=True):
                response = self._client.put_item(**request, ReturnConsumedCapacity="TOTAL")
        except ConditionFailed:
            return False
        self._capacity.record(response.get("ConsumedCapacity"), write=True)
        return True

    def update(
        self,
        key: str,
        *,
        set_attributes: Mapping[str, Any],
        remove_attributes: Iterable[str] = (),
        expect: Mapping[str, Any] | None = None,
    ) -> ItemRecord | None:
        request = self._update_request(key, set_attributes, remove_attributes, expect)
        try:
            with self._errors.translating("UpdateItem", conditional=True):
                response = self._client.update_item(**request, ReturnValues="ALL_NEW", ReturnConsumedCapacity="TOTAL")
        except ConditionFailed:
            return None
        self._capacity.record(response.get("ConsumedCapacity"), write=True)
        return self._record(response.get("Attributes", {}))

    def transact(self, writes: Sequence[ItemWrite]) -> bool:
        """One ``TransactWriteItems`` request: each create is ``put_if_absent``'s put, each update ``update``'s
        update, with their conditions. A cancellation because a condition failed is a lost race (``False``);
        any other error is translated as the other operations translate theirs."""
        items: list[TransactWriteItemTypeDef] = []
        for write in check_transaction(writes):
            if write.create:
                items.append({"Put": self._put_request(write.key, write.set_attributes, "transact")})
            else:
                update = self._update_request(write.key, write.set_attributes, write.remove_attributes, write.expect)
                items.append({"Update": update})
        try:
            response = self._client.transact_write_items(TransactItems=items, ReturnConsumedCapacity="TOTAL")
        except ClientError as exc:
            if error_code(exc) == _TRANSACTION_CANCELED and _CONDITION_FAILED_REASON in cancellation_reason_codes(exc):
                return False
            raise self._errors.client_error("TransactWriteItems", exc) from exc
        except BotoCoreError as exc:
            raise self._errors.botocore_error("TransactWriteItems", exc) from exc
        for consumed in response.get("ConsumedCapacity", []):
            self._capacity.record(consumed, write=True)
        return True

    def upsert(self, key: str, attributes: Mapping[str, Any]) -> None:
        """Set these attributes, creating the item if needed. In the single-table layout the write also sets
        ``entityType`` and refuses (``ConfigurationError``) to touch an item of another kind under this key."""
        self._check_key(key)
        check_upsert(attributes)
        expression = Expression()
        for name, value in attributes.items():
            expression.set(name, to_attribute_value(value))
        params: UpdateItemInputTypeDef = {
            "TableName": self._table,
            "Key": self._key(key),
            "ReturnConsumedCapacity": "TOTAL",
        }
        namespace = self._namespace_condition(expression, key)
        if namespace is not None:
            expression.set(ATTR_ENTITY_TYPE, {"S": entity_type_for(self._namespace, key)})
            expression.require(f"attribute_not_exists({expression.name(self._key_attribute)}) OR ({namespace})")
            params["ConditionExpression"] = expression.condition_expression
        params["UpdateExpression"] = expression.update_expression
        params["ExpressionAttributeNames"] = expression.names
        params["ExpressionAttributeValues"] = expression.values
        try:
            with self._errors.translating("UpdateItem", conditional=True):
                response = self._client.update_item(**params)
        except ConditionFailed:
            raise not_in_namespace_error(key, self._errors.subject, self._namespace) from None
        self._capacity.record(response.get("ConsumedCapacity"), write=True)

    def delete(self, key: str, *, expect: Mapping[str, Any] | None = None) -> bool:
        self._check_key(key)
        expression = Expression()
        self._require_existing(expression, key, expect)
        params: DeleteItemInputTypeDef = {
            "TableName": self._table,
            "Key": self._key(key),
            "ConditionExpression": expression.condition_expression,
            "ExpressionAttributeNames": expression.names,
            "ReturnConsumedCapacity": "TOTAL",
        }
        if expression.values:
            params["ExpressionAttributeValues"] = expression.values
        try:
            with self._errors.translating("DeleteItem", conditional=True):
                response = self._client.delete_item(**params)
        except ConditionFailed:
            return False
        self._capacity.record(response.get("ConsumedCapacity"), write=True)
        return True


# ------------------------------------------------------------------------------------------------ opening


def detect_layout(lease_store: DynamoDBLeaseStore, coordinator_table_name: str) -> Layout:
    """The layout KCL 3.5 would use for this application (kcl-protocol.md §3.4).

    Legacy while the ``<app>-CoordinatorState`` table exists (``DescribeTable``), unless the table migration
    finished — KCL 3.5 then writes ``TableMigration3.5`` with ``tm = TABLE_MIGRATION_STATUS_COMPLETE`` into
    the lease table and uses it alone; single-table when there is no legacy table (new applications).
    """
    legacy = DynamoDBItemTable(lease_store.client, coordinator_table_name, layout="legacy", namespace="coordinator")
    if legacy.table_status() is None:
        return "single-table"
    single = DynamoDBItemTable(
        lease_store.client,
        lease_store.table_name,
        layout="single-table",
        namespace="coordinator",
        capacity_meter=lease_store.capacity_meter,
    )
    try:
        migration = single.get(_TABLE_MIGRATION_KEY)
    except ResourceNotFoundError:
        return "legacy"
    if migration is not None and migration.attributes.get("tm") == TABLE_MIGRATION_COMPLETE:
        return "single-table"
    return "legacy"


def open_dynamodb_item_tables(
    lease_store: DynamoDBLeaseStore,
    application_name: str,
    *,
    coordinator_table_name: str | None = None,
    worker_metrics_table_name: str | None = None,
    layout: Layout | None = None,
) -> tuple[DynamoDBItemTable, DynamoDBItemTable, Layout]:
    """The coordinator and worker-metrics item tables of an application, and their layout.

    ``layout=None`` detects it with :func:`detect_layout`; pass ``"single-table"`` or ``"legacy"`` to force one.
    The legacy tables default to ``<application_name>-CoordinatorState`` and
    ``<application_name>-WorkerMetricStats``. Single-table item tables share the lease store's client and
    capacity meter; legacy ones share its client and count their own capacity.
    """
    if not application_name:
        raise ConfigurationError("application_name must not be empty (KCL names the coordinator tables after it)")
    coordinator_name = check_table_name(
        coordinator_table_name if coordinator_table_name is not None else f"{application_name}-CoordinatorState",
        "coordinator_table_name",
    )
    metrics_name = check_table_name(
        worker_metrics_table_name if worker_metrics_table_name is not None else f"{application_name}-WorkerMetricStats",
        "worker_metrics_table_name",
    )
    if layout is None:
        layout = detect_layout(lease_store, coordinator_name)
        logger.info("application %r: coordinator items use the %s layout", application_name, layout)
    elif layout not in _LAYOUTS:
        raise ConfigurationError(f"layout must be one of {', '.join(_LAYOUTS)}, got {layout!r}")
    config = lease_store.config
    client = lease_store.client
    shared_meter = lease_store.capacity_meter if layout == "single-table" else None

    def table(name: str, namespace: Namespace) -> DynamoDBItemTable:
        return DynamoDBItemTable(
            client,
            name,
            layout=layout,
            namespace=namespace,
            capacity_meter=shared_meter,
            table_creation_timeout_s=config.table_creation_timeout_s,
            table_poll_interval_s=config.table_poll_interval_s,
        )

    if layout == "single-table":
        return table(lease_store.table_name, "coordinator"), table(lease_store.table_name, "worker-metrics"), layout
    return table(coordinator_name, "coordinator"), table(metrics_name, "worker-metrics"), layout
