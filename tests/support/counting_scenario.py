"""What the stateful scenarios share: a producer of records over a fixed set of partition keys that keeps how many
it put per key, the changelog of an application, and waiting until the counting processor's counts (read through
the changelog from each key's leaf shard) equal what was produced — exactly.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from shardwise.backends import open_backend
from shardwise.config import BackendConfig
from shardwise.demo.counting import leaf_counts
from shardwise.state.port import Changelog
from support.fleet import INTEGRATION_DIR, Backend, Fleet, StreamAdmin
from support.traffic import ProducerThread

__all__ = [
    "COUNTING",
    "COUNTING_PYTHONPATH",
    "KeyedProducer",
    "changelog_of",
    "count_mismatches",
    "wait_exact_counts",
]

#: The processor of the stateful scenarios (``support.counting_processor``), and the workers' PYTHONPATH for it.
COUNTING = "support.counting_processor:KillingCountingProcessor"
COUNTING_PYTHONPATH = (INTEGRATION_DIR, INTEGRATION_DIR.parent)


def changelog_of(backend: Backend, application: str) -> Changelog:
    """The application's changelog, opened as its workers open it."""
    if backend.kind == "local":
        config = BackendConfig(backend="local", db=str(backend.db))
    else:
        config = BackendConfig(
            backend="aws",
            region=backend.region,
            kinesis_endpoint_url=backend.kinesis_endpoint_url,
            dynamodb_endpoint_url=backend.dynamodb_endpoint_url,
        )
    return open_backend(config).open_changelog(application)


class KeyedProducer(ProducerThread):
    """Puts ``total`` records (``batch`` per call, one call every ``interval_s``) over ``keys`` partition keys
    chosen at random (seeded), counting what it put per key (:attr:`produced`, only after a put succeeded)."""

    def __init__(
        self, admin: StreamAdmin, keys: Sequence[str], total: int, *, batch: int, interval_s: float, seed: int = 14
    ) -> None:
        super().__init__("keyed-producer")
        self._admin = admin
        self._keys = list(keys)
        self._total = total
        self._batch = batch
        self._interval_s = interval_s
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._produced: Counter[str] = Counter()
        self._done = 0

    @property
    def done(self) -> int:
        with self._lock:
            return self._done

    def produced(self) -> dict[str, int]:
        with self._lock:
            return dict(self._produced)

    def produce(self) -> None:
        next_at = time.monotonic()
        while self.done < self._total and not self.stop.is_set():
            size = min(self._batch, self._total - self.done)
            keys = [self._random.choice(self._keys) for _ in range(size)]
            self._admin.put([(f"{self.done + i}".encode(), key) for i, key in enumerate(keys)])
            with self._lock:
                self._produced.update(keys)
                self._done += size
            next_at += self._interval_s
            time.sleep(max(0.0, next_at - time.monotonic()))

    def wait_done(self, fraction: float, timeout_s: float) -> None:
        """Wait until ``fraction`` of the records are put (fails past ``timeout_s`` or if the producer failed)."""
        deadline = time.monotonic() + timeout_s
        while self.done < fraction * self._total:
            assert self.error is None, f"the producer failed: {self.error!r}"
            assert time.monotonic() < deadline, f"the producer put {self.done} of {self._total} records"
            time.sleep(0.05)


def count_mismatches(expected: dict[str, int], counted: dict[str, int]) -> dict[str, tuple[int, int]]:
    """key → (expected, counted) for every key whose count differs."""
    return {
        key: (expected.get(key, 0), counted.get(key, 0))
        for key in sorted(set(expected) | set(counted))
        if expected.get(key, 0) != counted.get(key, 0)
    }


def wait_exact_counts(
    fleet: Fleet, admin: StreamAdmin, changelog: Changelog, expected: dict[str, int], timeout_s: float
) -> dict[str, int]:
    """Wait until every key's count (through the changelog, from its leaf shard) equals ``expected`` — and
    then that it stays so; returns the counts. A count above what was produced fails at once: a record was
    applied twice, and waiting will not undo it."""
    keys = sorted(expected)
    last: dict[str, int] = {}

    def exact() -> bool:
        nonlocal last
        last = leaf_counts(changelog, admin.list_shards(), keys)
        over = {k: (expected[k], n) for k, n in last.items() if n > expected[k]}
        assert not over, f"keys counted more often than produced (expected, counted): {over}\n{fleet.report()}"
        return last == expected

    fleet.wait_until(
        exact,
        timeout_s,
        lambda: f"exact counts; (expected, counted) differ for {count_mismatches(expected, last)}",
        interval_s=1.0,
    )
    return last


def state_dirs(root: Path, worker_id: str, generation: int) -> str:
    """``--set`` value of a worker's state directory (a new ``generation`` is an empty directory)."""
    return f'state.dir="{root / f"state-{worker_id}-{generation}"}"'
