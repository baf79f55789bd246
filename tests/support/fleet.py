"""A fleet of ``shardwise run`` worker subprocesses for the integration tests.

* :class:`Backend` says where leases and records live: ``local`` (one SQLite file holding both the lease table
  and a :class:`~shardwise.backends.sqlite.stream.LocalStreamStore` stream) or ``aws`` (DynamoDB and Kinesis at
  stand-in endpoints on 127.0.0.1). It gives the worker's command-line flags, a lease store to observe the
  lease table and a :class:`StreamAdmin` to create, fill and reshard the stream.
* :class:`Fleet` starts workers (``python -m shardwise run``; one log file per worker), SIGKILLs them by PID
  (a crash), SIGTERMs them (a graceful shutdown), reads the lease table and waits for conditions, failing
  with the last observed state and the tail of every worker log. :meth:`Fleet.terminate_all` (SIGTERM, then
  SIGKILL past a timeout) is meant for a finalizer; an ``atexit`` hook SIGKILLs any worker still running
  when the test process exits, so no worker outlives the test session.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar

from shardwise.errors import ShardwiseError
from shardwise.hashkeys import HashKeyRange
from shardwise.leases.model import Lease
from shardwise.leases.store import LeaseStore
from shardwise.retrieval.model import Shard

__all__ = [
    "INTEGRATION_DIR",
    "Backend",
    "Fleet",
    "FleetError",
    "StreamAdmin",
    "WorkerProcess",
    "taker_interval_s",
]

T = TypeVar("T")

#: Where the test record processors live; put on the workers' PYTHONPATH.
INTEGRATION_DIR = Path(__file__).resolve().parent.parent / "integration"
REGION = "us-east-1"
EPSILON_MS = 25  # TakerConfig.epsilon_ms


def taker_interval_s(failover_time_ms: int) -> float:
    """Seconds between two runs of a worker's lease taker: ``2 × (failover + ε)``."""
    return 2 * (failover_time_ms + EPSILON_MS) / 1000


class FleetError(AssertionError):
    """A condition was not reached in time, or a worker exited on its own."""


# -- streams -------------------------------------------------------------------------------------------


class StreamAdmin:
    """Producer and control-plane side of one stream, the same on both backends."""

    def __init__(
        self,
        *,
        create: Callable[[int], None],
        put: Callable[[Sequence[tuple[bytes, str]]], list[str]],
        list_shards: Callable[[], list[Shard]],
        split: Callable[[str, int], None],
        merge: Callable[[str, str], None],
        delete: Callable[[], None],
        close: Callable[[], None] = lambda: None,
    ) -> None:
        self._create = create
        self._put = put
        self._list_shards = list_shards
        self._split = split
        self._merge = merge
        self._delete = delete
        self._close = close

    def create(self, shard_count: int) -> None:
        self._create(shard_count)

    def put(self, entries: Sequence[tuple[bytes, str]]) -> list[str]:
        """Put ``(data, partition_key)`` entries in order; returns the shard id each one landed in."""
        return self._put(entries)

    def list_shards(self) -> list[Shard]:
        return self._list_shards()

    def split(self, shard_id: str, new_starting_hash_key: int | None = None) -> list[str]:
        """Split an open shard (by default at the middle of its range); returns the two child shard ids."""
        shard = self._shard(shard_id)
        if new_starting_hash_key is None:
            new_starting_hash_key = _middle(shard.hash_key_range)
        before = {s.shard_id for s in self.list_shards()}
        self._split(shard_id, new_starting_hash_key)
        return sorted(s.shard_id for s in self.list_shards() if s.shard_id not in before)

    def merge(self, shard_id: str, adjacent_shard_id: str) -> str:
        """Merge two adjacent open shards; returns the child shard id."""
        before = {s.shard_id for s in self.list_shards()}
        self._merge(shard_id, adjacent_shard_id)
        (child,) = [s.shard_id for s in self.list_shards() if s.shard_id not in before]
        return child

    def delete(self) -> None:
        self._delete()

    def close(self) -> None:
        self._close()

    def _shard(self, shard_id: str) -> Shard:
        for shard in self.list_shards():
            if shard.shard_id == shard_id:
                return shard
        raise KeyError(f"no shard {shard_id} in the stream")


def _middle(hash_range: HashKeyRange) -> int:
    return (hash_range.start + hash_range.end + 1) // 2


# -- backends ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Backend:
    """Where the workers keep their leases and read their stream."""

    kind: Literal["local", "aws"]
    db: Path | None = None
    kinesis_endpoint_url: str | None = None
    dynamodb_endpoint_url: str | None = None
    region: str = REGION

    @classmethod
    def local(cls, db: Path) -> Backend:
        return cls("local", db=db)

    @classmethod
    def aws(cls, *, kinesis_endpoint_url: str, dynamodb_endpoint_url: str) -> Backend:
        return cls("aws", kinesis_endpoint_url=kinesis_endpoint_url, dynamodb_endpoint_url=dynamodb_endpoint_url)

    def worker_args(self) -> list[str]:
        """The backend flags of ``shardwise run`` and ``shardwise leases``."""
        if self.kind == "local":
            assert self.db is not None
            return ["--backend", "local", "--db", str(self.db)]
        assert self.kinesis_endpoint_url and self.dynamodb_endpoint_url
        return [
            "--backend",
            "aws",
            "--kinesis-endpoint-url",
            self.kinesis_endpoint_url,
            "--dynamodb-endpoint-url",
            self.dynamodb_endpoint_url,
            "--region",
            self.region,
        ]

    def table_cli_args(self) -> list[str]:
        """The backend flags of the lease-table admin commands (``shardwise migrate``, ``shardwise features``)."""
        if self.kind == "local":
            return ["--backend", "local", "--db", str(self.db)]
        assert self.dynamodb_endpoint_url is not None
        return ["--endpoint-url", self.dynamodb_endpoint_url, "--region", self.region]

    def lease_store(self, application: str) -> LeaseStore:
        if self.kind == "local":
            from shardwise.backends.sqlite.leases import SQLiteLeaseStore

            assert self.db is not None
            return SQLiteLeaseStore(self.db, application)
        from shardwise.backends.aws.leases import DynamoDBLeaseStore, DynamoDBLeaseStoreConfig

        return DynamoDBLeaseStore(
            DynamoDBLeaseStoreConfig(table_name=application, table_poll_interval_s=0.05, consistent_reads=True),
            endpoint_url=self.dynamodb_endpoint_url,
            region_name=self.region,
        )

    def stream_admin(self, stream: str) -> StreamAdmin:
        if self.kind == "local":
            return self._local_admin(stream)
        return self._kinesis_admin(stream)

    def _local_admin(self, stream: str) -> StreamAdmin:
        from shardwise.backends.sqlite.stream import LocalStreamStore

        assert self.db is not None
        store = LocalStreamStore(self.db)

        def put(entries: Sequence[tuple[bytes, str]]) -> list[str]:
            return [result.shard_id for result in store.put_records(stream, list(entries))]

        return StreamAdmin(
            create=lambda count: store.create_stream(stream, count),
            put=put,
            list_shards=lambda: store.stream(stream).list_shards(),
            split=lambda shard_id, hash_key: _discard(store.split_shard(stream, shard_id, hash_key)),
            merge=lambda shard_id, adjacent: _discard(store.merge_shards(stream, shard_id, adjacent)),
            delete=lambda: store.delete_stream(stream),
            close=store.close,
        )

    def _kinesis_admin(self, stream: str) -> StreamAdmin:
        from shardwise.backends.aws.kinesis import KinesisAdmin, KinesisStream

        source = KinesisStream(stream, endpoint_url=self.kinesis_endpoint_url, region_name=self.region)
        admin = KinesisAdmin(source)

        def put(entries: Sequence[tuple[bytes, str]]) -> list[str]:
            return [result.shard_id for result in admin.put_records(list(entries))]

        return StreamAdmin(
            create=lambda count: admin.create(count, timeout_s=30),
            put=put,
            list_shards=source.list_shards,
            split=lambda shard_id, hash_key: admin.split_shard(shard_id, hash_key, timeout_s=30),
            merge=lambda shard_id, adjacent: admin.merge_shards(shard_id, adjacent, timeout_s=30),
            delete=admin.delete,
        )


def _discard(_value: object) -> None:
    return None


# -- workers -------------------------------------------------------------------------------------------

_LIVE: dict[int, subprocess.Popen[bytes]] = {}


@atexit.register
def _kill_leftovers() -> None:  # pragma: no cover - only matters when a finalizer did not run
    for pid, process in list(_LIVE.items()):
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(5)
        _LIVE.pop(pid, None)


@dataclass
class WorkerProcess:
    worker_id: str
    process: subprocess.Popen[bytes]
    log_path: Path
    started_at: float
    #: How the test stopped it ("killed", "terminated"), or None while the test expects it to run.
    stopped: str | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def is_alive(self) -> bool:
        return self.process.poll() is None


@dataclass
class Fleet:
    """``shardwise run`` workers of one application on one stream, each a subprocess with its own log file.

    ``processor`` is the worker's ``MODULE:FACTORY``; ``worker_args`` are flags every worker gets (timings,
    initial position); ``env`` is added to each worker's environment, and ``worker_id_env`` (if set) names a
    variable that receives the worker's id. ``pythonpath`` is prepended to the workers' ``PYTHONPATH``.
    """

    backend: Backend
    application: str
    stream: str
    processor: str
    log_dir: Path
    worker_args: Sequence[str] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    worker_id_env: str | None = None
    pythonpath: Sequence[Path] = (INTEGRATION_DIR,)
    workers: dict[str, WorkerProcess] = field(default_factory=dict)
    _store: LeaseStore | None = field(default=None, repr=False)

    # -- processes ---------------------------------------------------------------------------------------

    def command(self, worker_id: str, extra_args: Iterable[str] = ()) -> list[str]:
        return [
            sys.executable,
            "-m",
            "shardwise",
            "-v",
            "run",
            self.processor,
            "--app",
            self.application,
            "--stream",
            self.stream,
            *self.backend.worker_args(),
            "--worker-id",
            worker_id,
            *self.worker_args,
            *extra_args,
        ]

    def worker_env(self, worker_id: str, extra_env: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment of a worker: this process's, plus ``env``, ``extra_env``, the worker id (in
        ``worker_id_env``) and ``pythonpath`` prepended to ``PYTHONPATH``."""
        env = {**os.environ, **self.env, **(extra_env or {}), "PYTHONUNBUFFERED": "1"}
        paths = [str(p) for p in self.pythonpath]
        if os.environ.get("PYTHONPATH"):
            paths.append(os.environ["PYTHONPATH"])
        env["PYTHONPATH"] = os.pathsep.join(paths)
        if self.worker_id_env:
            env[self.worker_id_env] = worker_id
        return env

    def start(
        self, worker_id: str, extra_args: Iterable[str] = (), extra_env: Mapping[str, str] | None = None
    ) -> WorkerProcess:
        """Start a worker (``extra_args``/``extra_env`` for this one only). An id may be reused once its previous
        process has exited (its log is then appended to)."""
        previous = self.workers.get(worker_id)
        if previous is not None and previous.is_alive():
            raise ValueError(f"worker {worker_id} is already running (pid {previous.pid})")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{worker_id}.log"
        env = self.worker_env(worker_id, extra_env)
        with log_path.open("ab") as log:
            log.write(f"=== {time.strftime('%H:%M:%S')} starting worker {worker_id} ===\n".encode())
            log.flush()
            process = subprocess.Popen(
                self.command(worker_id, extra_args),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,  # a Ctrl-C in the terminal reaches pytest only; it stops the workers
            )
        _LIVE[process.pid] = process
        worker = WorkerProcess(worker_id, process, log_path, time.monotonic())
        self.workers[worker_id] = worker
        return worker

    def kill(self, worker_id: str) -> None:
        """Crash a worker: SIGKILL by PID, then reap it."""
        worker = self.workers[worker_id]
        worker.stopped = "killed"
        if worker.is_alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, signal.SIGKILL)
        worker.process.wait(10)
        _LIVE.pop(worker.pid, None)

    def terminate(self, worker_id: str, timeout_s: float = 20.0) -> int:
        """Stop a worker gracefully (SIGTERM), SIGKILL it past ``timeout_s``; returns its exit code."""
        self._signal_all([worker_id], signal.SIGTERM)
        self._reap([worker_id], timeout_s)
        code = self.workers[worker_id].process.returncode
        assert code is not None
        return code

    def terminate_all(self, timeout_s: float = 20.0) -> None:
        """SIGTERM every running worker, wait up to ``timeout_s`` in all, SIGKILL the rest. Idempotent."""
        ids = list(self.workers)
        self._signal_all(ids, signal.SIGTERM)
        self._reap(ids, timeout_s)

    def _signal_all(self, worker_ids: Iterable[str], signum: signal.Signals) -> None:
        for worker_id in worker_ids:
            worker = self.workers[worker_id]
            if worker.stopped is None:
                worker.stopped = "terminated"
            if worker.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, signum)

    def _reap(self, worker_ids: Iterable[str], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        for worker_id in worker_ids:
            worker = self.workers[worker_id]
            try:
                worker.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, signal.SIGKILL)
                worker.process.wait(10)
            _LIVE.pop(worker.pid, None)

    def is_alive(self, worker_id: str) -> bool:
        return self.workers[worker_id].is_alive()

    def alive(self) -> list[str]:
        return [worker_id for worker_id, worker in self.workers.items() if worker.is_alive()]

    def close(self) -> None:
        """Stop every worker and close the fleet's own lease-store connection."""
        self.terminate_all()
        if self._store is not None:
            close = getattr(self._store, "close", None)
            if callable(close):
                close()
            self._store = None

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- observing ---------------------------------------------------------------------------------------

    @property
    def store(self) -> LeaseStore:
        if self._store is None:
            self._store = self.backend.lease_store(self.application)
        return self._store

    def leases(self) -> list[Lease]:
        """The lease table, read through a lease store (empty while no worker has created it)."""
        if not self.store.table_exists():
            return []
        return sorted(self.store.list_leases(), key=lambda lease: lease.lease_key)

    def held(self, leases: Iterable[Lease] | None = None) -> dict[str, list[str]]:
        """Unfinished leases per owner (every started worker present, with [] if it holds none)."""
        result: dict[str, list[str]] = {worker_id: [] for worker_id in self.workers}
        for lease in self.leases() if leases is None else leases:
            if lease.lease_owner is not None and not lease.is_complete:
                result.setdefault(lease.lease_owner, []).append(lease.lease_key)
        return result

    def lease_counts(self, leases: Iterable[Lease] | None = None) -> Counter[str]:
        """Number of unfinished leases per owner, over the workers that are running."""
        alive = set(self.alive())
        counts: Counter[str] = Counter(dict.fromkeys(alive, 0))
        for owner, keys in self.held(leases).items():
            if owner in alive:
                counts[owner] = len(keys)
        return counts

    def describe_leases(self) -> str:
        try:
            leases = self.leases()
        except (ShardwiseError, sqlite3.Error, OSError) as exc:
            return f"(lease table unreadable: {exc!r})"
        if not leases:
            return "(no leases)"
        lines = [
            f"  {lease.lease_key}  owner={lease.lease_owner or '-'}  counter={lease.lease_counter}  "
            f"checkpoint={lease.checkpoint}  parents={','.join(sorted(lease.parent_shard_ids)) or '-'}"
            for lease in leases
        ]
        return "\n".join(lines)

    def log_tail(self, worker_id: str, lines: int = 30) -> str:
        path = self.workers[worker_id].log_path
        try:
            with path.open("rb") as log:
                log.seek(0, os.SEEK_END)
                size = log.tell()
                log.seek(max(0, size - 16_384))
                text = log.read().decode(errors="replace")
        except OSError as exc:
            return f"(log unreadable: {exc})"
        return "\n".join(text.splitlines()[-lines:])

    def log_text(self, worker_id: str) -> str:
        return self.workers[worker_id].log_path.read_text(errors="replace")

    def report(self, lines_per_log: int = 30) -> str:
        """The lease table and the tail of every worker log."""
        parts = ["lease table:", self.describe_leases()]
        for worker_id, worker in self.workers.items():
            code = worker.process.poll()
            status = "running" if code is None else f"exited {code} ({worker.stopped or 'unexpectedly'})"
            parts.append(f"--- {worker_id} (pid {worker.pid}, {status}): {worker.log_path} ---")
            parts.append(self.log_tail(worker_id, lines_per_log))
        return "\n".join(parts)

    def _unexpected_exits(self) -> list[str]:
        return [w for w, worker in self.workers.items() if worker.stopped is None and not worker.is_alive()]

    def wait_until(
        self,
        predicate: Callable[[], T],
        timeout_s: float,
        describe: str | Callable[[], str],
        *,
        interval_s: float = 0.25,
    ) -> T:
        """Poll ``predicate`` until it returns something truthy, and return that.

        Fails (:class:`FleetError`) after ``timeout_s`` — or at once if a worker the test did not stop has
        exited — with the last value (or exception) the predicate gave, the lease table and each worker's log
        tail. Errors of the backends (a busy SQLite file, a stand-in hiccup) count as "not yet".
        """
        deadline = time.monotonic() + timeout_s
        last: object = "(never evaluated)"
        while True:
            try:
                value = predicate()
            except (ShardwiseError, sqlite3.Error, OSError) as exc:
                last = exc
            else:
                if value:
                    return value
                last = value
            crashed = self._unexpected_exits()
            if crashed or time.monotonic() >= deadline:
                what = describe() if callable(describe) else describe
                reason = (
                    f"worker(s) {', '.join(crashed)} exited on their own"
                    if crashed
                    else f"timed out after {timeout_s:.1f}s"
                )
                raise FleetError(f"{reason} waiting for {what}\nlast observed: {last!r}\n{self.report()}")
            time.sleep(interval_s)
