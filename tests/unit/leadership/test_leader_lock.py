"""The leader lock: the DynamoDB lock client's item format and protocol, and the take-over rule of KCL #1803
(a killed leader is always replaced, a live leader never usurped), on a fake clock over SQLiteItemTable."""

from __future__ import annotations

import functools
import itertools
import logging
import threading
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import boto3
import pytest

from shardwise.backends.aws.items import open_dynamodb_item_tables
from shardwise.backends.aws.leases import DynamoDBLeaseStore, DynamoDBLeaseStoreConfig
from shardwise.backends.sqlite.items import open_sqlite_item_tables
from shardwise.backends.sqlite.leases import SQLiteLeaseStore
from shardwise.errors import ConfigurationError, DependencyError, MalformedItemError
from shardwise.leadership.lock import (
    LEADER_KEY,
    LeaderLock,
    LockAction,
    LockItem,
    LockObservation,
    decide_lock_action,
)
from shardwise.tables.items import ItemRecord, ItemTable, ItemWrite, Layout, Namespace

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient

LEASE_S = 120.0  # KCL's default leaseDuration (120 000 ms)
HEARTBEAT_S = 30.0


class FakeClock:
    """A monotonic clock in seconds; every contender reads it with its own offset (clocks never agree)."""

    def __init__(self) -> None:
        self.now = 0.0

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def reader(self, offset: float) -> functools.partial[float]:
        return functools.partial(self._read, offset)

    def _read(self, offset: float) -> float:
        return self.now + offset


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def database(tmp_path: Path) -> Path:
    store = SQLiteLeaseStore(tmp_path / "lock.db", "app")
    store.create_table_if_not_exists()
    return tmp_path / "lock.db"


def coordinator(database: Path) -> ItemTable:
    """A coordinator item table through its own store (own connections), as another worker would have."""
    table, _, _ = open_sqlite_item_tables(SQLiteLeaseStore(database, "app"), "app")
    return table


_offsets = itertools.count(start=1000, step=7777)


@pytest.fixture
def new_lock(database: Path, clock: FakeClock) -> functools.partial[LeaderLock]:
    return functools.partial(make_lock, database, clock)


def make_lock(database: Path, clock: FakeClock, owner: str, **settings: Any) -> LeaderLock:
    settings.setdefault("clock", clock.reader(next(_offsets)))
    return LeaderLock(coordinator(database), owner, **settings)


# ------------------------------------------------------------------------------------------ the pure rule


class TestDecision:
    HELD = LockItem("other", 120_000, "r1")

    def test_absent_lock_is_created(self) -> None:
        assert decide_lock_action(None, owner="me", held_rvn=None, observation=None, now=5.0) == (
            LockAction.CREATE,
            None,
        )

    def test_my_lock_is_heartbeated(self) -> None:
        mine = LockItem("me", 120_000, "r1")
        assert decide_lock_action(mine, owner="me", held_rvn="r1", observation=None, now=5.0)[0] is LockAction.HEARTBEAT

    def test_my_name_with_another_version_is_not_mine(self) -> None:
        """Another process with my worker id (or my previous life) holds it: wait like for anyone else."""
        stale = LockItem("me", 120_000, "r2")
        action, observation = decide_lock_action(stale, owner="me", held_rvn="r1", observation=None, now=5.0)
        assert action is LockAction.WAIT
        assert observation == LockObservation("r2", 5.0)

    def test_released_lock_is_taken_at_once(self) -> None:
        released = LockItem("other", 120_000, "r1", is_released=True)
        assert decide_lock_action(released, owner="me", held_rvn=None, observation=None, now=5.0) == (
            LockAction.TAKE_RELEASED,
            None,
        )

    def test_first_sight_starts_the_wait(self) -> None:
        assert decide_lock_action(self.HELD, owner="me", held_rvn=None, observation=None, now=7.0) == (
            LockAction.WAIT,
            LockObservation("r1", 7.0),
        )

    def test_a_new_version_restarts_the_wait(self) -> None:
        seen = LockObservation("r0", 0.0)
        assert decide_lock_action(self.HELD, owner="me", held_rvn=None, observation=seen, now=500.0) == (
            LockAction.WAIT,
            LockObservation("r1", 500.0),
        )

    @pytest.mark.parametrize(
        ("elapsed", "action"),
        [
            (0.0, LockAction.WAIT),
            (119.999, LockAction.WAIT),
            (120.0, LockAction.WAIT),
            (120.001, LockAction.TAKE_EXPIRED),
        ],
    )
    def test_takeover_only_after_more_than_the_lease_duration(self, elapsed: float, action: LockAction) -> None:
        seen = LockObservation("r1", 10.0)
        assert decide_lock_action(self.HELD, owner="me", held_rvn=None, observation=seen, now=10.0 + elapsed) == (
            action,
            seen,
        )

    def test_the_holders_lease_duration_counts(self) -> None:
        short = LockItem("other", 10_000, "r1")
        seen = LockObservation("r1", 0.0)
        assert decide_lock_action(short, owner="me", held_rvn=None, observation=seen, now=10.5)[0] is (
            LockAction.TAKE_EXPIRED
        )


# -------------------------------------------------------------------------------------------- the protocol


def test_acquire_on_an_empty_table(new_lock: functools.partial[LeaderLock]) -> None:
    lock = new_lock("worker-a", new_rvn=lambda: "rvn-1")
    assert lock.try_acquire() is True
    assert lock.holds_lock()
    assert lock.current() == LockItem("worker-a", 120_000, "rvn-1")


def test_the_item_has_exactly_the_lock_client_attributes(
    database: Path, new_lock: functools.partial[LeaderLock]
) -> None:
    lock = new_lock("worker-a")
    lock.try_acquire()
    record = coordinator(database).get(LEADER_KEY)
    assert record is not None
    assert record.entity_type == "LEADER"
    assert set(record.attributes) == {"ownerName", "leaseDuration", "recordVersionNumber"}
    assert record.attributes["ownerName"] == "worker-a"
    assert record.attributes["leaseDuration"] == "120000"
    assert str(uuid.UUID(record.attributes["recordVersionNumber"])) == record.attributes["recordVersionNumber"]


def test_a_leader_publishes_what_others_would_read_for_themselves(database: Path, clock: FakeClock) -> None:
    published = {"shardwiseLeader": "worker-a", "shardwiseMalformedLeases": "2"}
    a = LeaderLock(coordinator(database), "worker-a", clock=clock.reader(0), published=lambda: published)
    b = LeaderLock(coordinator(database), "worker-b", clock=clock.reader(0))
    assert a.try_acquire()
    seen = a.last_seen()
    assert seen is not None and seen.from_shardwise_leader and seen.malformed_leases == 2
    assert b.try_acquire() is False
    seen = b.last_seen()
    assert seen is not None and seen.from_shardwise_leader and seen.malformed_leases == 2
    published["shardwiseMalformedLeases"] = "0"
    clock.advance(HEARTBEAT_S)
    assert a.heartbeat()
    assert b.try_acquire() is False
    seen = b.last_seen()
    assert seen is not None and seen.malformed_leases == 0
    # Taken over by a worker that publishes nothing (a Java worker): the old attributes stay, under another name.
    clock.advance(LEASE_S + 1)
    assert b.try_acquire() is True
    seen = b.last_seen()
    assert seen is not None and seen.owner_name == "worker-b" and not seen.from_shardwise_leader


def test_a_second_contender_waits(new_lock: functools.partial[LeaderLock]) -> None:
    a, b = new_lock("worker-a"), new_lock("worker-b")
    assert a.try_acquire()
    assert b.try_acquire() is False
    assert b.is_leader() is False
    assert a.is_leader() is True


def test_heartbeats_keep_the_lock(clock: FakeClock, new_lock: functools.partial[LeaderLock]) -> None:
    a, b = new_lock("worker-a"), new_lock("worker-b")
    assert a.try_acquire()
    versions = set()
    for _ in range(40):  # 20 minutes
        clock.advance(HEARTBEAT_S)
        assert a.heartbeat() is True
        current = a.current()
        assert current is not None
        versions.add(current.record_version_number)
        assert b.try_acquire() is False
    assert len(versions) == 40  # every heartbeat swaps the version number


def test_a_dead_holder_is_taken_over_after_the_lease_duration_as_the_contender_observed_it(
    clock: FakeClock, new_lock: functools.partial[LeaderLock]
) -> None:
    a, b = new_lock("worker-a"), new_lock("worker-b")
    assert a.try_acquire()  # ... and worker-a is killed: no more heartbeats
    clock.advance(50)
    assert b.try_acquire() is False  # first sight of the version number
    clock.advance(LEASE_S - 50 + 1)  # 121 s after the holder's last write, only 71 s since b first saw it
    assert b.try_acquire() is False
    clock.advance(49)  # exactly 120 s since b first saw it: not yet
    assert b.try_acquire() is False
    clock.advance(0.001)  # just over
    assert b.try_acquire() is True
    current = b.current()
    assert current is not None
    assert (current.owner_name, current.lease_duration_ms, current.is_released) == ("worker-b", 120_000, False)
    assert a.heartbeat() is False  # the old holder finds out on its next heartbeat
    assert a.is_leader() is False


def test_a_long_dead_lock_still_needs_a_full_observation(
    clock: FakeClock, new_lock: functools.partial[LeaderLock]
) -> None:
    a = new_lock("worker-a")
    assert a.try_acquire()
    clock.advance(3600)  # dead for an hour before anyone looks
    b = new_lock("worker-b")
    assert b.try_acquire() is False
    clock.advance(LEASE_S)
    assert b.try_acquire() is False
    clock.advance(0.001)
    assert b.try_acquire() is True


def test_a_live_holder_is_never_usurped(clock: FakeClock, new_lock: functools.partial[LeaderLock]) -> None:
    """Both workers call is_leader every second for two hours; the leader heartbeats every 30 s."""
    a, b = new_lock("worker-a"), new_lock("worker-b")
    assert a.is_leader() is True
    for _ in range(7200):
        clock.advance(1)
        assert a.is_leader() is True
        assert b.is_leader() is False


def test_a_slow_but_live_holder_is_never_usurped(clock: FakeClock, new_lock: functools.partial[LeaderLock]) -> None:
    """Heartbeats 110 s apart (under the 120 s lease): every contender sees each version for < 120 s."""
    a, b, c = new_lock("worker-a"), new_lock("worker-b"), new_lock("worker-c")
    assert a.try_acquire()
    for _ in range(30):
        for _ in range(11):
            clock.advance(10)
            assert b.try_acquire() is False
            assert c.try_acquire() is False
        assert a.heartbeat() is True


def test_a_new_version_restarts_the_contenders_wait(clock: FakeClock, new_lock: functools.partial[LeaderLock]) -> None:
    a, b = new_lock("worker-a"), new_lock("worker-b")
    assert a.try_acquire()
    assert b.try_acquire() is False  # sees version 1 at t=0
    clock.advance(100)
    assert a.heartbeat()  # version 2, then worker-a dies
    clock.advance(21)
    assert b.try_acquire() is False  # t=121: version 2 seen for the first time
    clock.advance(LEASE_S)
    assert b.try_acquire() is False  # exactly 120 s
    clock.advance(0.001)
    assert b.try_acquire() is True


def test_release_lets_another_acquire_at_once(database: Path, new_lock: functools.partial[LeaderLock]) -> None:
    a, b = new_lock("worker-a"), new_lock("worker-b")
    assert a.try_acquire()
    assert b.try_acquire() is False
    assert a.release() is True
    assert coordinator(database).get(LEADER_KEY) is None
    assert a.is_leader() is False  # and it does not grab the lock back within a heartbeat period
    assert b.try_acquire() is True
    assert a.release() is False


def test_a_lock_released_without_deletion_is_taken_at_once(
    database: Path, new_lock: functools.partial[LeaderLock]
) -> None:
    """The lock client with deleteLockOnRelease=false marks the item isReleased = "1"."""
    table = coordinator(database)
    table.put_if_absent(
        LEADER_KEY,
        {"ownerName": "java-worker", "leaseDuration": "120000", "recordVersionNumber": "r1", "isReleased": "1"},
    )
    b = new_lock("worker-b")
    assert b.try_acquire() is True
    record = table.get(LEADER_KEY)
    assert record is not None
    assert set(record.attributes) == {"ownerName", "leaseDuration", "recordVersionNumber"}
    assert record.attributes["ownerName"] == "worker-b"


def test_release_never_deletes_someone_elses_lock(clock: FakeClock, new_lock: functools.partial[LeaderLock]) -> None:
    a, b = new_lock("worker-a"), new_lock("worker-b")
    assert a.try_acquire()
    assert b.try_acquire() is False
    clock.advance(LEASE_S + 1)  # worker-a paused (GC, network) long enough to lose the lock
    assert b.try_acquire() is True
    assert a.release() is False
    current = b.current()
    assert current is not None
    assert current.owner_name == "worker-b"


def test_two_contenders_race_for_a_dead_lock_and_one_wins(
    clock: FakeClock, new_lock: functools.partial[LeaderLock]
) -> None:
    dead = new_lock("worker-dead")
    assert dead.try_acquire()
    contenders = [new_lock(f"worker-{i}") for i in range(2)]
    for contender in contenders:
        assert contender.try_acquire() is False
    clock.advance(LEASE_S + 0.001)
    barrier = threading.Barrier(len(contenders))
    results: list[bool] = []

    def attempt(lock: LeaderLock) -> None:
        barrier.wait()
        results.append(lock.try_acquire())

    threads = [threading.Thread(target=attempt, args=(lock,)) for lock in contenders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(results) == [False, True]
    winner = contenders[0] if contenders[0].holds_lock() else contenders[1]
    loser = contenders[1] if winner is contenders[0] else contenders[0]
    # The loser saw the winner's fresh version number and must wait a whole lease duration again.
    clock.advance(LEASE_S)
    assert loser.try_acquire() is False
    assert winner.heartbeat() is True


def test_sequential_contenders_for_a_dead_lock(clock: FakeClock, new_lock: functools.partial[LeaderLock]) -> None:
    dead, b, c = new_lock("worker-dead"), new_lock("worker-b"), new_lock("worker-c")
    assert dead.try_acquire()
    assert b.try_acquire() is False
    assert c.try_acquire() is False
    clock.advance(LEASE_S + 0.001)
    assert b.try_acquire() is True
    assert c.try_acquire() is False  # its observation was of the dead holder's version: the update lost


# ----------------------------------------------------------------------------------------------- is_leader


class CountingItems:
    """An ItemTable that counts calls to the table (and can be made to fail)."""

    def __init__(self, inner: ItemTable) -> None:
        self.inner = inner
        self.calls = 0
        self.failing = False
        self.reads: list[bool] = []  # the consistent flag of every get

    def _call(self) -> None:
        self.calls += 1
        if self.failing:
            raise DependencyError("DynamoDB is unreachable")

    @property
    def table_name(self) -> str:
        return self.inner.table_name

    @property
    def layout(self) -> Layout:
        return self.inner.layout

    @property
    def namespace(self) -> Namespace:
        return self.inner.namespace

    def exists(self) -> bool:
        return self.inner.exists()

    def create_if_not_exists(self) -> bool:
        return self.inner.create_if_not_exists()

    def get(self, key: str, *, consistent: bool = True) -> ItemRecord | None:
        self._call()
        self.reads.append(consistent)
        return self.inner.get(key, consistent=consistent)

    def scan(self) -> list[ItemRecord]:
        self._call()
        return self.inner.scan()

    def put_if_absent(self, key: str, attributes: Mapping[str, Any]) -> bool:
        self._call()
        return self.inner.put_if_absent(key, attributes)

    def update(
        self,
        key: str,
        *,
        set_attributes: Mapping[str, Any],
        remove_attributes: Iterable[str] = (),
        expect: Mapping[str, Any] | None = None,
    ) -> ItemRecord | None:
        self._call()
        return self.inner.update(key, set_attributes=set_attributes, remove_attributes=remove_attributes, expect=expect)

    def upsert(self, key: str, attributes: Mapping[str, Any]) -> None:
        self._call()
        self.inner.upsert(key, attributes)

    def delete(self, key: str, *, expect: Mapping[str, Any] | None = None) -> bool:
        self._call()
        return self.inner.delete(key, expect=expect)

    def transact(self, writes: Sequence[ItemWrite]) -> bool:
        self._call()
        return self.inner.transact(writes)


def test_is_leader_touches_the_store_once_per_heartbeat_period(database: Path, clock: FakeClock) -> None:
    items = CountingItems(coordinator(database))
    assert isinstance(items, ItemTable)
    lock = LeaderLock(items, "worker-a", clock=clock.reader(0), published=lambda: {"shardwiseLeader": "worker-a"})
    assert lock.is_leader() is True
    assert items.calls == 2  # one acquisition attempt: read + put
    for _ in range(29):
        clock.advance(1)
        assert lock.is_leader() is True
    assert items.calls == 2
    clock.advance(1)
    assert lock.is_leader() is True
    assert items.calls == 3  # one heartbeat

    follower_items = CountingItems(coordinator(database))
    follower = LeaderLock(follower_items, "worker-b", clock=clock.reader(0))
    for _ in range(241):  # 0 s … 120 s: the leader stops heartbeating
        assert follower.is_leader() is False
        clock.advance(0.5)
    # One eventually consistent read at 0 s: the lock it saw cannot expire before 120 s, so no read until then.
    assert follower_items.reads == [False]
    clock.advance(0.25)
    assert follower.is_leader() is True  # unchanged for more than the lease duration: taken over
    assert follower_items.reads == [False, False]


def test_a_contender_reads_a_live_lock_about_once_per_lease_duration(database: Path, clock: FakeClock) -> None:
    published = {"shardwiseLeader": "worker-a"}
    leader = LeaderLock(coordinator(database), "worker-a", clock=clock.reader(0), published=lambda: published)
    follower_items = CountingItems(coordinator(database))
    follower = LeaderLock(follower_items, "worker-b", clock=clock.reader(0))
    assert leader.is_leader() is True
    for _ in range(600):  # ten minutes, both asked every second (as the assigner and shard-sync loops do)
        assert follower.is_leader() is False
        assert leader.is_leader() is True
        clock.advance(1)
    # A version number seen at t is read again just after t + 120 s; the leader has heartbeaten by then, so the
    # next wait starts at that read: reads at about 0, 121, 242, 363, 484 and 605 s (KCL: every 30 s, 20 reads).
    assert 5 <= len(follower_items.reads) <= 6
    assert not any(follower_items.reads)  # all eventually consistent


def test_a_contender_reads_a_java_holders_lock_every_heartbeat_period(database: Path, clock: FakeClock) -> None:
    # A holder that publishes nothing (a Java worker): read as KCL's followers do, so a graceful release (the item
    # deleted) is seen within a heartbeat period.
    java = LeaderLock(coordinator(database), "java-1", clock=clock.reader(0))
    follower_items = CountingItems(coordinator(database))
    follower = LeaderLock(follower_items, "worker-b", clock=clock.reader(0))
    assert java.is_leader() is True
    for _ in range(120):
        assert follower.is_leader() is False
        assert java.is_leader() is True
        clock.advance(1)
    assert len(follower_items.reads) == 4  # at 0, 30, 60 and 90 s
    assert java.release()
    clock.advance(30)
    assert follower.is_leader() is True


def test_is_leader_never_raises_and_stays_leader_only_within_the_lease(
    database: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    items = CountingItems(coordinator(database))
    lock = LeaderLock(items, "worker-a", clock=clock.reader(0))
    assert lock.is_leader() is True
    items.failing = True
    with caplog.at_level(logging.WARNING, logger="shardwise.leadership.lock"):
        clock.advance(HEARTBEAT_S)
        assert lock.is_leader() is True  # heartbeat failed, but the lease still runs
        clock.advance(LEASE_S - HEARTBEAT_S - 0.001)
        assert lock.is_leader() is True
        clock.advance(0.001)
        assert lock.is_leader() is False  # a contender could take over from now on
    assert "DynamoDB is unreachable" in caplog.text
    with pytest.raises(DependencyError):
        lock.heartbeat()
    items.failing = False
    clock.advance(HEARTBEAT_S)
    assert lock.is_leader() is True  # nobody took it: the next heartbeat still succeeds

    other = LeaderLock(CountingItems(coordinator(database)), "worker-b", clock=clock.reader(0))
    broken = CountingItems(coordinator(database))
    broken.failing = True
    assert LeaderLock(broken, "worker-c", clock=clock.reader(0)).is_leader() is False
    assert other.is_leader() is False


# --------------------------------------------------------------------------------------------- odd inputs


def test_settings_are_validated(database: Path) -> None:
    items = coordinator(database)
    with pytest.raises(ConfigurationError, match="owner"):
        LeaderLock(items, "")
    with pytest.raises(ConfigurationError, match="shorter than lease_duration_ms"):
        LeaderLock(items, "w", lease_duration_ms=30_000, heartbeat_period_ms=30_000)
    with pytest.raises(ConfigurationError, match="lease_duration_ms"):
        LeaderLock(items, "w", lease_duration_ms=0)


def test_a_lock_item_without_version_number_is_reported(
    database: Path, new_lock: functools.partial[LeaderLock]
) -> None:
    coordinator(database).put_if_absent(LEADER_KEY, {"ownerName": "someone"})
    lock = new_lock("worker-a")
    with pytest.raises(MalformedItemError, match="delete the item"):
        lock.try_acquire()
    assert lock.is_leader() is False


def test_an_unreadable_lease_duration_counts_as_ours(clock: FakeClock, database: Path) -> None:
    coordinator(database).put_if_absent(
        LEADER_KEY, {"ownerName": "someone", "leaseDuration": "forever", "recordVersionNumber": "r1"}
    )
    lock = LeaderLock(coordinator(database), "worker-a", lease_duration_ms=60_000, clock=clock.reader(0))
    assert lock.try_acquire() is False
    clock.advance(60.001)
    assert lock.try_acquire() is True


# -------------------------------------------------------------------------------------------- on DynamoDB


class Server(Protocol):
    @property
    def endpoint_url(self) -> str: ...


@pytest.mark.aws
@pytest.mark.parametrize("layout", ["single-table", "legacy"])
def test_the_dynamodb_item_is_the_lock_clients(moto_server: Server, clock: FakeClock, layout: Layout) -> None:
    endpoint = moto_server.endpoint_url
    app = f"lock-app-{uuid.uuid4().hex[:10]}"
    store = DynamoDBLeaseStore(
        DynamoDBLeaseStoreConfig(table_name=app, table_poll_interval_s=0.05),
        endpoint_url=endpoint,
        region_name="us-east-1",
    )
    store.create_table_if_not_exists()
    items, _, _ = open_dynamodb_item_tables(store, app, layout=layout)
    items.create_if_not_exists()
    raw: DynamoDBClient = boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1")
    key_attribute = "leaseKey" if layout == "single-table" else "key"

    def raw_item() -> dict[str, Any]:
        response = raw.get_item(TableName=items.table_name, Key={key_attribute: {"S": "Leader"}}, ConsistentRead=True)
        return dict(response.get("Item", {}))

    lock = LeaderLock(items, "worker-a", clock=clock.reader(0))
    assert lock.try_acquire()
    item = raw_item()
    rvn = item["recordVersionNumber"]["S"]
    expected = {
        key_attribute: {"S": "Leader"},
        "ownerName": {"S": "worker-a"},
        "leaseDuration": {"S": "120000"},
        "recordVersionNumber": {"S": rvn},
    }
    if layout == "single-table":
        expected["entityType"] = {"S": "LEADER"}
    assert item == expected
    assert str(uuid.UUID(rvn)) == rvn

    clock.advance(HEARTBEAT_S)
    assert lock.heartbeat()
    after = raw_item()
    assert after.keys() == item.keys()
    assert after["recordVersionNumber"]["S"] != rvn

    # A lock written by a Java worker (raw), then abandoned: taken over after the lease duration.
    assert lock.release()
    assert raw_item() == {}
    java_item: dict[str, Any] = {
        key_attribute: {"S": "Leader"},
        "ownerName": {"S": "java-worker"},
        "leaseDuration": {"S": "10000"},
        "recordVersionNumber": {"S": "11111111-2222-3333-4444-555555555555"},
        "data": {"B": b"opaque"},
    }
    if layout == "single-table":
        java_item["entityType"] = {"S": "LEADER"}
    raw.put_item(TableName=items.table_name, Item=java_item)
    contender = LeaderLock(items, "worker-b", clock=clock.reader(5))
    assert contender.try_acquire() is False
    clock.advance(10.001)
    assert contender.try_acquire() is True
    taken = raw_item()
    assert taken["ownerName"] == {"S": "worker-b"}
    assert taken["leaseDuration"] == {"S": "120000"}
    assert taken["data"] == {"B": b"opaque"}  # the lock client keeps data it does not own
    assert store.list_leases() == []
