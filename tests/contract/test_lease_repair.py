"""Malformed lease items on every backend: scanned and reported (not silently skipped), read raw, rebuilt from
their valid fields and replaced on condition; and numbers outside the backend's range refused before any write,
with the item named."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from shardwise.admin.repair import repair_lease
from shardwise.checkpoint.sequence import TRIM_HORIZON, ExtendedSequenceNumber
from shardwise.errors import MalformedItemError
from shardwise.hashkeys import MAX_HASH_KEY, HashKeyRange
from shardwise.leases.model import Lease
from shardwise.leases.store import LeaseStore, MalformedLease
from support.backends import LeaseBackend
from support.lease_corruption import corrupt

BAD = "shardId-000000000001"
GOOD = "shardId-000000000000"
CHECKPOINT = ExtendedSequenceNumber("49590338271490256608559692538361571095921575989136588898", 7)


@dataclass(frozen=True)
class Corruption:
    attribute: str  # the attribute the problem must name
    sqlite: tuple[str, object]
    dynamodb: dict[str, Any]
    checkpoint_kept: bool = True


HUGE_DYNAMO = "1234567890123456789012345678901234567800000000000"  # 38 digits: stored, but not when incremented
CORRUPTIONS = {
    "counter-string": Corruption("leaseCounter", ("lease_counter", "abc"), {"leaseCounter": {"S": "abc"}}),
    "counter-float": Corruption("leaseCounter", ("lease_counter", 3.5), {"leaseCounter": {"N": "3.5"}}),
    "counter-huge": Corruption("leaseCounter", ("lease_counter", 2**63 - 1), {"leaseCounter": {"N": HUGE_DYNAMO}}),
    "counter-negative": Corruption("leaseCounter", ("lease_counter", -1), {"leaseCounter": {"N": "-1"}}),
    "checkpoint-garbage": Corruption(
        "checkpoint", ("checkpoint", "not-a-sequence-number"), {"checkpoint": {"S": "nope"}}, checkpoint_kept=False
    ),
    "checkpoint-wrong-type": Corruption(
        "checkpoint", ("checkpoint", b"\x01"), {"checkpoint": {"N": "42"}}, checkpoint_kept=False
    ),
    "checkpoint-missing": Corruption("checkpoint", ("checkpoint", ""), {"checkpoint": None}, checkpoint_kept=False),
    "checkpoint-sub-wrong-type": Corruption(
        "checkpointSubSequenceNumber",
        ("checkpoint_sub", "x"),
        {"checkpointSubSequenceNumber": {"S": "x"}},
        checkpoint_kept=False,
    ),
    "pending-garbage": Corruption(
        "pendingCheckpoint", ("pending_checkpoint", "LATER"), {"pendingCheckpoint": {"S": "LATER"}}
    ),
    "owner-switches-wrong-type": Corruption(
        "ownerSwitchesSinceCheckpoint", ("owner_switches", "x"), {"ownerSwitchesSinceCheckpoint": {"S": "x"}}
    ),
    "parents-wrong-type": Corruption("parentShardId", ("parent_shard_ids", '"p"'), {"parentShardId": {"S": "p"}}),
    "children-wrong-type": Corruption("childShardIds", ("child_shard_ids", "[1, 2]"), {"childShardIds": {"N": "1"}}),
    "hash-range-wrong": Corruption("HashKey", ("ending_hash_key", "-5"), {"endingHashKey": {"S": "-5"}}),
    "owner-wrong-type": Corruption("leaseOwner", ("lease_owner", b"\x07"), {"leaseOwner": {"N": "7"}}),
    "checkpoint-owner-wrong-type": Corruption(
        "checkpointOwner", ("checkpoint_owner", b"\x07"), {"checkpointOwner": {"BOOL": True}}
    ),
    "throughput-wrong-type": Corruption("throughputKBps", ("throughput_kbps", "fast"), {"throughputKBps": {"S": "f"}}),
}


def plant(store: LeaseStore) -> Lease:
    """A good lease and the lease that is then corrupted; returns the latter as written."""
    assert store.create_lease_if_not_exists(Lease(GOOD, TRIM_HORIZON, lease_owner="w-1", lease_counter=4))
    lease = Lease(
        BAD,
        CHECKPOINT,
        lease_owner="w-2",
        lease_counter=12,
        parent_shard_ids=frozenset({"shardId-000000000009"}),
        hash_key_range=HashKeyRange(0, MAX_HASH_KEY),
        throughput_kbps=1.5,
    )
    assert store.create_lease_if_not_exists(lease)
    return lease


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_a_malformed_item_is_scanned_read_and_repaired(store: LeaseStore, case: str) -> None:
    corruption = CORRUPTIONS[case]
    original = plant(store)
    corrupt(store, BAD, corruption.sqlite, corruption.dynamodb)

    scan = store.scan_leases()
    assert [lease.lease_key for lease in scan.leases] == [GOOD]
    assert [bad.key for bad in scan.malformed] == [BAD]
    assert corruption.attribute in scan.malformed[0].problem
    item = store.read_lease_item(BAD)
    assert isinstance(item, MalformedLease)
    assert item.problem == scan.malformed[0].problem
    raw = store.read_raw_lease(BAD)
    assert raw is not None and raw.problem == item.problem

    outcome = repair_lease(store, BAD)

    assert outcome.status == "repaired"
    repaired = store.get_lease(BAD)
    assert repaired is not None
    assert store.scan_leases().malformed == []
    assert repaired.checkpoint == (CHECKPOINT if corruption.checkpoint_kept else TRIM_HORIZON)
    if corruption.attribute != "leaseOwner":
        assert repaired.lease_owner == "w-2"
    if corruption.attribute != "parentShardId":
        assert repaired.parent_shard_ids == original.parent_shard_ids
    # The repaired lease can be renewed and checkpointed again.
    renewed = store.renew_lease(repaired)
    assert renewed is not None
    assert store.update_lease(renewed.with_changes(checkpoint=ExtendedSequenceNumber("5"))) is not None
    assert repair_lease(store, BAD).status == "valid"


def test_a_dry_run_writes_nothing_and_a_given_checkpoint_wins(store: LeaseStore) -> None:
    plant(store)
    corrupt(store, BAD, ("lease_counter", "abc"), {"leaseCounter": {"S": "abc"}})
    before = store.read_raw_lease(BAD)

    planned = repair_lease(store, BAD, dry_run=True)

    assert planned.status == "planned" and planned.plan is not None
    assert planned.plan.lease.checkpoint == CHECKPOINT
    assert any("leaseCounter" in change for change in planned.plan.changes)
    assert store.read_raw_lease(BAD) == before
    given = ExtendedSequenceNumber("123")
    assert repair_lease(store, BAD, checkpoint=given).status == "repaired"
    lease = store.get_lease(BAD)
    assert lease is not None and lease.checkpoint == given


def test_missing_and_valid_items(store: LeaseStore) -> None:
    plant(store)
    assert repair_lease(store, "shardId-000000000042").status == "missing"
    assert store.read_lease_item("shardId-000000000042") is None
    assert store.read_raw_lease("shardId-000000000042") is None
    assert repair_lease(store, GOOD).status == "valid"
    assert isinstance(store.read_lease_item(GOOD), Lease)


def test_a_repair_loses_to_a_change_made_after_its_read(store: LeaseStore) -> None:
    plant(store)
    corrupt(store, BAD, ("lease_counter", "abc"), {"leaseCounter": {"S": "abc"}})
    raw = store.read_raw_lease(BAD)
    assert raw is not None
    # Someone else writes the item between the read and the replace.
    corrupt(store, BAD, ("lease_owner", "w-9"), {"leaseOwner": {"S": "w-9"}})
    fixed = Lease(BAD, TRIM_HORIZON, lease_counter=1)

    assert store.replace_raw_lease(raw, fixed) is False

    after = store.read_raw_lease(BAD)
    assert after is not None and after.fields["leaseOwner"] == "w-9" and after.problem is not None
    # Also when an attribute the item lacked was added.
    raw = after
    corrupt(store, BAD, ("checkpoint_owner", "w-3"), {"checkpointOwner": {"S": "w-3"}})
    assert store.replace_raw_lease(raw, fixed) is False
    assert store.replace_raw_lease(store.read_raw_lease(BAD) or raw, fixed) is True


def test_non_lease_items_are_neither_leases_nor_malformed(store: LeaseStore, lease_backend: LeaseBackend) -> None:
    plant(store)
    lease_backend.put_raw_non_lease("worker-1", "WORKER_METRIC_STATS")
    lease_backend.put_raw_non_lease("Leader", "LEADER")
    scan = store.scan_leases()
    assert [lease.lease_key for lease in scan.leases] == [GOOD, BAD]
    assert scan.malformed == []
    assert store.read_lease_item("Leader") is None
    assert store.read_raw_lease("worker-1") is None


# -- numbers outside the backend's range are refused before the call, naming the item ---------------------------

#: A counter no backend can store incremented: beyond SQLite's INTEGER and DynamoDB's 38 significant digits.
OUT_OF_RANGE = 12345678901234567890123456789012345678901


def _writes(store: LeaseStore, lease: Lease) -> dict[str, Callable[[], object]]:
    return {
        "create": lambda: store.create_lease_if_not_exists(lease.with_changes(lease_key="shardId-000000000077")),
        "renew": lambda: store.renew_lease(lease),
        "take": lambda: store.take_lease(lease, "w-3"),
        "evict": lambda: store.evict_lease(lease),
        "assign": lambda: store.assign_lease(lease, "w-3"),
        "handoff": lambda: store.initiate_graceful_handoff(lease, "w-3"),
        "update": lambda: store.update_lease(lease),
    }


@pytest.mark.parametrize("operation", ["create", "renew", "take", "evict", "assign", "handoff", "update"])
@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"lease_counter": OUT_OF_RANGE}, id="counter"),
        pytest.param({"lease_counter": 2**63 - 1}, id="counter-at-sqlite-limit"),
        pytest.param({"owner_switches_since_checkpoint": OUT_OF_RANGE}, id="owner-switches"),
        pytest.param({"checkpoint": ExtendedSequenceNumber("5", OUT_OF_RANGE)}, id="sub-sequence"),
    ],
)
def test_out_of_range_numbers_are_refused_naming_the_item(
    store: LeaseStore, lease_backend: LeaseBackend, operation: str, changes: dict[str, object]
) -> None:
    stored = plant(store)
    lease = stored.with_changes(**changes)
    if lease_backend.name == "dynamodb" and changes.get("lease_counter") == 2**63 - 1:
        pytest.skip("2^63 fits DynamoDB's 38 digits")
    before = store.read_raw_lease(BAD)

    with pytest.raises(MalformedItemError) as caught:
        _writes(store, lease)[operation]()

    key = "shardId-000000000077" if operation == "create" else BAD
    assert caught.value.key == key
    assert key in str(caught.value)
    assert "shardwise leases repair" in caught.value.problem
    assert store.read_raw_lease(BAD) == before
    assert store.read_lease_item("shardId-000000000077") is None
