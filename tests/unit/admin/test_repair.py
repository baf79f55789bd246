"""``rebuild_lease``: whatever a lease item holds, the rebuilt lease is valid, keeps every valid field and
says why it changed each other one."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from shardwise.admin.repair import rebuild_lease
from shardwise.checkpoint.sequence import TRIM_HORIZON, ExtendedSequenceNumber
from shardwise.hashkeys import MAX_HASH_KEY, HashKeyRange
from shardwise.leases.store import RawLeaseItem

JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.decimals(allow_nan=False, allow_infinity=False, places=2),
    st.text(max_size=6),
    st.binary(max_size=3),
    st.lists(st.one_of(st.text(max_size=4), st.integers()), max_size=3),
)
ATTRIBUTES = [
    "leaseOwner",
    "leaseCounter",
    "checkpoint",
    "checkpointSubSequenceNumber",
    "pendingCheckpoint",
    "pendingCheckpointSubSequenceNumber",
    "pendingCheckpointState",
    "ownerSwitchesSinceCheckpoint",
    "parentShardId",
    "childShardIds",
    "startingHashKey",
    "endingHashKey",
    "throughputKBps",
    "checkpointOwner",
]


def raw(fields: dict[str, object]) -> RawLeaseItem:
    return RawLeaseItem("shardId-000000000001", fields, "something is wrong", None)


@given(st.dictionaries(st.sampled_from(ATTRIBUTES), JUNK))
def test_any_item_rebuilds_into_a_valid_lease(fields: dict[str, object]) -> None:
    plan = rebuild_lease(raw(fields))
    lease = plan.lease
    assert lease.lease_key == "shardId-000000000001"
    assert 0 <= lease.lease_counter < 2**63 - 1
    if _whole(fields.get("leaseCounter")) is not None:
        assert lease.lease_counter == fields["leaseCounter"]
    else:
        assert lease.lease_counter != fields.get("leaseCounter")
        assert any(change.startswith("leaseCounter") for change in plan.changes)


def _whole(value: object) -> int | None:
    """The counters a repair keeps: whole numbers (int, or an integral Decimal) the backends can increment."""
    if isinstance(value, Decimal) and value == value.to_integral_value():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63 - 1:
        return value
    return None


VALID = {
    "leaseOwner": "w-1",
    "leaseCounter": Decimal(7),
    "checkpoint": "4959",
    "checkpointSubSequenceNumber": 3,
    "pendingCheckpoint": "5000",
    "pendingCheckpointState": b"state",
    "ownerSwitchesSinceCheckpoint": 2,
    "parentShardId": ["shardId-000000000000"],
    "childShardIds": ["shardId-000000000002", "shardId-000000000003"],
    "startingHashKey": "0",
    "endingHashKey": str(MAX_HASH_KEY),
    "throughputKBps": 1.25,
    "checkpointOwner": "w-0",
}


@given(st.sampled_from(sorted(VALID)), JUNK.filter(lambda value: value is not None))
def test_one_bad_attribute_costs_only_that_attribute(broken: str, value: object) -> None:
    fields = {**VALID, broken: value}
    lease = rebuild_lease(raw(fields)).lease
    kept = rebuild_lease(raw(VALID)).lease
    assert kept.lease_counter == 7
    assert kept.checkpoint == ExtendedSequenceNumber("4959", 3)
    assert kept.pending_checkpoint == ExtendedSequenceNumber("5000")
    assert kept.hash_key_range == HashKeyRange(0, MAX_HASH_KEY)
    for name, attribute in [
        ("leaseOwner", "lease_owner"),
        ("ownerSwitchesSinceCheckpoint", "owner_switches_since_checkpoint"),
        ("parentShardId", "parent_shard_ids"),
        ("childShardIds", "child_shard_ids"),
        ("throughputKBps", "throughput_kbps"),
        ("checkpointOwner", "checkpoint_owner"),
    ]:
        if broken != name:
            assert getattr(lease, attribute) == getattr(kept, attribute)
    if broken not in ("checkpoint", "checkpointSubSequenceNumber"):
        assert lease.checkpoint == kept.checkpoint
    if broken not in ("leaseCounter",):
        assert lease.lease_counter == 7


def test_an_unreadable_checkpoint_becomes_trim_horizon_or_the_given_one() -> None:
    fields = {**VALID, "checkpoint": "soon"}
    plan = rebuild_lease(raw(fields))
    assert plan.lease.checkpoint == TRIM_HORIZON
    assert any("TRIM_HORIZON" in change for change in plan.changes)
    given_checkpoint = ExtendedSequenceNumber("42")
    assert rebuild_lease(raw(fields), checkpoint=given_checkpoint).lease.checkpoint == given_checkpoint
