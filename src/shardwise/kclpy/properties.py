"""Read an amazon-kclpy (KCL MultiLangDaemon) ``.properties`` file and map it onto shardwise's configuration.

Two steps:

* :func:`parse_properties` reads the Java ``.properties`` syntax exactly as ``java.util.Properties.load`` does:
  ``key = value``, ``key: value`` or ``key value``; ``#`` and ``!`` comment lines; a line ending in an odd
  number of backslashes continues on the next one (whose leading blanks are dropped); ``\\t \\n \\r \\f
  \\uXXXX`` escapes, and a backslash before any other character stands for that character. Later keys win.
  The file is read as UTF-8 (Java reads ISO 8859-1; both agree on the ASCII the keys are made of).
* :func:`map_properties` turns the MultiLangDaemon's keys into dotted shardwise config keys (the ``overrides``
  of :func:`shardwise.config.merged`). Keys that only the Java daemon uses (its child processes, credential
  providers, CloudWatch metrics, table-creation options, …) are accepted and listed in
  :attr:`KclpyProperties.ignored` with the reason; a setting shardwise cannot honour (``retrievalMode =
  FANOUT``) is a :class:`~shardwise.errors.ConfigurationError`; an **unknown key is an error too** (the Java
  daemon silently ignores a misspelt key — shardwise names it, with the closest known key) unless
  ``ignore_unknown`` is set, in which case it is listed in :attr:`KclpyProperties.unknown`.

The key table is :data:`MAPPED_KEYS` (and :data:`IGNORED_KEYS`); ``docs/kclpy.md`` prints it.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from shardwise.errors import ConfigurationError

__all__ = [
    "IGNORED_KEYS",
    "MAPPED_KEYS",
    "IgnoredKey",
    "KclpyProperties",
    "PropertyLine",
    "load_properties",
    "map_properties",
    "parse_properties",
    "parse_properties_lines",
]

_BLANKS = " \t\f"
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_SIMPLE_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}


# -- the .properties syntax ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PropertyLine:
    """One ``key = value`` entry and the (1-based) line it starts on."""

    key: str
    value: str
    line: int


def _continues(line: str) -> bool:
    """Whether a natural line ends in an odd number of backslashes (so the logical line goes on)."""
    count = len(line) - len(line.rstrip("\\"))
    return count % 2 == 1


def _logical_lines(text: str) -> list[tuple[int, str]]:
    natural = _LINE_BREAK.split(text)
    result: list[tuple[int, str]] = []
    index = 0
    while index < len(natural):
        line = natural[index].lstrip(_BLANKS)
        number = index + 1
        index += 1
        if not line or line[0] in "#!":
            continue  # a comment line never continues onto the next one
        pieces: list[str] = []
        while _continues(line):
            pieces.append(line[:-1])
            if index >= len(natural):
                line = ""
                break
            line = natural[index].lstrip(_BLANKS)
            index += 1
        pieces.append(line)
        result.append((number, "".join(pieces)))
    return result


def _unescape(text: str, line: int) -> str:
    out: list[str] = []
    index = 0
    while index < len(text):
        char = text[index]
        index += 1
        if char != "\\":
            out.append(char)
            continue
        if index >= len(text):
            break  # a lone backslash at the very end stands for nothing
        char = text[index]
        index += 1
        if char == "u":
            digits = text[index : index + 4]
            if len(digits) < 4 or any(d not in "0123456789abcdefABCDEF" for d in digits):
                raise ConfigurationError(f"line {line}: malformed \\uxxxx escape \\u{digits} (four hex digits needed)")
            out.append(chr(int(digits, 16)))
            index += 4
        else:
            out.append(_SIMPLE_ESCAPES.get(char, char))
    joined = "".join(out)
    try:  # \\uD83D\\uDE00 is a surrogate pair in Java's UTF-16 strings: join it into one character
        return joined.encode("utf-16-le", "surrogatepass").decode("utf-16-le")
    except UnicodeDecodeError:
        return joined


def _split_entry(logical: str, line: int) -> PropertyLine:
    length = len(logical)
    key_end = value_start = length
    has_separator = False
    index = 0
    while index < length:
        char = logical[index]
        if char == "\\":
            index += 2
            continue
        if char in "=:":
            key_end, value_start, has_separator = index, index + 1, True
            break
        if char in _BLANKS:
            key_end, value_start = index, index + 1
            break
        index += 1
    while value_start < length:
        char = logical[value_start]
        if char not in _BLANKS:
            if has_separator or char not in "=:":
                break
            has_separator = True
        value_start += 1
    return PropertyLine(_unescape(logical[:key_end], line), _unescape(logical[value_start:], line), line)


def parse_properties_lines(text: str) -> list[PropertyLine]:
    """Every entry of a ``.properties`` text, in file order (a key may repeat; the last one wins in Java)."""
    return [_split_entry(logical, number) for number, logical in _logical_lines(text)]


def parse_properties(text: str) -> dict[str, str]:
    """The entries of a ``.properties`` text as ``java.util.Properties.load`` reads them (later keys win)."""
    return {entry.key: entry.value for entry in parse_properties_lines(text)}


def _read_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigurationError(f"kclpy properties file {path} does not exist; check --kclpy-properties") from None
    except OSError as exc:
        raise ConfigurationError(f"cannot read kclpy properties file {path}: {exc}") from exc
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("iso-8859-1")  # what Properties.load(InputStream) assumes


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


class _BadValue(ValueError):
    """A value that does not convert; the message says what was expected."""


def _int(value: str) -> int:
    text = value.strip()
    if not re.fullmatch(r"[-+]?\d+", text):
        raise _BadValue("an integer")
    return int(text)


def _float(value: str) -> float:
    text = value.strip()
    try:
        number = float(text)
    except ValueError:
        raise _BadValue("a number") from None
    if math.isnan(number):
        raise _BadValue("a number")
    return number


def _bool(value: str) -> bool:
    """Java BeanUtils' BooleanConverter: true/yes/y/on/1 and false/no/n/off/0, in any case."""
    text = value.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise _BadValue("true or false")


def _text(value: str) -> str:
    text = value.strip()
    if not text:
        raise _BadValue("a non-empty value")
    return text


def _endpoint(value: str) -> str:
    """An endpoint URL; a bare ``host[:port]`` (as KCL 1.x took them) means HTTPS."""
    text = _text(value)
    return text if "://" in text else f"https://{text}"


def _duration_ms(value: str) -> int:
    """An ISO 8601 duration as ``java.time.Duration.parse`` takes it (``PT15M``, ``P2D``, ``PT1.5S``), in ms."""
    match = _DURATION.match(value.strip())
    if match is None or not any(match.group(g) for g in ("days", "hours", "minutes", "seconds")):
        raise _BadValue("an ISO 8601 duration such as PT15M, PT10H or P2D")
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
        raise _BadValue(f"one of {', '.join(_CLIENT_VERSION_CONFIGS)}")
    return _CLIENT_VERSION_CONFIGS[text]


# -- the key table ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Mapping:
    targets: tuple[str, ...]
    convert: Callable[[str], Any]
    expects: str


def _m(convert: Callable[[str], Any], *targets: str, expects: str = "") -> _Mapping:
    return _Mapping(targets, convert, expects)


#: MultiLangDaemon key → the shardwise config key(s) it sets (dotted, as ``--set`` takes them). The keys handled
#: specially — ``streamName``/``streamArn``, ``initialPositionInStream``/``initialPositionInStreamExtended``,
#: ``retrievalMode`` — are in :data:`SPECIAL_KEYS`.
MAPPED_KEYS: Mapping[str, _Mapping] = {
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
_POLLING_KEYS = frozenset(
    {
        "maxRecords",
        "idleTimeBetweenReadsInMillis",
        "retryGetRecordsInSeconds",
        "maxGetRecordsThreadPool",
        "millisBehindLatestThresholdForReducedTps",
    }
)
_KNOWN_KEYS = frozenset(MAPPED_KEYS) | frozenset(SPECIAL_KEYS) | frozenset(IGNORED_KEYS)


# -- the result ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IgnoredKey:
    """A key shardwise accepted but does not use, its value and why."""

    key: str
    value: str
    reason: str

    def __str__(self) -> str:
        return f"{self.key} = {self.value}: {self.reason}"


@dataclass(frozen=True)
class KclpyProperties:
    """A kclpy properties file mapped onto shardwise's configuration.

    * ``overrides``: dotted config keys (``leases.failover_time_ms``) → values, for
      :func:`shardwise.config.merged` — the settings the file makes, plus ``backend = "aws"`` (a kclpy
      application lives in DynamoDB and Kinesis).
    * ``defaults``: KCL 3.x defaults that differ from shardwise's and that the file left unset
      (``client_version_config = "3x"``, as KCL 3.x's ``CLIENT_VERSION_CONFIG_3X``). The caller applies them
      only where the user did not choose otherwise (see :meth:`config_values`).
    * ``ignored``: the keys only the Java daemon uses, with their values and the reason.
    * ``notes``: differences worth a line on stderr (fan-out by default in Java, an empty value, …).
    * ``unknown``: keys nobody knows (only with ``ignore_unknown``; otherwise they are an error).
    """

    source: str
    properties: Mapping[str, str]
    overrides: Mapping[str, Any]
    defaults: Mapping[str, Any] = field(default_factory=dict)
    ignored: tuple[IgnoredKey, ...] = ()
    notes: tuple[str, ...] = ()
    unknown: tuple[str, ...] = ()

    def config_values(self, user: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The dotted overrides to lay *under* the user's own settings (``user``: their dotted keys).

        The ``client_version_config`` default is left out when the user picked an ``assignment`` or a
        ``client_version_config`` of their own, so ``--assignment lease-count-2x`` still means plain 2.x; and
        the file's ``kinesisEndpoint``/``dynamoDBEndpoint`` when the user gave ``endpoint_url`` (both services).
        """
        chosen = set(user or ())
        values = dict(self.overrides)
        if "endpoint_url" in chosen:  # the user's endpoint for both services beats the file's per-service ones
            values.pop("kinesis_endpoint_url", None)
            values.pop("dynamodb_endpoint_url", None)
        for key, value in self.defaults.items():
            if key == "client_version_config" and chosen & {"assignment", "client_version_config"}:
                continue
            values.setdefault(key, value)
        return values

    def report_lines(self) -> list[str]:
        """What to print on stderr once at start-up: ignored keys, notes and unknown keys."""
        lines: list[str] = []
        if self.ignored:
            lines.append(f"kclpy properties {self.source}: ignored (Java daemon only):")
            lines.extend(f"  {item}" for item in self.ignored)
        if self.notes:
            lines.append(f"kclpy properties {self.source}: notes:")
            lines.extend(f"  {note}" for note in self.notes)
        if self.unknown:
            lines.append(
                f"kclpy properties {self.source}: unknown keys ignored (--kclpy-ignore-unknown): "
                + ", ".join(self.unknown)
            )
        return lines


def _where(source: str, line: int | None) -> str:
    return f"{source} line {line}" if line is not None else source


def _suggestion(key: str) -> str:
    by_lower = {known.lower(): known for known in _KNOWN_KEYS}
    if key.lower() in by_lower:
        return f" (did you mean {by_lower[key.lower()]!r}? keys are case-sensitive)"
    close = difflib.get_close_matches(key, sorted(_KNOWN_KEYS), n=1, cutoff=0.8)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _canonical(key: str) -> str:
    """The Java daemon matches the AwsCredentialsProvider* keys in any case; every other key exactly."""
    lowered = key.lower()
    for name in ("AwsCredentialsProviderDynamoDB", "AwsCredentialsProviderCloudWatch", "AwsCredentialsProvider"):
        if lowered == name.lower():
            return name
    return key


def _stream_from_arn(arn: str, where: str) -> tuple[str, str]:
    match = _STREAM_ARN.match(arn.strip())
    if match is None:
        raise ConfigurationError(
            f"streamArn ({where}) is not a Kinesis stream ARN: {arn!r}; expected "
            "arn:aws:kinesis:<region>:<12-digit account>:stream/<name>"
        )
    return match.group("name"), match.group("region")


def _epoch_seconds(value: str, where: str) -> datetime:
    try:
        seconds = _int(value)
        return datetime.fromtimestamp(seconds, tz=timezone.utc)
    except (_BadValue, OverflowError, OSError, ValueError):
        raise ConfigurationError(
            f"initialPositionInStreamExtended ({where}) must be a Unix time in seconds (e.g. 1636609142), got {value!r}"
        ) from None


def map_properties(
    entries: Mapping[str, str] | Sequence[PropertyLine],
    *,
    source: str = "properties",
    ignore_unknown: bool = False,
) -> KclpyProperties:
    """Map MultiLangDaemon properties onto shardwise config keys (see the module docstring)."""
    listed = [PropertyLine(k, v, 0) for k, v in entries.items()] if isinstance(entries, Mapping) else list(entries)
    by_key = {_canonical(entry.key): entry for entry in listed}  # later entries win, as in Java
    props = {key: entry.value for key, entry in by_key.items()}
    line_of: dict[str, int | None] = {key: entry.line or None for key, entry in by_key.items()}

    unknown = sorted(key for key in props if key not in _KNOWN_KEYS)
    if unknown and not ignore_unknown:
        described = "; ".join(f"{key} ({_where(source, line_of.get(key))}){_suggestion(key)}" for key in unknown)
        raise ConfigurationError(
            f"unknown kclpy propert{'y' if len(unknown) == 1 else 'ies'} in {source}: {described}. The Java "
            "daemon silently ignores keys it does not know; shardwise refuses them so that a typo is not lost. "
            "Fix or remove them, or pass --kclpy-ignore-unknown"
        )

    overrides: dict[str, Any] = {"backend": "aws"}
    ignored: list[IgnoredKey] = []
    notes: list[str] = []
    present: dict[str, str] = {}
    for key, value in props.items():
        if key not in _KNOWN_KEYS:
            continue
        if not value.strip() and key not in IGNORED_KEYS:
            notes.append(f"{key} has an empty value ({_where(source, line_of.get(key))}): treated as unset")
            continue
        present[key] = value

    for key, value in present.items():
        where = _where(source, line_of.get(key))
        if key in IGNORED_KEYS:
            ignored.append(IgnoredKey(key, value.strip(), IGNORED_KEYS[key]))
            continue
        mapping = MAPPED_KEYS.get(key)
        if mapping is None:
            continue
        try:
            converted = mapping.convert(value)
        except _BadValue as exc:
            raise ConfigurationError(f"kclpy property {key} ({where}) must be {exc}, got {value!r}") from None
        for target in mapping.targets:
            overrides[target] = converted

    # The stream: an ARN wins over a name, as in KCL.
    if "streamArn" in present:
        where = _where(source, line_of.get("streamArn"))
        name, arn_region = _stream_from_arn(present["streamArn"], where)
        overrides["stream_name"] = name
        region = overrides.get("region")
        if region is not None and region != arn_region:
            raise ConfigurationError(
                f"streamArn ({where}) is in region {arn_region} but regionName is {region}; shardwise uses one region "
                "for Kinesis and DynamoDB: make them agree"
            )
        overrides["region"] = arn_region
        if "streamName" in present:
            ignored.append(IgnoredKey("streamName", present["streamName"].strip(), "streamArn takes precedence"))
    elif "streamName" in present:
        overrides["stream_name"] = present["streamName"].strip()

    _map_initial_position(present, overrides, source, line_of)
    _map_retrieval_mode(present, ignored, notes, source, line_of)

    defaults: dict[str, Any] = {}
    if "client_version_config" not in overrides:
        defaults["client_version_config"] = "3x"
        notes.append(
            "clientVersionConfig not set: KCL 3.x's default CLIENT_VERSION_CONFIG_3X applies "
            "(client_version_config = 3x) unless --assignment or --client-version-config says otherwise"
        )
    return KclpyProperties(
        source=source,
        properties=props,
        overrides=overrides,
        defaults=defaults,
        ignored=tuple(ignored),
        notes=tuple(notes),
        unknown=tuple(unknown),
    )


def _map_initial_position(
    present: Mapping[str, str], overrides: dict[str, Any], source: str, line_of: Mapping[str, int | None]
) -> None:
    position = present.get("initialPositionInStream")
    extended = present.get("initialPositionInStreamExtended")
    if extended is not None:
        where = _where(source, line_of.get("initialPositionInStreamExtended"))
        if position is not None and position.strip().upper() != "AT_TIMESTAMP":
            raise ConfigurationError(
                f"initialPositionInStreamExtended ({where}) asks for AT_TIMESTAMP but initialPositionInStream is "
                f"{position.strip()}: remove one of them"
            )
        overrides["initial_position"] = "AT_TIMESTAMP"
        overrides["initial_timestamp"] = _epoch_seconds(extended, where)
        return
    if position is None:
        return
    where = _where(source, line_of.get("initialPositionInStream"))
    name = position.strip().upper()
    if name == "AT_TIMESTAMP":
        raise ConfigurationError(
            f"initialPositionInStream = AT_TIMESTAMP ({where}) needs the timestamp: set "
            "initialPositionInStreamExtended to a Unix time in seconds instead"
        )
    if name not in ("TRIM_HORIZON", "LATEST"):
        raise ConfigurationError(
            f"initialPositionInStream ({where}) must be TRIM_HORIZON or LATEST, got {position.strip()!r}"
        )
    overrides["initial_position"] = name


def _map_retrieval_mode(
    present: Mapping[str, str],
    ignored: list[IgnoredKey],
    notes: list[str],
    source: str,
    line_of: Mapping[str, int | None],
) -> None:
    raw = present.get("retrievalMode")
    mode = raw.strip().upper() if raw is not None else "DEFAULT"
    if mode == "POLLING":
        ignored.append(IgnoredKey("retrievalMode", raw.strip() if raw else mode, "shardwise always polls"))
        return
    if mode == "FANOUT":
        raise ConfigurationError(
            f"retrievalMode = FANOUT ({_where(source, line_of.get('retrievalMode'))}): shardwise does not read with "
            "enhanced fan-out (SubscribeToShard) yet; set retrievalMode = POLLING (records, checkpoints and leases "
            "are the same; only the read path differs)"
        )
    if mode != "DEFAULT":
        raise ConfigurationError(
            f"retrievalMode ({_where(source, line_of.get('retrievalMode'))}) must be POLLING, FANOUT or DEFAULT, "
            f"got {raw!r}"
        )
    if raw is not None:
        ignored.append(IgnoredKey("retrievalMode", raw.strip(), "shardwise always polls"))
    if not _POLLING_KEYS & set(present):
        notes.append(
            "retrievalMode not set (DEFAULT) and no polling key set: the Java daemon would read with enhanced "
            "fan-out; shardwise polls with GetRecords (same records, checkpoints and leases)"
        )


def load_properties(path: str | Path, *, ignore_unknown: bool = False) -> KclpyProperties:
    """Read and map a kclpy properties file (:func:`parse_properties_lines` + :func:`map_properties`)."""
    file = Path(path)
    return map_properties(parse_properties_lines(_read_text(file)), source=str(file), ignore_unknown=ignore_unknown)
