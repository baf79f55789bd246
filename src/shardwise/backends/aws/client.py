"""The one place boto3 clients are built: DynamoDB and Kinesis, with shardwise's retry and timeout settings.

Every client has connect and read timeouts and a bounded number of attempts (the SDK's *standard* retry mode),
from a :class:`~shardwise.backends.config.CallLimits` — by default derived from the failover time
(:func:`~shardwise.backends.config.derived_call_limits` explains the numbers), never botocore's 60 s.

Every client comes from one boto3 session (:func:`shared_session`), created on first use and kept: botocore's
loaders, service models, endpoint data and credential resolution are done once per process, not once per client
(a session's credentials are resolved once and refresh themselves when they are temporary). Sessions are not
thread-safe, so clients are created under a lock; the clients themselves are.

Construction errors (no region, a broken profile) become :class:`~shardwise.errors.ConfigurationError` with the
fix in the message; nothing else in shardwise calls ``boto3.client``.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, NoRegionError

from shardwise.backends.config import DEFAULT_FAILOVER_TIME_MS, CallLimits, derived_call_limits
from shardwise.errors import ConfigurationError

if TYPE_CHECKING:
    # Re-exported (type checking only) for the seam's annotations: shardwise.backends.DynamoDBClient.
    from mypy_boto3_dynamodb.client import DynamoDBClient as DynamoDBClient  # noqa: PLC0414 - explicit re-export
    from mypy_boto3_kinesis.client import KinesisClient

__all__ = [
    "DYNAMODB_CLIENT_CONFIG",
    "KINESIS_CLIENT_CONFIG",
    "client_config",
    "dynamodb_client",
    "kinesis_client",
    "shared_session",
]

_DEFAULTS = derived_call_limits(DEFAULT_FAILOVER_TIME_MS)
_LOCK = threading.RLock()
_SESSION: boto3.session.Session | None = None


def shared_session() -> boto3.session.Session:
    """The process's one boto3 session (boto3's default credential and region chain), created on first use."""
    global _SESSION  # noqa: PLW0603 - the one session, created lazily
    with _LOCK:
        if _SESSION is None:
            _SESSION = boto3.session.Session()
        return _SESSION


def client_config(limits: CallLimits) -> Config:
    """The botocore config for ``limits``: timeouts in seconds, *standard* retries with that many attempts in all
    (botocore's ``total_max_attempts``; its ``max_attempts`` would count retries only)."""
    return Config(
        retries={"mode": "standard", "total_max_attempts": limits.max_attempts},
        connect_timeout=limits.connect_timeout_ms / 1000,
        read_timeout=limits.read_timeout_ms / 1000,
    )


#: DynamoDB with the limits derived from KCL's default failover time (10 s).
DYNAMODB_CLIENT_CONFIG = client_config(_DEFAULTS.dynamodb)

#: Kinesis with the limits derived from KCL's default failover time (10 s).
KINESIS_CLIENT_CONFIG = client_config(_DEFAULTS.kinesis)


def dynamodb_client(
    *, endpoint_url: str | None = None, region_name: str | None = None, limits: CallLimits | None = None
) -> DynamoDBClient:
    """A DynamoDB client from boto3's default credential and region chain, bounded by ``limits`` (default:
    derived from the default failover time)."""
    config = DYNAMODB_CLIENT_CONFIG if limits is None else client_config(limits)
    try:
        session = shared_session()
        with _LOCK:
            return session.client("dynamodb", endpoint_url=endpoint_url, region_name=region_name, config=config)
    except BotoCoreError as exc:
        raise ConfigurationError(
            f"cannot create a DynamoDB client: {exc}; set region_name (or AWS_REGION) and credentials, "
            "or pass a configured client"
        ) from exc


def kinesis_client(
    *,
    endpoint_url: str | None = None,
    region_name: str | None = None,
    for_what: str = "the stream",
    limits: CallLimits | None = None,
) -> KinesisClient:
    """A Kinesis client from boto3's default credential and region chain, bounded by ``limits`` (default:
    derived from the default failover time); ``for_what`` names the stream in the error when no region can be
    found."""
    config = KINESIS_CLIENT_CONFIG if limits is None else client_config(limits)
    try:
        session = shared_session()
        with _LOCK:
            return session.client("kinesis", endpoint_url=endpoint_url, region_name=region_name, config=config)
    except NoRegionError as exc:
        raise ConfigurationError(
            f"no AWS region for {for_what}: pass region_name, a stream_arn, or set AWS_REGION / a profile region"
        ) from exc
    except BotoCoreError as exc:
        raise ConfigurationError(f"cannot create a Kinesis client: {exc}") from exc
