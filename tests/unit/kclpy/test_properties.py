"""amazon-kclpy ``.properties`` files: the Java syntax, the mapping onto shardwise's configuration, unknown and
unsupported keys, and ``shardwise run --kclpy-properties`` (up to the worker, which is replaced here)."""

from __future__ import annotations

import math
import re
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from shardwise.cli import run as run_module
from shardwise.cli.main import cli
from shardwise.config import build_config, merged
from shardwise.errors import ConfigurationError
from shardwise.kclpy.keys import IGNORED_KEYS, MAPPED_KEYS
from shardwise.kclpy.properties import (
    KclpyProperties,
    load_properties,
    map_properties,
    parse_properties,
    parse_properties_lines,
)
from shardwise.leasing.shard_sync import InitialPositionKind

# -- the Java .properties syntax ---------------------------------------------------------------------------------


def test_the_three_separators_and_blanks_around_them() -> None:
    text = "a=1\nb = 2\nc:3\nd : 4\ne 5\n  f\t=\t6\ng   :  = 7\n"
    assert parse_properties(text) == {"a": "1", "b": "2", "c": "3", "d": "4", "e": "5", "f": "6", "g": "= 7"}


def test_comments_and_blank_lines() -> None:
    text = "# a comment\n! another\n   # indented comment\n\n   \nkey = value # not a comment\n"
    assert parse_properties(text) == {"key": "value # not a comment"}


def test_a_key_without_a_value() -> None:
    assert parse_properties("alone\nempty =\ncolon:\n") == {"alone": "", "empty": "", "colon": ""}


def test_line_continuations() -> None:
    text = "fruits = apple, \\\n         banana, \\\n    # not a comment here\nnext = 1\n"
    assert parse_properties(text) == {"fruits": "apple, banana, # not a comment here", "next": "1"}


def test_an_even_number_of_trailing_backslashes_does_not_continue() -> None:
    assert parse_properties("path = C:\\\\\nnext = 1\n") == {"path": "C:\\", "next": "1"}


def test_a_comment_line_never_continues() -> None:
    assert parse_properties("# comment \\\nkey = value\n") == {"key": "value"}


def test_a_continuation_at_the_end_of_the_file() -> None:
    assert parse_properties("key = value\\") == {"key": "value"}


def test_escapes() -> None:
    text = "tab = a\\tb\nnl = a\\nb\nuni = caf\\u00e9\npair = \\uD83D\\uDE00\nother = \\q\\=\\:\nmy\\ key\\=x = v\n"
    assert parse_properties(text) == {
        "tab": "a\tb",
        "nl": "a\nb",
        "uni": "café",
        "pair": "\N{GRINNING FACE}",
        "other": "q=:",
        "my key=x": "v",
    }


def test_a_malformed_unicode_escape_is_an_error_naming_the_line() -> None:
    with pytest.raises(ConfigurationError, match=r"line 2: malformed \\uxxxx escape"):
        parse_properties("ok = 1\nbad = \\u12g4\n")


def test_line_endings_and_later_keys_winning() -> None:
    assert parse_properties("a = 1\r\nb = 2\rc = 3\na = 4") == {"a": "4", "b": "2", "c": "3"}


def test_entries_keep_their_line_numbers() -> None:
    entries = parse_properties_lines("# head\n\na = 1\nb = x \\\n  y\nc = 3\n")
    assert [(e.key, e.value, e.line) for e in entries] == [("a", "1", 3), ("b", "x y", 4), ("c", "3", 6)]


# -- mapping -----------------------------------------------------------------------------------------------------

SAMPLE = """\
# As amazon-kclpy's samples/sample.properties, with the usual keys uncommented.
executableName = sample_kclpy_app.py
streamName = kclpysample
applicationName = PythonKCLSample
AwsCredentialsProvider = DefaultCredentialsProvider
processingLanguage = python/3.8
initialPositionInStream = TRIM_HORIZON
regionName = us-east-1
failoverTimeMillis = 10000
#workerId =
shardSyncIntervalMillis = 60000
maxRecords = 10000
idleTimeBetweenReadsInMillis = 1000
callProcessRecordsEvenForEmptyRecordList = false
parentShardPollIntervalMillis = 10000
cleanupLeasesUponShardCompletion = true
taskBackoffTimeMillis = 500
metricsBufferTimeMillis = 10000
metricsMaxQueueSize = 10000
validateSequenceNumberBeforeCheckpointing = true
maxActiveThreads = 0
"""


def mapped(text: str, **kwargs: Any) -> KclpyProperties:
    return map_properties(parse_properties_lines(text), source="app.properties", **kwargs)


def configured(props: KclpyProperties, **user: Any) -> Any:
    worker, backend = build_config(merged(merged({}, props.config_values(user)), user))
    return worker, backend


def test_the_sample_properties() -> None:
    props = mapped(SAMPLE)
    assert props.overrides == {
        "backend": "aws",
        "stream_name": "kclpysample",
        "application_name": "PythonKCLSample",
        "initial_position": "TRIM_HORIZON",
        "region": "us-east-1",
        "leases.failover_time_ms": 10000,
        "shard_sync_interval_ms": 60000,
        "consumer.max_records": 10000,
        "consumer.idle_time_between_reads_ms": 1000,
        "consumer.call_process_records_even_for_empty_list": False,
        "consumer.parent_shard_poll_interval_ms": 10000,
        "consumer.task_backoff_time_ms": 500,
    }
    assert props.defaults == {"client_version_config": "3x"}
    assert sorted(item.key for item in props.ignored) == sorted(
        [
            "executableName",
            "AwsCredentialsProvider",
            "processingLanguage",
            "cleanupLeasesUponShardCompletion",
            "metricsBufferTimeMillis",
            "metricsMaxQueueSize",
            "validateSequenceNumberBeforeCheckpointing",
            "maxActiveThreads",
        ]
    )
    executable = next(item for item in props.ignored if item.key == "executableName")
    assert executable.value == "sample_kclpy_app.py"
    assert "--processor" in executable.reason
    worker, backend = configured(props)
    assert worker.application_name == "PythonKCLSample"
    assert worker.table_name == "PythonKCLSample"
    assert worker.stream_name == "kclpysample"
    assert worker.initial_position.kind is InitialPositionKind.TRIM_HORIZON
    assert worker.client_version_config == "3x"
    assert worker.leases.failover_time_ms == 10000
    assert worker.consumer.idle_time_between_reads_ms == 1000
    assert (backend.backend, backend.region) == ("aws", "us-east-1")
    report = "\n".join(props.report_lines())
    assert "ignored (Java daemon only)" in report
    assert "maxActiveThreads = 0" in report
    assert "clientVersionConfig not set" in report


def every_mapped_key() -> dict[str, str]:
    return {
        "applicationName": "orders",
        "tableName": "orders-leases",
        "streamName": "orders-stream",
        "regionName": "eu-west-1",
        "kinesisEndpoint": "http://127.0.0.1:4567",
        "dynamoDBEndpoint": "dynamodb.local:8000",
        "workerId": "worker-a",
        "failoverTimeMillis": "2000",
        "maxLeasesForWorker": "7",
        "maxLeasesToStealAtOneTime": "3",
        "enablePriorityLeaseAssignment": "false",
        "shardSyncIntervalMillis": "1234",
        "maxRecords": "500",
        "idleTimeBetweenReadsInMillis": "250",
        "callProcessRecordsEvenForEmptyRecordList": "TRUE",
        "parentShardPollIntervalMillis": "300",
        "taskBackoffTimeMillis": "100",
        "clientVersionConfig": "CLIENT_VERSION_CONFIG_COMPATIBLE_WITH_2X",
        "leaseAssignmentIntervalMillis": "4000",
        "coordinatorStateTableName": "orders-coordinator",
        "workerMetricsTableName": "orders-metrics",
        "gracefulLeaseHandoffTimeoutMillis": "15000",
        "isGracefulLeaseHandoffEnabled": "no",
        "maxThroughputPerHostKBps": "10240.5",
        "dampeningPercentage": "50",
        "reBalanceThresholdPercentage": "20",
        "allowThroughputOvershoot": "off",
        "varianceBalancingFrequency": "5",
        "workerMetricsEMAAlpha": "0.25",
        "inMemoryWorkerMetricsCaptureFrequencyMillis": "500",
        "workerMetricsReporterFreqInMillis": "10000",
        "noOfPersistedMetricsPerWorkerMetrics": "20",
        "disableWorkerMetrics": "true",
        "staleWorkerMetricsEntryCleanupDuration": "PT15M",
    }


def test_every_mapped_key_reaches_its_config_field() -> None:
    values = every_mapped_key()
    assert set(values) == (set(MAPPED_KEYS) - {"workerIdentifier"}) | {"streamName"}
    worker, backend = configured(map_properties(values))
    assert worker.application_name == "orders"
    assert worker.table_name == "orders-leases"
    assert worker.stream_name == "orders-stream"
    assert worker.worker_id == "worker-a"
    assert backend.backend == "aws"
    assert backend.region == "eu-west-1"
    assert backend.kinesis_endpoint == "http://127.0.0.1:4567"
    assert backend.dynamodb_endpoint == "https://dynamodb.local:8000"  # a bare host means HTTPS
    assert worker.leases.failover_time_ms == 2000
    assert worker.leases.max_leases_for_worker == 7
    assert worker.utilization.max_leases_for_worker == 7
    assert worker.leases.max_leases_to_steal_at_one_time == 3
    assert worker.leases.enable_priority_lease_assignment is False
    assert worker.shard_sync_interval_ms == 1234
    assert worker.consumer.max_records == 500
    assert worker.consumer.idle_time_between_reads_ms == 250
    assert worker.consumer.call_process_records_even_for_empty_list is True
    assert worker.consumer.parent_shard_poll_interval_ms == 300
    assert worker.consumer.task_backoff_time_ms == 100
    assert worker.client_version_config == "compatible-with-2x"
    assert worker.coordination.lease_assignment_interval_ms == 4000
    assert worker.coordination.coordinator_table_name == "orders-coordinator"
    assert worker.coordination.worker_metrics_table_name == "orders-metrics"
    assert worker.utilization.graceful_lease_handoff_timeout_ms == 15000
    assert worker.utilization.graceful_lease_handoff is False
    assert worker.utilization.max_throughput_per_host_kbps == 10240.5
    assert worker.utilization.dampening_percentage == 50
    assert worker.utilization.rebalance_threshold_percentage == 20
    assert worker.utilization.allow_throughput_overshoot is False
    assert worker.utilization.variance_balancing_frequency == 5
    assert worker.utilization.worker_metrics_ema_alpha == 0.25
    assert worker.worker_metrics.ema_alpha == 0.25
    assert worker.worker_metrics.in_memory_capture_frequency_ms == 500
    assert worker.worker_metrics.reporter_frequency_ms == 10000
    assert worker.worker_metrics.persisted_values_per_metric == 20
    assert worker.worker_metrics.disable_worker_metrics is True
    assert worker.worker_metrics.stale_entry_cleanup_ms == 15 * 60_000


def test_worker_identifier_is_another_name_for_worker_id() -> None:
    assert map_properties({"workerIdentifier": "w-9"}).overrides["worker_id"] == "w-9"


def test_the_defaults_when_the_file_sets_little() -> None:
    worker, backend = configured(map_properties({"applicationName": "a", "streamName": "s"}))
    assert worker.initial_position.kind is InitialPositionKind.LATEST  # KCL's default too
    assert worker.client_version_config == "3x"
    assert backend.backend == "aws"
    assert math.isinf(worker.utilization.max_throughput_per_host_kbps)


@pytest.mark.parametrize(
    ("duration", "millis"),
    [("PT15M", 900_000), ("PT10H", 36_000_000), ("P2D", 172_800_000), ("PT1.5S", 1_500), ("P1DT1H1M1S", 90_061_000)],
)
def test_durations(duration: str, millis: int) -> None:
    props = map_properties({"staleWorkerMetricsEntryCleanupDuration": duration})
    assert props.overrides["worker_metrics.stale_entry_cleanup_ms"] == millis


def test_stream_arn_wins_over_the_name_and_gives_the_region() -> None:
    props = mapped(
        "streamName = old-name\nstreamArn = arn:aws:kinesis:eu-central-1:123456789012:stream/orders\n"
        "applicationName = app\n"
    )
    assert props.overrides["stream_name"] == "orders"
    assert props.overrides["region"] == "eu-central-1"
    (ignored,) = [item for item in props.ignored if item.key == "streamName"]
    assert "streamArn takes precedence" in ignored.reason


def test_a_stream_arn_in_another_region_than_region_name_is_an_error() -> None:
    with pytest.raises(ConfigurationError, match="in region eu-central-1 but regionName is us-east-1"):
        mapped("streamArn = arn:aws:kinesis:eu-central-1:123456789012:stream/orders\nregionName = us-east-1\n")


def test_a_malformed_stream_arn_is_an_error() -> None:
    with pytest.raises(ConfigurationError, match=r"streamArn \(app.properties line 1\) is not a Kinesis stream ARN"):
        mapped("streamArn = arn:aws:sqs:us-east-1:123456789012:queue\n")


def test_at_timestamp_from_the_extended_initial_position() -> None:
    props = mapped("applicationName = a\nstreamName = s\ninitialPositionInStreamExtended = 1636609142\n")
    assert props.overrides["initial_position"] == "AT_TIMESTAMP"
    worker, _ = configured(props)
    assert worker.initial_position.kind is InitialPositionKind.AT_TIMESTAMP
    assert worker.initial_position.timestamp == datetime.fromtimestamp(1636609142, tz=timezone.utc)
    assert worker.consumer.initial_timestamp == datetime.fromtimestamp(1636609142, tz=timezone.utc)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("initialPositionInStream = AT_TIMESTAMP\n", "set initialPositionInStreamExtended"),
        ("initialPositionInStream = EARLIEST\n", "must be TRIM_HORIZON or LATEST"),
        (
            "initialPositionInStream = LATEST\ninitialPositionInStreamExtended = 1636609142\n",
            "initialPositionInStream is LATEST: remove one of them",
        ),
        ("initialPositionInStreamExtended = yesterday\n", "must be a Unix time in seconds"),
    ],
)
def test_initial_position_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        mapped(text)


def test_client_version_configs() -> None:
    assert mapped("clientVersionConfig = CLIENT_VERSION_CONFIG_3X\n").overrides["client_version_config"] == "3x"
    two = mapped("clientVersionConfig = CLIENT_VERSION_CONFIG_COMPATIBLE_WITH_2X\n")
    assert two.overrides["client_version_config"] == "compatible-with-2x"
    assert two.defaults == {}
    with pytest.raises(ConfigurationError, match=r"clientVersionConfig .* must be one of CLIENT_VERSION_CONFIG_3X"):
        mapped("clientVersionConfig = CLIENT_VERSION_CONFIG_2X\n")


def test_the_client_version_default_yields_to_a_users_assignment() -> None:
    props = map_properties({"applicationName": "a", "streamName": "s"})
    worker, _ = configured(props, assignment="lease-count-2x")
    assert worker.client_version_config is None
    assert worker.assignment == "lease-count-2x"
    worker, _ = configured(props, client_version_config="compatible-with-2x")
    assert worker.client_version_config == "compatible-with-2x"


def test_the_users_endpoint_url_beats_the_files_per_service_endpoints() -> None:
    props = map_properties(
        {"applicationName": "a", "streamName": "s", "kinesisEndpoint": "http://k:1", "dynamoDBEndpoint": "http://d:2"}
    )
    _, backend = configured(props)
    assert (backend.kinesis_endpoint, backend.dynamodb_endpoint) == ("http://k:1", "http://d:2")
    _, backend = configured(props, endpoint_url="http://both:3")
    assert (backend.kinesis_endpoint, backend.dynamodb_endpoint) == ("http://both:3", "http://both:3")
    _, backend = configured(props, kinesis_endpoint_url="http://k2:4")
    assert (backend.kinesis_endpoint, backend.dynamodb_endpoint) == ("http://k2:4", "http://d:2")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("failoverTimeMillis = ten", "failoverTimeMillis (app.properties line 1) must be an integer, got 'ten'"),
        ("disableWorkerMetrics = maybe", "disableWorkerMetrics (app.properties line 1) must be true or false"),
        ("maxThroughputPerHostKBps = fast", "must be a number"),
        ("staleWorkerMetricsEntryCleanupDuration = 15m", "must be an ISO 8601 duration"),
    ],
)
def test_a_bad_value_names_the_key_the_line_and_what_it_expects(line: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        mapped(line + "\n")


def test_a_value_out_of_range_is_refused_by_the_config_it_maps_to() -> None:
    props = map_properties({"applicationName": "a", "streamName": "s", "maxRecords": "20000"})
    with pytest.raises(ConfigurationError, match="max_records must be between 1 and 10000"):
        configured(props)


def test_an_empty_value_is_unset_and_noted() -> None:
    props = mapped("workerId =\napplicationName = a\n")
    assert "worker_id" not in props.overrides
    assert any("workerId has an empty value (app.properties line 1)" in note for note in props.notes)


def test_unknown_keys_are_an_error_naming_each_with_a_suggestion() -> None:
    text = "applicationName = a\nFailoverTimeMillis = 1\nmaxRecordz = 2\ncompletelyNew = 3\n"
    with pytest.raises(ConfigurationError) as caught:
        mapped(text)
    message = str(caught.value)
    assert "unknown kclpy properties in app.properties" in message
    assert (
        "FailoverTimeMillis (app.properties line 2) (did you mean 'failoverTimeMillis'? keys are case-sensitive)"
        in (message)
    )
    assert "maxRecordz (app.properties line 3) (did you mean 'maxRecords'?)" in message
    assert "completelyNew (app.properties line 4)" in message
    assert "--kclpy-ignore-unknown" in message


def test_unknown_keys_can_be_let_through_but_are_still_reported() -> None:
    props = mapped("applicationName = a\ncompletelyNew = 3\n", ignore_unknown=True)
    assert props.unknown == ("completelyNew",)
    assert "completelyNew" not in str(props.overrides)
    assert any("unknown keys ignored" in line and "completelyNew" in line for line in props.report_lines())


def test_credentials_provider_keys_match_in_any_case_as_in_java() -> None:
    props = mapped("awsCredentialsProvider = ProfileCredentialsProvider|prod\nAWSCREDENTIALSPROVIDERDYNAMODB = X\n")
    assert {item.key: item.value for item in props.ignored} == {
        "AwsCredentialsProvider": "ProfileCredentialsProvider|prod",
        "AwsCredentialsProviderDynamoDB": "X",
    }


def test_every_ignored_key_is_accepted_with_a_reason() -> None:
    props = map_properties(dict.fromkeys(IGNORED_KEYS, "1"))
    assert {item.key for item in props.ignored} == set(IGNORED_KEYS)
    assert all(item.reason for item in props.ignored)
    assert set(props.overrides) == {"backend"}


def test_retrieval_mode_fanout_is_refused_with_the_fix() -> None:
    with pytest.raises(ConfigurationError, match=r"retrievalMode = FANOUT .*set retrievalMode = POLLING"):
        mapped("retrievalMode = FANOUT\n")
    with pytest.raises(ConfigurationError, match="must be POLLING, FANOUT or DEFAULT"):
        mapped("retrievalMode = STREAMING\n")


def test_retrieval_mode_polling_is_ignored_and_default_is_noted() -> None:
    polling = mapped("retrievalMode = POLLING\n")
    assert [item.key for item in polling.ignored] == ["retrievalMode"]
    assert not any("fan-out" in note for note in polling.notes)
    default = mapped("applicationName = a\n")
    assert any("the Java daemon would read with enhanced fan-out" in note for note in default.notes)
    with_polling_key = mapped("maxRecords = 100\n")
    assert not any("fan-out" in note for note in with_polling_key.notes)


def test_load_properties_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "app.properties"
    path.write_bytes("\ufeffapplicationName = caf\u00e9\nstreamName = s\n".encode())
    props = load_properties(path)
    assert props.overrides["application_name"] == "café"
    assert props.source == str(path)
    with pytest.raises(ConfigurationError, match="does not exist; check --kclpy-properties"):
        load_properties(tmp_path / "missing.properties")


def test_a_latin1_file_reads_as_java_reads_it(tmp_path: Path) -> None:
    path = tmp_path / "app.properties"
    path.write_bytes("applicationName = caf\u00e9\n".encode("iso-8859-1"))
    assert load_properties(path).overrides["application_name"] == "café"


# -- shardwise run --kclpy-properties ------------------------------------------------------------------------------


@dataclass
class FakeWorker:
    """Stands in for the worker: records what it was built with and returns from run() at once."""

    config: Any
    kwargs: dict[str, Any] = field(default_factory=dict)
    stop_reason: Any = None

    @property
    def worker_id(self) -> str:
        return str(self.config.worker_id)

    def run(self) -> None:
        return None

    def request_shutdown(self) -> None:
        return None


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[FakeWorker]]:
    """The workers ``shardwise run`` builds (none is started). Afterwards the process is as before: signal
    handlers, ``sys.path`` and the modules the command imported (the ``amazon_kclpy`` stand-in included)."""
    workers: list[FakeWorker] = []
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    modules = set(sys.modules)
    path = list(sys.path)

    def make(config: Any, **kwargs: Any) -> FakeWorker:
        worker = FakeWorker(config, kwargs)
        workers.append(worker)
        return worker

    monkeypatch.setattr(run_module, "Worker", make)
    monkeypatch.setattr(run_module, "open_lease_store", lambda backend, table: ("store", backend, table))
    monkeypatch.setattr(run_module, "open_stream_source", lambda backend, stream: ("source", backend, stream))
    yield workers
    for signum, handler in handlers.items():
        signal.signal(signum, handler)
    for name in set(sys.modules) - modules:
        del sys.modules[name]
    sys.path[:] = path


PROCESSOR_MODULE = """\
from amazon_kclpy import kcl
from amazon_kclpy.v3 import processor


class RecordProcessor(processor.RecordProcessorBase):
    def initialize(self, initialize_input):
        pass

    def process_records(self, process_records_input):
        pass

    def lease_lost(self, lease_lost_input):
        pass

    def shard_ended(self, shard_ended_input):
        shard_ended_input.checkpointer.checkpoint()

    def shutdown_requested(self, shutdown_requested_input):
        shutdown_requested_input.checkpointer.checkpoint()


if __name__ == "__main__":
    kcl.KCLProcess(RecordProcessor()).run()
"""


@pytest.fixture
def app_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "kclpy_cli_app.py").write_text(PROCESSOR_MODULE)
    (tmp_path / "app.properties").write_text(SAMPLE)
    monkeypatch.chdir(tmp_path)  # load_factory searches the current directory first
    return tmp_path


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_run_with_kclpy_properties_builds_the_worker_from_them(app_dir: Path, built: list[FakeWorker]) -> None:
    result = invoke("run", "--kclpy-properties", "app.properties", "--processor", "kclpy_cli_app:RecordProcessor")
    assert result.exit_code == 0, result.output
    (worker,) = built
    assert worker.config.application_name == "PythonKCLSample"
    assert worker.config.stream_name == "kclpysample"
    assert worker.config.client_version_config == "3x"
    assert worker.kwargs["store"][1].backend == "aws"
    assert worker.kwargs["store"][1].region == "us-east-1"
    assert "ignored (Java daemon only)" in result.output
    assert result.output.count("executableName = sample_kclpy_app.py") == 1
    processor = worker.kwargs["processor_factory"]()
    assert type(processor).__name__ == "KclpyProcessorAdapter"
    assert processor.api_version == 3


def test_flags_config_and_set_override_the_properties(app_dir: Path, built: list[FakeWorker], tmp_path: Path) -> None:
    (tmp_path / "extra.toml").write_text('stream_name = "from-toml"\n[leases]\nfailover_time_ms = 3000\n')
    result = invoke(
        "run",
        "kclpy_cli_app:RecordProcessor",
        "--kclpy-properties",
        "app.properties",
        "--config",
        "extra.toml",
        "--app",
        "from-flag",
        "--backend",
        "local",
        "--db",
        str(tmp_path / "x.db"),
        "--set",
        "consumer.max_records=42",
        "--assignment",
        "lease-count-2x",
    )
    assert result.exit_code == 0, result.output
    (worker,) = built
    config = worker.config
    assert config.application_name == "from-flag"
    assert config.stream_name == "from-toml"
    assert config.leases.failover_time_ms == 3000
    assert config.consumer.max_records == 42
    assert config.consumer.idle_time_between_reads_ms == 1000  # still from the properties
    assert config.client_version_config is None  # --assignment chose plain 2.x
    assert worker.kwargs["store"][1].backend == "local"


def test_run_refuses_unknown_properties(app_dir: Path, built: list[FakeWorker]) -> None:
    with (app_dir / "app.properties").open("a") as handle:
        handle.write("maxLeasesForWorkers = 3\n")
    result = invoke("run", "--kclpy-properties", "app.properties", "--processor", "kclpy_cli_app:RecordProcessor")
    assert result.exit_code != 0
    assert "unknown kclpy property in app.properties: maxLeasesForWorkers" in result.output
    assert "did you mean 'maxLeasesForWorker'?" in result.output
    assert not built
    result = invoke(
        "run",
        "--kclpy-properties",
        "app.properties",
        "--kclpy-ignore-unknown",
        "--processor",
        "kclpy_cli_app:RecordProcessor",
    )
    assert result.exit_code == 0, result.output
    assert "unknown keys ignored (--kclpy-ignore-unknown): maxLeasesForWorkers" in result.output


def test_run_refuses_a_class_that_is_not_a_kclpy_processor(app_dir: Path, built: list[FakeWorker]) -> None:
    (app_dir / "not_kclpy.py").write_text("class Thing:\n    pass\n")
    result = invoke("run", "--kclpy-properties", "app.properties", "--processor", "not_kclpy:Thing")
    assert result.exit_code != 0
    assert "Thing is not an amazon-kclpy record processor" in result.output
    assert not built


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--app", "a", "--stream", "s"], "give the record processor"),
        (["run", "a:B", "--processor", "c:D", "--app", "a", "--stream", "s"], "two processors given"),
        (["run", "a:B", "--kclpy-ignore-unknown", "--app", "a", "--stream", "s"], "goes with --kclpy-properties"),
    ],
)
def test_run_processor_argument_errors(args: list[str], message: str, built: list[FakeWorker]) -> None:
    result = invoke(*args)
    assert result.exit_code != 0
    assert message in result.output
    assert not built


def test_the_processor_option_works_without_kclpy_properties(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, built: list[FakeWorker]
) -> None:
    (tmp_path / "native_app.py").write_text(
        "from shardwise.processor import BaseRecordProcessor\n\n"
        "class P(BaseRecordProcessor):\n    def process_records(self, process_records_input):\n        pass\n"
    )
    monkeypatch.chdir(tmp_path)
    result = invoke("run", "--processor", "native_app:P", "--app", "a", "--stream", "s", "--db", "x.db")
    assert result.exit_code == 0, result.output
    (worker,) = built
    assert type(worker.kwargs["processor_factory"]()).__name__ == "P"  # not wrapped
