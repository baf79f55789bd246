"""The exception tree of shardwise.

Every error shardwise raises derives from :class:`ShardwiseError`. Backend errors (botocore, sqlite3) are
translated into this tree at the backend boundary, so callers never need to import a backend to handle one::

    ShardwiseError
    ├── ConfigurationError        bad configuration, arguments or files; fix the input and retry
    ├── MalformedItemError        an item in a table cannot be read as what its key says it is
    ├── InvalidStateError         a table or stream is missing, not ready, or in a state the call cannot use
    │   └── ResourceNotFoundError the named table, stream or shard does not exist
    ├── InvalidArgumentError      a request the backend refused as invalid (bad iterator, bad sequence number)
    │   └── ExpiredIteratorError  a shard iterator is older than its lifetime; ask for a new one
    ├── UnsupportedFeatureVersionError  this worker cannot run a level the fleet has finalized
    ├── CheckpointError           a record processor's checkpoint could not be taken
    │   ├── InvalidCheckpointError    the position is behind the last checkpoint or beyond what was delivered
    │   └── LeaseLostError            this worker no longer holds the shard's lease (KCL: ShutdownException)
    └── DependencyError           the backend failed or could not be reached; usually worth retrying
        └── ThrottlingError       the backend asked us to slow down (throughput or request-rate limits)

A *lost race* is not an error: conditional lease operations return ``None`` (falsy) when their condition did
not hold, and only infrastructure faults raise.
"""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "ConfigurationError",
    "DependencyError",
    "ExpiredIteratorError",
    "InvalidArgumentError",
    "InvalidCheckpointError",
    "InvalidStateError",
    "LeaseLostError",
    "MalformedItemError",
    "ResourceNotFoundError",
    "ShardwiseError",
    "ThrottlingError",
    "UnsupportedFeatureVersionError",
]


class ShardwiseError(Exception):
    """Root of every error raised by shardwise."""


class ConfigurationError(ShardwiseError):
    """Configuration, command-line arguments or input files are invalid. The message names the fix."""


class MalformedItemError(ShardwiseError):
    """An item read from a table is not a valid instance of what it claims to be.

    ``key`` names the item so that an operator can find and repair it.
    """

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"item {key!r}: {problem}")
        self.key = key
        self.problem = problem


class InvalidStateError(ShardwiseError):
    """A table or stream is missing, not yet ready, or in a state the operation cannot work with."""


class ResourceNotFoundError(InvalidStateError):
    """The named table, stream or shard does not exist."""


class InvalidArgumentError(ShardwiseError):
    """The backend rejected a request as invalid (for example an unknown shard iterator)."""


class ExpiredIteratorError(InvalidArgumentError):
    """A shard iterator expired; request a new one from the last position read."""


class UnsupportedFeatureVersionError(ShardwiseError):
    """The fleet has finalized a feature level this worker does not support (``shardwise features``).

    ``feature``, ``level`` and ``supported`` (``(min, max)``) say which; the fix is to run a release that
    supports the level, or to downgrade the feature first.
    """

    def __init__(self, message: str, feature: str, level: int, supported: tuple[int, int]) -> None:
        super().__init__(message)
        self.feature = feature
        self.level = level
        self.supported = supported


class CheckpointError(ShardwiseError):
    """A checkpoint could not be taken. ``kcl_name`` is the name KCL (and amazon-kclpy) gives the error."""

    kcl_name = "KinesisClientLibException"


class InvalidCheckpointError(CheckpointError, ValueError):
    """The checkpoint position is invalid: not a sequence number, behind the last checkpoint, or beyond the
    largest sequence number delivered to the processor."""

    kcl_name = "IllegalArgumentException"


class LeaseLostError(CheckpointError):
    """The worker no longer holds the lease of this shard, so it may not checkpoint it."""

    kcl_name = "ShutdownException"


class DependencyError(ShardwiseError):
    """The backend failed or could not be reached. Retrying later is usually safe."""


class ThrottlingError(DependencyError):
    """The backend throttled the request (provisioned throughput or request-rate limit exceeded)."""
