"""``shardwise leases`` with malformed lease items (shown with what is wrong, exit 1) and ``shardwise leases
repair`` (dry run, repair, already valid, missing key, lost race, bad input), on SQLite and on DynamoDB (moto)."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from shardwise.backends import open_lease_store
from shardwise.backends.aws.leases import DynamoDBLeaseStore, DynamoDBLeaseStoreConfig
from shardwise.backends.sqlite.leases import SQLiteLeaseStore
from shardwise.checkpoint.sequence import TRIM_HORIZON, ExtendedSequenceNumber
from shardwise.cli import leases as leases_cli
from shardwise.cli.main import cli
from shardwise.config import BackendConfig
from shardwise.leases.model import Lease
from shardwise.leases.store import LeaseStore, RawLeaseItem
from support.lease_corruption import corrupt

REGION = "us-east-1"
GOOD, BAD, OTHER = (f"shardId-00000000000{i}" for i in range(3))
CHECKPOINT = ExtendedSequenceNumber("49590338271490256608559692538361571095921575989136588898")


@dataclass
class Table:
    app: str
    store: LeaseStore
    args: list[str]

    def run(self, *args: str) -> Result:
        command = list(args)
        split = 2 if command[:2] == ["leases", "repair"] else 1
        return CliRunner().invoke(
            cli, [*command[:split], "--app", self.app, *self.args, *command[split:]], catch_exceptions=False
        )


@pytest.fixture(params=["sqlite", pytest.param("dynamodb", marks=pytest.mark.aws)])
def table(request: pytest.FixtureRequest, tmp_path: Path) -> Table:
    store: LeaseStore
    if request.param == "sqlite":
        db = tmp_path / "cli.db"
        store = SQLiteLeaseStore(db, "app")
        found = Table("app", store, ["--db", str(db)])
    else:
        endpoint = request.getfixturevalue("moto_server").endpoint_url
        name = f"leases-cli-{uuid.uuid4().hex[:10]}"
        store = DynamoDBLeaseStore(
            DynamoDBLeaseStoreConfig(table_name=name, table_poll_interval_s=0.05),
            endpoint_url=endpoint,
            region_name=REGION,
        )
        found = Table(name, store, ["--backend", "aws", "--region", REGION, "--endpoint-url", endpoint])
    store.create_table_if_not_exists()
    assert store.create_lease_if_not_exists(Lease(GOOD, TRIM_HORIZON, lease_owner="w-1", lease_counter=3))
    assert store.create_lease_if_not_exists(Lease(BAD, CHECKPOINT, lease_owner="w-2", lease_counter=8))
    return found


def test_leases_lists_malformed_items_and_exits_non_zero(table: Table) -> None:
    corrupt(table.store, BAD, ("lease_counter", "abc"), {"leaseCounter": {"S": "abc"}})

    result = table.run("leases")

    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = result.output.splitlines()
    assert any(line.startswith(GOOD) for line in lines)  # the good lease is still listed
    assert any(BAD in line and "leaseCounter" in line for line in lines)  # the bad one with what is wrong
    assert lines[-1].startswith("Error: 1 lease item(s) cannot be read")
    assert f"shardwise leases repair --app {table.app}" in lines[-1] and f"--shard {BAD}" in lines[-1]


def test_leases_json_has_a_malformed_list(table: Table) -> None:
    corrupt(table.store, BAD, ("checkpoint", b"\x01"), {"checkpoint": {"N": "1"}})

    result = table.run("leases", "--json")

    assert result.exit_code == 1
    document = result.stdout
    doc = json.loads(document)
    assert [row["leaseKey"] for row in doc["leases"]] == [GOOD]
    assert [m["leaseKey"] for m in doc["malformed"]] == [BAD]
    assert "checkpoint" in doc["malformed"][0]["problem"]
    assert "shardwise leases repair" in result.stderr


def test_leases_exits_zero_when_every_item_reads(table: Table) -> None:
    result = table.run("leases", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["malformed"] == []


def test_repair_dry_run_then_repair(table: Table) -> None:
    corrupt(table.store, BAD, ("lease_counter", 2.5), {"leaseCounter": {"N": "2.5"}})

    dry = table.run("leases", "repair", "--shard", BAD, "--dry-run")

    assert dry.exit_code == 0, dry.output
    assert "before:" in dry.output and "after:" in dry.output and "not written" in dry.output
    assert "2.5" in dry.output.split("after:")[0]
    assert table.store.get_lease(BAD) is None  # still malformed: nothing written

    done = table.run("leases", "repair", "--shard", BAD)

    assert done.exit_code == 0, done.output
    assert "repaired" in done.output
    lease = table.store.get_lease(BAD)
    assert lease is not None
    assert lease.checkpoint == CHECKPOINT  # readable checkpoint kept
    assert lease.lease_owner == "w-2"
    assert table.run("leases").exit_code == 0


def test_repair_with_an_unreadable_checkpoint_and_an_explicit_one(table: Table) -> None:
    corrupt(table.store, BAD, ("checkpoint", "garbage"), {"checkpoint": {"S": "garbage"}})

    result = table.run("leases", "repair", "--shard", BAD, "--checkpoint", "12345/2")

    assert result.exit_code == 0, result.output
    lease = table.store.get_lease(BAD)
    assert lease is not None and lease.checkpoint == ExtendedSequenceNumber("12345", 2)


def test_repair_of_a_readable_lease_is_nothing_to_do(table: Table) -> None:
    before = table.store.get_lease(GOOD)
    result = table.run("leases", "repair", "--shard", GOOD)
    assert result.exit_code == 0, result.output
    assert "nothing to repair" in result.output
    assert table.store.get_lease(GOOD) == before


def test_repair_of_a_missing_key_fails_clearly(table: Table) -> None:
    result = table.run("leases", "repair", "--shard", OTHER)
    assert result.exit_code == 1
    assert f"no lease item {OTHER!r}" in result.output
    assert "Traceback" not in result.output


def test_repair_with_a_bad_checkpoint_option(table: Table) -> None:
    corrupt(table.store, BAD, ("lease_counter", "abc"), {"leaseCounter": {"S": "abc"}})
    result = table.run("leases", "repair", "--shard", BAD, "--checkpoint", "soon")
    assert result.exit_code == 2
    assert "'soon' is not a checkpoint" in result.output
    assert table.store.get_lease(BAD) is None


def test_app_given_before_the_subcommand(tmp_path: Path) -> None:
    db = tmp_path / "cli.db"
    store = SQLiteLeaseStore(db, "app")
    store.create_table_if_not_exists()
    store.create_lease_if_not_exists(Lease(GOOD, TRIM_HORIZON))
    runner = CliRunner()
    result = runner.invoke(cli, ["leases", "--app", "app", "--db", str(db), "repair", "--shard", GOOD])
    assert result.exit_code == 0, result.output
    assert "nothing to repair" in result.output
    missing = runner.invoke(cli, ["leases", "--db", str(db)])
    assert missing.exit_code == 2 and "--app" in missing.output


def test_repair_that_loses_a_race_writes_nothing_and_fails_clearly(
    table: Table, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Someone writes the item between the command's read and its replace (a real write, on the real store)."""
    corrupt(table.store, BAD, ("lease_counter", "abc"), {"leaseCounter": {"S": "abc"}})
    opened = open_lease_store

    def open_racing(backend: BackendConfig, table_name: str) -> LeaseStore:
        store = opened(backend, table_name)
        read = store.read_raw_lease

        def read_then_someone_writes(key: str) -> RawLeaseItem | None:
            raw = read(key)
            corrupt(table.store, key, ("lease_owner", "w-9"), {"leaseOwner": {"S": "w-9"}})
            return raw

        setattr(store, "read_raw_lease", read_then_someone_writes)  # noqa: B010 - instance hook, real store
        return store

    monkeypatch.setattr(leases_cli, "open_lease_store", open_racing)

    result = table.run("leases", "repair", "--shard", BAD)

    assert result.exit_code == 1
    assert "changed since it was read" in result.output
    assert "Traceback" not in result.output
    after = table.store.read_raw_lease(BAD)
    assert after is not None and after.problem is not None and after.fields["leaseOwner"] == "w-9"
