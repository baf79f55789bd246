"""The Changelog contract (issue 14): the durable copy of each shard's state behaves the same on the embedded
SQLite backend and on DynamoDB (moto server).

A plan restores exactly the head's state — never part of an unfinished commit or a fenced-off writer's chunks —,
a stale append loses with ``ChangelogConflictError`` (two racing appenders: exactly one wins), compaction keeps the
state identical, and bad items or a missing table are named errors.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import pytest

from shardwise.backends.aws.backend import AwsBackend
from shardwise.backends.aws.changelog import DynamoDBChangelog
from shardwise.backends.sqlite.backend import SQLiteBackend
from shardwise.backends.sqlite.leases import SQLiteLeaseStore
from shardwise.checkpoint.sequence import SHARD_END, TRIM_HORIZON, ExtendedSequenceNumber
from shardwise.errors import (
    ChangelogConflictError,
    ChangelogMissingError,
    MalformedItemError,
    StateStoreError,
)
from shardwise.state.port import (
    FORMAT_IN_STORE,
    Change,
    Changelog,
    CommitMeta,
    StoreStats,
    restore_from,
)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient

SHARD = "shardId-000000000001"
LINEAGE = "a" * 32
SMALL_CHUNK = 2048  # DynamoDB: small chunks, so a commit of a few hundred changes spans more than 25 items


def pos(n: int) -> ExtendedSequenceNumber:
    return ExtendedSequenceNumber(str(49_000_000_000 + n), 0)


def meta(commit: int, lineage: str = LINEAGE) -> CommitMeta:
    return CommitMeta(commit, pos(commit), lineage)


class Backend:
    """One changelog under test, with raw access to its table for the tests that break it."""

    def __init__(self, kind: str, changelog: Changelog, raw: Any) -> None:
        self.kind = kind
        self.changelog = changelog
        self.raw = raw


def _dynamodb_client(endpoint_url: str) -> DynamoDBClient:
    return boto3.client("dynamodb", endpoint_url=endpoint_url, region_name="us-east-1")


@pytest.fixture(params=["sqlite", pytest.param("dynamodb", marks=pytest.mark.aws)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        sqlite_backend = SQLiteBackend(tmp_path / "state.db")
        changelog = sqlite_backend.open_changelog("app")
        changelog.ensure_exists()
        return Backend("sqlite", changelog, sqlite_backend.database)
    client = _dynamodb_client(request.getfixturevalue("moto_server").endpoint_url)
    changelog = DynamoDBChangelog(client, f"app-{uuid.uuid4().hex[:8]}-state", chunk_bytes=SMALL_CHUNK)
    changelog.ensure_exists()
    return Backend("dynamodb", changelog, client)


@pytest.fixture
def dynamodb(moto_server: Any) -> DynamoDBChangelog:
    """The DynamoDB changelog alone: chunks and writers exist only there (SQLite appends in one transaction)."""
    client = _dynamodb_client(moto_server.endpoint_url)
    changelog = DynamoDBChangelog(client, f"app-{uuid.uuid4().hex[:8]}-state", chunk_bytes=SMALL_CHUNK)
    changelog.ensure_exists()
    return changelog


class DictStore:
    """A LocalStore in a dict (the real engines are tested in tests/contract/test_state_store.py)."""

    def __init__(self, shard_id: str = SHARD) -> None:
        self._shard = shard_id
        self.data: dict[bytes, bytes] = {}
        self._pending: dict[bytes, bytes | None] = {}
        self._meta: CommitMeta | None = None

    @property
    def shard_id(self) -> str:
        return self._shard

    @property
    def format_level(self) -> int:
        return FORMAT_IN_STORE

    def get(self, key: bytes) -> bytes | None:
        return self._pending[key] if key in self._pending else self.data.get(key)

    def put(self, key: bytes, value: bytes) -> None:
        self._pending[key] = value

    def delete(self, key: bytes) -> None:
        self._pending[key] = None

    def _view(self) -> dict[bytes, bytes]:
        view = dict(self.data)
        for key, value in self._pending.items():
            if value is None:
                view.pop(key, None)
            else:
                view[key] = value
        return view

    def range(self, start: bytes | None = None, end: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        for key, value in sorted(self._view().items()):
            if (start is None or key >= start) and (end is None or key < end):
                yield key, value

    def __len__(self) -> int:
        return len(self._view())

    def committed(self) -> CommitMeta | None:
        return self._meta

    def pending(self) -> list[Change]:
        return sorted(self._pending.items())

    def has_pending(self) -> bool:
        return bool(self._pending)

    def commit(self, meta: CommitMeta) -> None:
        self.data = self._view()
        self._pending.clear()
        self._meta = meta

    def discard(self) -> None:
        self._pending.clear()

    def restore(self, changes: Iterator[Change], meta: CommitMeta, *, replace: bool) -> int:
        assert not self._pending
        if replace:
            self.data.clear()
        applied = 0
        for key, value in changes:
            applied += 1
            if value is None:
                self.data.pop(key, None)
            else:
                self.data[key] = value
        self._meta = meta
        return applied

    def stats(self) -> StoreStats:
        return StoreStats(len(self.data), sum(len(k) + len(v) for k, v in self.data.items()))

    def close(self) -> None:
        pass


def commit_through(changelog: Changelog, store: DictStore, changes: dict[bytes, bytes | None], number: int) -> None:
    """The framework's commit order: the changelog first, then the local store."""
    for key, value in changes.items():
        if value is None:
            store.delete(key)
        else:
            store.put(key, value)
    changelog.append(SHARD, store.pending(), meta(number), format_level=FORMAT_IN_STORE)
    store.commit(meta(number))


def full_state(changelog: Changelog, shard_id: str = SHARD) -> dict[bytes, bytes]:
    plan = changelog.plan_restore(shard_id, lineage=None, after_commit=None)
    assert plan is not None
    assert plan.full
    state: dict[bytes, bytes] = {}
    for key, value in plan.changes:
        assert value is not None, "a full plan holds no tombstones"
        state[key] = value
    return state


def history(changelog: Changelog, store: DictStore, commits: int, keys: int = 40) -> None:
    """``commits`` commits of puts, overwrites and deletes over ``keys`` keys."""
    for number in range(1, commits + 1):
        changes: dict[bytes, bytes | None] = {}
        for k in range(keys):
            if (k + number) % 5 == 0:
                changes[b"k%03d" % k] = None
            elif (k * number) % 3 != 1:
                changes[b"k%03d" % k] = b"v%d.%d" % (number, k)
        commit_through(changelog, store, changes, number)


# ------------------------------------------------------------------------------------------------ the seam


def test_open_changelog_is_named_after_the_application(tmp_path: Path) -> None:
    backend = SQLiteBackend(tmp_path / "seam.db")
    assert backend.open_changelog("orders").name == "orders-state"
    assert backend.open_changelog("orders", table_name="custom").name == "custom"
    aws = AwsBackend(_dynamodb_client("http://127.0.0.1:9"))  # opening makes no call
    assert aws.open_changelog("orders").name == "orders-state"


# ------------------------------------------------------------------------------------------------ appends, plans


def test_no_changelog_means_no_head_and_no_plan(backend: Backend) -> None:
    assert backend.changelog.head(SHARD) is None
    assert backend.changelog.plan_restore(SHARD, lineage=None, after_commit=None) is None
    assert backend.changelog.stats(SHARD) is None
    assert backend.changelog.shard_ids() == []


def test_append_moves_the_head_and_a_full_plan_holds_the_state(backend: Backend) -> None:
    changelog = backend.changelog
    store = DictStore()
    history(changelog, store, commits=4)
    head = changelog.head(SHARD)
    assert head is not None
    assert (head.commit, head.position, head.lineage, head.format_level) == (4, pos(4), LINEAGE, FORMAT_IN_STORE)
    assert full_state(changelog) == store.data
    assert changelog.shard_ids() == [SHARD]
    stats = changelog.stats(SHARD)
    assert stats is not None
    assert stats.key_count == len(store.data)
    assert stats.items >= 1
    assert stats.size_bytes > 0


def test_a_delta_plan_holds_only_what_a_store_lacks(backend: Backend) -> None:
    changelog = backend.changelog
    writer = DictStore()
    history(changelog, writer, commits=2)
    behind = DictStore()
    assert restore_from(changelog, behind, SHARD) is not None
    assert behind.data == writer.data
    assert behind.committed() == meta(2)
    commit_through(changelog, writer, {b"k001": None, b"new": b"n", b"k002": b"changed"}, 3)

    plan = changelog.plan_restore(SHARD, lineage=LINEAGE, after_commit=2)
    assert plan is not None
    assert not plan.full
    assert sorted(plan.changes) == [(b"k001", None), (b"k002", b"changed"), (b"new", b"n")]

    result = restore_from(changelog, behind, SHARD)
    assert result is not None
    assert result[0].commit == 3
    assert behind.data == writer.data
    up_to_date = changelog.plan_restore(SHARD, lineage=LINEAGE, after_commit=3)
    assert up_to_date is not None
    assert not up_to_date.full
    assert list(up_to_date.changes) == []


def test_another_lineage_or_a_store_ahead_restores_in_full(backend: Backend) -> None:
    changelog = backend.changelog
    writer = DictStore()
    history(changelog, writer, commits=3)
    for lineage, after in (("b" * 32, 3), (LINEAGE, 9)):
        plan = changelog.plan_restore(SHARD, lineage=lineage, after_commit=after)
        assert plan is not None
        assert plan.full
    stranger = DictStore()
    stranger.put(b"only-here", b"x")
    stranger.commit(CommitMeta(7, pos(7), "b" * 32))
    restore_from(changelog, stranger, SHARD)
    assert stranger.data == writer.data
    assert stranger.committed() == meta(3)


def test_a_stale_append_is_a_conflict(backend: Backend) -> None:
    changelog = backend.changelog
    history(changelog, DictStore(), commits=2)
    for bad in (meta(2), meta(4), meta(3, "b" * 32), meta(1, "c" * 32)):
        with pytest.raises(ChangelogConflictError, match="no longer owns the shard"):
            changelog.append(SHARD, [(b"x", b"y")], bad, format_level=FORMAT_IN_STORE)
    assert changelog.head(SHARD) is not None
    assert full_state(changelog).get(b"x") is None


def test_two_racing_appenders_exactly_one_wins(backend: Backend) -> None:
    changelog = backend.changelog
    history(changelog, DictStore(), commits=1)
    barrier = threading.Barrier(2)
    outcomes: dict[str, str] = {}

    def appender(name: str) -> None:
        barrier.wait()
        try:
            changelog.append(SHARD, [(b"winner", name.encode())], meta(2), format_level=FORMAT_IN_STORE)
            outcomes[name] = "won"
        except ChangelogConflictError:
            outcomes[name] = "lost"

    threads = [threading.Thread(target=appender, args=(name,)) for name in ("left", "right")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [name for name, outcome in outcomes.items() if outcome == "won"]
    assert len(winners) == 1, outcomes
    assert full_state(changelog)[b"winner"] == winners[0].encode()


def test_a_big_commit_is_whole(backend: Backend) -> None:
    changelog = backend.changelog
    store = DictStore()
    big = {b"key-%05d" % i: bytes([i % 251]) * 100 for i in range(600)}  # DynamoDB: ~35 chunks of 2 KB
    commit_through(changelog, store, dict(big), 1)
    commit_through(changelog, store, {b"key-%05d" % i: None for i in range(0, 600, 2)}, 2)
    assert full_state(changelog) == store.data
    assert len(store.data) == 300


# ------------------------------------------------------------------------------------------------ DynamoDB chunks


@pytest.mark.aws
def test_an_unfinished_commit_is_invisible_and_harmless(dynamodb: DynamoDBChangelog) -> None:
    changelog = dynamodb
    store = DictStore()
    history(changelog, store, commits=2)
    before = full_state(changelog)
    head = changelog.head(SHARD)
    unfinished = [(b"ghost-%04d" % i, b"g" * 200) for i in range(300)]  # more than 25 chunk items
    assert changelog.write_chunks(SHARD, unfinished, meta(3), writer="crashed", prev_writer="whatever") > 25
    assert changelog.head(SHARD) == head
    assert full_state(changelog) == before
    delta = changelog.plan_restore(SHARD, lineage=LINEAGE, after_commit=2)
    assert delta is not None
    assert list(delta.changes) == []

    commit_through(changelog, store, {b"real": b"r"}, 3)
    assert full_state(changelog) == store.data
    assert b"ghost-0000" not in store.data
    delta = changelog.plan_restore(SHARD, lineage=LINEAGE, after_commit=2)
    assert delta is not None
    assert list(delta.changes) == [(b"real", b"r")]


@pytest.mark.aws
def test_a_zombie_writers_chunks_are_ignored(dynamodb: DynamoDBChangelog) -> None:
    changelog = dynamodb
    owner = DictStore()
    history(changelog, owner, commits=1)
    # The zombie (which lost the lease) writes commits 2 and 3 under its own writer id, interleaved with the owner.
    changelog.write_chunks(SHARD, [(b"k001", b"zombie-2")], meta(2), writer="zombie", prev_writer="x")
    commit_through(changelog, owner, {b"k001": b"owner-2"}, 2)
    changelog.write_chunks(SHARD, [(b"k002", b"zombie-3")], meta(3), writer="zombie", prev_writer="zombie")
    commit_through(changelog, owner, {b"k003": b"owner-3"}, 3)
    with pytest.raises(ChangelogConflictError):  # its head update: fenced off
        changelog.append(SHARD, [(b"k004", b"zombie-4")], meta(3), format_level=FORMAT_IN_STORE)
    assert full_state(changelog) == owner.data
    delta = changelog.plan_restore(SHARD, lineage=LINEAGE, after_commit=1)
    assert delta is not None
    assert dict(delta.changes) == {b"k001": b"owner-2", b"k003": b"owner-3"}


@pytest.mark.aws
def test_a_change_over_the_chunk_limit_is_refused_before_anything_is_written(dynamodb: DynamoDBChangelog) -> None:
    changelog = dynamodb
    history(changelog, DictStore(), commits=1)
    head = changelog.head(SHARD)
    stats = changelog.stats(SHARD)
    with pytest.raises(StateStoreError, match=r"chunk limit of \d+ bytes"):
        changelog.append(SHARD, [(b"small", b"s"), (b"huge", b"h" * SMALL_CHUNK)], meta(2), format_level=2)
    assert changelog.head(SHARD) == head
    assert changelog.stats(SHARD) == stats  # not one chunk written


# ------------------------------------------------------------------------------------------------ compaction


def test_compaction_keeps_the_state_identical(backend: Backend) -> None:
    changelog = backend.changelog
    store = DictStore()
    history(changelog, store, commits=8)
    assert changelog.needs_compaction(SHARD)
    before = full_state(changelog)
    items_before = changelog.stats(SHARD)
    changelog.compact(SHARD, store.range(), meta(8))
    assert not changelog.needs_compaction(SHARD)
    assert full_state(changelog) == before == store.data
    items_after = changelog.stats(SHARD)
    assert items_before is not None
    assert items_after is not None
    assert items_after.items < items_before.items  # tombstones / old log chunks are gone
    assert items_after.key_count == len(store.data)

    old = changelog.plan_restore(SHARD, lineage=LINEAGE, after_commit=5)  # its log is gone: full
    assert old is not None
    assert old.full
    current = changelog.plan_restore(SHARD, lineage=LINEAGE, after_commit=8)
    assert current is not None
    assert not current.full
    commit_through(changelog, store, {b"k000": b"after", b"k010": None}, 9)
    delta = changelog.plan_restore(SHARD, lineage=LINEAGE, after_commit=8)
    assert delta is not None
    assert sorted(delta.changes) == [(b"k000", b"after"), (b"k010", None)]
    assert full_state(changelog) == store.data


def test_compaction_at_a_commit_that_is_not_the_head_is_a_conflict(backend: Backend) -> None:
    changelog = backend.changelog
    store = DictStore()
    history(changelog, store, commits=3)
    with pytest.raises(ChangelogConflictError):
        changelog.compact(SHARD, store.range(), meta(2))
    assert full_state(changelog) == store.data


def test_delete_forgets_the_shard_only(backend: Backend) -> None:
    changelog = backend.changelog
    history(changelog, DictStore(), commits=2)
    changelog.append("other", [(b"o", b"1")], meta(1), format_level=FORMAT_IN_STORE)
    changelog.delete(SHARD)
    assert changelog.head(SHARD) is None
    assert changelog.shard_ids() == ["other"]
    assert full_state(changelog, "other") == {b"o": b"1"}
    changelog.append(SHARD, [(b"again", b"1")], CommitMeta(1, SHARD_END, "d" * 32), format_level=1)
    assert full_state(changelog) == {b"again": b"1"}


# ------------------------------------------------------------------------------------------------ bad input


def test_a_head_of_the_wrong_shape_is_a_malformed_item(backend: Backend) -> None:
    changelog = backend.changelog
    history(changelog, DictStore(), commits=1)
    if backend.kind == "sqlite":
        with backend.raw.transaction() as conn:
            conn.execute("UPDATE shardwise_state_heads SET commit_no = 'one' WHERE shard_id = ?", (SHARD,))
    else:
        backend.raw.update_item(
            TableName=changelog.name,
            Key={"shard": {"S": SHARD}, "sk": {"S": "head"}},
            UpdateExpression="SET #c = :bad",
            ExpressionAttributeNames={"#c": "commit"},
            ExpressionAttributeValues={":bad": {"S": "one"}},
        )
    with pytest.raises(MalformedItemError, match=SHARD) as caught:
        changelog.head(SHARD)
    assert "commit" in caught.value.problem


def test_a_state_row_of_the_wrong_shape_is_a_malformed_item(backend: Backend) -> None:
    changelog = backend.changelog
    history(changelog, DictStore(), commits=1)
    if backend.kind == "sqlite":
        with backend.raw.transaction() as conn:
            conn.execute("UPDATE shardwise_state_kv SET value = 'text, not bytes' WHERE key = ?", (b"k000",))
    else:
        items = backend.raw.query(
            TableName=changelog.name,
            KeyConditionExpression="#p = :p AND begins_with(sk, :log)",
            ExpressionAttributeNames={"#p": "shard"},
            ExpressionAttributeValues={":p": {"S": SHARD}, ":log": {"S": "log#"}},
        )["Items"]
        backend.raw.update_item(
            TableName=changelog.name,
            Key={"shard": items[0]["shard"], "sk": items[0]["sk"]},
            UpdateExpression="SET #d = :bad",
            ExpressionAttributeNames={"#d": "data"},
            ExpressionAttributeValues={":bad": {"B": b"SWC1\x00\x00\x00\x09truncated"}},
        )
    with pytest.raises(MalformedItemError, match=SHARD):
        full_state(changelog)


@pytest.mark.aws
def test_a_committed_chunk_gone_missing_is_a_malformed_item(dynamodb: DynamoDBChangelog, moto_server: Any) -> None:
    history(dynamodb, DictStore(), commits=2)
    client = _dynamodb_client(moto_server.endpoint_url)
    items = client.query(
        TableName=dynamodb.name,
        KeyConditionExpression="#p = :p AND begins_with(sk, :log)",
        ExpressionAttributeNames={"#p": "shard"},
        ExpressionAttributeValues={":p": {"S": SHARD}, ":log": {"S": "log#00000000000000000001#"}},
    )["Items"]
    client.delete_item(TableName=dynamodb.name, Key={"shard": items[0]["shard"], "sk": items[0]["sk"]})
    with pytest.raises(MalformedItemError, match=f"{SHARD}/log#00000000000000000001#"):
        full_state(dynamodb)
    delta = dynamodb.plan_restore(SHARD, lineage=LINEAGE, after_commit=1)  # does not need commit 1
    assert delta is not None
    assert not delta.full


def test_applications_sharing_a_database_file_have_their_own_changelogs(tmp_path: Path) -> None:
    backend = SQLiteBackend(tmp_path / "shared.db")
    orders, payments = backend.open_changelog("orders"), backend.open_changelog("payments")
    orders.append(SHARD, [(b"o", b"1")], meta(1), format_level=FORMAT_IN_STORE)
    assert payments.head(SHARD) is None
    assert payments.shard_ids() == []
    assert orders.shard_ids() == [SHARD]


def test_a_database_without_the_state_tables_gets_them(tmp_path: Path) -> None:
    path = tmp_path / "leases-only.db"
    SQLiteLeaseStore(path, "app").create_table_if_not_exists()
    changelog = SQLiteBackend(path).open_changelog("app")
    assert changelog.head(SHARD) is None  # created on first use
    changelog.append(SHARD, [(b"k", b"v")], CommitMeta(1, TRIM_HORIZON, LINEAGE), format_level=FORMAT_IN_STORE)
    assert full_state(changelog) == {b"k": b"v"}


@pytest.mark.aws
def test_a_missing_dynamodb_table_is_named_with_the_fix(moto_server: Any) -> None:
    client = _dynamodb_client(moto_server.endpoint_url)
    changelog = DynamoDBChangelog(client, f"gone-{uuid.uuid4().hex[:8]}-state", chunk_bytes=SMALL_CHUNK)
    with pytest.raises(ChangelogMissingError, match=changelog.name) as caught:
        changelog.head(SHARD)
    assert "restart the worker to create it" in str(caught.value)
    changelog.ensure_exists()
    changelog.append(SHARD, [(b"k", b"v")], meta(1), format_level=FORMAT_IN_STORE)
    client.delete_table(TableName=changelog.name)
    with pytest.raises(ChangelogMissingError, match=changelog.name):
        changelog.append(SHARD, [(b"k", b"w")], meta(2), format_level=FORMAT_IN_STORE)
    changelog.ensure_exists()  # a restarted worker re-creates it (and re-seeds it from its store)
    assert changelog.head(SHARD) is None
