"""The AWS backend's error boundary: botocore errors become :mod:`shardwise.errors` here, and nowhere else.

DynamoDB tables (the lease table and the coordinator item tables) translate through :class:`TableErrors`:

* ``ProvisionedThroughputExceededException``, ``ThrottlingException``, ``RequestLimitExceeded``
  → :class:`~shardwise.errors.ThrottlingError` (after botocore's own retries);
* ``ResourceNotFoundException`` → :class:`~shardwise.errors.ResourceNotFoundError` (the lease table's:
  :class:`~shardwise.errors.TableNotFoundError`);
* the credential and permission codes (:data:`ACCESS_DENIED_CODES`: ``AccessDeniedException``,
  ``UnrecognizedClientException``, ``InvalidSignatureException``, ``ExpiredTokenException``, …) and botocore's
  ``NoCredentialsError`` → :class:`~shardwise.errors.AccessDeniedError` (permanent: retrying cannot fix them);
* any other service error (5xx included), and connection, timeout or protocol errors (``ReadTimeoutError``,
  ``ConnectTimeoutError``, ``EndpointConnectionError``, ``ConnectionClosedError``) →
  :class:`~shardwise.errors.DependencyError` (transient);
* a failed condition, where the caller asked for it, → :class:`ConditionFailed`, which the stores catch and
  turn into their "lost the race" answer (``None`` or ``False``), never into an error.

Kinesis has its own table of codes (:mod:`shardwise.backends.aws.kinesis`); both read a ``ClientError``'s code
and message with :func:`error_code` and :func:`error_message`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, PartialCredentialsError

from shardwise.errors import AccessDeniedError, DependencyError, ResourceNotFoundError, ThrottlingError

__all__ = [
    "ACCESS_DENIED_CODES",
    "CONDITION_FAILED",
    "CREDENTIALS_FIX",
    "DYNAMODB_THROTTLING_CODES",
    "ConditionFailed",
    "TableErrors",
    "access_denied",
    "cancellation_reason_codes",
    "error_code",
    "error_message",
]

#: DynamoDB's throttling error codes (KCL treats them alike: back off and retry later).
DYNAMODB_THROTTLING_CODES = frozenset(
    {"ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded"}
)
#: Codes that mean the credentials are missing, wrong or expired, or lack a permission (DynamoDB and Kinesis).
ACCESS_DENIED_CODES = frozenset(
    {
        "AccessDeniedException",
        "AccessDenied",
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "ExpiredTokenException",
        "ExpiredToken",
        "InvalidClientTokenId",
        "MissingAuthenticationToken",
        "MissingAuthenticationTokenException",
        "IncompleteSignature",
        "IncompleteSignatureException",
        "KMSAccessDeniedException",
    }
)
#: The fix an :class:`AccessDeniedError` names.
CREDENTIALS_FIX = (
    "check the AWS credentials (environment, profile or role: `aws sts get-caller-identity`) and that their "
    "IAM policy allows this call"
)
#: The error code of a conditional request whose condition did not hold.
CONDITION_FAILED = "ConditionalCheckFailedException"


def error_code(exc: ClientError, default: str = "") -> str:
    """The service's error code of ``exc`` (``default`` if the response has none)."""
    return str(exc.response.get("Error", {}).get("Code", default))


def error_message(exc: ClientError) -> str:
    """The service's error message of ``exc``, or botocore's rendering of the error if it has none."""
    return str(exc.response.get("Error", {}).get("Message", "")) or str(exc)


def cancellation_reason_codes(exc: ClientError) -> list[str]:
    """The ``Code`` of each cancellation reason of a ``TransactionCanceledException`` (``"None"`` for the items
    that did not cancel it)."""
    reasons: object = exc.response.get("CancellationReasons")
    if not isinstance(reasons, list):
        return []
    return [str(reason.get("Code", "None")) for reason in reasons if isinstance(reason, Mapping)]


def access_denied(service_call: str, exc: ClientError | BotoCoreError) -> AccessDeniedError | None:
    """The :class:`AccessDeniedError` for ``exc`` if it is a credential or permission error, else ``None``.

    ``service_call`` names the call ("DynamoDB GetItem on lease table 'app'"). Only the service's code and
    message are kept: neither ever holds a secret (AWS never echoes a secret key or a session token)."""
    if isinstance(exc, ClientError):
        code = error_code(exc)
        if code not in ACCESS_DENIED_CODES:
            return None
        return AccessDeniedError(f"{service_call} was refused ({code}: {error_message(exc)}); {CREDENTIALS_FIX}")
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return AccessDeniedError(f"{service_call}: {exc}; {CREDENTIALS_FIX}")
    return None


class ConditionFailed(Exception):
    """Raised inside a :meth:`TableErrors.translating` block whose conditional request lost its race."""


@dataclass(frozen=True)
class TableErrors:
    """Translation of botocore errors for one table into :mod:`shardwise.errors` (see the module docstring).

    ``subject`` names the table in messages (``"lease table 'app'"``); ``missing_hint`` is the fix suggested
    when the table does not exist.
    """

    subject: str
    missing_hint: str
    #: The class of "the table does not exist" (the lease store says :class:`TableNotFoundError`).
    missing_error: type[ResourceNotFoundError] = ResourceNotFoundError

    @staticmethod
    def code(exc: ClientError) -> str:
        return error_code(exc)

    @contextlib.contextmanager
    def translating(self, operation: str, *, conditional: bool = False) -> Iterator[None]:
        """Translate botocore errors raised inside; a failed condition raises :class:`ConditionFailed` when
        ``conditional``."""
        try:
            yield
        except ClientError as exc:
            if conditional and error_code(exc) == CONDITION_FAILED:
                raise ConditionFailed from None
            raise self.client_error(operation, exc) from exc
        except BotoCoreError as exc:
            raise self.botocore_error(operation, exc) from exc

    def client_error(self, operation: str, exc: ClientError) -> Exception:
        code = error_code(exc)
        message = error_message(exc)
        if code in DYNAMODB_THROTTLING_CODES:
            return ThrottlingError(f"DynamoDB {operation} on {self.subject} was throttled ({code}): {message}")
        if code == "ResourceNotFoundException":
            return self.missing(operation)
        denied = access_denied(f"DynamoDB {operation} on {self.subject}", exc)
        if denied is not None:
            return denied
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        where = f" (HTTP {status})" if status else ""
        return DependencyError(
            f"DynamoDB {operation} on {self.subject} failed ({code or 'unknown error'}){where}: {message}"
        )

    def missing(self, operation: str) -> ResourceNotFoundError:
        """The error for "the table does not exist", as ``ResourceNotFoundException`` is translated."""
        return self.missing_error(f"{self.subject} does not exist (DynamoDB {operation}): {self.missing_hint}")

    def botocore_error(self, operation: str, exc: BotoCoreError) -> Exception:
        denied = access_denied(f"DynamoDB {operation} on {self.subject}", exc)
        if denied is not None:
            return denied
        return DependencyError(f"DynamoDB {operation} on {self.subject} failed: {exc}")
