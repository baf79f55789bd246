"""The core of shardwise's direct AWS clients: SigV4-signed JSON POSTs on one pooled, thread-safe urllib3
connection pool, with the boto3 client's retry semantics and botocore's exceptions.

Two clients are built on it: the fast Kinesis data plane (:mod:`shardwise.backends.aws.dataplane`: GetRecords,
GetShardIterator) and the lease store's conditional writes (:mod:`shardwise.backends.aws.lease_writes`:
UpdateItem). Both are calls an idle worker makes many times a minute, so the per-call CPU is what this module is
about; everything else stays on boto3.

Semantics are the boto3 client's (*standard* retry mode, :class:`~shardwise.backends.config.CallLimits`):

* every attempt has the connect and read timeouts of the limits; the call makes at most ``max_attempts``;
* throttling codes (botocore's standard list, and ``KMSThrottlingException``), botocore's transient codes, HTTP
  500/502/503/504 and connection errors and timeouts are retried after an exponential back-off with jitter
  (:func:`shardwise.retry.backoff_s`); anything else is returned at once (DynamoDB's ``x-amz-crc32`` header is
  not checked: botocore checks it in its *legacy* retry mode only);
* requests are signed per attempt with credentials frozen at that moment, so refreshing credentials (a role,
  SSO, a container provider) keep working;
* failures are raised as botocore's own exceptions — a ``ClientError`` carrying the service's code, message
  and HTTP status (and botocore's retry bookkeeping), ``ReadTimeoutError``, ``ConnectTimeoutError``,
  ``EndpointConnectionError``, ``ConnectionClosedError``, ``NoCredentialsError`` — so the
  callers translate both clients' failures through one boundary, and :func:`shardwise.backends.service_error`
  reads what the service said either way.

Signing (:class:`JsonPostSigner`) is SigV4 for the one request shape these clients send — a POST of a JSON body
to a fixed path, no query string, headers ``Content-Type``, ``Host``, ``X-Amz-Date``, ``X-Amz-Target`` and, with
temporary credentials, ``X-Amz-Security-Token`` — written out directly, with the derived signing key kept per
(secret key, day): byte for byte what botocore's ``SigV4Auth`` produces for the same request
(``tests/unit/backends/test_signed_http.py`` compares them), at a fraction of its CPU.

Not carried over from botocore: proxies (an endpoint reached through a proxy stays on boto3, see
:func:`proxied`), client-side rate limiting, and botocore's retry quota.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import time
import urllib.request
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlsplit

import urllib3
from botocore.config import Config
from botocore.credentials import Credentials, ReadOnlyCredentials
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)
from botocore.httpsession import get_cert_path
from botocore.utils import normalize_url_path

from shardwise.backends.config import CallLimits
from shardwise.retry import backoff_s

__all__ = [
    "BACKOFF_BASE_S",
    "BACKOFF_CAP_S",
    "POOL_SIZE",
    "RETRYABLE_CODES",
    "RETRYABLE_STATUSES",
    "JsonPostSigner",
    "SignedJsonClient",
    "error_parts",
    "limits_of",
    "proxied",
]

#: Connections kept per endpoint, at least (a client whose ``max_pool_connections`` is larger gets that many):
#: more concurrent calls open extra connections instead of waiting, and urllib3 warns when it discards them, so
#: this covers the consumer threads (16 by default) with room to spare.
POOL_SIZE = 64
#: botocore's standard mode: throttling and transient codes, and the HTTP statuses it retries.
RETRYABLE_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "TransactionInProgressException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "LimitExceededException",
        "RequestThrottled",
        "SlowDown",
        "PriorRequestNotComplete",
        "EC2ThrottledException",
        "KMSThrottlingException",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)
RETRYABLE_STATUSES = frozenset({500, 502, 503, 504})
#: The first retry waits 0.25–0.5 s, each later one twice as long, at most 20 s (botocore's cap).
BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 20.0

_ALGORITHM = "AWS4-HMAC-SHA256"
_TIMESTAMP = "%Y%m%dT%H%M%SZ"  # botocore's SIGV4_TIMESTAMP


def limits_of(config: Config) -> CallLimits:
    """The :class:`CallLimits` a botocore client config carries (the timeouts, and the attempts in all: its
    ``total_max_attempts``, or ``max_attempts`` retries plus the first attempt, or the mode's default)."""
    settings: Any = config  # botocore's Config sets its options as attributes the stubs do not declare
    retries: dict[str, Any] = dict(settings.retries or {})
    if "total_max_attempts" in retries:
        attempts = int(retries["total_max_attempts"])
    elif "max_attempts" in retries:
        attempts = int(retries["max_attempts"]) + 1
    else:
        attempts = 5 if retries.get("mode") == "legacy" else 3
    return CallLimits(
        connect_timeout_ms=round(float(settings.connect_timeout) * 1000),
        read_timeout_ms=round(float(settings.read_timeout) * 1000),
        max_attempts=max(1, attempts),
    )


def proxied(endpoint_url: str, config: Config) -> bool:
    """Whether requests to ``endpoint_url`` would go through a proxy (client config or environment)."""
    parts = urlsplit(endpoint_url)
    if getattr(config, "proxies", None):
        return True
    return bool(urllib.request.getproxies().get(parts.scheme)) and not urllib.request.proxy_bypass(parts.hostname or "")


def error_parts(body: bytes, status: int) -> tuple[str, str]:
    """(code, message) of an error answer, read as botocore's JSON parser reads them: the code from ``__type``
    (without a ``namespace#`` prefix or a ``:`` suffix), else the HTTP status; the message from ``message`` or
    ``Message``; a body that is not JSON is the message itself."""
    parsed: Any
    try:
        parsed = json.loads(body) if body else {}
    except ValueError:
        parsed = {"message": body.decode("utf-8", "replace")}
    if not isinstance(parsed, dict):
        parsed = {}
    message = parsed.get("message", parsed.get("Message", ""))
    code = parsed.get("__type", str(status))
    code = str(code).split(":", 1)[0].rsplit("#", 1)[-1]
    return code, str(message)


def _host_header(url: str) -> str:
    """The Host header botocore signs for ``url``: lower-case host, the port unless it is the scheme's default."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port is not None and parts.port != {"http": 80, "https": 443}.get(parts.scheme):
        host = f"{host}:{parts.port}"
    return host


def _trim(value: str) -> str:
    """A header value as SigV4 canonicalizes it: runs of white space made one space, none at either end."""
    return " ".join(value.split())


class JsonPostSigner:
    """SigV4 signatures of JSON POSTs to one endpoint path, for one region and service (see the module docstring).

    :meth:`headers` returns every header to send, ``Authorization`` included. The signing key derived from a
    secret key for a day is kept (the last one only), so a request costs two SHA-256 digests and one HMAC.
    """

    def __init__(self, endpoint_url: str, region_name: str, signing_name: str, content_type: str) -> None:
        parts = urlsplit(endpoint_url)
        self.host = _host_header(endpoint_url)
        self.path = parts.path or "/"
        self._canonical_path = quote(normalize_url_path(parts.path), safe="/~")
        self._region = region_name
        self._service = signing_name
        self._content_type = content_type
        self._head = f"POST\n{self._canonical_path}\n\ncontent-type:{_trim(content_type)}\nhost:{_trim(self.host)}\n"
        self._key: tuple[str, str, bytes] = ("", "", b"")

    def _signing_key(self, secret_key: str, day: str) -> bytes:
        cached_secret, cached_day, key = self._key
        if cached_secret == secret_key and cached_day == day:
            return key
        key = hmac.digest(f"AWS4{secret_key}".encode(), day.encode(), "sha256")
        for part in (self._region, self._service, "aws4_request"):
            key = hmac.digest(key, part.encode(), "sha256")
        self._key = (secret_key, day, key)
        return key

    def headers(
        self, credentials: ReadOnlyCredentials, target: str, body: bytes, *, now_s: float | None = None
    ) -> dict[str, str]:
        """The headers of a POST of ``body`` as ``target`` (``X-Amz-Target``), signed at ``now_s`` (epoch
        seconds; now by default) with ``credentials``."""
        timestamp = time.strftime(_TIMESTAMP, time.gmtime(time.time() if now_s is None else now_s))
        day = timestamp[:8]
        token = credentials.token
        if token:
            names = "content-type;host;x-amz-date;x-amz-security-token;x-amz-target"
            middle = f"x-amz-date:{timestamp}\nx-amz-security-token:{_trim(token)}\nx-amz-target:{_trim(target)}\n"
        else:
            names = "content-type;host;x-amz-date;x-amz-target"
            middle = f"x-amz-date:{timestamp}\nx-amz-target:{_trim(target)}\n"
        canonical = f"{self._head}{middle}\n{names}\n{hashlib.sha256(body).hexdigest()}"
        scope = f"{day}/{self._region}/{self._service}/aws4_request"
        to_sign = f"{_ALGORITHM}\n{timestamp}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        key = self._signing_key(credentials.secret_key or "", day)
        signature = hmac.new(key, to_sign.encode(), "sha256").hexdigest()
        headers = {
            "Host": self.host,
            "Content-Type": self._content_type,
            "X-Amz-Target": target,
            "X-Amz-Date": timestamp,
            "Authorization": (
                f"{_ALGORITHM} Credential={credentials.access_key}/{scope}, SignedHeaders={names}, "
                f"Signature={signature}"
            ),
        }
        if token:
            headers["X-Amz-Security-Token"] = token
        return headers


class SignedJsonClient:
    """Signed JSON POSTs to one AWS endpoint; :meth:`call` returns the body of a 2xx answer or raises botocore's
    exception for the failure (see the module docstring).

    ``target_prefix`` and ``content_type`` are the service's JSON protocol (``Kinesis_20131202`` and
    ``application/x-amz-json-1.1``; ``DynamoDB_20120810`` and ``application/x-amz-json-1.0``);
    :meth:`for_client` reads them, with everything else, from a boto3 client.
    """

    def __init__(
        self,
        endpoint_url: str,
        region_name: str,
        credentials: Callable[[], Credentials | None],
        limits: CallLimits,
        *,
        target_prefix: str,
        content_type: str,
        signing_name: str,
        ca_certs: str | None = None,
        pool_size: int = POOL_SIZE,
        sleep: Callable[[float], None] = time.sleep,
        rng: Callable[[], float] = random.random,
        backoff_base_s: float | None = None,
    ) -> None:
        self._signer = JsonPostSigner(endpoint_url, region_name, signing_name, content_type)
        self._path = self._signer.path
        # Where botocore posts a JSON request: the endpoint's own path, or "/" when it has none.
        self._url = urlsplit(endpoint_url)._replace(path=self._path).geturl()
        self._endpoint_url = endpoint_url
        self._region = region_name
        self._target_prefix = f"{target_prefix}."
        self._credentials = credentials
        self._limits = limits
        self._sleep = sleep
        self._rng = rng
        self._backoff_base_s = BACKOFF_BASE_S if backoff_base_s is None else backoff_base_s
        timeout = urllib3.Timeout(connect=limits.connect_timeout_ms / 1000, read=limits.read_timeout_ms / 1000)
        pool_options: dict[str, Any] = {"maxsize": pool_size, "block": False, "retries": False, "timeout": timeout}
        if urlsplit(endpoint_url).scheme == "https":
            pool_options["ca_certs"] = ca_certs or get_cert_path(True)
        self._pool = urllib3.connection_from_url(self._url, **pool_options)

    @classmethod
    def client_options(cls, client: Any) -> dict[str, Any]:
        """The constructor's arguments for the endpoint, region, limits, credentials, protocol and pool size of a
        boto3 client (any JSON-protocol service: Kinesis, DynamoDB)."""
        meta = client.meta
        model = meta.service_model
        # The client's own (refreshable) credentials, through botocore's private accessor; without it (a future
        # botocore), the shared session's, from the same default chain the client's came from.
        getter = getattr(client, "_get_credentials", None)
        if not callable(getter):
            from shardwise.backends.aws.client import shared_session  # noqa: PLC0415

            getter = shared_session().get_credentials

        def credentials() -> Credentials | None:
            found: Credentials | None = getter()
            return found

        return {
            "endpoint_url": meta.endpoint_url,
            "region_name": meta.region_name,
            "credentials": credentials,
            "limits": limits_of(meta.config),
            "target_prefix": model.metadata.get("targetPrefix", ""),
            "content_type": f"application/x-amz-json-{model.metadata.get('jsonVersion', '1.0')}",
            "signing_name": model.signing_name or model.endpoint_prefix,
            "pool_size": max(POOL_SIZE, int(getattr(meta.config, "max_pool_connections", 0) or 0)),
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._endpoint_url!r}, region={self._region!r})"

    @property
    def limits(self) -> CallLimits:
        return self._limits

    @property
    def pool_size(self) -> int:
        """How many connections the pool keeps."""
        return int(self._pool.pool.maxsize) if self._pool.pool is not None else 0

    def close(self) -> None:
        self._pool.close()

    def call(self, operation: str, body: bytes, error_parts: Callable[[bytes, int], tuple[str, str]]) -> bytes:
        """POST ``body`` as ``operation``; the answer's body, after the retries the limits allow.

        ``error_parts`` reads (code, message) from an error answer's body and HTTP status."""
        attempts = self._limits.max_attempts
        attempt = 0
        while True:
            attempt += 1
            try:
                status, data = self._send(operation, body)
            except urllib3.exceptions.HTTPError as exc:
                failure = self._connection_error(exc)
                if attempt >= attempts:
                    raise failure from exc
                self._back_off(attempt)
                continue
            if status < 300:
                return data
            code, message = error_parts(data, status)
            retryable = code in RETRYABLE_CODES or status in RETRYABLE_STATUSES
            if retryable and attempt < attempts:
                self._back_off(attempt)
                continue
            metadata: dict[str, Any] = {"HTTPStatusCode": status, "RetryAttempts": attempt - 1}
            if retryable:
                metadata["MaxAttemptsReached"] = True
            response: Any = {"Error": {"Code": code, "Message": message}, "ResponseMetadata": metadata}
            raise ClientError(response, operation)

    def _back_off(self, attempt: int) -> None:
        self._sleep(backoff_s(attempt, self._backoff_base_s, BACKOFF_CAP_S, self._rng))

    def _send(self, operation: str, body: bytes) -> tuple[int, bytes]:
        credentials = self._credentials()
        if credentials is None:
            raise NoCredentialsError()
        headers = self._signer.headers(credentials.get_frozen_credentials(), self._target_prefix + operation, body)
        response = self._pool.urlopen(
            "POST", self._path, body=body, headers=headers, redirect=False, preload_content=True
        )
        return response.status, response.data

    def _connection_error(self, exc: urllib3.exceptions.HTTPError) -> Exception:
        """botocore's exception for a urllib3 failure (what botocore's own HTTP session raises)."""
        url = self._url  # the request's URL, as botocore names it
        if isinstance(exc, urllib3.exceptions.NewConnectionError):  # a ConnectTimeoutError subclass: first
            return EndpointConnectionError(endpoint_url=url, error=exc)
        if isinstance(exc, urllib3.exceptions.ConnectTimeoutError):
            return ConnectTimeoutError(endpoint_url=url, error=exc)
        if isinstance(exc, (urllib3.exceptions.ReadTimeoutError, urllib3.exceptions.TimeoutError)):
            return ReadTimeoutError(endpoint_url=url, error=exc)
        if isinstance(exc, urllib3.exceptions.ProtocolError):
            return ConnectionClosedError(endpoint_url=url, error=exc)
        return EndpointConnectionError(endpoint_url=url, error=exc)
