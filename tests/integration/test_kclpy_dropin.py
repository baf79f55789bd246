"""Drop-in for amazon-kclpy users: an unmodified amazon-kclpy v3 application run by
``shardwise run --kclpy-properties app.properties --processor sample_kclpy_app:RecordProcessor`` — no Java.

The application is ``kclpy_sample/sample_kclpy_app.py`` (the shape of amazon-kclpy's public sample: it imports
``amazon_kclpy`` only, checkpoints every second with retries, and appends one line per record,
``shard_id<TAB>sequence_number<TAB>partition_key<TAB>data``, to ``$KCLPY_SAMPLE_OUTPUT``); amazon-kclpy is not
installed, so shardwise's ``amazon_kclpy`` stand-in serves its imports. The ``.properties`` file is what the
Java MultiLangDaemon would take (``executableName``, credentials provider, metrics, …, all reported as
ignored).

On both backends — the embedded one (a local stream made with ``shardwise stream create``/``put``, SQLite
leases) and the AWS stand-ins (Kinesis on kinesis-local, DynamoDB on moto, reached through the properties'
``kinesisEndpoint``/``dynamoDBEndpoint``) — records put before a worker starts, while it runs, and while it is
stopped are each written **exactly once** across a graceful restart: the processor checkpoints while running
and on ``shutdown_requested``, and the second worker resumes from those checkpoints.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest
from click.testing import CliRunner

from shardwise.cli.main import cli
from shardwise.leases.model import Lease
from shardwise.leases.store import LeaseStore
from support.fleet import Backend

SAMPLE_DIR = Path(__file__).resolve().parent / "kclpy_sample"
PROCESSOR = "sample_kclpy_app:RecordProcessor"
V2_PROCESSOR = "sample_kclpy_v2_app:RecordProcessor"
SHARDS = 2
FAILOVER_MS = 2_000
REGION = "us-east-1"


@dataclass(frozen=True)
class Put:
    """One record as the producer put it."""

    shard_id: str
    sequence_number: str
    partition_key: str
    data: str

    def line(self) -> str:
        return f"{self.shard_id}\t{self.sequence_number}\t{self.partition_key}\t{self.data}"


# -- the two backends: where the stream lives and how to put into it --------------------------------------------


@dataclass
class Target:
    kind: Literal["local", "aws"]
    stream: str
    application: str
    backend: Backend
    put: Callable[[Sequence[tuple[str, str]]], list[Put]]
    properties: dict[str, str]
    run_args: list[str] = field(default_factory=list)

    def lease_store(self) -> LeaseStore:
        return self.backend.lease_store(self.application)


def _local_target(tmp_path: Path, stream: str, application: str) -> Target:
    db = tmp_path / "shardwise.db"
    runner = CliRunner()

    def shardwise(*args: str) -> str:
        result = runner.invoke(cli, [*args, "--db", str(db)], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    shardwise("stream", "create", stream, "--shards", str(SHARDS))

    def put(entries: Sequence[tuple[str, str]]) -> list[Put]:
        puts: list[Put] = []
        for data, key in entries:  # one `stream put` per record: each has its own partition key
            (line,) = shardwise("stream", "put", stream, data, "--partition-key", key).splitlines()
            shard_id, sequence_number = line.split("\t")
            puts.append(Put(shard_id, sequence_number, key, data))
        return puts

    return Target(
        "local",
        stream,
        application,
        Backend.local(db),
        put,
        properties={},
        run_args=["--backend", "local", "--db", str(db)],
    )


def _aws_target(kinesis_url: str, dynamodb_url: str, stream: str, application: str) -> Target:
    from shardwise.backends.aws.kinesis import KinesisAdmin, KinesisStream

    admin = KinesisAdmin(KinesisStream(stream, endpoint_url=kinesis_url, region_name=REGION))
    admin.create(SHARDS, timeout_s=30)

    def put(entries: Sequence[tuple[str, str]]) -> list[Put]:
        results = admin.put_records([(data.encode(), key) for data, key in entries])
        return [
            Put(result.shard_id, result.sequence_number, key, data)
            for result, (data, key) in zip(results, entries, strict=True)
        ]

    return Target(
        "aws",
        stream,
        application,
        Backend.aws(kinesis_endpoint_url=kinesis_url, dynamodb_endpoint_url=dynamodb_url),
        put,
        # What a kclpy user points at local stand-ins; shardwise takes the backend from here (no flags).
        properties={"kinesisEndpoint": kinesis_url, "dynamoDBEndpoint": dynamodb_url},
    )


@pytest.fixture(params=["local", pytest.param("aws", marks=pytest.mark.aws)])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    suffix = uuid.uuid4().hex[:8]
    stream, application = f"kclpysample-{suffix}", f"PythonKCLSample-{suffix}"
    if request.param == "local":
        yield _local_target(tmp_path, stream, application)
        return
    kinesis = request.getfixturevalue("kinesis_local")
    dynamodb = request.getfixturevalue("moto_server")
    target = _aws_target(kinesis.endpoint_url, dynamodb.endpoint_url, stream, application)
    try:
        yield target
    finally:
        from shardwise.backends.aws.kinesis import KinesisAdmin, KinesisStream

        with contextlib.suppress(Exception):  # keeps the session's kinesis-local small and fast
            KinesisAdmin(KinesisStream(stream, endpoint_url=kinesis.endpoint_url, region_name=REGION)).delete()


# -- the application: its properties file, its worker process, its output ----------------------------------------


def write_properties(path: Path, target: Target) -> None:
    """A MultiLangDaemon properties file, as a kclpy user has it (sample.properties' keys, short timings)."""
    lines = [
        "# The script that abides by the multi-language protocol (ignored by shardwise: --processor instead).",
        "executableName = sample_kclpy_app.py",
        f"streamName = {target.stream}",
        f"applicationName = {target.application}",
        "AwsCredentialsProvider = DefaultCredentialsProvider",
        "processingLanguage = python/3",
        "initialPositionInStream = TRIM_HORIZON",
        f"regionName = {REGION}",
        "retrievalMode = POLLING",
        "metricsLevel = NONE",
        f"failoverTimeMillis = {FAILOVER_MS}",
        "shardSyncIntervalMillis = 1000",
        "idleTimeBetweenReadsInMillis = 200",
        "parentShardPollIntervalMillis = 300",
        "taskBackoffTimeMillis = 200",
        "maxRecords = 100",
        "# KCL 3.x lease balancing, shortened",
        "leaseAssignmentIntervalMillis = 1000",
        "workerMetricsReporterFreqInMillis = 1000",
        "inMemoryWorkerMetricsCaptureFrequencyMillis = 250",
        *(f"{key} = {value}" for key, value in target.properties.items()),
    ]
    path.write_text("\n".join(lines) + "\n")


@dataclass
class App:
    target: Target
    processor: str
    workdir: Path
    output: Path
    properties: Path
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert self.process is None or self.process.poll() is not None
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(SAMPLE_DIR), os.environ.get("PYTHONPATH")])),
            "PYTHONUNBUFFERED": "1",
            "KCLPY_SAMPLE_OUTPUT": str(self.output),
            "KCLPY_SAMPLE_CHECKPOINT_SECONDS": "1",
        }
        command = [
            sys.executable,
            "-m",
            "shardwise",
            "-v",
            "run",
            "--kclpy-properties",
            str(self.properties),
            "--processor",
            self.processor,
            *self.target.run_args,
        ]
        with self.log_path.open("ab") as log:
            log.write(f"=== {time.strftime('%H:%M:%S')} {' '.join(command)}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                command,
                cwd=self.workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def stop(self, timeout_s: float = 40.0) -> int:
        """SIGTERM (a graceful shutdown: shutdown_requested, checkpoints, leases released); SIGKILL past the
        timeout. Returns the exit code."""
        process = self.process
        assert process is not None
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGKILL)
                process.wait(10)
        return process.returncode

    def lines(self) -> list[str]:
        if not self.output.exists():
            return []
        return self.output.read_text().splitlines()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else "(no log)"

    def leases(self) -> list[Lease]:
        store = self.target.lease_store()
        try:
            return store.list_leases() if store.table_exists() else []
        finally:
            close = getattr(store, "close", None)
            if callable(close):
                close()

    def wait_until(self, predicate: Callable[[], bool], timeout_s: float, what: str | Callable[[], str]) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            if predicate():
                return
            exited = self.process is not None and self.process.poll() is not None
            if exited or time.monotonic() >= deadline:
                reason = "the worker exited" if exited else f"timed out after {timeout_s}s"
                what = what() if callable(what) else what
                leases = "\n".join(
                    f"  {lease.lease_key} owner={lease.lease_owner} at {lease.checkpoint}" for lease in self.leases()
                )
                tail = "\n".join(self.log().splitlines()[-60:])
                raise AssertionError(f"{reason} waiting for {what}\nleases:\n{leases}\nworker log:\n{tail}")
            time.sleep(0.2)

    def wait_for(self, puts: Sequence[Put], timeout_s: float = 90.0) -> None:
        expected = {put.line() for put in puts}

        def describe() -> str:
            missing = sorted(expected - set(self.lines()))
            return f"{len(expected)} records written; missing {len(missing)}: {missing[:5]}"

        self.wait_until(lambda: expected <= set(self.lines()), timeout_s, describe)


@pytest.fixture
def local_target(tmp_path: Path) -> Target:
    suffix = uuid.uuid4().hex[:8]
    return _local_target(tmp_path, f"kclpysample-{suffix}", f"PythonKCLSample-{suffix}")


@pytest.fixture
def make_app(tmp_path: Path) -> Iterator[Callable[[Target, str], App]]:
    apps: list[App] = []

    def make(target: Target, processor: str) -> App:
        workdir = tmp_path / "app"
        workdir.mkdir()
        properties = workdir / "app.properties"
        write_properties(properties, target)
        application = App(target, processor, workdir, tmp_path / "records.tsv", properties, tmp_path / "worker.log")
        apps.append(application)
        return application

    try:
        yield make
    finally:
        for application in apps:  # no worker outlives its test
            if application.process is not None:
                application.stop(timeout_s=10)


def produce(target: Target, tag: str, count: int) -> list[Put]:
    entries = [(f"{tag}-{i:03d}", f"pk-{tag}-{i % 7}") for i in range(count)]
    return target.put(entries)


# -- the scenario ------------------------------------------------------------------------------------------------


def assert_exactly_once(app: App, everything: Sequence[Put]) -> None:
    lines = app.lines()
    duplicates = {line: n for line, n in Counter(lines).items() if n > 1}
    assert not duplicates, f"records written more than once across the restart: {duplicates}"
    assert set(lines) == {put.line() for put in everything}
    assert len(lines) == len(everything)
    # Within a shard, in sequence-number order, as Kinesis delivers them.
    for shard in {put.shard_id for put in everything}:
        sequence = [int(line.split("\t")[1]) for line in lines if line.startswith(shard + "\t")]
        assert sequence == sorted(sequence)


def test_an_unmodified_kclpy_app_sees_every_record_exactly_once_across_a_restart(
    make_app: Callable[[Target, str], App], target: Target
) -> None:
    app = make_app(target, PROCESSOR)
    before = produce(target, "before", 30)
    assert {put.shard_id for put in before} == {f"shardId-00000000000{i}" for i in range(SHARDS)}

    app.start()
    app.wait_for(before)
    startup = app.log()
    assert "ignored (Java daemon only)" in startup
    assert "executableName = sample_kclpy_app.py" in startup
    assert "initialized at TRIM_HORIZON" in startup

    # While it runs: more records, and the processor's own every-second checkpoint (in process_records).
    time.sleep(1.2)
    during = produce(target, "during", 20)
    app.wait_for(during)
    last_put = {
        shard: max(int(p.sequence_number) for p in before + during if p.shard_id == shard)
        for shard in {p.shard_id for p in before + during}
    }

    def checkpointed_while_running() -> bool:
        return any(
            not lease.checkpoint.is_sentinel and int(lease.checkpoint.sequence_number) > 0 for lease in app.leases()
        )

    app.wait_until(checkpointed_while_running, 30, "a checkpoint written from process_records")

    assert app.stop() == 0, app.log()
    # shutdown_requested checkpointed everything delivered, and the leases were given back.
    leases = {lease.lease_key: lease for lease in app.leases()}
    assert {key: int(lease.checkpoint.sequence_number) for key, lease in leases.items()} == last_put
    assert all(lease.lease_owner is None for lease in leases.values())

    stopped = produce(target, "stopped", 20)
    # The stopped worker's worker-metrics entry counts as active for 2 × workerMetricsReporterFreqInMillis after
    # its last report; a leader starting within that window would assign it the released leases and wait for
    # them to expire. A restart (new worker id, as kclpy's default is a fresh UUID) waits that window out.
    time.sleep(2 * 1.0 + 0.5)
    log_offset = len(app.log())
    app.start()
    app.wait_for(stopped)
    after = produce(target, "after", 10)
    app.wait_for(after)
    assert app.stop() == 0, app.log()
    restarted = app.log()[log_offset:]
    for key, lease in leases.items():  # the second worker's processors started at the first one's checkpoints
        assert f"[{key}] initialized at {lease.checkpoint.sequence_number}" in restarted

    assert_exactly_once(app, before + during + stopped + after)


def test_a_v2_api_kclpy_app_runs_too(make_app: Callable[[Target, str], App], local_target: Target) -> None:
    """The older v2 API (``shutdown(shutdown_input)``), checkpointing after every batch: the same guarantee
    (on the embedded backend; the AWS path is the v3 scenario's)."""
    target = local_target
    app = make_app(target, V2_PROCESSOR)
    before = produce(target, "before", 20)
    app.start()
    app.wait_for(before)
    assert app.stop() == 0, app.log()
    stopped = produce(target, "stopped", 10)
    time.sleep(2 * 1.0 + 0.5)  # as in the v3 scenario: the stopped worker's metrics entry goes inactive first
    app.start()
    app.wait_for(stopped)
    assert app.stop() == 0, app.log()
    assert "shutdown requested: checkpointing" in app.log()
    assert_exactly_once(app, before + stopped)
