"""The AWS backend's error boundary (backends/aws/errors.py): the exact messages every DynamoDB table and the
Kinesis stream give, read from botocore errors without a server."""

from __future__ import annotations

from typing import Any, cast

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from shardwise.backends.aws.errors import (
    ConditionFailed,
    TableErrors,
    cancellation_reason_codes,
    error_code,
    error_message,
)
from shardwise.errors import DependencyError, ResourceNotFoundError, ThrottlingError

ERRORS = TableErrors("lease table 'app'", "create it first")


def client_error(code: str | None, message: str | None = "boom", **extra: Any) -> ClientError:
    error: dict[str, str] = {}
    if code is not None:
        error["Code"] = code
    if message is not None:
        error["Message"] = message
    response: dict[str, Any] = {"Error": error, **extra}
    return ClientError(cast("Any", response), "GetItem")


def test_code_and_message_are_read_with_their_fallbacks() -> None:
    assert error_code(client_error("ThrottlingException")) == "ThrottlingException"
    assert error_code(client_error(None)) == ""
    assert error_code(client_error(None), "Unknown") == "Unknown"
    assert error_message(client_error("X", "the message")) == "the message"
    assert error_message(client_error("X", None)) == str(client_error("X", None))


def test_cancellation_reasons() -> None:
    reasons = [{"Code": "None"}, {"Code": "ConditionalCheckFailed", "Message": "no"}, {}]
    exc = client_error("TransactionCanceledException", CancellationReasons=reasons)
    assert cancellation_reason_codes(exc) == ["None", "ConditionalCheckFailed", "None"]
    assert cancellation_reason_codes(client_error("TransactionCanceledException")) == []


@pytest.mark.parametrize(
    ("code", "error", "message"),
    [
        (
            "ProvisionedThroughputExceededException",
            ThrottlingError,
            "DynamoDB GetItem on lease table 'app' was throttled (ProvisionedThroughputExceededException): boom",
        ),
        ("RequestLimitExceeded", ThrottlingError, "DynamoDB GetItem on lease table 'app' was throttled"),
        (
            "ResourceNotFoundException",
            ResourceNotFoundError,
            "lease table 'app' does not exist (DynamoDB GetItem): create it first",
        ),
        (
            "InternalServerError",
            DependencyError,
            "DynamoDB GetItem on lease table 'app' failed (InternalServerError): boom",
        ),
        (None, DependencyError, "DynamoDB GetItem on lease table 'app' failed (unknown error): boom"),
    ],
)
def test_client_errors_are_translated(code: str | None, error: type[Exception], message: str) -> None:
    translated = ERRORS.client_error("GetItem", client_error(code))
    assert type(translated) is error
    assert str(translated).startswith(message)


def test_translating_raises_the_translation_from_the_botocore_error() -> None:
    with pytest.raises(ThrottlingError) as raised, ERRORS.translating("Scan"):
        raise client_error("ThrottlingException")
    assert isinstance(raised.value.__cause__, ClientError)
    unreachable = r"^DynamoDB Scan on lease table 'app' failed: Could not connect"
    with pytest.raises(DependencyError, match=unreachable), ERRORS.translating("Scan"):
        raise EndpointConnectionError(endpoint_url="http://127.0.0.1:9")


def test_a_failed_condition_is_a_lost_race_only_where_asked() -> None:
    with pytest.raises(ConditionFailed), ERRORS.translating("UpdateItem", conditional=True):
        raise client_error("ConditionalCheckFailedException")
    with pytest.raises(DependencyError, match="ConditionalCheckFailedException"), ERRORS.translating("GetItem"):
        raise client_error("ConditionalCheckFailedException")
