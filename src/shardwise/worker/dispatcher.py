"""The shard consumers of one worker and the thread that runs them (the dispatcher).

Leases a take or a discovery brings become shard consumers (:meth:`Dispatcher.start_consumers`); the
dispatcher — the thread that calls :meth:`shardwise.worker.Worker.run` — runs each due consumer's next step on
a bounded pool, drops finished consumers and forces handoffs whose processor does not finish in time.

Graceful shutdown (:meth:`Dispatcher.request_shutdown`): every processor gets ``shutdown_requested`` (and
checkpoints), each lease is released so another worker can take it at once, then the dispatcher returns; past
``shutdown_timeout_ms`` it returns anyway and the remaining leases simply expire. A consumer started during a
shutdown is asked to shut down at once, and leases that arrive after the dispatcher has finished (a take or
discovery under way) are released without a consumer — the intake is closed.
"""

from __future__ import annotations

import concurrent.futures
import functools
import logging
import threading
from collections.abc import Callable, Mapping, Sequence

from shardwise.errors import ConfigurationError
from shardwise.leases.model import Lease
from shardwise.leases.store import LeaseStore
from shardwise.leasing.renewer import LeaseRenewer
from shardwise.lifecycle.consumer import ShardConsumer
from shardwise.lifecycle.faults import OnPermanentError
from shardwise.lifecycle.stateful import StateServices
from shardwise.lifecycle.states import ShutdownReason
from shardwise.processor import RecordProcessor, RecordProcessorFactory
from shardwise.retrieval.model import ChildShard
from shardwise.retrieval.source import StreamSource
from shardwise.worker.config import WorkerConfig, WorkerStats
from shardwise.worker_metrics import LeaseThroughputRecorder

__all__ = ["Dispatcher"]

logger = logging.getLogger(__name__)


class Dispatcher:
    """Owns the shard consumers (keyed by lease key and token: a lease lost and taken again gets a new consumer
    while the old one still finishes its shutdown), the handoffs under way and the shutdown state."""

    def __init__(
        self,
        config: WorkerConfig,
        *,
        store: LeaseStore,
        source: StreamSource,
        processor_factory: RecordProcessorFactory,
        renewer: LeaseRenewer,
        throughput: LeaseThroughputRecorder,
        stats: WorkerStats,
        create_child_leases: Callable[[Lease, Sequence[ChildShard]], None],
        on_shard_end: Callable[[], None],
        clock_ns: Callable[[], int],
        on_permanent_error: OnPermanentError | None = None,
        state: Callable[[], StateServices] | None = None,
    ) -> None:
        self._config = config
        self._state = state  # what a stateful processor's consumer opens its store with
        self._worker_id = config.worker_id
        self._store = store
        self._source = source
        self._factory = processor_factory
        self._renewer = renewer
        self._throughput = throughput
        self._stats = stats
        self._create_child_leases = create_child_leases
        self._on_shard_end = on_shard_end
        self._clock_ns = clock_ns
        self._on_permanent_error = on_permanent_error  # a shard consumer's permanent errors, for the worker
        self._consumers: dict[tuple[str, str], ShardConsumer] = {}
        self._running: dict[tuple[str, str], concurrent.futures.Future[None]] = {}
        self._handoffs: dict[str, int] = {}  # lease key -> ns when the leader's handoff was noticed
        self._lock = threading.Lock()
        self._shutdown_requested = threading.Event()
        self._wake = threading.Event()  # ends the dispatcher's wait: a step done, a lease, a handoff, a shutdown
        #: When (``clock_ns``) the dispatcher looks at the consumers next without being woken; 0 while it is
        #: looking, or shutting down (a finished step then always wakes it).
        self._next_look_ns = 0
        self._shutdown_deadline_ns: int | None = None
        #: Set (under the consumers' lock) once the dispatcher has finished: no shard consumer starts after it.
        self.intake_closed = False

    # -- shutdown ------------------------------------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        """Whether a graceful shutdown has been requested."""
        return self._shutdown_requested.is_set()

    def request_shutdown(self) -> None:
        """Start a graceful shutdown (idempotent; safe from a signal handler: it only sets an event, and the
        dispatcher sees it within ``dispatch_poll_interval_ms`` — waking the dispatcher here could deadlock on
        the lock of an event the interrupted main thread holds)."""
        if not self._shutdown_requested.is_set():
            self._shutdown_deadline_ns = self._clock_ns() + self._config.shutdown_timeout_ms * 1_000_000
            self._shutdown_requested.set()

    # -- consumers -----------------------------------------------------------------------------------------

    def consumers(self) -> list[ShardConsumer]:
        with self._lock:
            return list(self._consumers.values())

    def start_consumers(self, leases: Sequence[Lease], *, acquired_at_ns: Mapping[str, int] | None = None) -> None:
        """Hold ``leases`` (renewed from now on; their local expiry counts from ``acquired_at_ns``, when the take
        or discovery that brought them started) and start a shard consumer for each."""
        if not leases:
            return
        tokens = self._renewer.add_leases(leases, acquired_at_ns=acquired_at_ns)
        with self._lock:
            closed = self.intake_closed
            if not closed:
                self._add_consumers(leases, tokens)
                self._wake.set()
        if closed:
            # Taken or discovered while the shutdown finished (the take was under way): nothing will process
            # them here, so give them back at once rather than leave them to expire.
            for lease in leases:
                self._renewer.release(lease.lease_key, tokens[lease.lease_key])
            logger.info(
                "worker %s is stopping: released leases %s at once",
                self._worker_id,
                ", ".join(lease.lease_key for lease in leases),
            )
            return
        self._stats.leases_taken += len(leases)

    def _add_consumers(self, leases: Sequence[Lease], tokens: Mapping[str, str]) -> None:
        """Under the consumers' lock: a shard consumer per lease; during a shutdown each is asked to shut down
        at once (its processor gets ``shutdown_requested``, then the lease is released)."""
        stopping = self._shutdown_requested.is_set()
        for lease in leases:
            token = tokens[lease.lease_key]
            self._throughput.seed(lease.lease_key, lease.throughput_kbps)
            consumer = ShardConsumer(
                lease=lease,
                token=token,
                processor=self._new_processor(),
                source=self._source,
                store=self._store,
                renewer=self._renewer,
                create_child_leases=self._create_child_leases,
                config=self._config.consumer,
                clock_ns=self._clock_ns,
                on_records=self._on_records,
                on_permanent_error=self._on_permanent_error,
                state=self._state,
            )
            if stopping:
                consumer.request_shutdown()
            self._consumers[(lease.lease_key, token)] = consumer

    def _on_records(self, lease_key: str, count: int, size: int) -> None:
        self._throughput.record(lease_key, size)
        self._stats.add_records(lease_key, count, size)

    def _new_processor(self) -> RecordProcessor:
        processor = self._factory()
        if not isinstance(processor, RecordProcessor):
            raise ConfigurationError(
                f"the processor factory returned {type(processor).__name__}, which lacks the record-processor "
                "methods (initialize, process_records, lease_lost, shard_ended, shutdown_requested)"
            )
        return processor

    # -- handoffs ------------------------------------------------------------------------------------------

    def on_handoff(self, lease_key: str, next_owner: str) -> None:
        """The leader handed ``lease_key`` to ``next_owner``: its consumer checkpoints and shuts down (the
        renewer then transfers the lease); past the graceful handoff timeout it is transferred anyway."""
        self._handoffs[lease_key] = self._clock_ns()
        for consumer in self.consumers():
            if consumer.shard_id == lease_key:
                consumer.request_shutdown()
        self._wake.set()

    def _force_overdue_handoffs(self, now: int) -> None:
        timeout_ns = self._config.utilization.graceful_lease_handoff_timeout_ms * 1_000_000
        for key, started in list(self._handoffs.items()):
            held = self._renewer.get(key)
            if held is None:
                del self._handoffs[key]
            elif now - started > timeout_ns:
                logger.warning("handoff of lease %s timed out; transferring it without waiting for its processor", key)
                self._renewer.complete_handoff(key, held.token)
                del self._handoffs[key]

    # -- the dispatcher thread -----------------------------------------------------------------------------

    def run(self, pool: concurrent.futures.ThreadPoolExecutor) -> None:
        """Run due consumer steps on ``pool`` until the shutdown has finished (or timed out).

        Between passes the thread sleeps until the next consumer is due (one waiting out its idle time between
        reads), a step finishes, a lease arrives, a handoff or a shutdown is asked — at most
        ``dispatch_poll_interval_ms`` — so an idle worker does not spin and a busy one does not wait a poll for
        its next read."""
        max_wait_s = self._config.dispatch_poll_interval_ms / 1000
        shutting_down = False
        while True:
            self._wake.clear()  # a wake from here on ends the wait below at once
            self._next_look_ns = 0
            if self._shutdown_requested.is_set() and not shutting_down:
                shutting_down = True
                logger.info("worker %s shuts down gracefully", self._worker_id)
                for consumer in self.consumers():
                    consumer.request_shutdown()
            now = self._clock_ns()
            if self._handoffs:
                self._force_overdue_handoffs(now)
            next_due_ns: int | None = None
            with self._lock:
                for key, consumer in list(self._consumers.items()):
                    future = self._running.get(key)
                    if future is not None and not future.done():
                        continue
                    self._running.pop(key, None)
                    if consumer.is_complete:
                        del self._consumers[key]
                        if consumer.shutdown_reason is ShutdownReason.SHARD_END:
                            self._on_shard_end()
                        continue
                    if consumer.is_due(now):
                        future = pool.submit(consumer.step)
                        self._running[key] = future
                        future.add_done_callback(functools.partial(self._step_done, consumer))
                    elif next_due_ns is None or consumer.next_due_ns < next_due_ns:
                        next_due_ns = consumer.next_due_ns
                remaining = len(self._consumers)
                if shutting_down and remaining == 0:
                    # Leases that a take or discovery under way still brings are released, not consumed.
                    self.intake_closed = True
                    return
            if shutting_down:
                deadline = self._shutdown_deadline_ns
                if deadline is not None and now > deadline:
                    logger.warning(
                        "worker %s: shutdown timeout; %d shard consumer(s) did not finish, their leases will expire",
                        self._worker_id,
                        remaining,
                    )
                    with self._lock:
                        self.intake_closed = True
                    return
            wait_s = max_wait_s if next_due_ns is None else min(max_wait_s, max(0.0, (next_due_ns - now) / 1e9))
            if not shutting_down:
                self._next_look_ns = now + int(wait_s * 1e9)
            self._wake.wait(wait_s)

    def _step_done(self, consumer: ShardConsumer, _future: concurrent.futures.Future[None]) -> None:
        """A step finished: wake the dispatcher unless it looks again before this consumer is next due anyway
        (an idle consumer's read then costs the dispatcher one pass, not two). A pass that saw this step still
        running planned its next look without it, and that look takes it into account."""
        next_look = self._next_look_ns
        if next_look == 0 or consumer.is_complete or consumer.next_due_ns < next_look:
            self._wake.set()
