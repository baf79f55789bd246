"""The fast Kinesis data-plane client (``data_client="fast"``) against a tiny HTTP server on 127.0.0.1 that answers
with canned responses: retries, back-off, timeouts and error translation — each failure also read through boto3's
client from the same server, which must raise the same exception with the same message.

The server checks every request's SigV4 signature by signing what it received again with the same credentials.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import boto3
import botocore.session
import pytest
from botocore.config import Config
from botocore.credentials import Credentials, RefreshableCredentials
from botocore.model import Shape
from botocore.parsers import create_parser
from hypothesis import given
from hypothesis import strategies as st

from shardwise.backends import service_error
from shardwise.backends.aws import dataplane, dataplane_codec, signed_http
from shardwise.backends.aws.client import client_config
from shardwise.backends.aws.dataplane import FastDataPlane, limits_of
from shardwise.backends.aws.dataplane_codec import error_parts
from shardwise.backends.aws.kinesis import KinesisStream
from shardwise.backends.config import CallLimits
from shardwise.errors import (
    AccessDeniedError,
    ConfigurationError,
    DependencyError,
    ExpiredIteratorError,
    ShardNotFoundError,
    StreamNotFoundError,
    ThrottlingError,
)
from shardwise.retrieval.kpl import aggregate
from shardwise.retrieval.model import Record, StartingPosition
from shardwise.retrieval.reader import ShardReader
from support.canned_http import Canned, CannedServer, serving

REGION = "us-east-1"
KEYS = Credentials("testing", "testing")
GET_RECORDS = "Kinesis_20131202.GetRecords"
GET_SHARD_ITERATOR = "Kinesis_20131202.GetShardIterator"


@pytest.fixture
def server() -> Iterator[CannedServer]:
    with serving(KEYS, "kinesis", REGION) as canned:
        yield canned


@pytest.fixture(autouse=True)
def quick_back_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """Milliseconds between the fast client's attempts, so retries do not slow the suite down."""
    monkeypatch.setattr(signed_http, "BACKOFF_BASE_S", 0.002)


def _client(endpoint_url: str, *, attempts: int = 3, read_timeout_s: float = 5.0) -> Any:
    config = Config(retries={"mode": "standard", "total_max_attempts": attempts}, read_timeout=read_timeout_s)
    return boto3.session.Session().client(
        "kinesis",
        endpoint_url=endpoint_url,
        region_name=REGION,
        config=config,  # the keys: tests/conftest.py's fake ones, which the server signs with too
    )


def _streams(server: CannedServer, **kwargs: Any) -> tuple[KinesisStream, KinesisStream]:
    fast = KinesisStream("canned", client=_client(server.endpoint_url, **kwargs), data_client="fast")
    slow = KinesisStream("canned", client=_client(server.endpoint_url, **kwargs), data_client="boto3")
    return fast, slow


def _error(code: str, message: str) -> bytes:
    return json.dumps({"__type": code, "message": message}).encode()


def _records_body(*records: tuple[bytes, str, str], next_iterator: str | None = "next") -> bytes:
    return json.dumps(
        {
            "Records": [
                {
                    "Data": base64.b64encode(data).decode(),
                    "PartitionKey": key,
                    "SequenceNumber": sequence,
                    "ApproximateArrivalTimestamp": 1_765_000_000.25,
                }
                for data, key, sequence in records
            ],
            "NextShardIterator": next_iterator,
            "MillisBehindLatest": 7,
        }
    ).encode()


OK = Canned(200, _records_body((b"hello", "k", "49000000000000000000000000000000000000000000000000000001")))
THROTTLED = Canned(400, _error("ProvisionedThroughputExceededException", "Rate exceeded for shard"))


def _raised(stream: KinesisStream, call: str = "get_records") -> Exception:
    """What ``call`` raises (the tests compare its type and message)."""
    try:
        if call == "get_records":
            stream.get_records("iterator-1")
        else:
            stream.get_shard_iterator("shardId-000000000007", StartingPosition.trim_horizon())
    except Exception as exc:
        return exc
    raise AssertionError(f"{call} did not raise")


def _same_failure(server: CannedServer, target: str, *answers: Canned, call: str = "get_records") -> Exception:
    """The fast client's exception for ``answers``, after checking boto3's client raises the same one."""
    fast, slow = _streams(server)
    server.answer(target, *answers)
    fast_error = _raised(fast, call)
    server.answer(target, *answers)
    slow_error = _raised(slow, call)
    assert type(fast_error) is type(slow_error)
    assert str(fast_error) == str(slow_error)
    assert service_error(fast_error) == service_error(slow_error)
    return fast_error


# -- success, and what is sent -----------------------------------------------------------------------------


def test_records_are_decoded_and_requests_signed(server: CannedServer) -> None:
    fast, slow = _streams(server)
    server.answer(GET_RECORDS, OK)
    result = fast.get_records("iterator-1", limit=50)
    assert result == slow.get_records("iterator-1", limit=50)  # the same values through boto3's parser
    (record,) = result.records
    assert (record.data, record.partition_key, result.next_iterator, result.millis_behind_latest) == (
        b"hello",
        "k",
        "next",
        7,
    )
    assert record.approximate_arrival_timestamp == datetime(2025, 12, 6, 5, 46, 40, 250000, tzinfo=timezone.utc)
    sent = server.requests(GET_RECORDS)[0]
    assert sent.body == {"ShardIterator": "iterator-1", "Limit": 50}
    assert sent.headers["Content-Type"] == "application/x-amz-json-1.1"
    assert all(r.signature_ok for r in server.received)


def test_an_endpoint_with_a_path_is_posted_to_that_path(server: CannedServer) -> None:
    prefixed = CannedServer(endpoint_url=f"{server.endpoint_url}/kinesis-proxy")
    fast = KinesisStream("canned", client=_client(prefixed.endpoint_url), data_client="fast")
    slow = KinesisStream("canned", client=_client(prefixed.endpoint_url), data_client="boto3")
    server.answer(GET_RECORDS, OK)
    assert fast.get_records("iterator-1") == slow.get_records("iterator-1")
    assert [(r.path, r.signature_ok) for r in server.received] == [("/kinesis-proxy", True)] * 2  # as botocore posts


def test_get_shard_iterator_sends_what_boto3_sends(server: CannedServer) -> None:
    fast, slow = _streams(server)
    server.answer(GET_SHARD_ITERATOR, Canned(200, b'{"ShardIterator": "it-7"}'))
    stamp = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=timezone.utc)
    for stream in (fast, slow):
        assert stream.get_shard_iterator("shardId-000000000007", StartingPosition.at_timestamp(stamp)) == "it-7"
        assert stream.get_shard_iterator("shardId-000000000007", StartingPosition.after_sequence("42")) == "it-7"
    fast_sent, slow_sent = server.requests(GET_SHARD_ITERATOR)[:2], server.requests(GET_SHARD_ITERATOR)[2:]
    assert [r.body for r in fast_sent] == [r.body for r in slow_sent]
    assert all(r.signature_ok for r in server.received)


def test_refreshing_credentials_sign_each_request_with_the_current_keys(server: CannedServer) -> None:
    generation = iter(range(1, 100))

    def refresh() -> dict[str, str]:
        # Expiring within botocore's mandatory refresh window: every request refreshes.
        expiry = datetime.now(timezone.utc) + timedelta(minutes=1)
        return {
            "access_key": f"AKIDGEN{next(generation)}",
            "secret_key": "testing",
            "token": "",
            "expiry_time": expiry.isoformat(),
        }

    credentials = RefreshableCredentials.create_from_metadata(refresh(), refresh, "test")
    client = FastDataPlane(server.endpoint_url, REGION, lambda: credentials, CallLimits(1_000, 5_000, 1))
    server.answer(GET_RECORDS, OK)
    client.call("GetRecords", b"{}", error_parts)
    client.call("GetRecords", b"{}", error_parts)
    keys = [r.headers["Authorization"].split("Credential=")[1].split("/")[0] for r in server.received]
    assert len(set(keys)) == 2, keys


# -- retries -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "first",
    [
        THROTTLED,
        Canned(400, _error("ThrottlingException", "slow down")),
        Canned(400, _error("KMSThrottlingException", "KMS is busy")),
        Canned(500, _error("InternalFailure", "oops")),
        Canned(503, b"<html>Service Unavailable</html>"),
    ],
    ids=["provisioned-throughput", "throttling", "kms-throttling", "500", "503"],
)
def test_a_retryable_answer_is_retried_and_the_call_succeeds(server: CannedServer, first: Canned) -> None:
    fast, _ = _streams(server)
    server.answer(GET_RECORDS, first, OK)
    assert [r.data for r in fast.get_records("iterator-1").records] == [b"hello"]
    assert len(server.requests(GET_RECORDS)) == 2


def test_throttled_on_every_attempt_is_a_throttling_error_after_all_attempts(server: CannedServer) -> None:
    error = _same_failure(server, GET_RECORDS, THROTTLED)
    assert isinstance(error, ThrottlingError)
    assert "ProvisionedThroughputExceededException: Rate exceeded for shard" in str(error)
    assert len(server.requests(GET_RECORDS)) == 6  # 3 attempts each, fast and boto3
    seen = service_error(error)
    assert seen is not None and seen.code == "ProvisionedThroughputExceededException"
    assert "reached max retries: 2" in seen.text


def test_a_5xx_on_every_attempt_is_a_dependency_error_naming_the_status(server: CannedServer) -> None:
    error = _same_failure(server, GET_RECORDS, Canned(503, _error("ServiceUnavailable", "try later")))
    assert isinstance(error, DependencyError)
    assert str(error).endswith("ServiceUnavailable: try later (HTTP 503)")
    assert len(server.requests(GET_RECORDS)) == 6


# -- errors that are not retried ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "message", "expected"),
    [
        ("ExpiredIteratorException", "Iterator expired", ExpiredIteratorError),
        ("AccessDeniedException", "not allowed", AccessDeniedError),
        ("KMSAccessDeniedException", "no kms:Decrypt", AccessDeniedError),
        ("KMSDisabledException", "the key is disabled", DependencyError),
        ("ResourceNotFoundException", "Stream canned under account 1 not found.", StreamNotFoundError),
    ],
)
def test_get_records_errors_are_translated_as_on_the_boto3_path(
    server: CannedServer, code: str, message: str, expected: type[Exception]
) -> None:
    error = _same_failure(server, GET_RECORDS, Canned(400, _error(code, message)))
    assert type(error) is expected
    assert f"Kinesis GetRecords on stream 'canned': {code}: {message}" in str(error)
    assert len(server.requests(GET_RECORDS)) == 2  # one attempt each: not retried
    seen = service_error(error)
    assert seen is not None and (seen.code, seen.message, seen.answered) == (code, message, True)


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("Shard shardId-000000000007 in stream canned under account 1 does not exist", ShardNotFoundError),
        ("Stream canned under account 1 not found.", StreamNotFoundError),
    ],
)
def test_a_missing_shard_is_told_from_a_missing_stream(
    server: CannedServer, message: str, expected: type[Exception]
) -> None:
    error = _same_failure(
        server,
        GET_SHARD_ITERATOR,
        Canned(400, _error("ResourceNotFoundException", message)),
        call="get_shard_iterator",
    )
    assert type(error) is expected
    assert "shard 'shardId-000000000007'" in str(error)


def test_a_namespaced_error_type_is_read_as_botocore_reads_it(server: CannedServer) -> None:
    error = _same_failure(
        server, GET_RECORDS, Canned(400, _error("com.amazonaws.kinesis#ExpiredIteratorException", "expired"))
    )
    assert isinstance(error, ExpiredIteratorError)


@pytest.mark.parametrize(
    "body",
    [b"not json at all", b'{"Records": "not a list"}', b'{"Records": [{"PartitionKey": "k"}]}', b"[1, 2]"],
    ids=["not-json", "records-not-a-list", "record-without-data", "not-an-object"],
)
def test_an_answer_of_the_wrong_shape_is_a_dependency_error(server: CannedServer, body: bytes) -> None:
    # Stricter than the boto3 path, whose parser takes a body that is not JSON for an answer without records or
    # a next iterator (a shard read to its end) and lets some wrong shapes through.
    fast, _ = _streams(server)
    server.answer(GET_RECORDS, Canned(200, body))
    error = _raised(fast)
    assert type(error) is DependencyError
    assert "Kinesis GetRecords on stream 'canned' returned an unexpected response" in str(error)


def test_a_read_timeout_ends_the_call_after_the_limits_attempts(server: CannedServer) -> None:
    fast, slow = _streams(server, attempts=2, read_timeout_s=0.2)
    server.answer(GET_RECORDS, Canned(200, OK.body, delay_s=1.0))
    fast_error, slow_error = _raised(fast), _raised(slow)
    assert type(fast_error) is type(slow_error) is DependencyError
    assert str(fast_error) == str(slow_error)
    assert "Read timeout on endpoint URL" in str(fast_error)
    assert len(server.requests(GET_RECORDS)) == 4  # two attempts each


def test_an_unreachable_endpoint_is_a_dependency_error(server: CannedServer) -> None:
    closed = "http://127.0.0.1:9"  # discard port: nothing listens
    fast = KinesisStream("canned", client=_client(closed, attempts=1), data_client="fast")
    slow = KinesisStream("canned", client=_client(closed, attempts=1), data_client="boto3")
    fast_error, slow_error = _raised(fast), _raised(slow)
    assert type(fast_error) is type(slow_error) is DependencyError
    assert str(fast_error) == str(slow_error)


# -- de-aggregation and configuration ----------------------------------------------------------------------


def test_kpl_aggregated_records_are_deaggregated_on_the_fast_path(server: CannedServer) -> None:
    fast, _ = _streams(server)
    blob = aggregate([(b"one", "a", None), (b"two", "b", None), (b"three", "c", None)])
    sequence = "49000000000000000000000000000000000000000000000000000009"
    server.answer(GET_SHARD_ITERATOR, Canned(200, b'{"ShardIterator": "it-1"}'))
    server.answer(GET_RECORDS, Canned(200, _records_body((blob, "a", sequence), next_iterator=None)))
    batch = ShardReader(fast, "shardId-000000000000", StartingPosition.trim_horizon()).read()
    assert [(r.data, r.partition_key, r.sub_sequence_number, r.aggregated) for r in batch.records] == [
        (b"one", "a", 0, True),
        (b"two", "b", 1, True),
        (b"three", "c", 2, True),
    ]
    assert {r.sequence_number for r in batch.records} == {sequence}


def test_data_client_is_fast_by_default_and_validated(server: CannedServer) -> None:
    assert KinesisStream("canned", client=_client(server.endpoint_url)).data_client == "fast"
    with pytest.raises(ConfigurationError, match="data_client must be 'fast' or 'boto3', got 'curl'"):
        KinesisStream("canned", client=_client(server.endpoint_url), data_client="curl")  # type: ignore[arg-type]


@given(
    st.integers(min_value=1, max_value=600_000),
    st.integers(min_value=1, max_value=600_000),
    st.integers(min_value=1, max_value=20),
)
def test_the_fast_client_takes_the_limits_its_boto3_client_was_built_with(
    connect_ms: int, read_ms: int, attempts: int
) -> None:
    limits = CallLimits(connect_ms, read_ms, attempts)
    assert limits_of(client_config(limits)) == limits


def test_retry_counts_in_botocores_other_spellings() -> None:
    assert limits_of(Config(retries={"mode": "standard", "max_attempts": 1})).max_attempts == 2
    assert limits_of(Config(retries={"mode": "standard"})).max_attempts == 3
    assert limits_of(Config(retries={"mode": "legacy"})).max_attempts == 5


def _get_records_output() -> Shape:
    shape = botocore.session.get_session().get_service_model("kinesis").operation_model("GetRecords").output_shape
    assert shape is not None
    return shape


_GET_RECORDS_OUTPUT = _get_records_output()
_CODES = st.sampled_from(["ExpiredIteratorException", "ResourceNotFoundException", "ThrottlingException", "X"])


@given(
    code=st.one_of(st.none(), _CODES, _CODES.map(lambda c: f"com.amazonaws.kinesis.v20131202#{c}")),
    message_key=st.sampled_from(["message", "Message", None]),
    message=st.text(max_size=40),
    status=st.sampled_from([400, 403, 500, 503]),
)
def test_error_answers_are_read_as_botocores_parser_reads_them(
    code: str | None, message_key: str | None, message: str, status: int
) -> None:
    body: dict[str, str] = {}
    if code is not None:
        body["__type"] = code
    if message_key is not None:
        body[message_key] = message
    raw = json.dumps(body).encode()
    parsed = create_parser("json").parse({"body": raw, "headers": {}, "status_code": status}, _GET_RECORDS_OUTPUT)
    assert error_parts(raw, status) == (parsed["Error"]["Code"], parsed["Error"]["Message"])


@given(data=st.binary(max_size=64), partition_key=st.text(max_size=16), sequence=st.from_regex(r"\A[0-9]{1,56}\Z"))
def test_the_codecs_records_are_what_record_builds(data: bytes, partition_key: str, sequence: str) -> None:
    arrival = datetime(2026, 1, 1, tzinfo=timezone.utc)
    made = dataplane_codec._new_record(data, partition_key, sequence, arrival)
    expected = Record(data, partition_key, sequence, arrival)
    assert made == expected
    assert hash(made) == hash(expected)
    assert repr(made) == repr(expected)
    assert made.extended_sequence_number == expected.extended_sequence_number
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.data = b"changed"  # type: ignore[misc]


def test_the_connection_pool_covers_the_boto3_clients_pool(server: CannedServer) -> None:
    default = KinesisStream("canned", client=_client(server.endpoint_url))
    bigger = boto3.session.Session().client(
        "kinesis", endpoint_url=server.endpoint_url, region_name=REGION, config=Config(max_pool_connections=200)
    )
    assert default.data_client == KinesisStream("canned", client=bigger).data_client == "fast"
    assert dataplane.FastDataPlane.for_client(default.client).pool_size == dataplane.POOL_SIZE
    assert dataplane.FastDataPlane.for_client(bigger).pool_size == 200


def test_an_endpoint_behind_a_proxy_is_read_with_boto3(server: CannedServer, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NO_PROXY", "no_proxy", "HTTP_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    assert KinesisStream("canned", client=_client(server.endpoint_url)).data_client == "boto3"
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    assert KinesisStream("canned", client=_client(server.endpoint_url)).data_client == "fast"
    proxied_client = boto3.session.Session().client(
        "kinesis",
        endpoint_url=server.endpoint_url,
        region_name=REGION,
        config=Config(proxies={"http": "http://127.0.0.1:9"}),
    )
    assert KinesisStream("canned", client=proxied_client).data_client == "boto3"
