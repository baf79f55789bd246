"""Which backend an application runs on, and where: the one config object the backend seam is opened with.

It also bounds every call into the backend in time (:class:`CallLimits`, :func:`derived_call_limits`): a call
that hangs must not keep the lease renewer (or a shard consumer) waiting for long, so the connect and read
timeouts, the number of attempts and SQLite's busy timeout default to values derived from the failover time.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal, get_args

from shardwise.errors import ConfigurationError

__all__ = [
    "DEFAULT_FAILOVER_TIME_MS",
    "Backend",
    "BackendConfig",
    "CallLimits",
    "DataClient",
    "DerivedLimits",
    "RetrievalConfig",
    "check_data_client",
    "derived_call_limits",
]

Backend = Literal["local", "aws"]
#: The client that reads records from Kinesis and writes the lease updates to DynamoDB: shardwise's direct
#: clients, or boto3's (the control plane, scans, reads and puts are always boto3's).
DataClient = Literal["fast", "boto3"]

#: KCL's failover time (``failoverTimeMillis``); the limits of a config built without a worker derive from it.
DEFAULT_FAILOVER_TIME_MS = 10_000

_MAX_ATTEMPTS = 20
_MAX_TIMEOUT_MS = 600_000


@dataclass(frozen=True, slots=True)
class CallLimits:
    """How long one request to a service may take and how often it is tried (the SDK's *standard* retry mode:
    throttling-aware exponential back-off with jitter between attempts)."""

    connect_timeout_ms: int
    read_timeout_ms: int
    max_attempts: int


@dataclass(frozen=True, slots=True)
class DerivedLimits:
    dynamodb: CallLimits
    kinesis: CallLimits
    sqlite_busy_timeout_ms: int


def derived_call_limits(failover_time_ms: int) -> DerivedLimits:
    """The default limits for a worker whose leases last ``failover_time_ms`` (``F``; renewals every ``F/3``).

    * **DynamoDB** (leases, coordinator items): connect ``F/10`` (at least 500 ms), read ``F/5`` (at least
      1 s), 3 attempts. One attempt (connect + read, 3 s at the default ``F`` = 10 s) ends within a renewal
      interval (3.3 s); an endpoint that is black-holed fails the whole call in 3 × 1 s, about one renewal
      interval; one that accepts and never answers in 3 × 3 s plus the SDK's back-off, under ``F``. Without
      these, botocore's 60 s read timeout let a hung renewal block the renewer for minutes. The timeouts keep
      the renewer running; what guarantees the lease bound is the local expiry (``leases.local_expiry_margin_ms``),
      which holds whatever the call is doing.
    * **Kinesis** (GetRecords, ListShards): connect ``F/10`` (at least 500 ms), read ``F`` (at least 2 s),
      3 attempts: a GetRecords that hangs does not outlive a lease, and a batch read past the lease's local
      expiry is not delivered anyway.
    * **SQLite** busy timeout (waiting for another process's write lock): ``F/3`` (at least 2 s), so a
      renewal waits for the lock no longer than about a renewal interval.

    The floors keep requests to a busy host or a local stand-in from timing out spuriously when ``F`` is short.
    """
    return DerivedLimits(
        dynamodb=CallLimits(
            connect_timeout_ms=max(500, failover_time_ms // 10),
            read_timeout_ms=max(1_000, failover_time_ms // 5),
            max_attempts=3,
        ),
        kinesis=CallLimits(
            connect_timeout_ms=max(500, failover_time_ms // 10),
            read_timeout_ms=max(2_000, failover_time_ms),
            max_attempts=3,
        ),
        sqlite_busy_timeout_ms=max(2_000, failover_time_ms // 3),
    )


@dataclass(frozen=True, slots=True)
class RetrievalConfig:
    """How records are read (the ``[retrieval]`` section). ``client``: ``"fast"`` (default) reads Kinesis with
    shardwise's data-plane client (signed HTTP, msgspec decoding) and writes the DynamoDB lease updates
    (renewals, takes, checkpoints) with the same direct client; ``"boto3"`` uses boto3's clients for both, as
    before. The local backend ignores it."""

    client: DataClient = "fast"

    def __post_init__(self) -> None:
        check_data_client(self.client, "retrieval.client")


def check_data_client(value: object, name: str) -> None:
    """:class:`ConfigurationError` naming ``name`` and the choices unless ``value`` is a :data:`DataClient`."""
    if value not in get_args(DataClient):
        choices = " or ".join(repr(choice) for choice in get_args(DataClient))
        raise ConfigurationError(f"{name} must be {choices}, got {value!r}")


_LIMIT_FIELDS = (
    "dynamodb_connect_timeout_ms",
    "dynamodb_read_timeout_ms",
    "dynamodb_max_attempts",
    "kinesis_connect_timeout_ms",
    "kinesis_read_timeout_ms",
    "kinesis_max_attempts",
    "sqlite_busy_timeout_ms",
)


@dataclass(frozen=True, slots=True)
class BackendConfig:
    """Where leases and records live. ``local``: one SQLite file; ``aws``: DynamoDB + Kinesis via boto3.

    The call limits (``dynamodb_*``, ``kinesis_*``, ``sqlite_busy_timeout_ms``) are ``None`` to derive them
    from the failover time (:func:`derived_call_limits`): :func:`shardwise.config.build_config` fills them from
    the worker's ``leases.failover_time_ms``; a config built without a worker uses KCL's default failover time.
    """

    backend: Backend = "local"
    db: str = "shardwise.db"
    region: str | None = None
    endpoint_url: str | None = None
    kinesis_endpoint_url: str | None = None
    dynamodb_endpoint_url: str | None = None
    dynamodb_connect_timeout_ms: int | None = None
    dynamodb_read_timeout_ms: int | None = None
    dynamodb_max_attempts: int | None = None
    kinesis_connect_timeout_ms: int | None = None
    kinesis_read_timeout_ms: int | None = None
    kinesis_max_attempts: int | None = None
    sqlite_busy_timeout_ms: int | None = None
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)

    def __post_init__(self) -> None:
        if self.backend not in ("local", "aws"):
            raise ConfigurationError(f"backend must be 'local' or 'aws', got {self.backend!r}")
        for name in _LIMIT_FIELDS:
            value = getattr(self, name)
            if value is None:
                continue
            high = _MAX_ATTEMPTS if name.endswith("_max_attempts") else _MAX_TIMEOUT_MS
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
                raise ConfigurationError(
                    f"{name} must be an integer from 1 to {high}, got {value!r}; leave it unset to derive it from "
                    "leases.failover_time_ms"
                )

    @property
    def kinesis_endpoint(self) -> str | None:
        return self.kinesis_endpoint_url or self.endpoint_url

    @property
    def dynamodb_endpoint(self) -> str | None:
        return self.dynamodb_endpoint_url or self.endpoint_url

    def with_failover_time(self, failover_time_ms: int) -> BackendConfig:
        """This config with every unset call limit derived from ``failover_time_ms``."""
        derived = derived_call_limits(failover_time_ms)
        defaults = {
            "dynamodb_connect_timeout_ms": derived.dynamodb.connect_timeout_ms,
            "dynamodb_read_timeout_ms": derived.dynamodb.read_timeout_ms,
            "dynamodb_max_attempts": derived.dynamodb.max_attempts,
            "kinesis_connect_timeout_ms": derived.kinesis.connect_timeout_ms,
            "kinesis_read_timeout_ms": derived.kinesis.read_timeout_ms,
            "kinesis_max_attempts": derived.kinesis.max_attempts,
            "sqlite_busy_timeout_ms": derived.sqlite_busy_timeout_ms,
        }
        unset = {name: value for name, value in defaults.items() if getattr(self, name) is None}
        return dataclasses.replace(self, **unset) if unset else self  # type: ignore[arg-type]

    def _limit(self, name: str, derived: int) -> int:
        value: int | None = getattr(self, name)
        return derived if value is None else value

    @property
    def dynamodb_limits(self) -> CallLimits:
        """The DynamoDB limits (unset ones derived from the default failover time)."""
        derived = derived_call_limits(DEFAULT_FAILOVER_TIME_MS).dynamodb
        return CallLimits(
            self._limit("dynamodb_connect_timeout_ms", derived.connect_timeout_ms),
            self._limit("dynamodb_read_timeout_ms", derived.read_timeout_ms),
            self._limit("dynamodb_max_attempts", derived.max_attempts),
        )

    @property
    def kinesis_limits(self) -> CallLimits:
        """The Kinesis limits (unset ones derived from the default failover time)."""
        derived = derived_call_limits(DEFAULT_FAILOVER_TIME_MS).kinesis
        return CallLimits(
            self._limit("kinesis_connect_timeout_ms", derived.connect_timeout_ms),
            self._limit("kinesis_read_timeout_ms", derived.read_timeout_ms),
            self._limit("kinesis_max_attempts", derived.max_attempts),
        )

    @property
    def busy_timeout_ms(self) -> int:
        """SQLite's busy timeout in milliseconds (derived from the default failover time when unset)."""
        derived = derived_call_limits(DEFAULT_FAILOVER_TIME_MS)
        return self._limit("sqlite_busy_timeout_ms", derived.sqlite_busy_timeout_ms)
