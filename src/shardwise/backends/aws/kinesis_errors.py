"""Kinesis's error codes translated into :mod:`shardwise.errors`: one function on (code, message, HTTP status),
shared by both data-plane clients (boto3's and :mod:`shardwise.backends.aws.dataplane`), so the same answer from
the service becomes the same exception with the same message whichever client read it.

The table is in :mod:`shardwise.backends.aws.kinesis`'s docstring.
"""

from __future__ import annotations

from botocore.exceptions import ClientError

from shardwise.backends.aws.errors import ACCESS_DENIED_CODES, CREDENTIALS_FIX, error_code, error_message
from shardwise.errors import (
    AccessDeniedError,
    DependencyError,
    ExpiredIteratorError,
    InvalidArgumentError,
    InvalidStateError,
    ShardNotFoundError,
    ShardwiseError,
    StreamNotFoundError,
    ThrottlingError,
)

__all__ = ["THROTTLING_CODES", "client_error_parts", "translate_client_error", "translate_kinesis_error"]

#: Kinesis's throttling codes: the service's answer when a shard, the account or KMS is over its limits.
THROTTLING_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "LimitExceededException",
        "KMSThrottlingException",
        "ThrottlingException",
    }
)
_INVALID_ARGUMENT_CODES = frozenset({"InvalidArgumentException", "ValidationException"})


def translate_kinesis_error(
    code: str, message: str, status: int | None, *, operation: str, stream_name: str, shard_id: str | None
) -> ShardwiseError:
    """The shardwise error for Kinesis's answer ``code``/``message`` (HTTP ``status``, if known) to ``operation``;
    the message names the operation, the stream and the shard."""
    where = f"stream {stream_name!r}" + (f" shard {shard_id!r}" if shard_id else "")
    text = f"Kinesis {operation} on {where}: {code}: {message}"
    if code == "ExpiredIteratorException":
        return ExpiredIteratorError(text)
    if code in THROTTLING_CODES:
        return ThrottlingError(text)
    if code == "ResourceNotFoundException":
        if shard_id is not None and not _names_the_stream(message):
            return ShardNotFoundError(text)
        return StreamNotFoundError(
            f"{text}; create the stream (or fix the stream name, region or endpoint) and start the worker again"
        )
    if code in ACCESS_DENIED_CODES:
        return AccessDeniedError(f"{text}; {CREDENTIALS_FIX}")
    if code in _INVALID_ARGUMENT_CODES:
        return InvalidArgumentError(text)
    if code == "ResourceInUseException":
        return InvalidStateError(text)
    return DependencyError(f"{text} (HTTP {status})" if status else text)


def client_error_parts(exc: ClientError) -> tuple[str, str, int | None]:
    """(code, message, HTTP status) of a botocore ``ClientError``, as :func:`translate_kinesis_error` takes them."""
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return error_code(exc, "Unknown"), error_message(exc), status if isinstance(status, int) else None


def translate_client_error(exc: ClientError, operation: str, stream_name: str, shard_id: str | None) -> ShardwiseError:
    """The shardwise error for a Kinesis ``ClientError`` (see :func:`translate_kinesis_error`)."""
    code, message, status = client_error_parts(exc)
    return translate_kinesis_error(
        code, message, status, operation=operation, stream_name=stream_name, shard_id=shard_id
    )


def _names_the_stream(detail: str) -> bool:
    """Whether a ``ResourceNotFoundException`` message says the *stream* is missing: Kinesis says "Stream …
    under account … not found." (kinesalite and kinesis-local alike), but names the shard ("Shard … does not
    exist", "Could not find shardId …") or the position (kinesis-local: "Unable to find record with provided
    SequenceNumber …") when only those are missing."""
    lowered = detail.lower()
    return lowered.startswith("stream") and "not found" in lowered
