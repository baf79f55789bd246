"""A monotonic clock a test moves by hand, for the shells that take ``clock_ns``."""

from __future__ import annotations

__all__ = ["FakeClock"]

_MS = 1_000_000


class FakeClock:
    """A monotonic clock the test moves by hand (starting well above 0, like ``time.monotonic_ns``)."""

    def __init__(self, start_ns: int = 5_000_000 * _MS) -> None:
        self.now = start_ns

    def __call__(self) -> int:
        return self.now

    def advance(self, ns: int) -> None:
        self.now += ns
