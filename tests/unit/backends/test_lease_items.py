"""Unit tests of the Lease <-> DynamoDB item conversion (KCL 3.x attribute layout)."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shardwise.backends.aws.lease_items import Item, classify_item, lease_from_item, lease_to_item, number_value
from shardwise.checkpoint.sequence import ExtendedSequenceNumber, SentinelCheckpoint
from shardwise.errors import MalformedItemError
from shardwise.hashkeys import MAX_HASH_KEY, HashKeyRange
from shardwise.leases.model import RESERVED_KEYS, Lease

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef

WORKER = "4f7c1a2e-8b3d-4e59-9a61-0c2d7e5b9f13"
SEQUENCE_56 = "49682361785432198765432101234567890123456789012345672690"

# Lease items as the Java KCL 3.1.3 wrote them into moto (reference: ecosystem-and-stand-ins.md B.6): two
# shards of a two-shard stream, no entityType (3.1.3 predates it), throughput written on renewal.
KCL_313_SHARD_0: Item = {
    "leaseKey": {"S": "shardId-000000000000"},
    "leaseOwner": {"S": WORKER},
    "leaseCounter": {"N": "4"},
    "checkpoint": {"S": SEQUENCE_56},
    "checkpointSubSequenceNumber": {"N": "0"},
    "ownerSwitchesSinceCheckpoint": {"N": "0"},
    "startingHashKey": {"S": "0"},
    "endingHashKey": {"S": "170141183460469231731687303715884105726"},
    "throughputKBps": {"N": "0.098896"},
}
KCL_313_SHARD_1: Item = {
    "leaseKey": {"S": "shardId-000000000001"},
    "leaseOwner": {"S": WORKER},
    "leaseCounter": {"N": "4"},
    "checkpoint": {"S": "49682361785432198765432101234567890123456789012345699826"},
    "checkpointSubSequenceNumber": {"N": "0"},
    "ownerSwitchesSinceCheckpoint": {"N": "0"},
    "startingHashKey": {"S": "170141183460469231731687303715884105727"},
    "endingHashKey": {"S": "340282366920938463463374607431768211455"},
    "throughputKBps": {"N": "0.098896"},
}

FULL_LEASE = Lease(
    lease_key="shardId-000000000007",
    checkpoint=ExtendedSequenceNumber(SEQUENCE_56, 3),
    lease_owner="worker-b",
    lease_counter=123_456_789_012,
    pending_checkpoint=ExtendedSequenceNumber("49682361785432198765432101234567890123456789012345679999", 1),
    pending_checkpoint_state=b"\x00app-state\xff",
    owner_switches_since_checkpoint=2,
    parent_shard_ids=frozenset({"shardId-000000000001", "shardId-000000000002"}),
    child_shard_ids=frozenset({"shardId-000000000009"}),
    hash_key_range=HashKeyRange(2**127, MAX_HASH_KEY),
    throughput_kbps=1234.5678,
    checkpoint_owner="worker-a",
)

KCL_ATTRIBUTE_TYPES = {
    ("leaseKey", "S"),
    ("leaseOwner", "S"),
    ("leaseCounter", "N"),
    ("checkpoint", "S"),
    ("checkpointSubSequenceNumber", "N"),
    ("pendingCheckpoint", "S"),
    ("pendingCheckpointSubSequenceNumber", "N"),
    ("pendingCheckpointState", "B"),
    ("ownerSwitchesSinceCheckpoint", "N"),
    ("parentShardId", "SS"),
    ("childShardIds", "SS"),
    ("startingHashKey", "S"),
    ("endingHashKey", "S"),
    ("throughputKBps", "N"),
    ("checkpointOwner", "S"),
    ("entityType", "S"),
}


def attribute_types(item: Item) -> set[tuple[str, str]]:
    pairs = set()
    for name, value in item.items():
        assert len(value) == 1, f"{name} has several types: {value}"
        pairs.add((name, next(iter(value))))
    return pairs


# ------------------------------------------------------------------------------------------ KCL 3.1.3 items


@pytest.mark.parametrize("item", [KCL_313_SHARD_0, KCL_313_SHARD_1], ids=["shard-0", "shard-1"])
def test_kcl_313_item_round_trips_to_the_identical_item(item: Item) -> None:
    lease = lease_from_item(item)

    assert lease_to_item(lease, entity_type=False) == item


def test_kcl_313_item_reads_as_expected() -> None:
    lease = lease_from_item(KCL_313_SHARD_1)

    assert lease == Lease(
        lease_key="shardId-000000000001",
        checkpoint=ExtendedSequenceNumber("49682361785432198765432101234567890123456789012345699826", 0),
        lease_owner=WORKER,
        lease_counter=4,
        hash_key_range=HashKeyRange(170141183460469231731687303715884105727, MAX_HASH_KEY),
        throughput_kbps=0.098896,
    )
    assert isinstance(lease.lease_counter, int)
    assert lease.checkpoint.sequence_number == "49682361785432198765432101234567890123456789012345699826"


def test_throughput_is_written_in_shortest_round_trip_form() -> None:
    lease = lease_from_item(KCL_313_SHARD_0)

    assert lease_to_item(lease)["throughputKBps"] == {"N": "0.098896"}


# ----------------------------------------------------------------------------------------- every attribute


def test_lease_with_every_attribute_round_trips() -> None:
    item = lease_to_item(FULL_LEASE)

    assert lease_from_item(item) == FULL_LEASE
    assert lease_to_item(lease_from_item(item)) == item


def test_lease_with_every_attribute_has_exactly_the_kcl_attributes() -> None:
    item = lease_to_item(FULL_LEASE)

    assert attribute_types(item) == KCL_ATTRIBUTE_TYPES
    assert item["leaseCounter"] == {"N": "123456789012"}
    assert item["checkpoint"] == {"S": SEQUENCE_56}
    assert item["checkpointSubSequenceNumber"] == {"N": "3"}
    assert item["pendingCheckpointState"] == {"B": b"\x00app-state\xff"}
    assert item["parentShardId"] == {"SS": ["shardId-000000000001", "shardId-000000000002"]}
    assert item["startingHashKey"] == {"S": "170141183460469231731687303715884105728"}
    assert item["endingHashKey"] == {"S": "340282366920938463463374607431768211455"}
    assert item["entityType"] == {"S": "LEASE"}


def test_minimal_lease_writes_only_the_always_present_attributes() -> None:
    lease = Lease(lease_key="shardId-000000000000", checkpoint=ExtendedSequenceNumber("TRIM_HORIZON"))

    item = lease_to_item(lease, entity_type=False)

    assert item == {
        "leaseKey": {"S": "shardId-000000000000"},
        "leaseCounter": {"N": "0"},
        "checkpoint": {"S": "TRIM_HORIZON"},
        "checkpointSubSequenceNumber": {"N": "0"},
        "ownerSwitchesSinceCheckpoint": {"N": "0"},
    }
    assert lease_from_item(item) == lease


def test_unknown_attributes_are_ignored() -> None:
    item: Item = {
        **KCL_313_SHARD_0,
        "streamName": {"S": "123456789012:stream:1700000000"},
        "shardId": {"S": "shardId-000000000000"},
        "entityType": {"S": "LEASE"},
        "somethingNew": {"M": {"x": {"N": "1"}}},
    }

    assert lease_from_item(item) == lease_from_item(KCL_313_SHARD_0)


def test_missing_optional_numbers_default_to_zero() -> None:
    item = copy.deepcopy(KCL_313_SHARD_0)
    del item["checkpointSubSequenceNumber"]
    del item["ownerSwitchesSinceCheckpoint"]

    lease = lease_from_item(item)

    assert lease.checkpoint.sub_sequence_number == 0
    assert lease.owner_switches_since_checkpoint == 0


def test_non_finite_throughput_cannot_be_written() -> None:
    lease = Lease(lease_key="k", checkpoint=ExtendedSequenceNumber("LATEST"), throughput_kbps=float("nan"))

    with pytest.raises(ValueError, match="cannot store"):
        lease_to_item(lease)


def test_number_value_formats() -> None:
    assert number_value(0) == {"N": "0"}
    assert number_value(2**70) == {"N": "1180591620717411303424"}
    assert number_value(0.098896) == {"N": "0.098896"}


# ------------------------------------------------------------------------------------- property: round trip

sequence_numbers = st.one_of(
    st.sampled_from([s.value for s in SentinelCheckpoint]),
    st.integers(min_value=0, max_value=10**56).map(str),
    st.from_regex(r"[0-9]{1,128}", fullmatch=True),
)
positions = st.builds(ExtendedSequenceNumber, sequence_numbers, st.integers(min_value=0, max_value=2**63 - 1))
names = st.text(min_size=1, max_size=40)
shard_sets = st.frozensets(names, max_size=3)


@st.composite
def hash_key_ranges(draw: st.DrawFn) -> HashKeyRange:
    a = draw(st.integers(min_value=0, max_value=MAX_HASH_KEY))
    b = draw(st.integers(min_value=0, max_value=MAX_HASH_KEY))
    return HashKeyRange(min(a, b), max(a, b))


@st.composite
def leases(draw: st.DrawFn) -> Lease:
    pending = draw(st.none() | positions)
    return Lease(
        lease_key=draw(names.filter(lambda key: key not in RESERVED_KEYS)),
        checkpoint=draw(positions),
        lease_owner=draw(st.none() | names),
        lease_counter=draw(st.integers(min_value=0, max_value=2**63 - 1)),
        pending_checkpoint=pending,
        pending_checkpoint_state=None if pending is None else draw(st.none() | st.binary(max_size=64)),
        owner_switches_since_checkpoint=draw(st.integers(min_value=0, max_value=2**31)),
        parent_shard_ids=draw(shard_sets),
        child_shard_ids=draw(shard_sets),
        hash_key_range=draw(st.none() | hash_key_ranges()),
        throughput_kbps=draw(st.none() | st.floats(allow_nan=False, allow_infinity=False)),
        checkpoint_owner=draw(st.none() | names),
    )


@given(lease=leases(), entity_type=st.booleans())
def test_any_lease_round_trips(lease: Lease, entity_type: bool) -> None:
    item = lease_to_item(lease, entity_type=entity_type)

    back = lease_from_item(item)

    assert back == lease
    # Field-exact, including the sequence numbers' text (Lease equality compares them numerically).
    assert lease_to_item(back, entity_type=entity_type) == item
    assert attribute_types(item) <= KCL_ATTRIBUTE_TYPES
    assert classify_item(item) == "lease"


# ------------------------------------------------------------------------------------------------ malformed


def _without(item: Item, name: str) -> Item:
    result = copy.deepcopy(item)
    del result[name]
    return result


def _with(item: Item, **attributes: AttributeValueTypeDef) -> Item:
    result = copy.deepcopy(item)
    result.update(attributes)
    return result


@pytest.mark.parametrize(
    ("item", "problem"),
    [
        pytest.param(_without(KCL_313_SHARD_0, "leaseCounter"), "leaseCounter", id="missing-leaseCounter"),
        pytest.param(_with(KCL_313_SHARD_0, leaseCounter={"S": "4"}), "leaseCounter", id="leaseCounter-S"),
        pytest.param(_with(KCL_313_SHARD_0, leaseCounter={"N": "four"}), "leaseCounter", id="leaseCounter-NaN"),
        pytest.param(_with(KCL_313_SHARD_0, leaseCounter={"N": "4.5"}), "leaseCounter", id="leaseCounter-frac"),
        pytest.param(_with(KCL_313_SHARD_0, leaseCounter={"N": "-1"}), "leaseCounter", id="leaseCounter-neg"),
        pytest.param(
            _with(KCL_313_SHARD_0, leaseCounter={"N": "1234567890123456789012345678901234567800000"}),
            "leaseCounter",
            id="leaseCounter-cannot-increment",
        ),
        pytest.param(_without(KCL_313_SHARD_0, "checkpoint"), "checkpoint", id="missing-checkpoint"),
        pytest.param(_with(KCL_313_SHARD_0, checkpoint={"S": "4968x"}), "checkpoint", id="bad-sequence"),
        pytest.param(_with(KCL_313_SHARD_0, checkpoint={"S": ""}), "checkpoint", id="empty-sequence"),
        pytest.param(_with(KCL_313_SHARD_0, checkpoint={"N": "1"}), "checkpoint", id="checkpoint-N"),
        pytest.param(
            _with(KCL_313_SHARD_0, checkpointSubSequenceNumber={"N": "x"}),
            "checkpointSubSequenceNumber",
            id="bad-sub-sequence",
        ),
        pytest.param(_with(KCL_313_SHARD_0, pendingCheckpoint={"S": "LATER"}), "pendingCheckpoint", id="pending"),
        pytest.param(_with(KCL_313_SHARD_0, throughputKBps={"N": "fast"}), "throughputKBps", id="throughput"),
        pytest.param(_with(KCL_313_SHARD_0, leaseOwner={"N": "7"}), "leaseOwner", id="owner-N"),
        pytest.param(_with(KCL_313_SHARD_0, parentShardId={"S": "p"}), "parentShardId", id="parent-S"),
        pytest.param(_with(KCL_313_SHARD_0, endingHashKey={"S": "-5"}), "hash key", id="bad-hash-key"),
        pytest.param(_with(KCL_313_SHARD_0, pendingCheckpointState={"S": "x"}), "pendingCheckpointState", id="state-S"),
    ],
)
def test_malformed_item_raises_naming_the_key(item: Item, problem: str) -> None:
    with pytest.raises(MalformedItemError) as caught:
        lease_from_item(item)

    assert caught.value.key == "shardId-000000000000"
    assert "shardId-000000000000" in str(caught.value)
    assert problem in caught.value.problem


def test_item_without_lease_key_is_malformed() -> None:
    with pytest.raises(MalformedItemError, match="leaseKey"):
        lease_from_item(_without(KCL_313_SHARD_0, "leaseKey"))


def test_item_with_numeric_lease_key_is_malformed_and_named() -> None:
    with pytest.raises(MalformedItemError) as caught:
        lease_from_item(_with(KCL_313_SHARD_0, leaseKey={"N": "42"}))

    assert caught.value.key == "42"


# ------------------------------------------------------------------------------------------------- classify


@pytest.mark.parametrize("entity_type", ["WORKER_METRIC_STATS", "LEADER", "CLIENT_VERSION_MIGRATION"])
def test_items_with_another_entity_type_are_other(entity_type: str) -> None:
    item: Item = {"leaseKey": {"S": "some-key"}, "entityType": {"S": entity_type}}

    assert classify_item(item) == "other"


def test_worker_metrics_item_is_other() -> None:
    item: Item = {
        "leaseKey": {"S": WORKER},
        "entityType": {"S": "WORKER_METRIC_STATS"},
        "lut": {"N": "1700000000"},
        "opr": {"M": {}},
        "sts": {"M": {}},
    }

    assert classify_item(item) == "other"


@pytest.mark.parametrize("key", ["Leader", "Migration3.0", "TableMigration3.5"])
def test_reserved_keys_without_entity_type_are_other(key: str) -> None:
    item: Item = {
        "leaseKey": {"S": key},
        "ownerName": {"S": WORKER},
        "leaseDuration": {"S": "120000"},
        "recordVersionNumber": {"S": "0b6a3c3e-0d1f-4c8e-9a54-0a1c6a0f2f11"},
    }

    assert classify_item(item) == "other"


def test_lease_with_entity_type_lease_is_a_lease() -> None:
    item = lease_to_item(lease_from_item(KCL_313_SHARD_0), entity_type=True)

    assert classify_item(item) == "lease"
    assert lease_from_item(item) == lease_from_item(KCL_313_SHARD_0)


def test_lease_without_entity_type_is_a_lease() -> None:
    assert classify_item(KCL_313_SHARD_0) == "lease"


def test_entity_type_of_another_attribute_type_is_other() -> None:
    assert classify_item({**KCL_313_SHARD_0, "entityType": {"N": "1"}}) == "other"


# ------------------------------------------------------------------------------------ pendingCheckpointState


def test_pending_checkpoint_state_of_type_n_is_treated_as_no_state() -> None:
    # KCL's create writes the checkpoint's sub-sequence number (N) into pendingCheckpointState.
    item = _with(
        KCL_313_SHARD_0,
        pendingCheckpoint={"S": "49682361785432198765432101234567890123456789012345679999"},
        pendingCheckpointSubSequenceNumber={"N": "0"},
        pendingCheckpointState={"N": "0"},
    )

    lease = lease_from_item(item)

    assert lease.pending_checkpoint == ExtendedSequenceNumber(
        "49682361785432198765432101234567890123456789012345679999"
    )
    assert lease.pending_checkpoint_state is None


def test_pending_checkpoint_state_of_type_n_without_pending_checkpoint_is_tolerated() -> None:
    lease = lease_from_item(_with(KCL_313_SHARD_0, pendingCheckpointState={"N": "0"}))

    assert lease.pending_checkpoint is None
    assert lease.pending_checkpoint_state is None


def test_empty_pending_checkpoint_means_none() -> None:
    lease = lease_from_item(_with(KCL_313_SHARD_0, pendingCheckpoint={"S": ""}))

    assert lease.pending_checkpoint is None
