"""``shardwise demo --stateful``: the counting processor on a fleet of worker processes, through kills and a
reshard, verified exactly.

The demo produces records over a fixed set of partition keys (keeping how many it put per key) while worker
processes run :class:`~shardwise.demo.counting.CountingProcessor`, each with a state directory of its own. It
SIGKILLs a worker twice, each time starting a replacement with an *empty* state directory (the shards it takes
over are restored from the changelog), splits a shard and merges two others. At the end each key's count is
read through the changelog from the leaf shard holding the key, and must equal what was produced — not at least:
exactly.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from shardwise.backends import open_backend
from shardwise.backends.sqlite.leases import SQLiteLeaseStore
from shardwise.backends.sqlite.stream import LocalStreamStore
from shardwise.config import BackendConfig
from shardwise.demo.counting import CHECKPOINT_EVERY_ENV, leaf_counts
from shardwise.demo.fleet import DemoOptions, DemoWorkers
from shardwise.errors import ConfigurationError, ShardwiseError
from shardwise.retrieval.model import Shard

__all__ = ["APPLICATION", "StatefulDemoOptions", "StatefulDemoSummary", "run_stateful_demo"]

APPLICATION = "demo-stateful-app"
STREAM = "demo-stateful"


@dataclass(frozen=True, slots=True)
class StatefulDemoOptions:
    workdir: Path
    shards: int = 8
    records: int = 20_000
    keys: int = 24
    workers: int = 3
    produce_seconds: float = 30.0
    failover_time_ms: int = 4_000
    commit_interval_ms: int = 1_000
    checkpoint_every: int = 5
    drain_timeout_s: float = 180.0

    def __post_init__(self) -> None:
        if self.shards < 4 or self.workers < 2 or self.records < 100 or self.keys < 1:
            raise ConfigurationError("the stateful demo needs at least 4 shards, 2 workers, 100 records and 1 key")
        if self.produce_seconds <= 0:
            raise ConfigurationError("produce_seconds must be > 0")


@dataclass
class StatefulDemoSummary:
    produced: int
    expected: dict[str, int]
    counted: dict[str, int]
    killed_workers: list[str] = field(default_factory=list)
    split_shard: str | None = None
    merged_shards: list[str] = field(default_factory=list)
    elapsed_seconds: float = 0.0

    @property
    def exact(self) -> bool:
        return self.produced > 0 and self.counted == self.expected

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "exact": self.exact}


def _key(record: int, keys: int) -> str:
    return f"key-{(record * 7919) % keys:03d}"


def _adjacent_pair(shards: list[Shard], avoid: set[str]) -> tuple[str, str] | None:
    """Two adjacent open shards, neither in ``avoid``."""
    open_shards = sorted((s for s in shards if s.is_open), key=lambda s: s.hash_key_range.start)
    for left, right in itertools.pairwise(open_shards):
        if (
            left.shard_id not in avoid
            and right.shard_id not in avoid
            and left.hash_key_range.is_adjacent_to(right.hash_key_range)
        ):
            return left.shard_id, right.shard_id
    return None


def run_stateful_demo(
    options: StatefulDemoOptions, progress: Callable[[str], None] | None = None
) -> StatefulDemoSummary:
    """Run the stateful demo and return what it verified. Raises only on set-up errors."""
    started = time.monotonic()
    say = progress or (lambda _line: None)
    options.workdir.mkdir(parents=True, exist_ok=True)
    db = options.workdir / "demo-stateful.db"
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            Path(f"{db}{suffix}").unlink()
    streams = LocalStreamStore(db)
    streams.create_stream(STREAM, options.shards)
    SQLiteLeaseStore(db, APPLICATION).create_table_if_not_exists()
    changelog = open_backend(BackendConfig(backend="local", db=str(db))).open_changelog(APPLICATION)
    workers = DemoWorkers(
        DemoOptions(workdir=options.workdir, shards=options.shards, failover_time_ms=options.failover_time_ms),
        db,
        None,
        processor="shardwise.demo:CountingProcessor",
        application=APPLICATION,
        stream=STREAM,
    )
    state_dirs = 0

    def start() -> str:
        nonlocal state_dirs
        state_dirs += 1
        state_dir = options.workdir / f"state-{state_dirs}"
        return workers.start_worker(
            [
                "--set",
                f'state.dir="{state_dir}"',
                "--set",
                f"state.commit_interval_ms={options.commit_interval_ms}",
            ],
            {CHECKPOINT_EVERY_ENV: str(options.checkpoint_every)},
        )

    expected: dict[str, int] = {}
    summary = StatefulDemoSummary(produced=0, expected=expected, counted={})
    batch = 100
    interval = options.produce_seconds / max(1, options.records // batch)
    next_put = time.monotonic()
    kills = [options.records * 3 // 10, options.records * 7 // 10]
    split_at, merge_at = options.records // 2, options.records * 4 // 5
    keys = [_key(i, options.keys) for i in range(options.keys)]
    try:
        for _ in range(options.workers):
            start()
        deadline = time.monotonic() + options.produce_seconds + options.drain_timeout_s
        while time.monotonic() < deadline:
            produced = summary.produced
            if produced < options.records and time.monotonic() >= next_put:
                ids = range(produced, min(options.records, produced + batch))
                entries = [(str(i).encode(), _key(i, options.keys)) for i in ids]
                streams.put_records(STREAM, entries)
                for _, key in entries:
                    expected[key] = expected.get(key, 0) + 1
                summary.produced = ids[-1] + 1
                next_put += interval
            if kills and summary.produced >= kills[0]:
                kills.pop(0)
                victim = workers.alive()[0]
                workers.kill(victim)
                summary.killed_workers.append(victim)
                say(f"SIGKILLed {victim}; started {start()} with an empty state directory")
            if summary.split_shard is None and summary.produced >= split_at:
                shard = next(s for s in streams.stream(STREAM).list_shards() if s.is_open)
                hash_range = shard.hash_key_range
                streams.split_shard(STREAM, shard.shard_id, hash_range.start + (hash_range.end - hash_range.start) // 2)
                summary.split_shard = shard.shard_id
                say(f"split {shard.shard_id}")
            if not summary.merged_shards and summary.produced >= merge_at:
                listed = streams.stream(STREAM).list_shards()
                children = {s.shard_id for s in listed if summary.split_shard in s.parent_shard_ids}
                pair = _adjacent_pair(listed, children)
                if pair is not None:
                    streams.merge_shards(STREAM, *pair)
                    summary.merged_shards = list(pair)
                    say(f"merged {pair[0]} and {pair[1]}")
            if summary.produced >= options.records:
                with contextlib.suppress(ShardwiseError):
                    summary.counted = leaf_counts(changelog, streams.stream(STREAM).list_shards(), keys)
                counted = sum(summary.counted.values())
                say(f"produced {summary.produced}/{options.records}  counted {counted}")
                if summary.counted == {k: expected.get(k, 0) for k in keys}:
                    break
                time.sleep(1.0)
            else:
                time.sleep(max(0.0, min(0.25, next_put - time.monotonic())))
    finally:
        workers.stop_all()
    with contextlib.suppress(ShardwiseError):
        summary.counted = leaf_counts(changelog, streams.stream(STREAM).list_shards(), keys)
    summary.expected = {k: expected.get(k, 0) for k in keys}
    summary.elapsed_seconds = round(time.monotonic() - started, 1)
    return summary
