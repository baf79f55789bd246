"""Pure retry arithmetic shared by the worker's loops and the shard consumers: back-off with jitter, and a
rate limit for tracebacks (an unexpected exception is logged with its traceback at most once per period)."""

from __future__ import annotations

import random
from collections.abc import Callable

__all__ = ["TracebackLimiter", "backoff_s"]


def backoff_s(attempt: int, base_s: float, cap_s: float, rng: random.Random | Callable[[], float]) -> float:
    """The delay before retry number ``attempt`` (1 for the first retry): exponential from ``base_s``, capped at
    ``cap_s``, with "equal jitter" — half the delay fixed, half uniformly random — so a fleet that failed
    together does not retry together, and no retry comes sooner than half the exponential step.

    ``rng`` is a :class:`random.Random` or a function returning a float in ``[0, 1)``.
    """
    if attempt < 1:
        raise ValueError(f"attempt must be >= 1, got {attempt}")
    if base_s <= 0 or cap_s <= 0:
        raise ValueError(f"base_s and cap_s must be > 0, got {base_s} and {cap_s}")
    step = min(cap_s, base_s * 2.0 ** min(attempt - 1, 62))
    draw = rng.random() if isinstance(rng, random.Random) else rng()
    return step / 2 + step / 2 * draw


class TracebackLimiter:
    """Decides whether the next unexpected exception of one source is logged with its traceback: the first one,
    then at most one per ``period_ns`` (on the injected monotonic clock)."""

    def __init__(self, clock_ns: Callable[[], int], period_ns: int = 60_000_000_000) -> None:
        self._clock_ns = clock_ns
        self._period_ns = period_ns
        self._last_ns: int | None = None

    def allow(self) -> bool:
        now = self._clock_ns()
        if self._last_ns is not None and now - self._last_ns < self._period_ns:
            return False
        self._last_ns = now
        return True
