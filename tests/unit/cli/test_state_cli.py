"""``shardwise state describe|restore|wipe`` on the SQLite backend (a lease table and the changelog in one file,
real local stores in a state directory), one ``describe`` on DynamoDB (moto); and the counting processor's
read-back (:func:`~shardwise.demo.counting.leaf_counts`, ``merge_state``)."""

from __future__ import annotations

import json
import sqlite3
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from shardwise.admin.state import local_store_path
from shardwise.backends import open_backend
from shardwise.backends.aws.leases import DynamoDBLeaseStore, DynamoDBLeaseStoreConfig
from shardwise.backends.sqlite.leases import SQLiteLeaseStore
from shardwise.checkpoint.sequence import TRIM_HORIZON, ExtendedSequenceNumber
from shardwise.cli.main import cli
from shardwise.config import BackendConfig
from shardwise.demo.counting import CountingProcessor, leaf_counts
from shardwise.hashkeys import MAX_HASH_KEY, HashKeyRange, hash_key_for
from shardwise.leases.model import Lease
from shardwise.leases.store import LeaseStore
from shardwise.retrieval.model import Shard
from shardwise.state.engines import open_local_store
from shardwise.state.port import FORMAT_IN_STORE, Changelog, CommitMeta

REGION = "us-east-1"
HELD, FREE, BARE = "shardId-000000000000", "shardId-000000000001", "shardId-000000000002"
POSITION = ExtendedSequenceNumber("49590338271490256608559692538361571095921575989136588898")


@dataclass
class App:
    name: str
    leases: LeaseStore
    changelog: Changelog
    state_dir: Path
    args: list[str]

    def run(self, *args: str) -> Result:
        result = CliRunner().invoke(
            cli,
            ["state", *args, "--app", self.name, "--state-dir", str(self.state_dir), *self.args],
            catch_exceptions=False,
        )
        assert "Traceback" not in result.output
        return result


def _fill(leases: LeaseStore, changelog: Changelog) -> None:
    leases.create_table_if_not_exists()
    assert leases.create_lease_if_not_exists(Lease(HELD, POSITION, lease_owner="w-1", lease_counter=3))
    assert leases.create_lease_if_not_exists(Lease(FREE, TRIM_HORIZON, lease_counter=1))
    assert leases.create_lease_if_not_exists(Lease(BARE, TRIM_HORIZON, lease_counter=1))
    changelog.ensure_exists()
    changelog.append(HELD, [(b"a", b"1"), (b"b", b"2")], CommitMeta(1, POSITION, "L1"), format_level=FORMAT_IN_STORE)
    free_meta = CommitMeta(1, ExtendedSequenceNumber("100"), "L2")
    changelog.append(FREE, [(b"x", b"10"), (b"y", b"20")], free_meta, format_level=FORMAT_IN_STORE)
    later = CommitMeta(2, ExtendedSequenceNumber("200"), "L2")
    changelog.append(FREE, [(b"y", None), (b"z", b"30")], later, format_level=FORMAT_IN_STORE)


@pytest.fixture
def app(tmp_path: Path) -> App:
    db = tmp_path / "state.db"
    leases = SQLiteLeaseStore(db, "app")
    changelog = open_backend(BackendConfig(backend="local", db=str(db))).open_changelog("app")
    _fill(leases, changelog)
    return App("app", leases, changelog, tmp_path / "state", ["--db", str(db)])


def test_describe_lists_each_shard_from_the_changelog_and_the_leases(app: App) -> None:
    result = app.run("describe", "--json")

    assert result.exit_code == 0, result.output
    rows = {row["shardId"]: row for row in json.loads(result.output)["shards"]}
    assert set(rows) == {HELD, FREE, BARE}
    free = rows[FREE]
    assert (free["formatLevel"], free["formatFrom"], free["commit"]) == (FORMAT_IN_STORE, "changelog", 2)
    assert (free["committedPosition"], free["leaseCheckpoint"], free["keyCount"]) == ("200", "TRIM_HORIZON", 2)
    assert free["changelogItems"] >= 2 and free["changelogBytes"] > 0
    assert rows[HELD]["leaseOwner"] == "w-1" and rows[HELD]["keyCount"] == 2
    assert rows[BARE]["formatLevel"] is None and rows[BARE]["commit"] is None


def test_describe_table_reads_the_level_of_a_local_store(app: App) -> None:
    assert app.run("restore", "--shard", FREE).exit_code == 0

    result = app.run("describe")

    assert result.exit_code == 0, result.output
    line = next(line for line in result.output.splitlines() if line.startswith(FREE))
    assert "2 (local)" in line and "200" in line
    assert next(line for line in result.output.splitlines() if line.startswith(HELD)).split()[-1] == "w-1"


def test_restore_rebuilds_the_local_store_from_the_changelog(app: App) -> None:
    result = app.run("restore", "--shard", FREE)

    assert result.exit_code == 0, result.output
    assert f"restored {FREE}: 2 key(s) at commit 2" in result.output
    opened = open_local_store(
        local_store_path(app.state_dir, app.name, FREE),
        shard_id=FREE,
        engine="sqlite",
        write_level=FORMAT_IN_STORE,
        readable_level=FORMAT_IN_STORE,
    )
    try:
        assert dict(opened.store.range()) == {b"x": b"10", b"z": b"30"}
        assert opened.store.committed() == CommitMeta(2, ExtendedSequenceNumber("200"), "L2")
    finally:
        opened.store.close()


def test_restore_and_wipe_refuse_a_held_lease_unless_forced(app: App) -> None:
    for command in ("restore", "wipe"):
        refused = app.run(command, "--shard", HELD)
        assert refused.exit_code == 1
        assert refused.output.count("\n") == 1 and "held by 'w-1'" in refused.output and "--force" in refused.output

    assert app.run("restore", "--shard", HELD, "--force").exit_code == 0
    assert local_store_path(app.state_dir, app.name, HELD).exists()


def test_wipe_deletes_the_local_store_and_with_changelog_the_changelog(app: App) -> None:
    assert app.run("restore", "--shard", FREE).exit_code == 0

    kept = app.run("wipe", "--shard", FREE)
    assert kept.exit_code == 0 and "deleted its local store" in kept.output
    assert not local_store_path(app.state_dir, app.name, FREE).exists()
    assert app.changelog.head(FREE) is not None

    gone = app.run("wipe", "--shard", FREE, "--changelog")
    assert gone.exit_code == 0 and "deleted its changelog" in gone.output
    assert app.changelog.head(FREE) is None


def test_bad_input_gets_one_line_and_exit_1(app: App, tmp_path: Path) -> None:
    unknown = app.run("restore", "--shard", "shardId-999")
    assert unknown.exit_code == 1 and unknown.output.count("\n") == 1 and "no shard 'shardId-999'" in unknown.output

    nothing = app.run("restore", "--shard", BARE)
    assert nothing.exit_code == 1 and nothing.output.count("\n") == 1 and "has no changelog" in nothing.output

    no_table = CliRunner().invoke(cli, ["state", "describe", "--app", "nope", "--db", str(tmp_path / "state.db")])
    assert no_table.exit_code == 1 and no_table.output.count("\n") == 1 and "no lease table" in no_table.output


def test_describe_names_a_corrupt_local_store_and_exits_1_and_restore_repairs_it(app: App) -> None:
    assert app.run("restore", "--shard", FREE).exit_code == 0
    store_dir = local_store_path(app.state_dir, app.name, FREE)
    for path in store_dir.iterdir():
        if path.is_file() and path.stat().st_size > 0:
            path.write_bytes(b"this is not a database" * 10)
    before = sorted((p.name, p.read_bytes()) for p in store_dir.iterdir() if p.is_file())

    result = app.run("describe")

    assert result.exit_code == 1
    assert f"shardwise state restore --app app --shard {FREE}" in result.output.splitlines()[-1]
    assert sorted((p.name, p.read_bytes()) for p in store_dir.iterdir() if p.is_file()) == before  # untouched
    assert app.run("restore", "--shard", FREE).exit_code == 0
    assert app.run("describe").exit_code == 0


@pytest.mark.aws
def test_describe_on_dynamodb(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    endpoint = request.getfixturevalue("moto_server").endpoint_url
    name = f"state-cli-{uuid.uuid4().hex[:10]}"
    leases = DynamoDBLeaseStore(
        DynamoDBLeaseStoreConfig(table_name=name, table_poll_interval_s=0.05), endpoint_url=endpoint, region_name=REGION
    )
    config = BackendConfig(backend="aws", region=REGION, endpoint_url=endpoint)
    changelog = open_backend(config).open_changelog(name)
    _fill(leases, changelog)
    app = App(
        name,
        leases,
        changelog,
        tmp_path / "state",
        ["--backend", "aws", "--region", REGION, "--endpoint-url", endpoint],
    )

    result = app.run("describe", "--json")

    assert result.exit_code == 0, result.output
    rows = {row["shardId"]: row for row in json.loads(result.output)["shards"]}
    assert (rows[FREE]["commit"], rows[FREE]["keyCount"], rows[HELD]["leaseOwner"]) == (2, 2, "w-1")


def test_counts_are_read_from_each_keys_leaf_shard(app: App) -> None:
    middle = MAX_HASH_KEY // 2
    parent = Shard("p", HashKeyRange(0, MAX_HASH_KEY), "0", ending_sequence_number="9")
    low = Shard("low", HashKeyRange(0, middle), "10", parent_shard_id="p")
    high = Shard("high", HashKeyRange(middle + 1, MAX_HASH_KEY), "10", parent_shard_id="p")
    keys = [f"k{i}" for i in range(20)]
    low_keys = [k for k in keys if hash_key_for(k) <= middle]
    # Both children hold every key (a split hands each the parent's state); only the leaf's count is the key's.
    for shard_id, mine in (("low", set(low_keys)), ("high", set(keys) - set(low_keys))):
        changes = [(k.encode(), b"7" if k in mine else b"1") for k in keys]
        app.changelog.append(shard_id, changes, CommitMeta(1, TRIM_HORIZON, shard_id), format_level=2)

    assert leaf_counts(app.changelog, [parent, low, high], keys) == dict.fromkeys(keys, 7)


def test_a_merge_keeps_the_larger_count() -> None:
    processor = CountingProcessor()
    assert processor.merge_state(b"k", b"3", b"12") == b"12"
    assert processor.merge_state(b"k", b"12", b"3") == b"12"


def test_a_changelog_item_of_the_wrong_shape_is_named_and_wipe_starts_the_shard_over(app: App, tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "state.db") as conn:
        conn.execute("UPDATE shardwise_state_heads SET commit_no = 'one' WHERE shard_id = ?", (FREE,))

    result = app.run("restore", "--shard", FREE)
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    assert FREE in result.output and "commit" in result.output
    assert not local_store_path(app.state_dir, app.name, FREE).exists()  # nothing half-restored

    # describe still lists every shard, marks the bad one and names the item and the fix; exit 1.
    result = app.run("describe")
    assert result.exit_code == 1, result.output
    rows = {line.split()[0]: line for line in result.stdout.splitlines()[1:] if line.startswith("shardId")}
    assert set(rows) == {HELD, FREE, BARE}
    assert "malformed" in rows[FREE] and "malformed" not in rows[HELD]
    assert f"changelog of {FREE}: item" in result.stderr and "commit" in result.stderr
    assert f"shardwise state wipe --app {app.name} --shard {FREE} --changelog" in result.stderr

    result = app.run("wipe", "--shard", FREE, "--changelog")
    assert result.exit_code == 0, result.output
    assert "deleted its changelog" in result.output
    assert app.changelog.head(FREE) is None
    assert app.run("describe").exit_code == 0


@pytest.mark.aws
def test_a_missing_changelog_table_gets_one_line(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    endpoint = request.getfixturevalue("moto_server").endpoint_url
    name = f"state-cli-{uuid.uuid4().hex[:10]}"
    leases = DynamoDBLeaseStore(
        DynamoDBLeaseStoreConfig(table_name=name, table_poll_interval_s=0.05), endpoint_url=endpoint, region_name=REGION
    )
    leases.create_table_if_not_exists()
    args = ["--backend", "aws", "--region", REGION, "--endpoint-url", endpoint]

    result = CliRunner().invoke(cli, ["state", "describe", "--app", name, *args], catch_exceptions=False)

    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    assert f"{name}-state" in result.output and "--changelog-table" in result.output
