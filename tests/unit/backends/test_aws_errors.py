"""The AWS backend's error boundary (backends/aws/errors.py): the exact messages every DynamoDB table and the
Kinesis stream give, read from botocore errors without a server."""

from __future__ import annotations

from typing import Any, cast

import pytest
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)

from shardwise.backends.aws.errors import (
    ConditionFailed,
    TableErrors,
    access_denied,
    cancellation_reason_codes,
    error_code,
    error_message,
)
from shardwise.errors import (
    AccessDeniedError,
    DependencyError,
    Fault,
    ResourceNotFoundError,
    ThrottlingError,
    classify,
)

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


# -- permanent and transient faults (issue 13) -------------------------------------------------------------------


@pytest.mark.parametrize(
    "code",
    [
        "AccessDeniedException",
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "ExpiredTokenException",
        "MissingAuthenticationTokenException",
    ],
)
def test_credential_and_permission_codes_are_access_denied(code: str) -> None:
    translated = ERRORS.client_error("GetItem", client_error(code, "The security token included is invalid."))
    assert type(translated) is AccessDeniedError
    assert classify(translated) is Fault.PERMANENT
    assert str(translated).startswith(f"DynamoDB GetItem on lease table 'app' was refused ({code}: ")
    assert "check the AWS credentials" in str(translated)


def test_5xx_is_a_transient_dependency_error_naming_the_status() -> None:
    exc = client_error("InternalServerError", "oops", ResponseMetadata={"HTTPStatusCode": 500})
    translated = ERRORS.client_error("Scan", exc)
    assert type(translated) is DependencyError
    assert "(HTTP 500)" in str(translated)
    assert classify(translated) is Fault.TRANSIENT


@pytest.mark.parametrize(
    "error",
    [
        ReadTimeoutError(endpoint_url="http://127.0.0.1:9"),
        ConnectTimeoutError(endpoint_url="http://127.0.0.1:9"),
        EndpointConnectionError(endpoint_url="http://127.0.0.1:9"),
        ConnectionClosedError(endpoint_url="http://127.0.0.1:9"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_timeouts_and_connection_errors_are_transient(error: BotoCoreError) -> None:
    with pytest.raises(DependencyError) as caught, ERRORS.translating("Scan"):
        raise error
    assert classify(caught.value) is Fault.TRANSIENT


def test_missing_credentials_are_access_denied() -> None:
    with pytest.raises(AccessDeniedError, match="Unable to locate credentials"), ERRORS.translating("Scan"):
        raise NoCredentialsError()
    assert access_denied("x", client_error("ThrottlingException")) is None
