"""Worker configuration: TOML file + overrides → validated WorkerConfig / BackendConfig, with errors naming keys."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from shardwise.config import BackendConfig, build_config, load_config_file, merged, parse_override
from shardwise.errors import ConfigurationError
from shardwise.leasing.shard_sync import InitialPosition, InitialPositionKind

FULL_TOML = """
application_name = "orders"
stream_name = "orders-stream"
worker_id = "worker-7"
lease_table_name = "orders-leases"
backend = "aws"
db = "ignored.db"
region = "eu-west-1"
endpoint_url = "http://localhost:4566"
dynamodb_endpoint_url = "http://localhost:8000"
initial_position = "AT_TIMESTAMP"
initial_timestamp = "2026-11-21T00:00:00Z"
shard_sync_interval_ms = 30000
max_consumer_threads = 4
dispatch_poll_interval_ms = 10
shutdown_timeout_ms = 5000

[leases]
failover_time_ms = 2000
epsilon_ms = 10
max_leases_for_worker = 5
max_leases_to_steal_at_one_time = 2
enable_priority_lease_assignment = false
very_old_lease_duration_multiplier = 4

[consumer]
max_records = 500
idle_time_between_reads_ms = 200
call_process_records_even_for_empty_list = true
parent_shard_poll_interval_ms = 1000
task_backoff_time_ms = 250
"""

NAMES = {"application_name": "app", "stream_name": "s"}
STAMP = datetime(2026, 11, 21, tzinfo=timezone.utc)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "shardwise.toml"
    path.write_text(text, encoding="utf-8")
    return path


def fails(values: dict[str, Any], *fragments: str) -> ConfigurationError:
    with pytest.raises(ConfigurationError) as info:
        build_config(values)
    for fragment in fragments:
        assert fragment in str(info.value)
    return info.value


# -- building -----------------------------------------------------------------------------------------------------


def test_build_config_from_a_full_file(tmp_path: Path) -> None:
    worker, backend = build_config(load_config_file(write(tmp_path, FULL_TOML)))
    assert worker.application_name == "orders"
    assert worker.stream_name == "orders-stream"
    assert worker.worker_id == "worker-7"
    assert worker.table_name == "orders-leases"
    assert worker.initial_position == InitialPosition.at_timestamp(STAMP)
    assert worker.shard_sync_interval_ms == 30_000
    assert worker.max_consumer_threads == 4
    assert worker.dispatch_poll_interval_ms == 10
    assert worker.shutdown_timeout_ms == 5_000
    leases = worker.leases
    assert (leases.failover_time_ms, leases.epsilon_ms) == (2_000, 10)
    assert (leases.max_leases_for_worker, leases.max_leases_to_steal_at_one_time) == (5, 2)
    assert leases.enable_priority_lease_assignment is False
    assert leases.very_old_lease_duration_multiplier == 4
    consumer = worker.consumer
    assert consumer.max_records == 500
    assert consumer.idle_time_between_reads_ms == 200
    assert consumer.call_process_records_even_for_empty_list is True
    assert consumer.parent_shard_poll_interval_ms == 1_000
    assert consumer.task_backoff_time_ms == 250
    assert consumer.initial_timestamp == STAMP  # the consumer needs it for leases at AT_TIMESTAMP
    assert backend == BackendConfig(
        backend="aws",
        db="ignored.db",
        region="eu-west-1",
        endpoint_url="http://localhost:4566",
        dynamodb_endpoint_url="http://localhost:8000",
    ).with_failover_time(2_000)  # the call limits follow the file's failover time
    assert backend.kinesis_endpoint == "http://localhost:4566"
    assert backend.dynamodb_endpoint == "http://localhost:8000"


def test_defaults_are_kcls(tmp_path: Path) -> None:
    worker, backend = build_config(NAMES)
    assert worker.initial_position.kind is InitialPositionKind.LATEST
    assert worker.table_name == "app"
    assert worker.worker_id  # generated
    assert worker.leases.failover_time_ms == 10_000
    assert worker.consumer.max_records == 10_000
    assert worker.consumer.idle_time_between_reads_ms == 1_500
    assert worker.consumer.initial_timestamp is None
    assert backend == BackendConfig().with_failover_time(10_000)


def test_a_toml_datetime_is_accepted_as_initial_timestamp(tmp_path: Path) -> None:
    text = 'application_name = "a"\nstream_name = "s"\ninitial_position = "AT_TIMESTAMP"\n'
    text += "initial_timestamp = 2026-11-21T02:00:00+02:00\n"
    worker, _ = build_config(load_config_file(write(tmp_path, text)))
    assert worker.initial_position.timestamp == STAMP


def test_build_config_from_overrides_only() -> None:
    values = merged(
        {},
        dict(
            [
                parse_override("application_name=billing"),
                parse_override("stream_name=billing-stream"),
                parse_override("initial_position=TRIM_HORIZON"),
                parse_override("leases.failover_time_ms=3000"),
                parse_override("consumer.max_records=25"),
                parse_override("consumer.call_process_records_even_for_empty_list=true"),
                parse_override("worker_metrics.lease_throughput_ema_alpha=0.5"),
                parse_override('db="/tmp/x.db"'),
            ]
        ),
    )
    worker, backend = build_config(values)
    assert worker.worker_metrics.lease_throughput_ema_alpha == 0.5  # KCL's fixed smoothing, for whoever wants it
    assert (worker.application_name, worker.stream_name) == ("billing", "billing-stream")
    assert worker.initial_position == InitialPosition.trim_horizon()
    assert worker.leases.failover_time_ms == 3_000
    assert worker.consumer.max_records == 25
    assert worker.consumer.call_process_records_even_for_empty_list is True
    assert backend.db == "/tmp/x.db"


def test_build_config_does_not_modify_its_input() -> None:
    values: dict[str, Any] = {**NAMES, "leases": {"failover_time_ms": 3000}, "initial_position": "LATEST"}
    snapshot = {**values, "leases": dict(values["leases"])}
    build_config(values)
    assert values == snapshot


# -- errors name the key ---------------------------------------------------------------------------------------


def test_unknown_top_level_key() -> None:
    fails({**NAMES, "failover_time_ms": 1000}, "failover_time_ms", "valid top-level keys", "[leases]")


def test_unknown_section_key() -> None:
    fails({**NAMES, "leases": {"failover_ms": 1000}}, "leases.failover_ms", "failover_time_ms")
    fails({**NAMES, "consumer": {"max_record": 5}}, "consumer.max_record", "max_records")


def test_a_section_given_as_a_value() -> None:
    fails({**NAMES, "leases": 5}, "leases", "section")


@pytest.mark.parametrize(
    ("values", "key"),
    [
        pytest.param({"leases": {"failover_time_ms": "2000"}}, "leases.failover_time_ms", id="string-for-int"),
        pytest.param({"leases": {"failover_time_ms": True}}, "leases.failover_time_ms", id="bool-for-int"),
        pytest.param({"consumer": {"max_records": 1.5}}, "consumer.max_records", id="float-for-int"),
        pytest.param(
            {"leases": {"enable_priority_lease_assignment": 1}},
            "leases.enable_priority_lease_assignment",
            id="int-for-bool",
        ),
        pytest.param({"max_consumer_threads": "4"}, "max_consumer_threads", id="string-for-int-top"),
        pytest.param({"shutdown_timeout_ms": False}, "shutdown_timeout_ms", id="bool-for-int-top"),
        pytest.param({"worker_id": 7}, "worker_id", id="int-for-str"),
        pytest.param({"region": ["eu"]}, "region", id="list-for-optional-str"),
        pytest.param({"backend": "gcp"}, "backend", id="bad-literal"),
        pytest.param({"consumer": {"initial_timestamp": 5}}, "consumer.initial_timestamp", id="int-for-datetime"),
    ],
)
def test_wrong_types_name_the_key(values: dict[str, Any], key: str) -> None:
    fails({**NAMES, **values}, f"config key {key} must be")


def test_values_out_of_range_are_reported() -> None:
    fails({**NAMES, "leases": {"failover_time_ms": 0}}, "failover_time_ms")
    fails({**NAMES, "consumer": {"max_records": 10_001}}, "max_records")
    fails({**NAMES, "max_consumer_threads": 0}, "max_consumer_threads")


def test_bad_initial_position() -> None:
    fails({**NAMES, "initial_position": "EARLIEST"}, "initial_position", "EARLIEST", "TRIM_HORIZON")
    fails({**NAMES, "initial_position": 3}, "initial_position")


def test_at_timestamp_without_a_timestamp() -> None:
    fails({**NAMES, "initial_position": "AT_TIMESTAMP"}, "initial_timestamp", "AT_TIMESTAMP")


def test_timestamp_without_a_zone() -> None:
    values = {**NAMES, "initial_position": "AT_TIMESTAMP", "initial_timestamp": "2026-11-21T00:00:00"}
    fails(values, "initial_timestamp", "time zone")
    naive = {**values, "initial_timestamp": datetime(2026, 11, 21)}
    fails(naive, "initial_timestamp", "time zone")
    fails({**values, "consumer": {"initial_timestamp": "2026-11-21T00:00:00"}}, "consumer.initial_timestamp")


def test_timestamp_that_is_not_a_timestamp() -> None:
    values = {**NAMES, "initial_position": "AT_TIMESTAMP"}
    fails({**values, "initial_timestamp": "yesterday"}, "initial_timestamp", "ISO 8601")


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(20261121, id="int"),
        pytest.param(datetime(2026, 11, 21, tzinfo=timezone.utc).date(), id="toml-date"),
        pytest.param(["2026-11-21T00:00:00Z"], id="list"),
    ],
)
def test_timestamp_of_the_wrong_type(value: object) -> None:
    fails({**NAMES, "initial_position": "AT_TIMESTAMP", "initial_timestamp": value}, "initial_timestamp")


def test_a_toml_date_in_the_file_is_a_configuration_error(tmp_path: Path) -> None:
    text = 'application_name = "a"\nstream_name = "s"\ninitial_position = "AT_TIMESTAMP"\n'
    text += "initial_timestamp = 2026-11-21\n"
    fails(load_config_file(write(tmp_path, text)), "initial_timestamp")


def test_a_timestamp_with_an_offset_is_kept() -> None:
    stamp = "2026-11-21T01:00:00+01:00"
    worker, _ = build_config({**NAMES, "initial_position": "AT_TIMESTAMP", "initial_timestamp": stamp})
    assert worker.initial_position.timestamp == STAMP
    assert worker.initial_position.timestamp is not None
    assert worker.initial_position.timestamp.utcoffset() == timedelta(hours=1)


@pytest.mark.parametrize(
    ("missing", "flag"),
    [("application_name", "--app"), ("stream_name", "--stream")],
)
def test_missing_names_name_the_flag(missing: str, flag: str) -> None:
    values = {key: value for key, value in NAMES.items() if key != missing}
    fails(values, missing, flag)
    fails({**values, missing: ""}, missing, flag)


# -- files ----------------------------------------------------------------------------------------------------------


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="does not exist"):
        load_config_file(tmp_path / "nope.toml")


def test_invalid_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="not valid TOML"):
        load_config_file(write(tmp_path, "application_name = \n"))


# -- overrides -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("leases.failover_time_ms=2000", ("leases.failover_time_ms", 2000)),
        (" consumer.max_records = 10 ", ("consumer.max_records", 10)),
        (
            "consumer.call_process_records_even_for_empty_list=true",
            ("consumer.call_process_records_even_for_empty_list", True),
        ),
        ("leases.enable_priority_lease_assignment=false", ("leases.enable_priority_lease_assignment", False)),
        ('stream_name="orders"', ("stream_name", "orders")),
        ("stream_name='orders'", ("stream_name", "orders")),
        ("stream_name=orders", ("stream_name", "orders")),
        ("initial_position=TRIM_HORIZON", ("initial_position", "TRIM_HORIZON")),
        ("db=/tmp/with spaces/x.db", ("db", "/tmp/with spaces/x.db")),
        ("endpoint_url=http://localhost:4566", ("endpoint_url", "http://localhost:4566")),
        ("worker_id=a=b", ("worker_id", "a=b")),
        ("worker_id=12abc", ("worker_id", "12abc")),
    ],
)
def test_parse_override(text: str, expected: tuple[str, Any]) -> None:
    key, value = parse_override(text)
    assert (key, value) == expected
    assert type(value) is type(expected[1])


def test_parse_override_of_a_timestamp() -> None:
    assert parse_override("initial_timestamp=2026-11-21T00:00:00Z") == ("initial_timestamp", STAMP)


@pytest.mark.parametrize("text", ["leases.failover_time_ms", "=5", "  =5", ""])
def test_parse_override_needs_key_and_equals(text: str) -> None:
    with pytest.raises(ConfigurationError, match="KEY=VALUE"):
        parse_override(text)


def test_merged_precedence() -> None:
    file_values: dict[str, Any] = {
        "stream_name": "from-file",
        "db": "file.db",
        "leases": {"failover_time_ms": 1000, "epsilon_ms": 5},
    }
    overrides = {
        "stream_name": "from-flag",
        "db": None,  # an unset flag does not override
        "leases.failover_time_ms": 4000,
        "consumer.max_records": 7,
    }
    result = merged(file_values, overrides)
    assert result == {
        "stream_name": "from-flag",
        "db": "file.db",
        "leases": {"failover_time_ms": 4000, "epsilon_ms": 5},
        "consumer": {"max_records": 7},
    }
    assert file_values["leases"] == {"failover_time_ms": 1000, "epsilon_ms": 5}  # not modified


def test_merged_refuses_a_section_key_under_a_value() -> None:
    with pytest.raises(ConfigurationError, match="'stream_name' is a value, not a section"):
        merged({"stream_name": "s"}, {"stream_name.x": 1})


def test_the_state_section() -> None:
    worker, _ = build_config(
        {
            "application_name": "a",
            "stream_name": "s",
            "state": {"dir": "/var/lib/counts", "engine": "rocksdb", "commit_interval_ms": 250},
        }
    )
    assert (worker.state.dir, worker.state.engine, worker.state.commit_interval_ms) == (
        "/var/lib/counts",
        "rocksdb",
        250,
    )
    assert worker.state.changelog_table is None
    default, _ = build_config({"application_name": "a", "stream_name": "s"})
    assert (default.state.dir, default.state.engine, default.state.commit_interval_ms) == (
        "shardwise-state",
        "sqlite",
        5000,
    )


@pytest.mark.parametrize(
    ("state", "message"),
    [
        ({"engine": "lmdb"}, "config key state.engine must be 'sqlite' or 'rocksdb', got 'lmdb'"),
        ({"commit_interval_ms": 0}, "state.commit_interval_ms must be > 0, got 0"),
        ({"dir": ""}, "state.dir must name a directory"),
        ({"changelog_table": ""}, "state.changelog_table must not be empty"),
        (
            {"interval": 1},
            "unknown config key(s) state.interval; valid keys in state: changelog_table, commit_interval_ms",
        ),
    ],
)
def test_bad_state_settings_name_the_key(state: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        build_config({"application_name": "a", "stream_name": "s", "state": state})
    assert message in str(raised.value)


# -- [retrieval]: the client that reads records ---------------------------------------------------------------

NAMES = {"application_name": "app", "stream_name": "s"}


def test_the_fast_client_reads_records_by_default() -> None:
    _, backend = build_config(NAMES)
    assert backend.retrieval.client == "fast"
    assert BackendConfig().retrieval.client == "fast"


def test_retrieval_client_from_set_and_from_the_file(tmp_path: Path) -> None:
    _, backend = build_config(merged(NAMES, dict([parse_override("retrieval.client=boto3")])))
    assert backend.retrieval.client == "boto3"
    text = 'application_name = "a"\nstream_name = "s"\nbackend = "aws"\n[retrieval]\nclient = "boto3"\n'
    _, backend = build_config(load_config_file(write(tmp_path, text)))
    assert (backend.backend, backend.retrieval.client) == ("aws", "boto3")
    # The limits are still derived: the section does not replace the rest of the backend config.
    assert backend.kinesis_read_timeout_ms == 10_000


@pytest.mark.parametrize(
    ("retrieval", "message"),
    [
        ({"client": "curl"}, "config key retrieval.client must be 'fast' or 'boto3', got 'curl'"),
        ({"client": 1}, "config key retrieval.client must be 'fast' or 'boto3', got 1"),
        ({"clients": "fast"}, "unknown config key(s) retrieval.clients; valid keys in retrieval: client"),
    ],
)
def test_a_bad_retrieval_client_is_one_line_listing_the_choices(retrieval: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        build_config({**NAMES, "retrieval": retrieval})
    assert str(caught.value) == message


def test_retrieval_is_a_section_not_a_top_level_key() -> None:
    with pytest.raises(ConfigurationError, match=r"unknown config key\(s\) client"):
        build_config({**NAMES, "client": "boto3"})
    with pytest.raises(ConfigurationError, match=r"config key retrieval must be a section \(\[retrieval\]\)"):
        build_config({**NAMES, "retrieval": "boto3"})
