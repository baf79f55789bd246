"""Per-lease throughput: the ``throughputKBps`` EMA the renewer writes on each lease it holds (§6.4)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from shardwise.errors import ConfigurationError

__all__ = ["LeaseThroughputRecorder"]


@dataclass(slots=True)
class _LeaseThroughput:
    since_ns: int
    pending_bytes: int = 0
    kbps: float | None = None


class LeaseThroughputRecorder:
    """Per-lease throughput in KB/s as an EMA, written by the renewer as ``throughputKBps`` (§6.4). Thread-safe.

    The consumer calls :meth:`record` with the bytes of each batch delivered to the processor; the renewer
    calls :meth:`throughput_kbps` once per renewal interval: the KB (bytes ÷ 1024) recorded since the previous
    call, divided by the interval, folded into the previous value as ``alpha × current + (1 − alpha) ×
    previous`` (the first value is taken as is), rounded to 6 decimals.
    """

    def __init__(self, clock_ns: Callable[[], int] = time.monotonic_ns, *, alpha: float = 0.5) -> None:
        given: object = alpha
        if isinstance(given, bool) or not isinstance(given, (int, float)) or not 0 < given <= 1:
            raise ConfigurationError(f"alpha must be a number in (0, 1], got {alpha!r}")
        self._clock_ns = clock_ns
        self._alpha = float(alpha)
        self._lock = threading.Lock()
        self._leases: dict[str, _LeaseThroughput] = {}

    def _entry(self, lease_key: str) -> _LeaseThroughput:
        entry = self._leases.get(lease_key)
        if entry is None:
            entry = self._leases[lease_key] = _LeaseThroughput(since_ns=self._clock_ns())
        return entry

    def record(self, lease_key: str, num_bytes: int) -> None:
        """Count the bytes of one batch delivered for this lease."""
        if num_bytes < 0:
            raise ValueError(f"num_bytes must be >= 0, got {num_bytes}")
        with self._lock:
            self._entry(lease_key).pending_bytes += num_bytes

    def seed(self, lease_key: str, kbps: float | None) -> None:
        """Start from a stored ``throughputKBps`` (a new owner of the lease); ``None`` leaves no previous value."""
        with self._lock:
            self._entry(lease_key).kbps = None if kbps is None else float(kbps)

    def forget(self, lease_key: str) -> None:
        """Drop the lease (lost, released or ended)."""
        with self._lock:
            self._leases.pop(lease_key, None)

    def lease_keys(self) -> list[str]:
        with self._lock:
            return sorted(self._leases)

    def current_kbps(self, lease_key: str) -> float | None:
        """The last computed (or seeded) value, without closing an interval."""
        with self._lock:
            entry = self._leases.get(lease_key)
            return None if entry is None else entry.kbps

    def throughput_kbps(self, lease_key: str, interval_s: float | None = None) -> float | None:
        """Close the interval of this lease and return the new EMA; ``None`` for a lease never recorded or seeded.

        ``interval_s`` is the renewer's interval (3.308 s by default, as KCL divides by it); ``None`` measures
        the time since the previous call (or since the lease was first recorded) on the clock. When that is
        not positive, the current value is returned and the bytes stay for the next interval.
        """
        if interval_s is not None and not interval_s > 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        now = self._clock_ns()
        with self._lock:
            entry = self._leases.get(lease_key)
            if entry is None:
                return None
            seconds = interval_s if interval_s is not None else (now - entry.since_ns) / 1e9
            if seconds <= 0:
                return entry.kbps
            current = entry.pending_bytes / 1024 / seconds
            previous = entry.kbps
            value = current if previous is None else self._alpha * current + (1 - self._alpha) * previous
            entry.kbps = round(value, 6)
            entry.pending_bytes = 0
            entry.since_ns = now
            return entry.kbps
