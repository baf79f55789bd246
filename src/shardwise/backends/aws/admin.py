"""Table administration on DynamoDB: what ``KclMigrationTool.py`` does with ``DescribeTable``, ``UpdateTable`` and
``DeleteTable`` (kcl-protocol.md §1.4), behind the seam's :class:`~shardwise.backends.port.TableAdmin` port.

Errors are translated as the lease store translates them (:class:`~shardwise.backends.aws.leases.TableErrors`),
the botocore error chained as ``__cause__``; :func:`service_error` reads it back — the service's code, message
and the SDK's text — for callers that print the service's own words (the migration tool's messages do).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from shardwise.backends.aws.leases import (
    OWNER_INDEX_NAME,
    DynamoDBLeaseStore,
    DynamoDBLeaseStoreConfig,
    TableErrors,
)
from shardwise.backends.port import ServiceError
from shardwise.errors import ShardwiseError

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient

__all__ = ["DynamoDBTableAdmin", "service_error"]

logger = logging.getLogger(__name__)

_NOT_FOUND = "ResourceNotFoundException"
_HINT = "check the table name, region and endpoint"


def _errors(table_name: str, kind: str = "table") -> TableErrors:
    return TableErrors(f"{kind} {table_name!r}", _HINT)


class DynamoDBTableAdmin:
    """Status and deletion of DynamoDB tables and of the lease table's ``LeaseOwnerToLeaseKeyIndex``, through the
    backend's one DynamoDB client."""

    def __init__(self, client: DynamoDBClient) -> None:
        self._client = client

    def __repr__(self) -> str:
        return "DynamoDBTableAdmin()"

    @property
    def database_file(self) -> str | None:
        return None

    def database_exists(self) -> bool:
        return True

    def table_status(self, table_name: str) -> str | None:
        """``TableStatus`` from ``DescribeTable`` (any status counts as existing, as the tool's check does)."""
        errors = _errors(table_name)
        try:
            response = self._client.describe_table(TableName=table_name)
        except ClientError as exc:
            if TableErrors.code(exc) == _NOT_FOUND:
                return None
            raise errors.client_error("DescribeTable", exc) from exc
        except BotoCoreError as exc:
            raise errors.botocore_error("DescribeTable", exc) from exc
        return response["Table"].get("TableStatus", "UNKNOWN")

    def delete_table(self, table_name: str) -> None:
        with _errors(table_name).translating("DeleteTable"):
            self._client.delete_table(TableName=table_name)
        logger.info("deleting table %r", table_name)

    def owner_index_status(self, lease_table_name: str) -> str | None:
        """As the lease store reads it (the same ``DescribeTable``, the same errors)."""
        store = DynamoDBLeaseStore(DynamoDBLeaseStoreConfig(table_name=lease_table_name), client=self._client)
        return store.owner_index_status()

    def delete_owner_index(self, lease_table_name: str) -> None:
        """One ``UpdateTable`` deleting the index, as the tool sends it. Unlike the lease store's
        ``delete_owner_index`` (for workers racing each other), a busy table or a missing index raises, so that
        the caller can retry or report it as the tool does."""
        with _errors(lease_table_name, "lease table").translating("UpdateTable"):
            self._client.update_table(
                TableName=lease_table_name,
                GlobalSecondaryIndexUpdates=[{"Delete": {"IndexName": OWNER_INDEX_NAME}}],
            )
        logger.info("deleting %s on lease table %r", OWNER_INDEX_NAME, lease_table_name)


def service_error(exc: BaseException) -> ServiceError | None:
    """The botocore error behind ``exc`` (its ``__cause__`` when ``exc`` is a translated shardwise error, else
    ``exc`` itself), as a :class:`ServiceError`; ``None`` when there is none."""
    raw = exc.__cause__ if isinstance(exc, ShardwiseError) and exc.__cause__ is not None else exc
    if isinstance(raw, ClientError):
        error = raw.response.get("Error", {})
        return ServiceError(str(error.get("Code", "")), str(error.get("Message", "")), str(raw), answered=True)
    if isinstance(raw, BotoCoreError):
        return ServiceError(type(raw).__name__, str(raw), str(raw), answered=False)
    return None
