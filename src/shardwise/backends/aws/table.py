"""What the lease store and the coordinator item tables share about one DynamoDB table: its name check, its
lifecycle (describe, create, wait until usable) and the tally of the capacity a worker consumes on it."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from shardwise.backends.aws.errors import TableErrors, error_code
from shardwise.errors import ConfigurationError, InvalidStateError

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import CreateTableInputTypeDef, TableDescriptionTypeDef

__all__ = ["DEAD_STATUSES", "USABLE_STATUSES", "CapacityMeter", "TableLifecycle", "check_table_name"]

logger = logging.getLogger(__name__)

_TABLE_NAME = re.compile(r"[A-Za-z0-9_.\-]{3,255}")

#: Statuses in which a table serves item operations.
USABLE_STATUSES = frozenset({"ACTIVE", "UPDATING"})
#: Statuses from which a table never becomes ACTIVE on its own; waiting for them is pointless.
DEAD_STATUSES = frozenset({"DELETING", "ARCHIVING", "ARCHIVED", "INACCESSIBLE_ENCRYPTION_CREDENTIALS"})


def check_table_name(table_name: object, setting: str = "table_name") -> str:
    """``table_name`` if it is a valid DynamoDB table name, else a ``ConfigurationError`` naming ``setting``."""
    if not isinstance(table_name, str) or not _TABLE_NAME.fullmatch(table_name):
        raise ConfigurationError(
            f"{setting} {table_name!r} is not a valid DynamoDB table name: use 3 to 255 characters "
            "from A-Z, a-z, 0-9, '_', '-' and '.'"
        )
    return table_name


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


class TableLifecycle:
    """``DescribeTable``, ``CreateTable`` and the wait until the table is usable, for one table.

    Several workers may race to create a table: losing that race (``ResourceInUseException``) is not an error.
    ``timeout_hint`` ends the message of a table still not ACTIVE after ``creation_timeout_s`` (the lease
    store names its setting there).
    """

    def __init__(
        self,
        client: DynamoDBClient,
        table_name: str,
        errors: TableErrors,
        *,
        creation_timeout_s: float,
        poll_interval_s: float,
        timeout_hint: str = "",
    ) -> None:
        self._client = client
        self._table = table_name
        self._errors = errors
        self._creation_timeout_s = creation_timeout_s
        self._poll_interval_s = poll_interval_s
        self._timeout_hint = timeout_hint

    @property
    def creation_timeout_s(self) -> float:
        return self._creation_timeout_s

    def describe(self) -> TableDescriptionTypeDef | None:
        """The table's description, or ``None`` if it does not exist."""
        try:
            response = self._client.describe_table(TableName=self._table)
        except ClientError as exc:
            if error_code(exc) == "ResourceNotFoundException":
                return None
            raise self._errors.client_error("DescribeTable", exc) from exc
        except BotoCoreError as exc:
            raise self._errors.botocore_error("DescribeTable", exc) from exc
        return response["Table"]

    def status(self) -> str | None:
        """The table's ``TableStatus``, or ``None`` if it does not exist."""
        table = self.describe()
        return None if table is None else table.get("TableStatus", "UNKNOWN")

    def usable(self) -> bool:
        """The table exists and serves item operations (``ACTIVE`` or ``UPDATING``)."""
        return self.status() in USABLE_STATUSES

    def create(self, request: CreateTableInputTypeDef) -> bool:
        """Send ``CreateTable``; False if the table exists or is being created (``ResourceInUseException``)."""
        try:
            self._client.create_table(**request)
        except ClientError as exc:
            if error_code(exc) == "ResourceInUseException":
                logger.info("%s is already being created or exists", self._errors.subject)
                return False
            raise self._errors.client_error("CreateTable", exc) from exc
        except BotoCoreError as exc:
            raise self._errors.botocore_error("CreateTable", exc) from exc
        logger.info("created %s (%s)", self._errors.subject, request.get("BillingMode", "PROVISIONED"))
        return True

    def wait_until_usable(self, deadline: float) -> None:
        """Poll ``DescribeTable`` until the table is usable; ``InvalidStateError`` if it is in a status it will
        not leave by itself, or still not usable at ``deadline`` (``time.monotonic()``)."""
        while True:
            status = self.status()
            if status in USABLE_STATUSES:
                return
            if status in DEAD_STATUSES:
                raise InvalidStateError(
                    f"{self._errors.subject} is {status} and will not become ACTIVE: wait for the operation to "
                    "finish or use another table"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise InvalidStateError(
                    f"{self._errors.subject} is {status or 'not visible'}, not ACTIVE, after "
                    f"{self._creation_timeout_s:g}s: check the table in the DynamoDB console{self._timeout_hint}"
                )
            time.sleep(min(self._poll_interval_s, remaining))
