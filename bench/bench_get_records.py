"""GetRecords throughput (records/s read back) for each stream source.

Writes N records of 100 bytes with random partition keys into a 4-shard stream, then reads every shard from
TRIM_HORIZON with GetRecords (limit 10,000) until caught up, single-threaded, as one shard consumer would.
The local stream is the embedded SQLite one; Kinesis runs on kinesalite (the stand-in for volume: its cost per
call does not grow with the stream, unlike kinesis-local's).

    python bench/bench_get_records.py [--records 50000]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import boto3

from _common import record_results, standins
from shardwise.backends.aws.kinesis import KinesisStream
from shardwise.backends.sqlite.stream import LocalStreamStore
from shardwise.retrieval.model import StartingPosition
from shardwise.retrieval.source import StreamSource

SHARDS = 4


def read_everything(source: StreamSource) -> tuple[int, float]:
    start = time.perf_counter()
    total = 0
    for shard in source.list_shards():
        iterator: str | None = source.get_shard_iterator(shard.shard_id, StartingPosition.trim_horizon())
        while iterator is not None:
            result = source.get_records(iterator, limit=10_000)
            total += len(result.records)
            if not result.records:
                break
            iterator = result.next_iterator
    return total, time.perf_counter() - start


def payloads(n: int) -> list[tuple[bytes, str]]:
    return [(os.urandom(50).hex().encode(), os.urandom(8).hex()) for _ in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=50_000)
    args = parser.parse_args()
    records = payloads(args.records)
    lines = ["| stream source | records | read seconds | records/s |", "|---|---:|---:|---:|"]

    with tempfile.TemporaryDirectory() as tmp:
        local = LocalStreamStore(Path(tmp) / "bench.db")
        local.create_stream("bench", SHARDS)
        for i in range(0, len(records), 500):
            local.put_records("bench", records[i : i + 500])
        total, secs = read_everything(local.stream("bench"))
        assert total == args.records, (total, args.records)
        lines.append(f"| LocalStream (SQLite) | {total:,} | {secs:.2f} | {total / secs:,.0f} |")

        with standins.running(standins.start_kinesalite(Path(tmp) / "logs")) as server:
            client = boto3.client("kinesis", endpoint_url=server.endpoint_url, region_name="us-east-1")
            client.create_stream(StreamName="bench", ShardCount=SHARDS)
            while (
                client.describe_stream_summary(StreamName="bench")["StreamDescriptionSummary"]["StreamStatus"]
                != "ACTIVE"
            ):
                time.sleep(0.05)
            for i in range(0, len(records), 500):
                batch = [{"Data": data, "PartitionKey": key} for data, key in records[i : i + 500]]
                response = client.put_records(StreamName="bench", Records=batch)  # type: ignore[arg-type]
                assert response.get("FailedRecordCount", 0) == 0
            source = KinesisStream("bench", endpoint_url=server.endpoint_url, region_name="us-east-1")
            total, secs = read_everything(source)
            assert total == args.records, (total, args.records)
            lines.append(f"| KinesisStream on kinesalite 127.0.0.1 | {total:,} | {secs:.2f} | {total / secs:,.0f} |")
    lines.append("")
    lines.append(
        "Single-threaded read of 4 shards from TRIM_HORIZON, 100-byte records. The kinesalite figure "
        "includes the stand-in's own cost on the same 2 cores; real Kinesis allows 2 MiB/s and "
        "5 GetRecords/s per shard."
    )
    record_results("GetRecords throughput", f"python bench/bench_get_records.py --records {args.records}", lines)


if __name__ == "__main__":
    main()
