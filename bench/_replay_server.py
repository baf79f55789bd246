"""A replaying Kinesis data plane on 127.0.0.1, for ``bench_replay.py``: serves GetRecords as fast as it can.

    python bench/_replay_server.py --port P --shards N [--records-per-response 1000] [--record-bytes 1024] [--cpu 1]

Answers ListShards, DescribeStreamSummary, GetShardIterator and GetRecords for one stream of N open shards
(any stream name). Every GetRecords response is the same pre-encoded body — the exact shape Kinesis returns
(``Records`` with ``SequenceNumber``, ``ApproximateArrivalTimestamp``, base64 ``Data``, ``PartitionKey``;
``NextShardIterator``; ``MillisBehindLatest``) — with the shard and batch number spliced into fixed-width
places: sequence numbers increase within a shard and across its batches, and ``NextShardIterator`` names the
next batch. A request in CBOR (``application/x-amz-cbor-1.1``) gets the same response in CBOR (``Data`` as a
byte string, the timestamp as tag 1), which is what Kinesis does. Nothing is read from disk or computed per
record at request time, so the consumer, not this server, is the bottleneck.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

HOST = "127.0.0.1"
JSON_TYPE = "application/x-amz-json-1.1"
CBOR_TYPE = "application/x-amz-cbor-1.1"
SEQ_MARK = "~" * 22  # shard (6 digits) + batch (16 digits)
ITER_MARK = "^" * 23  # shard (6 digits) "-" batch (16 digits)
ARRIVAL_EPOCH_S = 1_765_000_000.125


def shard_id(index: int) -> str:
    return f"shardId-{index:012d}"


class Bodies:
    """The pre-encoded GetRecords body, in JSON and CBOR, split around its fixed-width markers."""

    def __init__(self, records: int, record_bytes: int) -> None:
        data = os.urandom(record_bytes)
        self.records = records
        items = [
            {
                "SequenceNumber": f"4959{SEQ_MARK}{'0' * 22}{i:08d}",
                "ApproximateArrivalTimestamp": ARRIVAL_EPOCH_S,
                "Data": base64.b64encode(data).decode(),
                "PartitionKey": f"pk-{i:06d}",
            }
            for i in range(records)
        ]
        body = {"Records": items, "NextShardIterator": ITER_MARK, "MillisBehindLatest": 10_000}
        self.json = self._split(json.dumps(body, separators=(",", ":")).encode())
        self.cbor: tuple[list[bytes], bytes, bytes] | None = None
        try:
            import cbor2  # noqa: PLC0415 - optional: only a CBOR-speaking client needs it
        except ImportError:
            return
        for item in items:
            item["Data"] = data
            item["ApproximateArrivalTimestamp"] = cbor2.CBORTag(1, ARRIVAL_EPOCH_S)
        self.cbor = self._split(cbor2.dumps(body))

    @staticmethod
    def _split(encoded: bytes) -> tuple[list[bytes], bytes, bytes]:
        parts = encoded.split(SEQ_MARK.encode())
        head, _, tail = parts[-1].partition(ITER_MARK.encode())
        return [*parts[:-1], head], tail, ITER_MARK.encode()

    @staticmethod
    def render(split: tuple[list[bytes], bytes, bytes], shard: int, batch: int) -> bytes:
        parts, tail, _ = split
        iterator = f"{shard:06d}-{batch + 1:016d}".encode()
        return f"{shard:06d}{batch:016d}".encode().join(parts) + iterator + tail


def make_handler(shards: int, bodies: Bodies) -> type[BaseHTTPRequestHandler]:
    shard_list = []
    step = (2**128) // shards
    for index in range(shards):
        end = (2**128 - 1) if index == shards - 1 else (index + 1) * step - 1
        shard_list.append(
            {
                "ShardId": shard_id(index),
                "HashKeyRange": {"StartingHashKey": str(index * step), "EndingHashKey": str(end)},
                "SequenceNumberRange": {"StartingSequenceNumber": "4959" + "0" * 52},
            }
        )
    counts = {"GetRecords": 0}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            raw = self.rfile.read(length)
            operation = (self.headers.get("X-Amz-Target") or "").rpartition(".")[2]
            cbor = (self.headers.get("Content-Type") or "").startswith(CBOR_TYPE)
            if cbor:
                import cbor2  # noqa: PLC0415 - optional

                request = cbor2.loads(raw) if raw else {}
            else:
                request = json.loads(raw) if raw else {}
            if operation == "GetRecords":
                shard_text, _, batch_text = str(request["ShardIterator"]).partition("-")
                split = bodies.cbor if cbor and bodies.cbor is not None else bodies.json
                with lock:
                    counts["GetRecords"] += 1
                self._send(200, Bodies.render(split, int(shard_text), int(batch_text)), cbor=cbor)
                return
            if operation == "GetShardIterator":
                index = int(str(request["ShardId"]).rpartition("-")[2])
                batch = 0
                sequence = request.get("StartingSequenceNumber")
                if sequence:
                    batch = int(str(sequence)[10:26]) + 1  # the next batch after the one it names
                answer: dict[str, Any] = {"ShardIterator": f"{index:06d}-{batch:016d}"}
            elif operation == "ListShards":
                answer = {"Shards": shard_list}
            elif operation == "DescribeStreamSummary":
                answer = {
                    "StreamDescriptionSummary": {
                        "StreamName": request.get("StreamName", "replay"),
                        "StreamARN": "arn:aws:kinesis:us-east-1:000000000000:stream/replay",
                        "StreamStatus": "ACTIVE",
                        "OpenShardCount": shards,
                    }
                }
            else:
                self._send(400, self._encode({"__type": "UnknownOperationException", "message": operation}, cbor))
                return
            self._send(200, self._encode(answer, cbor), cbor=cbor)

        def do_GET(self) -> None:
            with lock:
                body = json.dumps(counts).encode()
            self._send(200, body)

        @staticmethod
        def _encode(answer: dict[str, Any], cbor: bool) -> bytes:
            if cbor:
                import cbor2  # noqa: PLC0415 - optional

                return bytes(cbor2.dumps(answer))
            return json.dumps(answer).encode()

        def _send(self, status: int, body: bytes, *, cbor: bool = False) -> None:
            self.send_response(status)
            self.send_header("Content-Type", CBOR_TYPE if cbor else JSON_TYPE)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("x-amzn-RequestId", "replay")
            self.end_headers()
            self.wfile.write(body)

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--shards", type=int, required=True)
    parser.add_argument("--records-per-response", type=int, default=1000)
    parser.add_argument("--record-bytes", type=int, default=1024)
    parser.add_argument("--cpu", type=int, default=None)
    args = parser.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    bodies = Bodies(args.records_per_response, args.record_bytes)
    server = ThreadingHTTPServer((HOST, args.port), make_handler(args.shards, bodies))
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
