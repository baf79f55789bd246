"""The MultiLangDaemon's keys and what each means to shardwise: the key table ``docs/kclpy.md`` prints.

* :data:`MAPPED_KEYS`: key → the dotted shardwise config key(s) it sets and how its value converts (Java
  BeanUtils' booleans, ISO 8601 durations, KCL 3.x's ``CLIENT_VERSION_CONFIG_*`` names, …);
* :data:`SPECIAL_KEYS`: keys :func:`~shardwise.kclpy.properties.map_properties` handles itself (the stream, the
  initial position, the retrieval mode), with :func:`stream_from_arn` and :func:`epoch_seconds` for their values;
* :data:`IGNORED_KEYS`: keys only the Java daemon uses → why shardwise ignores them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from shardwise.errors import ConfigurationError

__all__ = [
    "IGNORED_KEYS",
    "KNOWN_KEYS",
    "MAPPED_KEYS",
    "POLLING_KEYS",
    "SPECIAL_KEYS",
    "BadValue",
    "KeyMapping",
    "epoch_seconds",
    "stream_from_arn",
]

# -- values ----------------------------------------------------------------------------------------------------

_TRUE = frozenset({"true", "yes", "y", "on", "1"})
_FALSE = frozenset({"false", "no", "n", "off", "0"})
_DURATION = re.compile(
    r"^(?P<sign>[-+]?)P(?:(?P<days>[-+]?\d+)D)?"
    r"(?:T(?:(?P<hours>[-+]?\d+)H)?(?:(?P<minutes>[-+]?\d+)M)?(?:(?P<seconds>[-+]?\d+)(?:[.,](?P<fraction>\d{0,9}))?S)?)?$",
    re.IGNORECASE,
)
_STREAM_ARN = re.compile(
    r"^arn:(?P<partition>aws[a-zA-Z-]*):kinesis:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):stream/(?P<name>[a-zA-Z0-9_.-]{1,128})$"
)


class BadValue(ValueError):
    """A value that does not convert; the message says what was expected."""


def _int(value: str) -> int:
    text = value.strip()
    if not re.fullmatch(r"[-+]?\d+", text):
        raise BadValue("an integer")
    return int(text)


def _float(value: str) -> float:
    text = value.strip()
    try:
        number = float(text)
    except ValueError:
        raise BadValue("a number") from None
    if math.isnan(number):
        raise BadValue("a number")
    return number


def _bool(value: str) -> bool:
    """Java BeanUtils' BooleanConverter: true/yes/y/on/1 and false/no/n/off/0, in any case."""
    text = value.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise BadValue("true or false")


def _text(value: str) -> str:
    text = value.strip()
    if not text:
        raise BadValue("a non-empty value")
    return text


def _endpoint(value: str) -> str:
    """An endpoint URL; a bare ``host[:port]`` (as KCL 1.x took them) means HTTPS."""
    text = _text(value)
    return text if "://" in text else f"https://{text}"


def _duration_ms(value: str) -> int:
    """An ISO 8601 duration as ``java.time.Duration.parse`` takes it (``PT15M``, ``P2D``, ``PT1.5S``), in ms."""
    match = _DURATION.match(value.strip())
    if match is None or not any(match.group(g) for g in ("days", "hours", "minutes", "seconds")):
        raise BadValue("an ISO 8601 duration such as PT15M, PT10H or P2D")
    days, hours, minutes, seconds = (int(match.group(g) or 0) for g in ("days", "hours", "minutes", "seconds"))
    fraction_ms = int((match.group("fraction") or "").ljust(3, "0")[:3])
    millis = ((days * 24 + hours) * 60 + minutes) * 60_000 + seconds * 1000
    millis += -fraction_ms if (match.group("seconds") or "").startswith("-") else fraction_ms
    return -millis if match.group("sign") == "-" else millis


_CLIENT_VERSION_CONFIGS = {
    "CLIENT_VERSION_CONFIG_3X": "3x",
    "CLIENT_VERSION_CONFIG_COMPATIBLE_WITH_2X": "compatible-with-2x",
}


def _client_version_config(value: str) -> str:
    text = value.strip().upper()
    if text not in _CLIENT_VERSION_CONFIGS:
        raise BadValue(f"one of {', '.join(_CLIENT_VERSION_CONFIGS)}")
    return _CLIENT_VERSION_CONFIGS[text]


def stream_from_arn(arn: str, where: str) -> tuple[str, str]:
    """``(stream name, region)`` of a ``streamArn`` value; ``where`` (file and line) goes into the error."""
    match = _STREAM_ARN.match(arn.strip())
    if match is None:
        raise ConfigurationError(
            f"streamArn ({where}) is not a Kinesis stream ARN: {arn!r}; expected "
            "arn:aws:kinesis:<region>:<12-digit account>:stream/<name>"
        )
    return match.group("name"), match.group("region")


def epoch_seconds(value: str, where: str) -> datetime:
    """An ``initialPositionInStreamExtended`` value (Unix seconds) as a UTC time; ``where`` goes into the error."""
    try:
        seconds = _int(value)
        return datetime.fromtimestamp(seconds, tz=timezone.utc)
    except (BadValue, OverflowError, OSError, ValueError):
        raise ConfigurationError(
            f"initialPositionInStreamExtended ({where}) must be a Unix time in seconds (e.g. 1636609142), got {value!r}"
        ) from None


# -- the key table ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeyMapping:
    """What one MultiLangDaemon key sets: the dotted config keys, and how its value converts."""

    targets: tuple[str, ...]
    convert: Callable[[str], Any]
    expects: str


def _m(convert: Callable[[str], Any], *targets: str, expects: str = "") -> KeyMapping:
    return KeyMapping(targets, convert, expects)


#: MultiLangDaemon key → the shardwise config key(s) it sets (dotted, as ``--set`` takes them). The keys handled
#: specially — ``streamName``/``streamArn``, ``initialPositionInStream``/``initialPositionInStreamExtended``,
#: ``retrievalMode`` — are in :data:`SPECIAL_KEYS`.
MAPPED_KEYS: Mapping[str, KeyMapping] = {
    # core
    "applicationName": _m(_text, "application_name"),
    "tableName": _m(_text, "lease_table_name"),
    "regionName": _m(_text, "region"),
    "kinesisEndpoint": _m(_endpoint, "kinesis_endpoint_url"),
    "dynamoDBEndpoint": _m(_endpoint, "dynamodb_endpoint_url"),
    "workerId": _m(_text, "worker_id"),
    "workerIdentifier": _m(_text, "worker_id"),
    # leases
    "failoverTimeMillis": _m(_int, "leases.failover_time_ms"),
    "maxLeasesForWorker": _m(_int, "leases.max_leases_for_worker", "utilization.max_leases_for_worker"),
    "maxLeasesToStealAtOneTime": _m(_int, "leases.max_leases_to_steal_at_one_time"),
    "enablePriorityLeaseAssignment": _m(_bool, "leases.enable_priority_lease_assignment"),
    "shardSyncIntervalMillis": _m(_int, "shard_sync_interval_ms"),
    # polling and the shard consumer
    "maxRecords": _m(_int, "consumer.max_records"),
    "idleTimeBetweenReadsInMillis": _m(_int, "consumer.idle_time_between_reads_ms"),
    "callProcessRecordsEvenForEmptyRecordList": _m(_bool, "consumer.call_process_records_even_for_empty_list"),
    "parentShardPollIntervalMillis": _m(_int, "consumer.parent_shard_poll_interval_ms"),
    "taskBackoffTimeMillis": _m(_int, "consumer.task_backoff_time_ms"),
    # KCL 3.x
    "clientVersionConfig": _m(_client_version_config, "client_version_config"),
    "leaseAssignmentIntervalMillis": _m(_int, "coordination.lease_assignment_interval_ms"),
    "coordinatorStateTableName": _m(_text, "coordination.coordinator_table_name"),
    "workerMetricsTableName": _m(_text, "coordination.worker_metrics_table_name"),
    "gracefulLeaseHandoffTimeoutMillis": _m(_int, "utilization.graceful_lease_handoff_timeout_ms"),
    "isGracefulLeaseHandoffEnabled": _m(_bool, "utilization.graceful_lease_handoff"),
    "maxThroughputPerHostKBps": _m(_float, "utilization.max_throughput_per_host_kbps"),
    "dampeningPercentage": _m(_int, "utilization.dampening_percentage"),
    "reBalanceThresholdPercentage": _m(_int, "utilization.rebalance_threshold_percentage"),
    "allowThroughputOvershoot": _m(_bool, "utilization.allow_throughput_overshoot"),
    "varianceBalancingFrequency": _m(_int, "utilization.variance_balancing_frequency"),
    "workerMetricsEMAAlpha": _m(_float, "utilization.worker_metrics_ema_alpha", "worker_metrics.ema_alpha"),
    "inMemoryWorkerMetricsCaptureFrequencyMillis": _m(_int, "worker_metrics.in_memory_capture_frequency_ms"),
    "workerMetricsReporterFreqInMillis": _m(_int, "worker_metrics.reporter_frequency_ms"),
    "noOfPersistedMetricsPerWorkerMetrics": _m(_int, "worker_metrics.persisted_values_per_metric"),
    "disableWorkerMetrics": _m(_bool, "worker_metrics.disable_worker_metrics"),
    "staleWorkerMetricsEntryCleanupDuration": _m(_duration_ms, "worker_metrics.stale_entry_cleanup_ms"),
}

#: Keys with their own handling in :func:`map_properties` (what they set is described there).
SPECIAL_KEYS: Mapping[str, str] = {
    "streamName": "stream_name",
    "streamArn": "stream_name (the ARN's stream) and region (the ARN's region); wins over streamName",
    "initialPositionInStream": "initial_position (TRIM_HORIZON or LATEST)",
    "initialPositionInStreamExtended": "initial_position AT_TIMESTAMP and initial_timestamp (epoch seconds)",
    "retrievalMode": "POLLING (or unset/DEFAULT): shardwise polls; FANOUT: error",
}

_TABLE_CREATION = (
    "a table-creation option: shardwise creates missing tables on demand (PAY_PER_REQUEST, no PITR, no deletion "
    "protection, no tags); an existing table keeps its settings"
)
_FANOUT_ONLY = "an enhanced fan-out setting; shardwise reads with GetRecords polling"
_NO_COUNTERPART = "a Java KCL tuning knob with no shardwise counterpart"

#: Keys that only the Java MultiLangDaemon uses → why shardwise ignores them.
IGNORED_KEYS: Mapping[str, str] = {
    "executableName": "the MultiLangDaemon's child process; shardwise runs the processor in-process "
    "(--processor MODULE:CLASS)",
    "processingLanguage": "a user-agent suffix of the Java daemon",
    "AwsCredentialsProvider": "a Java credentials provider; shardwise uses boto3's credential chain "
    "(AWS_PROFILE, environment, container or instance role)",
    "AwsCredentialsProviderDynamoDB": "a Java credentials provider; shardwise uses boto3's credential chain",
    "AwsCredentialsProviderCloudWatch": "a Java credentials provider for CloudWatch metrics, which shardwise "
    "does not publish",
    "metricsLevel": "the Java KCL's CloudWatch metrics; shardwise: --metrics log",
    "metricsBufferTimeMillis": "the Java KCL's CloudWatch metrics",
    "metricsMaxQueueSize": "the Java KCL's CloudWatch metrics",
    "metricsEnabledDimensions": "the Java KCL's CloudWatch metrics",
    "maxActiveThreads": "the Java daemon's thread pool for its child processes; shardwise runs shard consumers on "
    "max_consumer_threads threads (--set max_consumer_threads=N)",
    "timeoutInSeconds": "the Java daemon's processor timeout (it kills the whole daemon); shardwise has none",
    "validateSequenceNumberBeforeCheckpointing": "shardwise checks a checkpoint against the records delivered, "
    "without a Kinesis call",
    "shutdownGraceMillis": "unused since KCL 2.x; shardwise's graceful shutdown is bounded by shutdown_timeout_ms",
    "cleanupLeasesUponShardCompletion": "shardwise always deletes a finished parent's lease once its children "
    "have progressed",
    "ignoreUnexpectedChildShards": _NO_COUNTERPART,
    "maxLeaseRenewalThreads": _NO_COUNTERPART,
    "listShardsBackoffTimeInMillis": _NO_COUNTERPART,
    "maxListShardsRetryAttempts": _NO_COUNTERPART,
    "shardPrioritization": _NO_COUNTERPART,
    "skipShardSyncAtWorkerInitializationIfLeasesExist": _NO_COUNTERPART,
    "schedulerInitializationBackoffTimeMillis": _NO_COUNTERPART,
    "logWarningForTaskAfterMillis": _NO_COUNTERPART,
    "retryGetRecordsInSeconds": _NO_COUNTERPART,
    "maxGetRecordsThreadPool": _NO_COUNTERPART,
    "millisBehindLatestThresholdForReducedTps": _NO_COUNTERPART,
    "consumerArn": _FANOUT_ONLY,
    "consumerName": _FANOUT_ONLY,
    "maxDescribeStreamSummaryRetries": _FANOUT_ONLY,
    "maxDescribeStreamConsumerRetries": _FANOUT_ONLY,
    "registerStreamConsumerRetries": _FANOUT_ONLY,
    "retryBackoffMillis": _FANOUT_ONLY,
    "initialLeaseTableReadCapacity": _TABLE_CREATION,
    "initialLeaseTableWriteCapacity": _TABLE_CREATION,
    "leaseTableDeletionProtectionEnabled": _TABLE_CREATION,
    "leaseTablePitrEnabled": _TABLE_CREATION,
    **{
        f"{prefix}{suffix}": _TABLE_CREATION
        for prefix in ("coordinatorState", "workerMetrics")
        for suffix in (
            "BillingMode",
            "ReadCapacity",
            "WriteCapacity",
            "PointInTimeRecoveryEnabled",
            "DeletionProtectionEnabled",
            "Tags",
        )
    },
}

#: The polling keys whose presence makes the Java daemon's DEFAULT retrieval mode poll rather than fan out.
POLLING_KEYS = frozenset(
    {
        "maxRecords",
        "idleTimeBetweenReadsInMillis",
        "retryGetRecordsInSeconds",
        "maxGetRecordsThreadPool",
        "millisBehindLatestThresholdForReducedTps",
    }
)
#: Every key shardwise accepts (mapped, special or ignored); any other is unknown.
KNOWN_KEYS = frozenset(MAPPED_KEYS) | frozenset(SPECIAL_KEYS) | frozenset(IGNORED_KEYS)
