"""What a shard consumer's step does about an error its own states did not handle (the generic branch of
:meth:`shardwise.lifecycle.consumer.ShardConsumer.step`), by :func:`shardwise.errors.classify`:

* **transient** (throttling, 5xx, timeouts, a busy database) and **not ready** ("retry later": a merge child
  waiting for its other parent's lease): one WARNING line, retried with back-off;
* **per item** (a malformed item, an invalid argument, a processor that did not checkpoint at shard end, a
  missing shard): one ERROR line, retried with back-off; it concerns this shard only;
* **permanent or missing** (missing stream or lease table, damaged database, access denied, configuration
  found bad late): one ERROR line, retried with back-off, and reported with its count of consecutive occurrences to
  ``on_permanent`` — the worker stops once that count reaches its limit;
* **unexpected** (a bug, or an exception of the record processor): logged with its traceback the first time
  and then at most once a minute; otherwise one ERROR line.

The first retry comes after ``task_backoff_time_ms`` (KCL's fixed task back-off); each further one after up to
twice as long, plus jitter, up to 16 times the task back-off.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable

from shardwise.errors import Fault, classify
from shardwise.retry import TracebackLimiter, backoff_s

__all__ = ["OnPermanentError", "StepFaults", "retry_delay_ms"]

#: ``(source, error, consecutive occurrences)``: a permanent error seen by a shard consumer or a worker loop.
OnPermanentError = Callable[[str, BaseException, int], None]

_MAX_BACKOFF_FACTOR = 16


def retry_delay_ms(attempt: int, base_ms: int, rng: random.Random) -> int:
    """The delay before retry ``attempt`` (1 = the first): ``base_ms`` exactly, then growing with jitter."""
    if attempt <= 1:
        return base_ms
    extra_s = backoff_s(attempt - 1, base_ms / 1000, (_MAX_BACKOFF_FACTOR - 1) * base_ms / 1000, rng)
    return base_ms + int(extra_s * 1000)


class StepFaults:
    """The error policy of one shard consumer (see the module docstring). Call :meth:`failed` from inside the
    ``except`` block (so a traceback can be logged) with the consumer's count of consecutive failed steps."""

    def __init__(
        self,
        shard_id: str,
        *,
        task_backoff_time_ms: int,
        clock_ns: Callable[[], int],
        log: logging.Logger,
        on_permanent: OnPermanentError | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._shard_id = shard_id
        self._base_ms = task_backoff_time_ms
        self._log = log
        self._on_permanent = on_permanent
        self._rng = rng or random.Random()
        self._tracebacks = TracebackLimiter(clock_ns)
        self._permanent = 0

    @property
    def consecutive_permanent(self) -> int:
        return self._permanent

    def failed(self, exc: BaseException, state: str, consecutive_failures: int) -> int:
        """Log ``exc`` as its fault deserves, report a permanent one; returns the delay before the retry, in ms."""
        if consecutive_failures <= 1:
            self._permanent = 0  # the step before this one succeeded
        delay_ms = retry_delay_ms(consecutive_failures, self._base_ms, self._rng)
        fault = classify(exc)
        where = f"shard {self._shard_id}: {type(exc).__name__} in state {state} (attempt {consecutive_failures})"
        if fault.ends_worker:
            self._permanent += 1
            self._log.error("%s: %s; retrying in %d ms (%d in a row)", where, exc, delay_ms, self._permanent)
            if self._on_permanent is not None:
                self._on_permanent(f"shard consumer {self._shard_id}", exc, self._permanent)
            return delay_ms
        self._permanent = 0
        if fault in (Fault.TRANSIENT, Fault.NOT_READY):
            self._log.warning("%s: %s; retrying in %d ms", where, exc, delay_ms)
        elif fault is Fault.PER_ITEM:
            self._log.error("%s: %s; retrying in %d ms", where, exc, delay_ms)
        elif self._tracebacks.allow():
            self._log.exception("%s: unexpected error; retrying in %d ms", where, delay_ms)
        else:
            self._log.error(
                "%s: unexpected error again: %s; retrying in %d ms (the traceback is logged at most once a minute)",
                where,
                exc,
                delay_ms,
            )
        return delay_ms
