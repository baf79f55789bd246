"""Steady test traffic: one partition key per shard, and producer threads that put records in the background.

Used by the subprocess scenarios that count every record (ids ``<tag>-<tick>-<n>``, the data is the id).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterable, Sequence

from shardwise.hashkeys import HashKeyRange, hash_key_for

__all__ = ["ProducerThread", "ShardTicker", "keys_per_shard", "some"]


def keys_per_shard(ranges: dict[str, HashKeyRange]) -> list[str]:
    """One partition key landing in each shard of ``ranges`` (shard id → hash key range), in shard-id order."""
    keys: dict[str, str] = {}
    for n in itertools.count():
        key = f"pk-{n}"
        for shard_id, hash_range in ranges.items():
            if shard_id not in keys and hash_key_for(key) in hash_range:
                keys[shard_id] = key
        if len(keys) == len(ranges):
            return [keys[shard_id] for shard_id in sorted(keys)]
    raise AssertionError("unreachable")  # pragma: no cover


def some(items: Iterable[str], limit: int = 8) -> str:
    """``<count>: <the first few, sorted> ...`` for failure messages."""
    listed = sorted(items)
    shown = listed[:limit]
    return f"{len(listed)}: {', '.join(shown)}{' ...' if len(listed) > limit else ''}"


class ProducerThread(threading.Thread):
    """A daemon thread that runs :meth:`produce` once, keeping what it raises for :meth:`finish`.

    ``produce`` should return soon once :attr:`stop` is set.
    """

    def __init__(self, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def produce(self) -> None:
        raise NotImplementedError

    def run(self) -> None:
        try:
            self.produce()
        except BaseException as exc:  # reported by finish()
            self.error = exc

    def finish(self, timeout_s: float = 60.0, *, stop: bool = True) -> None:
        """Stop the producer (or, with ``stop=False``, let it put everything it has to), join it, and fail if it
        failed."""
        if stop:
            self.stop.set()
        self.join(timeout_s)
        assert not self.is_alive(), "the producer did not finish"
        if self.error is not None:
            raise AssertionError(f"the producer failed: {self.error!r}") from self.error


class ShardTicker(ProducerThread):
    """Calls ``put`` with one record per key (ids ``<tag>-<tick>-<n>``, ``n`` zero-padded to ``index_width``
    digits) every ``interval_s``, on a fixed schedule, until stopped or ``max_s`` have passed (so a stuck test
    cannot produce forever)."""

    def __init__(
        self,
        put: Callable[[Sequence[tuple[str, str]]], object],
        keys: Sequence[str],
        tag: str,
        interval_s: float,
        max_s: float = 290.0,
        *,
        index_width: int = 1,
    ) -> None:
        super().__init__(name=f"producer-{tag}")
        self._put = put
        self._keys = list(keys)
        self._tag = tag
        self._interval_s = interval_s
        self._max_ticks = int(max_s / interval_s)
        self._index_width = index_width

    def produce(self) -> None:
        started = time.monotonic()
        width = self._index_width
        for tick in range(self._max_ticks):
            if self.stop.is_set():
                return
            self._put([(f"{self._tag}-{tick:06d}-{n:0{width}d}", key) for n, key in enumerate(self._keys)])
            self.stop.wait(max(0.0, started + (tick + 1) * self._interval_s - time.monotonic()))
