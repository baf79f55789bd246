"""``shardwise demo`` (the classic demo): a fleet of worker processes consuming a local stream, with failures, verified.

The demo creates a local stream, produces records while several ``shardwise run`` worker processes consume
them, SIGKILLs one worker mid-run, starts a replacement, splits a shard, and finally checks that every
record produced was processed (at least once) by the :class:`DemoProcessor`, which writes each record it sees
to a results database *before* checkpointing — so a crash can cause duplicates but never a loss.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from shardwise.backends import open_coordinator_tables
from shardwise.backends.sqlite.leases import SQLiteLeaseStore
from shardwise.backends.sqlite.stream import LocalStreamStore
from shardwise.errors import ConfigurationError
from shardwise.hashkeys import MAX_HASH_KEY
from shardwise.leadership.lock import LEADER_KEY, lock_from_record
from shardwise.processor import BaseRecordProcessor, InitializationInput, ProcessRecordsInput

__all__ = ["DemoOptions", "DemoProcessor", "DemoSummary", "DemoWorkers", "run_demo"]

RESULTS_ENV = "SHARDWISE_DEMO_RESULTS"
WORKER_ENV = "SHARDWISE_DEMO_WORKER"
_RESULTS_SCHEMA = """
CREATE TABLE IF NOT EXISTS demo_processed (
    record_id INTEGER NOT NULL,
    shard_id TEXT NOT NULL,
    sequence_number TEXT NOT NULL,
    worker_id TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS demo_processed_by_id ON demo_processed (record_id);
"""


def _results_db(path: str | Path) -> sqlite3.Connection:
    # A processor is called by one pool thread at a time, not always the same one.
    conn = sqlite3.connect(path, timeout=60, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA busy_timeout = 60000")
    conn.executescript(_RESULTS_SCHEMA)
    return conn


class DemoProcessor(BaseRecordProcessor):
    """Records every record it is given (id, shard, sequence number, worker) then checkpoints the batch."""

    def __init__(self) -> None:
        path = os.environ.get(RESULTS_ENV)
        if not path:
            raise ConfigurationError(f"DemoProcessor needs {RESULTS_ENV} (the demo's results database)")
        self._conn = _results_db(path)
        self._worker = os.environ.get(WORKER_ENV, f"pid-{os.getpid()}")
        self._shard_id = ""

    def initialize(self, initialization_input: InitializationInput) -> None:
        self._shard_id = initialization_input.shard_id

    def process_records(self, process_records_input: ProcessRecordsInput) -> None:
        rows = [
            (int(record.data), self._shard_id, record.sequence_number, self._worker)
            for record in process_records_input.records
        ]
        self._conn.execute("BEGIN IMMEDIATE")
        self._conn.executemany("INSERT INTO demo_processed VALUES (?, ?, ?, ?)", rows)
        self._conn.execute("COMMIT")
        process_records_input.checkpointer.checkpoint()


@dataclass(frozen=True, slots=True)
class DemoOptions:
    workdir: Path
    shards: int = 8
    records: int = 20_000
    workers: int = 4
    produce_seconds: float = 40.0
    failover_time_ms: int = 4_000
    drain_timeout_s: float = 180.0
    assignment: str = "lease-count-2x"

    def __post_init__(self) -> None:
        if self.assignment not in ("lease-count-2x", "utilization-3x"):
            raise ConfigurationError(f"assignment must be lease-count-2x or utilization-3x, got {self.assignment!r}")
        if self.shards < 2 or self.workers < 2 or self.records < 100:
            raise ConfigurationError("the demo needs at least 2 shards, 2 workers and 100 records")
        if self.produce_seconds <= 0:
            raise ConfigurationError("produce_seconds must be > 0")


@dataclass
class DemoSummary:
    produced: int
    processed_unique: int
    duplicates: int
    lost: int
    leases_per_worker: dict[str, int]
    takeover_seconds: float | None
    killed_worker: str | None = None
    split_shard: str | None = None
    elapsed_seconds: float = 0.0
    settings: dict[str, object] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class DemoWorkers:
    """The worker processes of the demo, each a ``shardwise run`` subprocess."""

    def __init__(
        self,
        options: DemoOptions,
        db: Path,
        results: Path | None,
        *,
        processor: str = "shardwise.demo:DemoProcessor",
        application: str = "demo-app",
        stream: str = "demo",
    ) -> None:
        self._options = options
        self._db = db
        self._results = results
        self._processor = processor
        self._application = application
        self._stream = stream
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self._count = 0

    def start_worker(self, extra_args: list[str] | None = None, env: dict[str, str] | None = None) -> str:
        """Start a worker (``extra_args`` after the demo's flags, ``env`` added to its environment); its id."""
        self._count += 1
        worker_id = f"demo-worker-{self._count}"
        failover = self._options.failover_time_ms
        argv = [
            sys.executable,
            "-m",
            "shardwise",
            "run",
            self._processor,
            "--app",
            self._application,
            "--stream",
            self._stream,
            "--db",
            str(self._db),
            "--worker-id",
            worker_id,
            "--initial-position",
            "TRIM_HORIZON",
            "--failover-time-ms",
            str(failover),
            "--idle-time-between-reads-ms",
            "200",
            "--set",
            "consumer.parent_shard_poll_interval_ms=500",
            "--set",
            "consumer.max_records=1000",
            "--set",
            f"shard_sync_interval_ms={max(1000, failover)}",
            "--assignment",
            self._options.assignment,
        ]
        if self._options.assignment == "utilization-3x":
            # Demo timings for the leader lock and metrics (KCL: 120 s lock lease, 30 s reports), so a killed
            # leader is replaced within the demo's time.
            argv += [
                "--set",
                f"coordination.leader_lease_duration_ms={3 * failover}",
                "--set",
                f"coordination.leader_heartbeat_period_ms={failover // 2}",
                "--set",
                f"worker_metrics.reporter_frequency_ms={failover // 2}",
            ]
        argv += extra_args or []
        log = (self._options.workdir / f"{worker_id}.log").open("wb")
        env = {**os.environ, **(env or {}), WORKER_ENV: worker_id}
        if self._results is not None:
            env[RESULTS_ENV] = str(self._results)
        self.processes[worker_id] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)  # noqa: S603 - our own CLI
        log.close()
        return worker_id

    def kill(self, worker_id: str) -> None:
        process = self.processes.pop(worker_id)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()

    def alive(self) -> list[str]:
        return [w for w, p in self.processes.items() if p.poll() is None]

    def stop_all(self, timeout_s: float = 30.0) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                os.kill(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for process in self.processes.values():
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait()


def _active_leases_per_worker(leases: SQLiteLeaseStore, workers: list[str]) -> dict[str, int]:
    counts = dict.fromkeys(workers, 0)
    for lease in leases.list_leases():
        if lease.lease_owner is not None and not lease.is_complete and lease.lease_owner in counts:
            counts[lease.lease_owner] += 1
    return counts


def _leader(leases: SQLiteLeaseStore, db: Path) -> str | None:
    """The worker holding the KCL 3.x leader lock, if any."""
    record = open_coordinator_tables(leases, "demo-app").coordinator.get(LEADER_KEY)
    return None if record is None else lock_from_record(record, 0).owner_name


def _processed(results: sqlite3.Connection) -> tuple[int, int]:
    row = results.execute("SELECT COUNT(*), COUNT(DISTINCT record_id) FROM demo_processed").fetchone()
    return int(row[0]), int(row[1])


def run_demo(options: DemoOptions, progress: Callable[[str], None] | None = None) -> DemoSummary:
    """Run the whole demo and return what it verified. Raises only on set-up errors."""
    started = time.monotonic()
    say = progress or (lambda _line: None)
    options.workdir.mkdir(parents=True, exist_ok=True)
    db, results_path = options.workdir / "demo.db", options.workdir / "results.db"
    for path in (db, results_path):
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                Path(f"{path}{suffix}").unlink()
    streams = LocalStreamStore(db)
    streams.create_stream("demo", options.shards)
    leases = SQLiteLeaseStore(db, "demo-app")
    leases.create_table_if_not_exists()
    results = _results_db(results_path)
    fleet = DemoWorkers(options, db, results_path)
    produced = 0
    killed: str | None = None
    split: str | None = None
    takeover: float | None = None
    stop_producing = threading.Event()

    def produce() -> None:
        nonlocal produced
        batch = 100
        interval = options.produce_seconds / max(1, options.records // batch)
        next_at = time.monotonic()
        for start in range(0, options.records, batch):
            if stop_producing.is_set():
                return
            ids = range(start + 1, min(options.records, start + batch) + 1)
            streams.put_records("demo", [(str(i).encode(), str(i)) for i in ids])
            produced = ids[-1]
            next_at += interval
            time.sleep(max(0.0, next_at - time.monotonic()))

    try:
        for _ in range(options.workers):
            fleet.start_worker()
        producer = threading.Thread(target=produce, name="demo-producer", daemon=True)
        producer.start()
        kill_at, split_at = options.records * 2 // 5, options.records * 3 // 5
        kill_time: float | None = None
        deadline = time.monotonic() + options.produce_seconds + options.drain_timeout_s
        while time.monotonic() < deadline:
            total, unique = _processed(results)
            alive = fleet.alive()
            counts = _active_leases_per_worker(leases, alive)
            say(
                f"produced {produced:>6}/{options.records}  processed {unique:>6} unique (+{total - unique} dup)  "
                f"workers {len(alive)}  leases {' '.join(str(counts[w]) for w in alive)}"
            )
            if killed is None and produced >= kill_at:
                killed = _leader(leases, db) if options.assignment == "utilization-3x" else None
                if killed not in alive:
                    killed = alive[0]
                fleet.kill(killed)
                kill_time = time.monotonic()
                fleet.start_worker()
                say(f"SIGKILLed {killed}; started a replacement")
            if killed is not None and takeover is None and kill_time is not None:
                still = [
                    lease for lease in leases.list_leases() if lease.lease_owner == killed and not lease.is_complete
                ]
                if not still:
                    takeover = time.monotonic() - kill_time
            if split is None and produced >= split_at:
                shard = next(s for s in streams.stream("demo").list_shards() if s.is_open)
                middle = shard.hash_key_range.start + (shard.hash_key_range.end - shard.hash_key_range.start) // 2 + 1
                streams.split_shard("demo", shard.shard_id, min(middle, MAX_HASH_KEY))
                split = shard.shard_id
                say(f"split {split}")
            done_producing = not producer.is_alive()
            # The 2.x generation balances lease counts; the 3.x leader balances measured load, so there it is
            # enough that every worker processes something.
            spread = 1 if options.assignment == "lease-count-2x" else options.shards
            balanced = (
                bool(counts) and min(counts.values()) >= 1 and max(counts.values()) - min(counts.values()) <= spread
            )
            if done_producing and unique >= produced and takeover is not None and balanced:
                break
            time.sleep(0.25)
        stop_producing.set()
        producer.join(5)
        final_counts = _active_leases_per_worker(leases, fleet.alive())
    finally:
        stop_producing.set()
        fleet.stop_all()
    total, unique = _processed(results)
    return DemoSummary(
        produced=produced,
        processed_unique=unique,
        duplicates=total - unique,
        lost=produced - unique,
        leases_per_worker=final_counts,
        takeover_seconds=None if takeover is None else round(takeover, 2),
        killed_worker=killed,
        split_shard=split,
        elapsed_seconds=round(time.monotonic() - started, 1),
        settings={
            "assignment": options.assignment,
            "failover_time_ms": options.failover_time_ms,
            "shards": options.shards,
            "workers": options.workers,
        },
    )
