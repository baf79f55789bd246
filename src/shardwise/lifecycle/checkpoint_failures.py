"""What a shard consumer does after a checkpoint write failed: the pure back-off and give-up rule.

A checkpoint that fails *transiently* (:class:`~shardwise.errors.DependencyError`: throttling, a timeout, an
unreachable table) is retried for as long as the lease is held. One that fails *permanently* (any other error:
a malformed lease item, a value the backend cannot store, an untranslated error) cannot succeed by retrying, so
after ``max_failures`` consecutive failures the consumer gives the lease up instead of redelivering the same
batch forever. Either way the retries back off exponentially from the task back-off, capped.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CheckpointRetry", "after_checkpoint_failure"]


@dataclass(frozen=True, slots=True)
class CheckpointRetry:
    """``give_up``: stop and give the lease up; otherwise try again after ``delay_ms``."""

    give_up: bool
    delay_ms: int


def after_checkpoint_failure(
    failures: int, *, transient: bool, backoff_ms: int, backoff_max_ms: int, max_failures: int
) -> CheckpointRetry:
    """The decision after the ``failures``-th consecutive failed checkpoint (``failures`` >= 1).

    The delay doubles from ``backoff_ms`` with each failure and never exceeds ``backoff_max_ms`` (nor goes below
    ``backoff_ms``); a permanent failure gives up at the ``max_failures``-th, a transient one never does."""
    exponent = min(max(failures, 1) - 1, 62)
    delay_ms = max(backoff_ms, min(backoff_max_ms, backoff_ms * 2**exponent))
    return CheckpointRetry(give_up=not transient and failures >= max_failures, delay_ms=delay_ms)
