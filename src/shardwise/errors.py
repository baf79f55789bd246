"""The exception tree of shardwise.

Every error shardwise raises derives from :class:`ShardwiseError`. Backend errors (botocore, sqlite3) are
translated into this tree at the backend boundary, so callers never need to import a backend to handle one::

    ShardwiseError
    ├── ConfigurationError        bad configuration, arguments or files; fix the input and retry
    ├── MalformedItemError        an item in a table cannot be read as what its key says it is
    ├── AccessDeniedError         the credentials are missing, invalid or expired, or lack a permission
    ├── InvalidStateError         a table or stream is missing, not ready, or in a state the call cannot use
    │   ├── ResourceNotFoundError the named table, stream or item table does not exist
    │   │   ├── StreamNotFoundError   the stream the worker consumes does not exist
    │   │   ├── TableNotFoundError    the lease table does not exist
    │   │   └── ShardNotFoundError    one shard does not exist (any more) in a stream that does
    │   └── UnusableStoreError    the store exists but cannot be used: a damaged or foreign database file,
    │                             a read-only file
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

What a worker does about an error is :func:`classify`'s answer (a :class:`Fault`):

==================  ==========================================================  ===================================
Fault               errors                                                      a worker ...
==================  ==========================================================  ===================================
``TRANSIENT``       :class:`DependencyError` (throttling, 5xx, timeouts,        retries with back-off and jitter,
                    connection resets, ``database is locked``); the builtin     forever, one WARNING line each
                    ``TimeoutError`` and ``ConnectionError``
``NOT_READY``       :class:`InvalidStateError`, :class:`ResourceNotFoundError`  retries at start within the bound;
                    ("retry later": a table not yet active, a merge child       while running: as ``TRANSIENT``
                    waiting for its other parent, an item table being created)
``MISSING``         :class:`StreamNotFoundError`, :class:`TableNotFoundError`   retries at start (it may be being
                    (the stream consumed, the lease table)                      created) within the bound; while
                                                                                running: as ``PERMANENT``
``PERMANENT``       :class:`ConfigurationError`, :class:`AccessDeniedError`,    stops at once at start; while
                    :class:`UnusableStoreError`,                                running after a bounded number of
                    :class:`UnsupportedFeatureVersionError`                     consecutive occurrences
``PER_ITEM``        :class:`MalformedItemError`, :class:`CheckpointError`       keeps it to the lease, shard or
                    (lease lost, bad checkpoint), :class:`InvalidArgumentError` item concerned; never stops
                    (expired iterator), :class:`ShardNotFoundError`, any other
                    :class:`ShardwiseError`
``UNEXPECTED``      anything else (a bug, or a record processor's exception)    retries; logs the traceback, at
                                                                                most once a minute per source
==================  ==========================================================  ===================================
"""

from __future__ import annotations

import enum

__all__ = [
    "AccessDeniedError",
    "ChangelogConflictError",
    "ChangelogMissingError",
    "CheckpointError",
    "ConfigurationError",
    "DependencyError",
    "ExpiredIteratorError",
    "Fault",
    "InvalidArgumentError",
    "InvalidCheckpointError",
    "InvalidStateError",
    "LeaseLostError",
    "MalformedItemError",
    "ResourceNotFoundError",
    "ShardNotFoundError",
    "ShardwiseError",
    "StateStoreError",
    "StreamNotFoundError",
    "TableNotFoundError",
    "ThrottlingError",
    "UnsupportedFeatureVersionError",
    "UnusableStoreError",
    "classify",
    "is_transient",
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
    """The named table or stream does not exist."""


class StreamNotFoundError(ResourceNotFoundError):
    """The stream does not exist (or was deleted). The message names it and how to create it."""


class TableNotFoundError(ResourceNotFoundError):
    """The lease table does not exist (or was deleted). The message names it and the fix."""


class ShardNotFoundError(ResourceNotFoundError):
    """One shard does not exist (any more: closed longer ago than the retention period) in a stream that does."""


class UnusableStoreError(InvalidStateError):
    """The store exists but cannot be used: a damaged database page, a file that is not a database, a read-only
    file. Retrying does not help; the message names the file and the fix (restore it, or use another)."""


class AccessDeniedError(ShardwiseError):
    """The backend refused the credentials (missing, invalid, expired) or the permission for a call. The
    message names the service's code and what to check (credentials, IAM policy)."""


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


class StateStoreError(ShardwiseError):
    """A shard's local state store cannot be used as it is: written by a newer format or another engine,
    corrupt or truncated, or asked for something its contract forbids. The message names the store's path and
    what happens or what to do (the framework wipes and restores a store it cannot read)."""


class ChangelogConflictError(LeaseLostError):
    """A state commit found the shard's changelog head moved by another worker: this worker no longer owns the
    shard (the shard consumer treats it as a lost lease; its uncommitted changes are discarded)."""


class ChangelogMissingError(TableNotFoundError):
    """The state changelog table does not exist and could not be created. The message names it and the fix."""


class DependencyError(ShardwiseError):
    """The backend failed or could not be reached. Retrying later is usually safe."""


class ThrottlingError(DependencyError):
    """The backend throttled the request (provisioned throughput or request-rate limit exceeded)."""


class Fault(enum.Enum):
    """What a worker does about an error (see the table in the module docstring)."""

    TRANSIENT = "transient"
    NOT_READY = "not ready"
    MISSING = "missing"
    PERMANENT = "permanent"
    PER_ITEM = "per item"
    UNEXPECTED = "unexpected"

    @property
    def ends_worker(self) -> bool:
        """Whether this fault, seen by a running worker often enough in a row, ends it."""
        return self in (Fault.PERMANENT, Fault.MISSING)

    @property
    def retried_at_start(self) -> bool:
        """Whether initialization retries this fault (within its bound): it may heal by itself."""
        return self in (Fault.TRANSIENT, Fault.NOT_READY, Fault.MISSING)


def classify(exc: BaseException) -> Fault:
    """The :class:`Fault` of ``exc`` (the one decision every retry loop of the worker asks)."""
    if isinstance(exc, DependencyError):
        return Fault.TRANSIENT
    if isinstance(exc, (ConfigurationError, AccessDeniedError, UnusableStoreError, UnsupportedFeatureVersionError)):
        return Fault.PERMANENT
    if isinstance(exc, ShardNotFoundError):
        return Fault.PER_ITEM
    if isinstance(exc, (StreamNotFoundError, TableNotFoundError)):
        return Fault.MISSING
    if isinstance(exc, InvalidStateError):
        return Fault.NOT_READY
    if isinstance(exc, ShardwiseError):
        return Fault.PER_ITEM  # malformed items, checkpoints, invalid arguments (expired iterators), ...
    if isinstance(exc, (TimeoutError, ConnectionError)):
        return Fault.TRANSIENT
    return Fault.UNEXPECTED


def is_transient(exc: BaseException) -> bool:
    """Whether retrying ``exc`` later is expected to succeed (throttling, 5xx, timeouts, a busy database)."""
    return classify(exc) is Fault.TRANSIENT
