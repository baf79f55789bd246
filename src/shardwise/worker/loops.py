"""The worker's periodic tasks: one daemon thread each, all stopped by one event, each woken early by name.

A run that raises is retried sooner than the loop's interval, after a back-off that starts at
``retry_backoff_s`` and doubles (with jitter) up to the interval, and is logged by its fault
(:func:`shardwise.errors.classify`): transient, "not ready" and per-item errors as one WARNING line; a
permanent or "missing" error (stream, lease table) as one ERROR line, reported with its count of consecutive
occurrences to ``on_permanent`` (the worker stops once the count reaches its limit); an unexpected exception (a
bug) with its traceback, at most once a minute per loop, else as one ERROR line. A successful run resets the
counts.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from shardwise.errors import Fault, classify
from shardwise.lifecycle.faults import OnPermanentError
from shardwise.retry import TracebackLimiter, backoff_s

__all__ = ["Loop", "LoopFaults", "Loops", "TaskFaults"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoopFaults:
    """How the loops retry and whom they tell about a permanent error (``None``: nobody)."""

    retry_backoff_s: float = 1.0
    on_permanent: OnPermanentError | None = None
    rng: random.Random | None = None
    clock_ns: Callable[[], int] = time.monotonic_ns


class TaskFaults:
    """The fault bookkeeping of one periodic task (a loop, the migration watcher): what to log for a failed run,
    whom to tell about a permanent error, and how long to wait before retrying."""

    def __init__(self, name: str, faults: LoopFaults | None = None) -> None:
        self.name = name
        self._faults = faults or LoopFaults()
        self._rng = self._faults.rng or random.Random()
        self._tracebacks = TracebackLimiter(self._faults.clock_ns)
        self.consecutive_failures = 0
        self._permanent = 0

    def succeeded(self) -> None:
        self.consecutive_failures = 0
        self._permanent = 0

    def failed(self, exc: Exception, interval_s: float) -> float:
        """Log and report ``exc`` (call from the ``except`` block); returns the seconds to wait before retrying:
        ``retry_backoff_s`` doubling with jitter, never more than ``interval_s``."""
        self.consecutive_failures += 1
        base_s = min(self._faults.retry_backoff_s, interval_s)
        delay_s = backoff_s(self.consecutive_failures, base_s, interval_s, self._rng)
        fault = classify(exc)
        what = f"{self.name}: {type(exc).__name__}"
        if fault.ends_worker:
            self._permanent += 1
            logger.error("%s: %s; retrying in %.1f s (%d in a row)", what, exc, delay_s, self._permanent)
            if self._faults.on_permanent is not None:
                self._faults.on_permanent(self.name, exc, self._permanent)
            return delay_s
        self._permanent = 0
        if fault in (Fault.TRANSIENT, Fault.NOT_READY, Fault.PER_ITEM):
            logger.warning("%s: %s; retrying in %.1f s", what, exc, delay_s)
        elif self._tracebacks.allow():
            logger.exception("%s: unexpected error; retrying in %.1f s", what, delay_s)
        else:
            logger.error(
                "%s: unexpected error again: %s; retrying in %.1f s (the traceback is logged at most once a minute)",
                what,
                exc,
                delay_s,
            )
        return delay_s


class Loop:
    """A periodic task on its own daemon thread; ``wake()`` runs it early."""

    def __init__(
        self,
        name: str,
        interval_s: Callable[[], float],
        task: Callable[[], None],
        stop: threading.Event,
        *,
        initial_delay_s: float = 0.0,
        faults: LoopFaults | None = None,
    ) -> None:
        self.name = name
        self._initial_delay_s = initial_delay_s
        self._interval_s = interval_s
        self._task = task
        self._stop = stop
        self._faults = TaskFaults(f"{name} loop", faults)
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    @property
    def consecutive_failures(self) -> int:
        return self._faults.consecutive_failures

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def join(self, timeout_s: float) -> None:
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def run_once(self) -> float:
        """Run the task once; returns the seconds to wait before the next run."""
        try:
            self._task()
        except Exception as exc:
            return self._faults.failed(exc, self._interval_s())
        self._faults.succeeded()
        return self._interval_s()

    def _run(self) -> None:
        if self._initial_delay_s > 0:
            self._wake.wait(self._initial_delay_s)
            self._wake.clear()
        while not self._stop.is_set():
            delay_s = self.run_once()
            self._wake.wait(delay_s)
            self._wake.clear()


class Loops:
    """The worker's loops by name. Every loop exists in every generation: a loop whose work the current
    generation does not do runs as a no-op, so a switch needs no thread started or stopped."""

    def __init__(self, faults: LoopFaults | None = None) -> None:
        self._stop = threading.Event()
        self._loops: dict[str, Loop] = {}
        self._faults = faults

    def add(
        self, name: str, interval_s: Callable[[], float], task: Callable[[], None], *, initial_delay_s: float = 0.0
    ) -> None:
        self._loops[name] = Loop(
            name, interval_s, task, self._stop, initial_delay_s=initial_delay_s, faults=self._faults
        )

    def get(self, name: str) -> Loop:
        return self._loops[name]

    def wake(self, *names: str) -> None:
        for name in names:
            self._loops[name].wake()

    def start(self) -> None:
        for loop in self._loops.values():
            loop.start()

    def stop(self, timeout_s: float) -> None:
        """Stop every loop and wait up to ``timeout_s`` for each (a run under way finishes first)."""
        self._stop.set()
        for loop in self._loops.values():
            loop.join(timeout_s)
