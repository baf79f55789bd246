"""The local state-store engines side by side: puts/s and commit latency, SQLite vs RocksDB, format level 1 vs 2.

For each batch size, engine and level, one store (opened through ``open_local_store``, as the framework does)
takes batches of N puts (100-byte values, keys drawn from a 10,000-key space, so that most puts overwrite)
followed by one commit, for ``--seconds``:

* puts/s — puts over the whole loop's time (the pending-batch writes and the commits);
* commit latency p50/p99 — ``commit()`` alone: the durable write of the batch and the position (level 2: one
  SQLite transaction in WAL with ``synchronous=FULL`` / one synced RocksDB ``WriteBatch``; level 1: the
  ``.committing`` marker, the data, the sidecar file written and renamed, the marker removed — three more
  fsyncs).

    python bench/state_stores.py [--seconds 5] [--batches 100,1000] [--dir DIR]
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from _common import record_results
from shardwise.checkpoint.sequence import ExtendedSequenceNumber
from shardwise.state.engines import ENGINES, open_local_store
from shardwise.state.port import KNOWN_FORMATS, CommitMeta

KEY_SPACE = 10_000
VALUE = b"v" * 100


@dataclass(frozen=True)
class Result:
    engine: str
    level: int
    batch: int
    puts_per_s: float
    commits: int
    p50_ms: float
    p99_ms: float
    keys: int
    size_bytes: int


def run(directory: Path, *, engine: str, level: int, batch: int, seconds: float) -> Result:
    store = open_local_store(
        directory / f"{engine}-{level}-{batch}", shard_id="shardId-000000000000", engine=engine,
        write_level=level, readable_level=max(KNOWN_FORMATS),
    ).store  # fmt: skip
    rng = random.Random(14)
    latencies: list[float] = []
    puts = 0
    commit = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(batch):
            store.put(b"key-%08d" % rng.randrange(KEY_SPACE), VALUE)
        puts += batch
        commit += 1
        began = time.perf_counter()
        store.commit(CommitMeta(commit, ExtendedSequenceNumber(str(commit * batch)), "bench"))
        latencies.append(time.perf_counter() - began)
    elapsed = time.perf_counter() - start
    stats = store.stats()
    store.close()
    cuts = statistics.quantiles(latencies, n=100) if len(latencies) >= 2 else latencies * 99
    return Result(engine, level, batch, puts / elapsed, commit, cuts[49] * 1000, cuts[98] * 1000, stats.key_count,
                  stats.size_bytes)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0, help="per engine, level and batch size")
    parser.add_argument("--batches", default="100,1000", help="comma-separated puts per commit")
    parser.add_argument("--dir", type=Path, default=None, help="where the stores go (default: a temporary dir)")
    args = parser.parse_args()
    batches = [int(size) for size in args.batches.split(",")]
    results: list[Result] = []
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for batch in batches:
            for level in KNOWN_FORMATS:
                for engine in ENGINES:
                    result = run(Path(tmp), engine=engine, level=level, batch=batch, seconds=args.seconds)
                    print(result, flush=True)
                    results.append(result)
    by = {(r.engine, r.level, r.batch): r for r in results}
    lines = [
        "| puts per commit | level | engine | puts/s | commits | commit p50 | commit p99 | keys at the end | on disk |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.batch:,} | {r.level} | {r.engine} | {r.puts_per_s:,.0f} | {r.commits:,} | {r.p50_ms:.2f} ms | "
            f"{r.p99_ms:.2f} ms | {r.keys:,} | {r.size_bytes / 2**20:.1f} MiB |"
        )
    lines += ["", "RocksDB / SQLite (same batch size and level):", ""]
    for batch in batches:
        for level in KNOWN_FORMATS:
            sqlite, rocks = by[("sqlite", level, batch)], by[("rocksdb", level, batch)]
            lines.append(
                f"* {batch:,} puts per commit, level {level}: puts/s × {rocks.puts_per_s / sqlite.puts_per_s:.2f}, "
                f"commit p50 × {rocks.p50_ms / sqlite.p50_ms:.2f}, p99 × {rocks.p99_ms / sqlite.p99_ms:.2f}"
            )
    lines += ["", "Level 2 / level 1 (same engine and batch size):", ""]
    for batch in batches:
        for engine in ENGINES:
            one, two = by[(engine, 1, batch)], by[(engine, 2, batch)]
            lines.append(
                f"* {engine}, {batch:,} puts per commit: puts/s × {two.puts_per_s / one.puts_per_s:.2f}, "
                f"commit p50 × {two.p50_ms / one.p50_ms:.2f}"
            )
    lines += [
        "",
        "One store per row, one thread, 100-byte values over a 10,000-key space (most puts overwrite), every "
        "commit durable before it returns (SQLite: WAL, synchronous=FULL; RocksDB: synced WriteBatch). Level 2 "
        "writes data and position in one atomic write; level 1 writes the data, then the sidecar file, around "
        "the .committing marker (three extra fsyncs of small files and the directory). Commit latency is "
        "dominated by fsync on this disk; puts/s by the batch size it is amortized over.",
    ]
    command = f"python bench/state_stores.py --seconds {args.seconds:g} --batches {args.batches}"
    record_results("State stores: puts and commits (issue 14)", command, lines)


if __name__ == "__main__":
    main()
