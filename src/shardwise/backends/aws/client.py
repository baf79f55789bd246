"""The one place boto3 clients are built: DynamoDB and Kinesis, with shardwise's retry and timeout settings.

Construction errors (no region, a broken profile) become :class:`~shardwise.errors.ConfigurationError` with the
fix in the message; nothing else in shardwise calls ``boto3.client``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, NoRegionError

from shardwise.errors import ConfigurationError

if TYPE_CHECKING:
    # Re-exported (type checking only) for the seam's annotations: shardwise.backends.DynamoDBClient.
    from mypy_boto3_dynamodb.client import DynamoDBClient as DynamoDBClient  # noqa: PLC0414 - explicit re-export
    from mypy_boto3_kinesis.client import KinesisClient

__all__ = ["DYNAMODB_CLIENT_CONFIG", "KINESIS_CLIENT_CONFIG", "dynamodb_client", "kinesis_client"]

#: DynamoDB: the SDK's *standard* retry mode with 10 attempts (KCL's DynamoDB clients retry as long).
DYNAMODB_CLIENT_CONFIG = Config(retries={"mode": "standard", "max_attempts": 10})

#: Kinesis: the SDK's *standard* retry mode (3 attempts, with throttling-aware backoff) and bounded
#: connect/read timeouts. KCL uses a 30 s request timeout for Kinesis; GetRecords answers well within that.
KINESIS_CLIENT_CONFIG = Config(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=5, read_timeout=30)


def dynamodb_client(*, endpoint_url: str | None = None, region_name: str | None = None) -> DynamoDBClient:
    """A DynamoDB client from boto3's default credential and region chain."""
    try:
        return boto3.session.Session().client(
            "dynamodb", endpoint_url=endpoint_url, region_name=region_name, config=DYNAMODB_CLIENT_CONFIG
        )
    except BotoCoreError as exc:
        raise ConfigurationError(
            f"cannot create a DynamoDB client: {exc}; set region_name (or AWS_REGION) and credentials, "
            "or pass a configured client"
        ) from exc


def kinesis_client(
    *, endpoint_url: str | None = None, region_name: str | None = None, for_what: str = "the stream"
) -> KinesisClient:
    """A Kinesis client from boto3's default credential and region chain; ``for_what`` names the stream in the
    error when no region can be found."""
    try:
        return boto3.session.Session().client(
            "kinesis", endpoint_url=endpoint_url, region_name=region_name, config=KINESIS_CLIENT_CONFIG
        )
    except NoRegionError as exc:
        raise ConfigurationError(
            f"no AWS region for {for_what}: pass region_name, a stream_arn, or set AWS_REGION / a profile region"
        ) from exc
    except BotoCoreError as exc:
        raise ConfigurationError(f"cannot create a Kinesis client: {exc}") from exc
