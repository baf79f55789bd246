"""The replay benchmark's server (bench/_replay_server.py) answers in Kinesis's shape: every GetRecords body
parses, its sequence numbers increase within a shard across batches, and NextShardIterator names the next
batch — or the benchmark would measure a consumer reading something Kinesis never sends."""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path

import cbor2
from hypothesis import given
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from _replay_server import Bodies

BODIES = Bodies(records=50, record_bytes=1024)


def _json(shard: int, batch: int) -> dict[str, object]:
    decoded: dict[str, object] = json.loads(Bodies.render(BODIES.json, shard, batch))
    return decoded


@given(shard=st.integers(0, 999_999), batch=st.integers(0, 10**15))
def test_a_json_body_has_the_kinesis_shape_and_names_the_next_batch(shard: int, batch: int) -> None:
    body = _json(shard, batch)
    records = body["Records"]
    assert isinstance(records, list)
    assert len(records) == 50
    assert body["NextShardIterator"] == f"{shard:06d}-{batch + 1:016d}"
    assert body["MillisBehindLatest"] == 10_000
    sequences = [int(record["SequenceNumber"]) for record in records]
    assert sequences == sorted(set(sequences))
    assert all(len(record["SequenceNumber"]) == 56 for record in records)
    assert all(len(base64.b64decode(record["Data"])) == 1024 for record in records)
    assert {record["PartitionKey"] for record in records} == {f"pk-{i:06d}" for i in range(50)}


@given(shard=st.integers(0, 999), batch=st.integers(0, 10**12))
def test_sequence_numbers_increase_across_batches(shard: int, batch: int) -> None:
    last = int(_json(shard, batch)["Records"][-1]["SequenceNumber"])  # type: ignore[index]
    first_next = int(_json(shard, batch + 1)["Records"][0]["SequenceNumber"])  # type: ignore[index]
    assert first_next > last


def test_a_cbor_body_carries_the_same_records_as_bytes() -> None:
    assert BODIES.cbor is not None
    body = cbor2.loads(Bodies.render(BODIES.cbor, 7, 3))
    as_json = _json(7, 3)
    assert [r["SequenceNumber"] for r in body["Records"]] == [r["SequenceNumber"] for r in as_json["Records"]]  # type: ignore[attr-defined]
    assert all(isinstance(r["Data"], bytes) and len(r["Data"]) == 1024 for r in body["Records"])
    assert body["NextShardIterator"] == "000007-0000000000000004"
