"""``shardwise run`` (argument and config errors only: no worker is started here) and ``shardwise leases``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from shardwise.backends.sqlite.leases import SQLiteLeaseStore
from shardwise.checkpoint.sequence import SHARD_END, TRIM_HORIZON, ExtendedSequenceNumber
from shardwise.cli.main import cli
from shardwise.cli.run import load_factory
from shardwise.errors import ConfigurationError
from shardwise.hashkeys import MAX_HASH_KEY, HashKeyRange
from shardwise.leases.model import Lease
from shardwise.processor import BaseRecordProcessor

P, C1, C2, X = (f"shardId-00000000000{i}" for i in range(4))


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "cli.db"


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def fails(*args: str, message: str) -> Result:
    result = invoke(*args)
    assert result.exit_code != 0, result.output
    assert message in result.output, result.output
    assert "Traceback" not in result.output
    return result


def test_help_lists_the_commands() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    commands = result.output.split("Commands:")[1].split()
    for name in ("demo", "leases", "run", "stream"):
        assert name in commands


def test_run_help() -> None:
    result = invoke("run", "--help")
    assert result.exit_code == 0
    assert "MODULE:FACTORY" in result.output
    assert "--set" in result.output


# -- run: errors before any worker starts ------------------------------------------------------------------------


def run_args(db: Path, processor: str, *more: str) -> list[str]:
    return ["run", processor, "--app", "app", "--stream", "orders", "--db", str(db), *more]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        pytest.param("shardwise.processor", "MODULE:FACTORY", id="no-colon"),
        pytest.param(":Processor", "MODULE:FACTORY", id="no-module"),
        pytest.param("shardwise.processor:", "MODULE:FACTORY", id="no-attribute"),
        pytest.param("no_such_module_for_shardwise_tests:Processor", "cannot import module", id="missing-module"),
        pytest.param("shardwise.processor:NoSuchProcessor", "has no attribute 'NoSuchProcessor'", id="missing-attr"),
        pytest.param("shardwise.cli.run:__all__", "is not callable", id="not-callable"),
    ],
)
def test_run_with_a_bad_processor_spec(db: Path, spec: str, message: str) -> None:
    result = fails(*run_args(db, spec), message=message)
    assert result.exit_code == 1


def test_load_factory_resolves_dotted_attributes() -> None:
    def resolve(spec: str) -> object:
        return load_factory(spec)

    assert resolve("shardwise.processor:BaseRecordProcessor") is BaseRecordProcessor
    assert resolve("shardwise.processor:BaseRecordProcessor.shard_ended") is BaseRecordProcessor.shard_ended
    with pytest.raises(ConfigurationError, match="no_such_module_for_shardwise_tests"):
        load_factory("no_such_module_for_shardwise_tests:X")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        pytest.param(["--set", "no_such_key=1"], "no_such_key", id="unknown-top-level"),
        pytest.param(["--set", "leases.no_such_key=1"], "leases.no_such_key", id="unknown-section-key"),
        pytest.param(["--set", "consumer.max_records=many"], "consumer.max_records", id="wrong-type"),
        pytest.param(["--set", "nothing-to-set"], "KEY=VALUE", id="no-equals"),
        pytest.param(["--set", "dynamodb_read_timeout_ms=0"], "dynamodb_read_timeout_ms", id="zero-timeout"),
        pytest.param(["--set", "kinesis_max_attempts=100"], "kinesis_max_attempts", id="too-many-attempts"),
        pytest.param(["--set", "leases.local_expiry_margin_ms=9000"], "renewal interval", id="margin-too-big"),
        pytest.param(["--set", "consumer.max_checkpoint_failures=0"], "max_checkpoint_failures", id="no-failures"),
        pytest.param(["--initial-position", "AT_TIMESTAMP"], "initial_timestamp", id="at-timestamp-no-stamp"),
        pytest.param(
            ["--initial-position", "AT_TIMESTAMP", "--initial-timestamp", "2026-01-01T00:00:00"],
            "time zone",
            id="timestamp-without-zone",
        ),
    ],
)
def test_run_with_a_bad_setting(db: Path, extra: list[str], message: str) -> None:
    fails(*run_args(db, "shardwise.processor:BaseRecordProcessor", *extra), message=message)


def test_run_with_a_bad_config_file_key(db: Path, tmp_path: Path) -> None:
    config = tmp_path / "worker.toml"
    config.write_text("[leases]\nfailover_time = 2000\n", encoding="utf-8")
    fails(
        *run_args(db, "shardwise.processor:BaseRecordProcessor", "--config", str(config)),
        message="leases.failover_time",
    )


def test_run_with_a_missing_config_file(db: Path, tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    fails(*run_args(db, "x:y", "--config", str(missing)), message="does not exist")


def test_run_without_an_application_name_names_the_flag(db: Path) -> None:
    fails("run", "x:y", "--stream", "orders", "--db", str(db), message="--app")
    fails("run", "x:y", "--app", "app", "--db", str(db), message="--stream")


# -- leases ----------------------------------------------------------------------------------------------------------


def test_leases_of_an_unknown_application(db: Path) -> None:
    SQLiteLeaseStore(db, "other").create_table_if_not_exists()
    result = fails("leases", "--app", "missing-app", "--db", str(db), message="'missing-app'")
    assert "no lease table" in result.output
    fails("leases", "--app", "missing-app", "--db", str(db), "--json", message="no lease table")


@pytest.fixture
def populated(db: Path) -> Path:
    store = SQLiteLeaseStore(db, "app")
    store.create_table_if_not_exists()
    lower = HashKeyRange(0, 2**127 - 1)
    upper = HashKeyRange(2**127, MAX_HASH_KEY)
    leases = [
        Lease(P, SHARD_END, lease_owner="worker-a", lease_counter=9, child_shard_ids=frozenset({C1, C2})),
        Lease(
            C1,
            ExtendedSequenceNumber("49000000000000000000000000000000000000000000000000000123", 4),
            lease_owner="worker-a",
            lease_counter=3,
            parent_shard_ids=frozenset({P}),
            hash_key_range=lower,
        ),
        Lease(
            C2,
            TRIM_HORIZON,
            lease_owner="worker-b",
            lease_counter=1,
            parent_shard_ids=frozenset({P}),
            hash_key_range=upper,
        ),
        Lease(X, TRIM_HORIZON),
    ]
    for lease in leases:
        assert store.create_lease_if_not_exists(lease) is not None
    store.close()
    return db


def test_leases_table(populated: Path) -> None:
    result = invoke("leases", "--app", "app", "--db", str(populated))
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["LEASE", "KEY", "OWNER", "COUNTER", "CHECKPOINT", "PARENTS", "CHILDREN"]
    rows = {line.split()[0]: line.split() for line in lines[1:5]}
    assert rows[P] == [P, "worker-a", "9", "SHARD_END", "-", f"{C1},{C2}"]
    assert rows[C1] == [
        C1,
        "worker-a",
        "3",
        "49000000000000000000000000000000000000000000000000000123/4",
        P,
        "-",
    ]
    assert rows[C2] == [C2, "worker-b", "1", "TRIM_HORIZON", P, "-"]
    assert rows[X] == [X, "-", "0", "TRIM_HORIZON", "-", "-"]
    assert "4 lease(s); per owner: (unassigned)=1, worker-a=2, worker-b=1" in result.output


def test_leases_json(populated: Path) -> None:
    result = invoke("leases", "--app", "app", "--db", str(populated), "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["application"] == "app"
    assert doc["table"] == "app"
    assert doc["leasesPerOwner"] == {"worker-a": 2, "worker-b": 1, "(unassigned)": 1}
    by_key = {row["leaseKey"]: row for row in doc["leases"]}
    assert list(by_key) == [P, C1, C2, X]
    assert by_key[P]["leaseOwner"] == "worker-a"
    assert by_key[P]["leaseCounter"] == 9
    assert by_key[P]["checkpoint"] == "SHARD_END"
    assert by_key[P]["childShardIds"] == [C1, C2]
    assert by_key[P]["parentShardIds"] == []
    assert by_key[C1]["checkpoint"] == "49000000000000000000000000000000000000000000000000000123"
    assert by_key[C1]["checkpointSubSequenceNumber"] == 4
    assert by_key[C1]["parentShardIds"] == [P]
    assert by_key[C1]["pendingCheckpoint"] is None
    assert by_key[X]["leaseOwner"] is None
    assert by_key[X]["leaseCounter"] == 0


def test_leases_with_a_separate_table_name(db: Path) -> None:
    store = SQLiteLeaseStore(db, "custom-table")
    store.create_table_if_not_exists()
    store.create_lease_if_not_exists(Lease(P, TRIM_HORIZON, lease_owner="w"))
    result = invoke("leases", "--app", "app", "--table", "custom-table", "--db", str(db), "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["table"] == "custom-table"
    assert [row["leaseKey"] for row in doc["leases"]] == [P]


def test_leases_of_an_empty_table(db: Path) -> None:
    SQLiteLeaseStore(db, "app").create_table_if_not_exists()
    result = invoke("leases", "--app", "app", "--db", str(db))
    assert result.exit_code == 0, result.output
    assert "0 lease(s)" in result.output
