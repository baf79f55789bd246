"""The fast data-plane client for Kinesis: GetRecords and GetShardIterator as SigV4-signed HTTP POSTs on one
pooled, thread-safe urllib3 connection pool, answers decoded by :mod:`shardwise.backends.aws.dataplane_codec`.

Why: botocore's generic response parser costs tens of µs per record (``bench/bench_decode.py``); the requests
themselves are two fixed JSON shapes. The control plane (ListShards, DescribeStream, puts, resharding) stays on
the boto3 client; this client is built from it (:meth:`FastDataPlane.for_client`) and so talks to the same
endpoint, in the same region, with the same credentials and the same limits.

Semantics are the boto3 client's (*standard* retry mode, :class:`~shardwise.backends.config.CallLimits`):

* every attempt has the connect and read timeouts of the limits; the call makes at most ``max_attempts``;
* throttling codes (botocore's standard list, and ``KMSThrottlingException``), botocore's transient codes, HTTP
  500/502/503/504 and connection errors and timeouts are retried after an exponential back-off with jitter
  (:func:`shardwise.retry.backoff_s`); anything else is returned at once;
* requests are signed per attempt with credentials frozen at that moment, so refreshing credentials (a role,
  SSO, a container provider) keep working;
* failures are raised as botocore's own exceptions — a ``ClientError`` carrying the service's code, message
  and HTTP status (and botocore's retry bookkeeping), ``ReadTimeoutError``, ``ConnectTimeoutError``,
  ``EndpointConnectionError``, ``ConnectionClosedError``, ``NoCredentialsError`` — so
  :class:`~shardwise.backends.aws.kinesis.KinesisStream` translates both clients' failures through one boundary,
  and :func:`shardwise.backends.service_error` reads what the service said either way.

Not carried over from botocore: proxies (a stream whose endpoint goes through a proxy stays on boto3, see
:func:`proxied`), client-side rate limiting, and botocore's retry quota.
"""

from __future__ import annotations

import random
import time
import urllib.request
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import urllib3
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)
from botocore.httpsession import get_cert_path

from shardwise.backends.config import CallLimits
from shardwise.retry import backoff_s

if TYPE_CHECKING:
    from mypy_boto3_kinesis.client import KinesisClient

__all__ = ["FastDataPlane", "limits_of", "proxied"]

_CONTENT_TYPE = "application/x-amz-json-1.1"
_TARGET_PREFIX = "Kinesis_20131202."
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


def _host_header(url: str) -> str:
    """The Host header botocore signs for ``url``: lower-case host, the port unless it is the scheme's default."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port is not None and parts.port != {"http": 80, "https": 443}.get(parts.scheme):
        host = f"{host}:{parts.port}"
    return host


class FastDataPlane:
    """Signed JSON POSTs to one Kinesis endpoint; :meth:`call` returns the body of a 2xx answer or raises
    botocore's exception for the failure (see the module docstring)."""

    def __init__(
        self,
        endpoint_url: str,
        region_name: str,
        credentials: Callable[[], Credentials | None],
        limits: CallLimits,
        *,
        ca_certs: str | None = None,
        signing_name: str = "kinesis",
        pool_size: int = POOL_SIZE,
        sleep: Callable[[float], None] = time.sleep,
        rng: Callable[[], float] = random.random,
        backoff_base_s: float | None = None,
    ) -> None:
        # Where botocore posts a JSON request: the endpoint's own path, or "/" when it has none.
        parts = urlsplit(endpoint_url)
        self._path = parts.path or "/"
        self._url = parts._replace(path=self._path).geturl()
        self._endpoint_url = endpoint_url
        self._host = _host_header(endpoint_url)
        self._region = region_name
        self._signing_name = signing_name
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
    def for_client(cls, client: KinesisClient, *, ca_certs: str | None = None) -> FastDataPlane:
        """The fast client beside a boto3 Kinesis client: its endpoint, region, limits and credentials."""
        meta = client.meta
        # The client's own (refreshable) credentials, through botocore's private accessor; without it (a future
        # botocore), the shared session's, from the same default chain the client's came from.
        getter = getattr(client, "_get_credentials", None)
        if not callable(getter):
            from shardwise.backends.aws.client import shared_session  # noqa: PLC0415

            getter = shared_session().get_credentials

        def credentials() -> Credentials | None:
            found: Credentials | None = getter()
            return found

        return cls(
            meta.endpoint_url,
            meta.region_name,
            credentials,
            limits_of(meta.config),
            ca_certs=ca_certs,
            signing_name=meta.service_model.signing_name or "kinesis",
            pool_size=max(POOL_SIZE, int(getattr(meta.config, "max_pool_connections", 0) or 0)),
        )

    def __repr__(self) -> str:
        return f"FastDataPlane({self._endpoint_url!r}, region={self._region!r})"

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
        request = AWSRequest(
            method="POST",
            url=self._url,
            data=body,
            headers={"Host": self._host, "Content-Type": _CONTENT_TYPE, "X-Amz-Target": _TARGET_PREFIX + operation},
        )
        SigV4Auth(credentials.get_frozen_credentials(), self._signing_name, self._region).add_auth(request)
        response = self._pool.urlopen(
            "POST", self._path, body=body, headers=dict(request.headers.items()), redirect=False, preload_content=True
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
