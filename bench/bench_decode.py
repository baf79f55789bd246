"""Decoding one GetRecords answer: botocore's parser (the boto3 path) against msgspec JSON (the fast client) and
CBOR (``application/x-amz-cbor-1.1``, cbor2), in µs per record; and, with ``--loop-records``, a bare
``get_records`` loop of ``KinesisStream`` on kinesalite with each data-plane client, in µs of process CPU per record.

The body: 10,000 records of 200 random bytes (Kinesis's JSON: ``Data`` in base64, epoch-second timestamps, 56-digit
sequence numbers), and the same answer in CBOR as the service sends it to the Java SDK (``Data`` a byte string, the
timestamp tag 1). Each decoder runs ``--rounds`` times on the same body; the best round is reported. The stand-ins
are also asked in CBOR, to see what they answer.

    python bench/bench_decode.py [--records 10000] [--rounds 5] [--loop-records 20000]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import resource
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import boto3
import botocore.session
import cbor2
import urllib3
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.parsers import create_parser

from _common import record_results, standins
from shardwise.backends.aws import dataplane_codec
from shardwise.backends.aws.kinesis import KinesisStream
from shardwise.backends.config import DataClient
from shardwise.retrieval.model import Record, StartingPosition

DATA_BYTES = 200
REGION = "us-east-1"


def json_body(records: int) -> tuple[bytes, list[dict[str, Any]]]:
    items: list[dict[str, Any]] = [
        {
            "SequenceNumber": str(49_590_338_271_490_256_608_559_692_538_361_571_095_921_575_989_136_588_898 + i),
            "ApproximateArrivalTimestamp": 1_765_000_000.123 + i / 1000,
            "Data": os.urandom(DATA_BYTES),
            "PartitionKey": f"pk-{i % 1000}",
        }
        for i in range(records)
    ]
    answer = {
        "Records": [{**item, "Data": base64.b64encode(item["Data"]).decode()} for item in items],
        "NextShardIterator": "AAAAAAAAAAF" + "x" * 200,
        "MillisBehindLatest": 0,
    }
    return json.dumps(answer).encode(), items


def cbor_body(items: list[dict[str, Any]]) -> bytes:
    answer = {
        "Records": [
            {
                **item,
                "ApproximateArrivalTimestamp": datetime.fromtimestamp(
                    item["ApproximateArrivalTimestamp"], timezone.utc
                ),
            }
            for item in items
        ],
        "NextShardIterator": "AAAAAAAAAAF" + "x" * 200,
        "MillisBehindLatest": 0,
    }
    return bytes(cbor2.dumps(answer, datetime_as_timestamp=True))


def cbor_to_result(body: bytes) -> list[Record]:
    return [
        Record(item["Data"], item.get("PartitionKey", ""), item["SequenceNumber"], item["ApproximateArrivalTimestamp"])
        for item in cbor2.loads(body)["Records"]
    ]


def best_us_per_record(decode: Callable[[], object], records: int, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        decode()
        best = min(best, time.perf_counter() - start)
    return best / records * 1e6


def decode_table(records: int, rounds: int) -> list[str]:
    body, items = json_body(records)
    output = botocore.session.get_session().get_service_model("kinesis").operation_model("GetRecords").output_shape
    assert output is not None
    parser = create_parser("json")
    rows: list[tuple[str, int, Callable[[], object]]] = [
        (
            "botocore JSON parser → dicts (boto3 path, before shardwise's Records)",
            len(body),
            lambda: parser.parse({"body": body, "headers": {}, "status_code": 200}, output),
        ),
        (
            "msgspec JSON → typed structs only",
            len(body),
            lambda: dataplane_codec._GET_RECORDS.decode(body),
        ),
        (
            "msgspec JSON → GetRecordsResult (the fast client)",
            len(body),
            lambda: dataplane_codec.decode_get_records(body),
        ),
    ]
    cbor = cbor_body(items)
    rows += [
        ("cbor2 → dicts", len(cbor), lambda: cbor2.loads(cbor)),
        ("cbor2 → Records", len(cbor), lambda: cbor_to_result(cbor)),
    ]
    lines = ["| decoder | body bytes | µs per record |", "|---|---:|---:|"]
    for name, size, decode in rows:
        lines.append(f"| {name} | {size:,} | {best_us_per_record(decode, records, rounds):.2f} |")
    return lines


def _cbor_post(endpoint_url: str, target: str, payload: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    body = cbor2.dumps(payload)
    headers = {"Content-Type": "application/x-amz-cbor-1.1", "X-Amz-Target": f"Kinesis_20131202.{target}"}
    request = AWSRequest("POST", endpoint_url + "/", data=body, headers=headers)
    SigV4Auth(Credentials("testing", "testing"), "kinesis", REGION).add_auth(request)
    response = urllib3.request("POST", endpoint_url + "/", body=body, headers=dict(request.headers.items()))
    return str(response.headers.get("Content-Type")), cbor2.loads(response.data)


def _create(endpoint_url: str, name: str, shards: int) -> Any:
    client = boto3.client("kinesis", endpoint_url=endpoint_url, region_name=REGION)
    client.create_stream(StreamName=name, ShardCount=shards)
    while client.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["StreamStatus"] != "ACTIVE":
        time.sleep(0.05)
    return client


def probe_cbor(log_dir: Path) -> list[str]:
    """What kinesalite and kinesis-local answer to a GetRecords asked in CBOR."""
    lines = ["| stand-in | answer Content-Type | `Data` is | `ApproximateArrivalTimestamp` is |", "|---|---|---|---|"]
    for name, start in (("kinesalite", standins.start_kinesalite), ("kinesis-local", standins.start_kinesis_local)):
        with standins.running(start(log_dir)) as server:
            client = _create(server.endpoint_url, "probe", 1)
            client.put_record(StreamName="probe", Data=b"\x00\x01probe", PartitionKey="k")
            _, answer = _cbor_post(
                server.endpoint_url,
                "GetShardIterator",
                {"StreamName": "probe", "ShardId": "shardId-000000000000", "ShardIteratorType": "TRIM_HORIZON"},
            )
            kind, records = _cbor_post(
                server.endpoint_url, "GetRecords", {"ShardIterator": answer["ShardIterator"], "Limit": 10}
            )
            (record,) = records["Records"]
            data, stamp = record["Data"], record["ApproximateArrivalTimestamp"]
            lines.append(f"| {name} | {kind} | {type(data).__name__} ({data!r}) | {type(stamp).__name__} ({stamp!r}) |")
    return lines


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _empty_call_cpu_us(stream: KinesisStream, shard_id: str, calls: int = 300) -> float:
    """CPU per GetRecords that finds nothing (an idle shard: iterator at LATEST)."""
    iterator: str | None = stream.get_shard_iterator(shard_id, StartingPosition.latest())
    cpu = _cpu_s()
    for _ in range(calls):
        assert iterator is not None
        result = stream.get_records(iterator, limit=10_000)
        assert not result.records
        iterator = result.next_iterator
    return (_cpu_s() - cpu) / calls * 1e6


def loop_table(log_dir: Path, records: int) -> list[str]:
    """A bare get_records loop over a 4-shard kinesalite stream with each client (CPU of this process only)."""
    lines = [
        "| client | records | CPU µs per record (read loop) | wall s | CPU µs per empty GetRecords |",
        "|---|---:|---:|---:|---:|",
    ]
    with standins.running(standins.start_kinesalite(log_dir)) as server:
        client = _create(server.endpoint_url, "loop", 4)
        for start in range(0, records, 500):
            batch = [{"Data": os.urandom(DATA_BYTES), "PartitionKey": f"k{start + i}"} for i in range(500)]
            response = client.put_records(StreamName="loop", Records=batch)
            assert response.get("FailedRecordCount", 0) == 0
        clients: tuple[DataClient, ...] = ("boto3", "fast", "boto3", "fast")
        for data_client in clients:
            stream = KinesisStream(
                "loop", endpoint_url=server.endpoint_url, region_name=REGION, data_client=data_client
            )
            shards = stream.list_shards()
            iterators = [stream.get_shard_iterator(s.shard_id, StartingPosition.trim_horizon()) for s in shards]
            cpu, wall, total = _cpu_s(), time.perf_counter(), 0
            for iterator in iterators:
                current: str | None = iterator
                while current is not None:
                    result = stream.get_records(current, limit=10_000)
                    if not result.records:
                        break
                    total += len(result.records)
                    current = result.next_iterator
            cpu, wall = _cpu_s() - cpu, time.perf_counter() - wall
            assert total == records, (total, records)
            empty = _empty_call_cpu_us(stream, shards[0].shard_id)
            lines.append(f"| {data_client} | {total:,} | {cpu / total * 1e6:.1f} | {wall:.2f} | {empty:.0f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--loop-records", type=int, default=0, help="also run the get_records loop (0: skip)")
    args = parser.parse_args()
    lines = decode_table(args.records, args.rounds)
    lines += [
        "",
        f"One GetRecords answer of {args.records:,} records of {DATA_BYTES} B, decoded {args.rounds} times, the best "
        "round. The CBOR body is what Kinesis sends the Java SDK (Data a byte string: no base64).",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        lines += ["", "What the stand-ins answer to a GetRecords asked in CBOR:", "", *probe_cbor(Path(tmp))]
        command = f"python bench/bench_decode.py --records {args.records} --rounds {args.rounds}"
        record_results("GetRecords decoding: botocore, msgspec, CBOR", command, lines)
        if args.loop_records:
            loop = loop_table(Path(tmp), args.loop_records)
            loop += [
                "",
                f"{args.loop_records:,} records of {DATA_BYTES} B in 4 shards on kinesalite (same process, same 2 "
                "cores: the stand-in's CPU is not counted; the client's is). Each client read everything twice, in "
                "turn; CPU from getrusage of this process around the read loop only (client already built); then "
                "300 GetRecords on an idle shard (LATEST), CPU per call.",
            ]
            record_results(
                "Kinesis data-plane clients: bare get_records loop",
                f"python bench/bench_decode.py --loop-records {args.loop_records}",
                loop,
            )


if __name__ == "__main__":
    main()
