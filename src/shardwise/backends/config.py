"""Which backend an application runs on, and where: the one config object the backend seam is opened with."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from shardwise.errors import ConfigurationError

__all__ = ["Backend", "BackendConfig"]

Backend = Literal["local", "aws"]


@dataclass(frozen=True, slots=True)
class BackendConfig:
    """Where leases and records live. ``local``: one SQLite file; ``aws``: DynamoDB + Kinesis via boto3."""

    backend: Backend = "local"
    db: str = "shardwise.db"
    region: str | None = None
    endpoint_url: str | None = None
    kinesis_endpoint_url: str | None = None
    dynamodb_endpoint_url: str | None = None

    def __post_init__(self) -> None:
        if self.backend not in ("local", "aws"):
            raise ConfigurationError(f"backend must be 'local' or 'aws', got {self.backend!r}")

    @property
    def kinesis_endpoint(self) -> str | None:
        return self.kinesis_endpoint_url or self.endpoint_url

    @property
    def dynamodb_endpoint(self) -> str | None:
        return self.dynamodb_endpoint_url or self.endpoint_url
