"""Restore speed (keys/s) from each state changelog: the embedded SQLite file and DynamoDB (on moto server).

A shard's changelog is filled with ``--keys`` keys in commits of ``--batch`` changes (64-byte values), then
restored three ways, as a worker that gains the lease would: in full from the log (no snapshot yet), in full
from a snapshot (after ``compact``), and the delta a store one commit behind lacks. A restore is timed from the
``plan_restore`` call until its last change has been consumed.

    python bench/state_restore.py [--keys 20000] [--batch 1000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from pathlib import Path

import boto3

from _common import record_results, standins
from shardwise.backends.aws.changelog import DynamoDBChangelog
from shardwise.backends.sqlite.backend import SQLiteBackend
from shardwise.checkpoint.sequence import ExtendedSequenceNumber
from shardwise.state.port import FORMAT_IN_STORE, Change, Changelog, CommitMeta

SHARD = "shardId-000000000000"


def fill(changelog: Changelog, keys: int, batch: int) -> tuple[CommitMeta, float]:
    """``keys`` keys in commits of ``batch``; returns the last commit and the append rate (changes/s)."""
    lineage = uuid.uuid4().hex
    meta = CommitMeta(0, ExtendedSequenceNumber("0"), lineage)
    start = time.perf_counter()
    for first in range(0, keys, batch):
        changes: list[Change] = [(b"key-%09d" % i, b"%064d" % i) for i in range(first, min(first + batch, keys))]
        meta = CommitMeta(meta.commit + 1, ExtendedSequenceNumber(str(1000 + meta.commit)), lineage)
        changelog.append(SHARD, changes, meta, format_level=FORMAT_IN_STORE)
    return meta, keys / (time.perf_counter() - start)


def timed_restore(changelog: Changelog, *, lineage: str | None, after: int | None) -> tuple[int, float]:
    start = time.perf_counter()
    plan = changelog.plan_restore(SHARD, lineage=lineage, after_commit=after)
    assert plan is not None
    count = sum(1 for _ in plan.changes)
    return count, time.perf_counter() - start


def measure(name: str, changelog: Changelog, keys: int, batch: int) -> list[str]:
    changelog.ensure_exists()
    head, append_rate = fill(changelog, keys, batch)
    rows = [f"| {name} | append ({batch} changes/commit) | {keys:,} | – | {append_rate:,.0f} |"]
    count, seconds = timed_restore(changelog, lineage=None, after=None)
    assert count == keys
    rows.append(
        f"| {name} | full, from the log ({head.commit} commits) | {count:,} | {seconds:.2f} | {count / seconds:,.0f} |"
    )
    plan = changelog.plan_restore(SHARD, lineage=None, after_commit=None)
    assert plan is not None
    changelog.compact(SHARD, plan.changes, head)
    count, seconds = timed_restore(changelog, lineage=None, after=None)
    assert count == keys
    rows.append(f"| {name} | full, from the snapshot | {count:,} | {seconds:.2f} | {count / seconds:,.0f} |")
    fill_meta = CommitMeta(head.commit + 1, ExtendedSequenceNumber(str(5000 + head.commit)), head.lineage)
    changelog.append(SHARD, [(b"key-%09d" % i, b"x" * 64) for i in range(batch)], fill_meta, format_level=2)
    count, seconds = timed_restore(changelog, lineage=head.lineage, after=head.commit)
    assert count == batch
    rows.append(f"| {name} | delta, one commit behind | {count:,} | {seconds:.3f} | {count / seconds:,.0f} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=1_000)
    args = parser.parse_args()

    lines = ["| changelog | restore | keys | seconds | keys/s |", "|---|---|---:|---:|---:|"]
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = SQLiteBackend(Path(tmp) / "bench.db").open_changelog("bench")
        lines += measure("SQLite (WAL, local disk)", sqlite, args.keys, args.batch)
        with standins.running(standins.start_moto(Path(tmp) / "logs")) as moto:
            client = boto3.client("dynamodb", endpoint_url=moto.endpoint_url, region_name="us-east-1")
            dynamodb = DynamoDBChangelog(client, "bench-state", table_poll_interval_s=0.05)
            lines += measure("DynamoDB on moto server 127.0.0.1", dynamodb, args.keys, args.batch)
    lines.append("")
    lines.append(
        "Keys of 13 bytes, values of 64 bytes. DynamoDB packs a commit into chunk items of ≤ 300 KB (one "
        "`BatchWriteItem` per 25 chunks, then the conditional head update); a restore is one consistent `GetItem` "
        "and a paginated `Query` of the chain. moto's figures measure the stand-in (a Python HTTP server on the "
        "same cores), not DynamoDB, where a restore is bound by Query's 1 MB pages (about 12,000 such keys a page). "
        "SQLite keeps the state materialized, so its restores from the log and from the snapshot read the same "
        "rows (compaction only purges tombstones; the first read also warms the page cache)."
    )
    record_results(
        "State changelog: restore speed (issue 14)",
        f"python bench/state_restore.py --keys {args.keys} --batch {args.batch}",
        lines,
    )


if __name__ == "__main__":
    main()
