"""The lease store's direct ``UpdateItem`` (``data_client="fast"``): its wire format is botocore's (attribute values
encoded as botocore's serializer writes them, answers read as botocore's parser reads them), and against a canned
server on 127.0.0.1 every answer — success, lost condition, throttling, 5xx, each refusal — gives
the same result or the same exception, with the same message, as the store on boto3's client."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import botocore.session
import pytest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.parsers import create_parser
from botocore.serialize import create_serializer
from hypothesis import given
from hypothesis import strategies as st

from shardwise.backends.aws import signed_http
from shardwise.backends.aws.lease_writes import DirectUpdateItem, decode_value, encode_value
from shardwise.backends.aws.leases import DynamoDBLeaseStore, DynamoDBLeaseStoreConfig
from shardwise.checkpoint.sequence import ExtendedSequenceNumber
from shardwise.errors import (
    AccessDeniedError,
    ConfigurationError,
    DependencyError,
    TableNotFoundError,
    ThrottlingError,
)
from shardwise.leases.model import Lease
from support.canned_http import Canned, CannedServer, serving

REGION = "us-east-1"
KEYS = Credentials("testing", "testing")  # tests/conftest.py's fake keys, which boto3's clients use too
UPDATE_ITEM = "DynamoDB_20120810.UpdateItem"
_MODEL = botocore.session.get_session().get_service_model("dynamodb").operation_model("UpdateItem")


scalars = st.one_of(
    st.builds(lambda s: {"S": s}, st.text(max_size=20)),
    st.builds(lambda n: {"N": str(n)}, st.integers()),
    st.builds(lambda b: {"B": b}, st.binary(max_size=40)),
    st.builds(lambda b: {"BOOL": b}, st.booleans()),
    st.just({"NULL": True}),
    st.builds(lambda s: {"SS": sorted(s)}, st.sets(st.text(min_size=1, max_size=8), min_size=1, max_size=4)),
    st.builds(lambda s: {"NS": sorted(str(n) for n in s)}, st.sets(st.integers(), min_size=1, max_size=4)),
    st.builds(lambda s: {"BS": sorted(s)}, st.sets(st.binary(min_size=1, max_size=8), min_size=1, max_size=4)),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.builds(lambda items: {"L": items}, st.lists(inner, max_size=3)),
        st.builds(lambda items: {"M": items}, st.dictionaries(st.text(min_size=1, max_size=6), inner, max_size=3)),
    ),
    max_leaves=8,
)


@given(values)
def test_values_are_encoded_as_botocores_serializer_writes_them(value: dict[str, Any]) -> None:
    params = {"TableName": "t", "Key": {"k": value}}
    request = create_serializer("json").serialize_to_request(params, _MODEL)
    assert json.loads(request["body"])["Key"]["k"] == encode_value(value)


@given(values)
def test_answers_are_read_as_botocores_parser_reads_them(value: dict[str, Any]) -> None:
    body = json.dumps({"Attributes": {"a": encode_value(value)}}).encode()
    shape = _MODEL.output_shape
    assert shape is not None
    parsed = create_parser("json").parse({"status_code": 200, "headers": {}, "body": body}, shape)
    assert decode_value(encode_value(value)) == parsed["Attributes"]["a"]


# -- against a canned server ---------------------------------------------------------------------------------


@pytest.fixture
def server() -> Iterator[CannedServer]:
    with serving(KEYS, "dynamodb", REGION) as canned:
        yield canned


@pytest.fixture(autouse=True)
def quick_back_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(signed_http, "BACKOFF_BASE_S", 0.002)


def _store(server: CannedServer, data_client: str) -> DynamoDBLeaseStore:
    config = Config(retries={"mode": "standard", "total_max_attempts": 3})
    client = boto3.session.Session().client(
        "dynamodb", endpoint_url=server.endpoint_url, region_name=REGION, config=config
    )
    return DynamoDBLeaseStore(DynamoDBLeaseStoreConfig("app"), client=client, data_client=data_client)  # type: ignore[arg-type]


LEASE = Lease("shardId-000000000001", ExtendedSequenceNumber("49000000000000000001"), lease_owner="w", lease_counter=3)
STATE = b"\x00\xffstate"
ATTRIBUTES: dict[str, dict[str, Any]] = {
    "leaseKey": {"S": "shardId-000000000001"},
    "leaseOwner": {"S": "w"},
    "leaseCounter": {"N": "4"},
    "checkpoint": {"S": "49000000000000000001"},
    "checkpointSubSequenceNumber": {"N": "0"},
    "ownerSwitchesSinceCheckpoint": {"N": "0"},
    "pendingCheckpoint": {"S": "49000000000000000002"},
    "pendingCheckpointState": {"B": STATE},
}


def _ok(**headers: str) -> Canned:
    body = json.dumps(
        {"Attributes": {k: encode_value(v) for k, v in ATTRIBUTES.items()}, "ConsumedCapacity": {"CapacityUnits": 1.0}}
    ).encode()
    return Canned(200, body, headers=headers)


def _error(status: int, code: str, message: str) -> Canned:
    body = {"__type": f"com.amazonaws.dynamodb.v20120810#{code}", "message": message}
    return Canned(status, json.dumps(body).encode())


def _both(server: CannedServer, *answers: Canned) -> tuple[object, object]:
    """What renew_lease answers or raises, on the direct client then on boto3's, for the same answers."""
    outcomes: list[object] = []
    for data_client in ("fast", "boto3"):
        server.answer(UPDATE_ITEM, *answers)
        try:
            outcomes.append(_store(server, data_client).renew_lease(LEASE, throughput_kbps=1.5))
        except Exception as exc:
            outcomes.append(exc)
    return outcomes[0], outcomes[1]


def test_the_direct_client_is_used_and_sends_what_boto3_sends(server: CannedServer) -> None:
    fast, slow = _both(server, _ok())
    assert isinstance(fast, Lease)
    assert fast == slow
    assert fast.pending_checkpoint_state == STATE
    sent = server.requests(UPDATE_ITEM)
    assert len(sent) == 2
    assert all(request.signature_ok for request in sent)
    assert sent[0].body == sent[1].body
    assert isinstance(_store(server, "fast")._update_item, DirectUpdateItem)
    assert not isinstance(_store(server, "boto3")._update_item, DirectUpdateItem)


def test_a_failed_condition_is_a_lost_race_on_both_clients(server: CannedServer) -> None:
    assert _both(server, _error(400, "ConditionalCheckFailedException", "The conditional request failed")) == (
        None,
        None,
    )


@pytest.mark.parametrize(
    "first",
    [
        _error(400, "ProvisionedThroughputExceededException", "slow down"),
        _error(400, "ThrottlingException", "slow down"),
        _error(500, "InternalServerError", "oops"),
        Canned(503, b"<html>Service Unavailable</html>"),
    ],
)
def test_a_retryable_answer_is_retried(server: CannedServer, first: Canned) -> None:
    fast, slow = _both(server, first, _ok())
    assert isinstance(fast, Lease)
    assert fast == slow
    assert len(server.requests(UPDATE_ITEM)) == 4


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (_error(400, "ProvisionedThroughputExceededException", "Rate exceeded"), ThrottlingError),
        (_error(400, "ResourceNotFoundException", "Requested resource not found"), TableNotFoundError),
        (_error(400, "AccessDeniedException", "not allowed"), AccessDeniedError),
        (_error(400, "UnrecognizedClientException", "bad token"), AccessDeniedError),
        (_error(400, "ValidationException", "bad expression"), DependencyError),
        (_error(500, "InternalServerError", "oops"), DependencyError),
    ],
)
def test_failures_are_translated_as_on_the_boto3_path(
    server: CannedServer, answer: Canned, expected: type[Exception]
) -> None:
    fast, slow = _both(server, answer)
    assert type(fast) is expected
    assert type(slow) is expected
    assert str(fast) == str(slow)


def test_the_data_client_is_validated(server: CannedServer) -> None:
    with pytest.raises(ConfigurationError, match=r"data_client must be 'fast' or 'boto3', got 'quick'"):
        _store(server, "quick")
