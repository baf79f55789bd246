"""The worker: one process, one worker id, a handful of loops and a bounded pool of shard consumers.

Loops (one thread each, each with its own interval, all stopped by one event):

* **renewer** — every ``failover/3 − ε``: renew held leases; consumers of lost leases notice and shut down.
* **taker** — at start, then every ``2 × (failover + ε)`` (and early after a shard ends): the KCL 2.x lease
  taker; every newly held lease gets a :class:`ShardConsumer`.
* **shard sync** — at start, then every ``shard_sync_interval``: if this worker is the (deterministic) leader,
  create missing leases (first run), then audit hash-range holes, and delete finished parent leases.
* **dispatcher** (the thread that calls :meth:`Worker.run`) — runs each due consumer's next step on the pool.

Graceful shutdown (:meth:`Worker.request_shutdown`, SIGTERM/SIGINT in the CLI): taking stops, every processor
gets ``shutdown_requested`` (and checkpoints), each lease is released so another worker can take it at once,
then the worker exits; past ``shutdown_timeout_ms`` it exits anyway and the remaining leases simply expire.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from shardwise.assignment.taker import TakerConfig
from shardwise.coordinator.leader import DeterministicShuffleLeaderDecider
from shardwise.coordinator.renewer import LeaseRenewer
from shardwise.coordinator.shard_sync import InitialPosition, ShardSyncer
from shardwise.coordinator.taker import LeaseTaker
from shardwise.errors import ConfigurationError
from shardwise.leases.model import Lease
from shardwise.leases.store import LeaseStore
from shardwise.lifecycle.consumer import ConsumerConfig, ShardConsumer
from shardwise.lifecycle.states import ShutdownReason
from shardwise.processor import RecordProcessor, RecordProcessorFactory
from shardwise.retrieval.model import ChildShard
from shardwise.retrieval.source import StreamSource

__all__ = ["Worker", "WorkerConfig", "WorkerStats", "default_worker_id"]

logger = logging.getLogger(__name__)


def default_worker_id() -> str:
    """``<host>:<pid>:<random>`` — unique per process, readable in the lease table."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """Everything one worker needs to know. Durations carry their unit in the name; defaults are KCL's."""

    application_name: str
    stream_name: str
    worker_id: str = field(default_factory=default_worker_id)
    lease_table_name: str | None = None
    initial_position: InitialPosition = field(default_factory=InitialPosition.latest)
    leases: TakerConfig = field(default_factory=TakerConfig)
    consumer: ConsumerConfig = field(default_factory=ConsumerConfig)
    shard_sync_interval_ms: int = 60_000
    max_consumer_threads: int = 16
    dispatch_poll_interval_ms: int = 20
    shutdown_timeout_ms: int = 30_000

    def __post_init__(self) -> None:
        if not self.application_name:
            raise ConfigurationError("application_name must not be empty (it names the lease table)")
        if not self.stream_name:
            raise ConfigurationError("stream_name must not be empty")
        if not self.worker_id:
            raise ConfigurationError("worker_id must not be empty")
        if self.max_consumer_threads < 1:
            raise ConfigurationError(f"max_consumer_threads must be >= 1, got {self.max_consumer_threads}")
        for name in ("shard_sync_interval_ms", "dispatch_poll_interval_ms", "shutdown_timeout_ms"):
            if getattr(self, name) <= 0:
                raise ConfigurationError(f"{name} must be > 0, got {getattr(self, name)}")

    @property
    def table_name(self) -> str:
        return self.lease_table_name or self.application_name


@dataclass
class WorkerStats:
    """Counters a caller (CLI, demo, benchmark) can read while the worker runs."""

    records_processed: int = 0
    bytes_processed: int = 0
    first_record_at_ns: int | None = None
    started_at_ns: int = 0
    leases_taken: int = 0
    leases_lost: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add_records(self, lease_key: str, count: int, size: int) -> None:
        with self._lock:
            if self.first_record_at_ns is None:
                self.first_record_at_ns = time.monotonic_ns()
            self.records_processed += count
            self.bytes_processed += size


class _Loop:
    """A periodic task on its own daemon thread; ``wake()`` runs it early."""

    def __init__(
        self, name: str, interval_s: Callable[[], float], task: Callable[[], None], stop: threading.Event
    ) -> None:
        self._name = name
        self._interval_s = interval_s
        self._task = task
        self._stop = stop
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def join(self, timeout_s: float) -> None:
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._task()
            except Exception:
                logger.exception("%s loop failed; it runs again at its next interval", self._name)
            self._wake.wait(self._interval_s())
            self._wake.clear()


class Worker:
    """Consumes a stream with other workers of the same application, sharing shards through leases."""

    def __init__(
        self,
        config: WorkerConfig,
        *,
        store: LeaseStore,
        source: StreamSource,
        processor_factory: RecordProcessorFactory,
        clock_ns: Callable[[], int] = time.monotonic_ns,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.worker_id = config.worker_id
        self._store = store
        self._source = source
        self._factory = processor_factory
        self._clock_ns = clock_ns
        self.renewer = LeaseRenewer(
            store, self.worker_id, failover_time_ms=config.leases.failover_time_ms, clock_ns=clock_ns
        )
        self._taker = LeaseTaker(store, self.worker_id, config.leases, clock_ns=clock_ns, rng=rng or random.Random())
        self._syncer = ShardSyncer(store, source, config.initial_position)
        self._leader = DeterministicShuffleLeaderDecider(store, self.worker_id)
        self._synced_once = False
        # Keyed by (lease key, token): a lease lost and taken again gets a new consumer while the old one
        # still finishes its shutdown.
        self._consumers: dict[tuple[str, str], ShardConsumer] = {}
        self._running: dict[tuple[str, str], concurrent.futures.Future[None]] = {}
        self._consumers_lock = threading.Lock()
        self._stop_loops = threading.Event()
        self._shutdown_requested = threading.Event()
        self._stopped = threading.Event()
        self._shutdown_deadline_ns: int | None = None
        self.stats = WorkerStats(started_at_ns=clock_ns())
        leases = config.leases
        self._loops = [
            _Loop("renewer", lambda: leases.renewal_interval_ms / 1000, self._renew, self._stop_loops),
            _Loop("taker", lambda: leases.taker_interval_ms / 1000, self._take, self._stop_loops),
            _Loop("shard-sync", lambda: config.shard_sync_interval_ms / 1000, self._sync, self._stop_loops),
        ]
        self._taker_loop = self._loops[1]

    # -- public -------------------------------------------------------------------------------------

    def run(self) -> None:
        """Run until :meth:`request_shutdown` (then shut down gracefully). Blocks the calling thread."""
        self._store.create_table_if_not_exists()
        logger.info(
            "worker %s starts on application %s (lease table %s), stream %s",
            self.worker_id,
            self.config.application_name,
            self.config.table_name,
            self.config.stream_name,
        )
        for loop in (self._loops[2], self._loops[0], self._loops[1]):
            loop.start()
        pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=self.config.max_consumer_threads, thread_name_prefix="shard-consumer"
        )
        try:
            self._dispatch(pool)
        finally:
            self._stop_loops.set()
            for loop in self._loops:
                loop.join(5.0)
            pool.shutdown(wait=False, cancel_futures=True)
            self._stopped.set()
            logger.info("worker %s stopped", self.worker_id)

    def request_shutdown(self) -> None:
        """Start a graceful shutdown (idempotent; safe from a signal handler)."""
        if not self._shutdown_requested.is_set():
            self._shutdown_deadline_ns = self._clock_ns() + self.config.shutdown_timeout_ms * 1_000_000
            self._shutdown_requested.set()

    def wait_stopped(self, timeout_s: float | None = None) -> bool:
        return self._stopped.wait(timeout_s)

    def consumers(self) -> list[ShardConsumer]:
        with self._consumers_lock:
            return list(self._consumers.values())

    def held_leases(self) -> list[Lease]:
        return [held.lease for held in self.renewer.held().values()]

    # -- loops --------------------------------------------------------------------------------------

    def _renew(self) -> None:
        result = self.renewer.renew_all()
        if result.lost:
            self.stats.leases_lost += len(result.lost)

    def _take(self) -> None:
        if self._shutdown_requested.is_set():
            return
        taken = self._taker.take_leases()
        if not taken:
            return
        tokens = self.renewer.add_leases(taken)
        self.stats.leases_taken += len(taken)
        with self._consumers_lock:
            for lease in taken:
                token = tokens[lease.lease_key]
                self._consumers[(lease.lease_key, token)] = ShardConsumer(
                    lease=lease,
                    token=token,
                    processor=self._new_processor(),
                    source=self._source,
                    store=self._store,
                    renewer=self.renewer,
                    create_child_leases=self._create_child_leases,
                    config=self.config.consumer,
                    clock_ns=self._clock_ns,
                    on_records=self.stats.add_records,
                )
        logger.info("worker %s took leases %s", self.worker_id, ", ".join(lease.lease_key for lease in taken))

    def _new_processor(self) -> RecordProcessor:
        processor = self._factory()
        if not isinstance(processor, RecordProcessor):
            raise ConfigurationError(
                f"the processor factory returned {type(processor).__name__}, which lacks the record-processor "
                "methods (initialize, process_records, lease_lost, shard_ended, shutdown_requested)"
            )
        return processor

    def _sync(self) -> None:
        """Leader only: a full shard sync on the first run, then KCL's hole audit (which syncs after three
        consecutive audits see the same holes) and clean-up of finished parent leases."""
        if self._shutdown_requested.is_set() or not self._leader.is_leader():
            return
        if not self._synced_once:
            created = self._syncer.sync()
            self._synced_once = True
            if created:
                self._taker_loop.wake()
        elif self._syncer.audit():
            self._taker_loop.wake()
        self._syncer.clean_up()

    def _create_child_leases(self, parent: Lease, children: Sequence[ChildShard]) -> None:
        self._syncer.create_child_leases(parent, children)
        self._taker_loop.wake()

    # -- dispatch -----------------------------------------------------------------------------------

    def _dispatch(self, pool: concurrent.futures.ThreadPoolExecutor) -> None:
        poll_s = self.config.dispatch_poll_interval_ms / 1000
        shutting_down = False
        while True:
            if self._shutdown_requested.is_set() and not shutting_down:
                shutting_down = True
                logger.info("worker %s shuts down gracefully", self.worker_id)
                for consumer in self.consumers():
                    consumer.request_shutdown()
            now = self._clock_ns()
            with self._consumers_lock:
                for key, consumer in list(self._consumers.items()):
                    future = self._running.get(key)
                    if future is not None and not future.done():
                        continue
                    self._running.pop(key, None)
                    if consumer.is_complete:
                        del self._consumers[key]
                        if consumer.shutdown_reason is ShutdownReason.SHARD_END:
                            self._taker_loop.wake()
                        continue
                    if consumer.is_due(now):
                        self._running[key] = pool.submit(consumer.step)
                remaining = len(self._consumers)
            if shutting_down:
                if remaining == 0:
                    return
                deadline = self._shutdown_deadline_ns
                if deadline is not None and now > deadline:
                    logger.warning(
                        "worker %s: shutdown timeout; %d shard consumer(s) did not finish, their leases will expire",
                        self.worker_id,
                        remaining,
                    )
                    return
            time.sleep(poll_s)
