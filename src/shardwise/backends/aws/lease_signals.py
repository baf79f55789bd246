"""Assignment signals on lease items (issue 15): how a 3.x worker learns, without reading, that the leader has
assigned it a lease.

A shardwise leader that assigns a lease to a worker also adds 1 to ``shardwiseAssignmentSignal`` on one lease
that worker already holds (an update conditioned on the owner, which leaves ``leaseCounter`` alone, so no renewal
or checkpoint of the holder races with it). The holder renews that lease every few seconds and every renewal
returns the whole item: a signal that changed since the holder last saw the item tells it to query the owner
index now, instead of polling it on a timer. KCL and the lock client ignore the attribute.

:class:`SignalBook` is the holder's side: it remembers the signal of every lease item the store returned and
counts the changes.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

__all__ = ["ATTR_ASSIGNMENT_SIGNAL", "SignalBook"]

#: The lease-item attribute a leader adds 1 to (a number; absent counts as 0).
ATTR_ASSIGNMENT_SIGNAL = "shardwiseAssignmentSignal"


class SignalBook:
    """The assignment signal last seen on each lease item, and how many times one changed. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: dict[str, int] = {}
        self._changes = 0

    @property
    def changes(self) -> int:
        """How many times an item came back with another signal than the one seen on it before."""
        with self._lock:
            return self._changes

    def observe(self, key: str, item: Mapping[str, Any]) -> None:
        """Note the signal of a lease item just read or written (the first sighting of a key only sets it)."""
        value = _signal(item.get(ATTR_ASSIGNMENT_SIGNAL))
        with self._lock:
            previous = self._last.get(key)
            self._last[key] = value
            if previous is not None and previous != value:
                self._changes += 1


def _signal(raw: object) -> int:
    if isinstance(raw, Mapping):
        number = raw.get("N")
        if isinstance(number, str):
            try:
                return int(number)
            except ValueError:
                return 0
    return 0
