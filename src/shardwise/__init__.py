"""shardwise: consume sharded streams (Amazon Kinesis first) with a fleet of workers that share the shards
through KCL-compatible leases.

The embedded default (SQLite lease store + SQLite-backed local stream) runs anywhere with no AWS account;
DynamoDB + Kinesis are for production.
"""

from shardwise.errors import (
    AccessDeniedError,
    ConfigurationError,
    DependencyError,
    ExpiredIteratorError,
    InvalidArgumentError,
    InvalidStateError,
    MalformedItemError,
    ResourceNotFoundError,
    ShardNotFoundError,
    ShardwiseError,
    StreamNotFoundError,
    TableNotFoundError,
    ThrottlingError,
    UnusableStoreError,
)

__version__ = "0.1.0"

__all__ = [
    "AccessDeniedError",
    "ConfigurationError",
    "DependencyError",
    "ExpiredIteratorError",
    "InvalidArgumentError",
    "InvalidStateError",
    "MalformedItemError",
    "ResourceNotFoundError",
    "ShardNotFoundError",
    "ShardwiseError",
    "StreamNotFoundError",
    "TableNotFoundError",
    "ThrottlingError",
    "UnusableStoreError",
    "__version__",
]
