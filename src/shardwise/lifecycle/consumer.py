"""``ShardConsumer``: drives one shard through the consumer state machine for one acquisition of its lease.

The worker calls :meth:`ShardConsumer.step` on its bounded thread pool whenever the consumer is due; each step
does one unit of work (check parents, initialize, fetch and deliver one batch, shut down) and sets when the
consumer is next due, so a pool smaller than the number of shards still serves every shard fairly.

The record path: ``ShardReader.read`` (GetRecords + KPL de-aggregation) → drop records at or before the
checkpoint the lease had when processing started → ``processor.process_records`` → the processor checkpoints
through the :class:`~shardwise.checkpoint.checkpointer.Checkpointer`. If ``process_records`` raises, the error
is logged and **the same batch is delivered again** after ``task_backoff_time_ms``: nothing is skipped.

Right before a batch is delivered (after a GetRecords that may have taken long) the consumer checks again that
the lease is still held — not expired on this worker's clock — and delivers nothing if it is not: the processor
gets ``lease_lost`` instead. A checkpoint that fails is retried with exponential back-off from
``task_backoff_time_ms`` up to ``checkpoint_backoff_max_ms``; one that fails permanently (anything but a
:class:`~shardwise.errors.DependencyError`) ``max_checkpoint_failures`` times in a row makes the consumer give
the lease up (one ERROR line; the processor gets ``lease_lost``; the lease is no longer renewed, so it expires
and another worker may take it) — see :mod:`shardwise.lifecycle.checkpoint_failures`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from shardwise.checkpoint.checkpointer import Checkpointer
from shardwise.checkpoint.sequence import SHARD_END, ExtendedSequenceNumber, SentinelCheckpoint
from shardwise.errors import ConfigurationError, DependencyError, LeaseLostError, ShardwiseError
from shardwise.leases.model import Lease
from shardwise.leases.store import LeaseStore
from shardwise.lifecycle.checkpoint_failures import after_checkpoint_failure
from shardwise.lifecycle.faults import OnPermanentError, StepFaults
from shardwise.lifecycle.holder import LeaseHolder
from shardwise.lifecycle.stateful import ShardState, StatefulHolder, StateServices
from shardwise.lifecycle.states import ConsumerEvent, ConsumerState, ShutdownReason, transition
from shardwise.processor import (
    InitializationInput,
    LeaseLostInput,
    ProcessRecordsInput,
    RecordProcessor,
    ShardEndedInput,
    ShutdownRequestedInput,
    is_stateful,
)
from shardwise.retrieval.model import ChildShard, Record, StartingPosition
from shardwise.retrieval.reader import ReadBatch, ShardReader
from shardwise.retrieval.source import StreamSource
from shardwise.state.port import StateStore

__all__ = ["ConsumerConfig", "ShardConsumer", "ShardEndError", "starting_position"]

logger = logging.getLogger(__name__)

#: Creates the child leases of a shard that reached its end (and records them on the parent lease).
ChildLeaseCreator = Callable[[Lease, Sequence[ChildShard]], None]


class ShardEndError(ShardwiseError):
    """The processor returned from ``shard_ended`` without checkpointing; the shard end will be retried."""


@dataclass(frozen=True, slots=True)
class ConsumerConfig:
    """Per-shard consumption settings (KCL's polling and lifecycle defaults)."""

    max_records: int = 10_000
    idle_time_between_reads_ms: int = 1_500
    call_process_records_even_for_empty_list: bool = False
    parent_shard_poll_interval_ms: int = 10_000
    task_backoff_time_ms: int = 500
    initial_timestamp: datetime | None = None  # for leases created at AT_TIMESTAMP
    # A failing checkpoint: back-off doubling from task_backoff_time_ms up to this; after this many permanent
    # failures in a row (0.5 + 1 + 2 + 4 + 8 s of back-off by default) the lease is given up.
    checkpoint_backoff_max_ms: int = 10_000
    max_checkpoint_failures: int = 6

    def __post_init__(self) -> None:
        if not 1 <= self.max_records <= 10_000:
            raise ConfigurationError(f"max_records must be between 1 and 10000, got {self.max_records}")
        if self.idle_time_between_reads_ms < 0:
            raise ConfigurationError("idle_time_between_reads_ms must be >= 0")
        if self.parent_shard_poll_interval_ms <= 0 or self.task_backoff_time_ms <= 0:
            raise ConfigurationError("parent_shard_poll_interval_ms and task_backoff_time_ms must be > 0")
        if self.checkpoint_backoff_max_ms < self.task_backoff_time_ms:
            raise ConfigurationError(
                f"checkpoint_backoff_max_ms ({self.checkpoint_backoff_max_ms}) must be >= task_backoff_time_ms "
                f"({self.task_backoff_time_ms}): it caps the back-off that starts there"
            )
        if self.max_checkpoint_failures < 1:
            raise ConfigurationError(
                f"max_checkpoint_failures must be >= 1 (permanent checkpoint failures before the lease is given "
                f"up), got {self.max_checkpoint_failures}"
            )


def starting_position(checkpoint: ExtendedSequenceNumber, initial_timestamp: datetime | None) -> StartingPosition:
    """Where to start reading a shard whose lease has ``checkpoint`` (KCL's IteratorBuilder)."""
    sentinel = checkpoint.sentinel_value
    if sentinel is SentinelCheckpoint.TRIM_HORIZON:
        return StartingPosition.trim_horizon()
    if sentinel is SentinelCheckpoint.LATEST:
        return StartingPosition.latest()
    if sentinel is SentinelCheckpoint.AT_TIMESTAMP:
        if initial_timestamp is None:
            raise ConfigurationError(
                "a lease is at AT_TIMESTAMP but no initial timestamp is configured; set the initial position "
                "timestamp (initial_position = AT_TIMESTAMP with a timestamp)"
            )
        return StartingPosition.at_timestamp(initial_timestamp)
    if sentinel is SentinelCheckpoint.SHARD_END:
        raise ValueError("a shard at SHARD_END has nothing left to read")
    return StartingPosition.at_sequence(checkpoint.sequence_number)


class ShardConsumer:
    """One shard, one acquisition of its lease, one processor instance."""

    def __init__(
        self,
        *,
        lease: Lease,
        token: str,
        processor: RecordProcessor,
        source: StreamSource,
        store: LeaseStore,
        renewer: LeaseHolder,
        create_child_leases: ChildLeaseCreator,
        config: ConsumerConfig,
        clock_ns: Callable[[], int] = time.monotonic_ns,
        on_records: Callable[[str, int, int], None] | None = None,
        on_permanent_error: OnPermanentError | None = None,
        state: Callable[[], StateServices] | None = None,
    ) -> None:
        self.shard_id = lease.lease_key
        self.token = token
        self._initial = lease
        self._processor = processor
        self._source = source
        self._store = store
        self._renewer = renewer
        self._create_child_leases = create_child_leases
        self._config = config
        self._clock_ns = clock_ns
        self._on_records = on_records
        self._state = ConsumerState.WAITING_ON_PARENT_SHARDS
        self._reason: ShutdownReason | None = None
        self._shutdown_wanted = False
        self._next_due_ns = 0
        self._reader: ShardReader | None = None
        self._pending: tuple[list[Record], ReadBatch] | None = None
        self._children: Sequence[ChildShard] = ()
        self._processor_initialized = False
        self._failures = 0
        self._checkpoint_failures = 0
        self._faults = StepFaults(
            lease.lease_key,
            task_backoff_time_ms=config.task_backoff_time_ms,
            clock_ns=clock_ns,
            log=logger,
            on_permanent=on_permanent_error,
        )
        self._lock = threading.Lock()
        # A stateful processor: its store is opened at initialize (``state()`` gives what that needs, and may
        # raise a configuration error, which the step's fault handling reports); every checkpoint commits it first.
        self._state_services = state if state is not None and is_stateful(processor) else None
        self._holder = StatefulHolder(renewer) if self._state_services is not None else None
        self._start = lease.checkpoint  # where reading started: records at or before it are not delivered
        self.checkpointer = Checkpointer(
            lease.lease_key,
            token,
            self._holder or renewer,
            last_checkpoint=lease.checkpoint,
            pending_checkpoint=lease.pending_checkpoint,
        )

    # -- state -------------------------------------------------------------------------------------

    @property
    def state(self) -> ConsumerState:
        return self._state

    @property
    def shard_state(self) -> ShardState | None:
        """The shard's state (a stateful processor, once initialized), else ``None``."""
        return None if self._holder is None else self._holder.state

    @property
    def _store_view(self) -> StateStore | None:
        """What the processor's inputs carry: the shard's store (stateful processors only)."""
        state = self.shard_state
        return None if state is None else state.store

    @property
    def shutdown_reason(self) -> ShutdownReason | None:
        return self._reason

    @property
    def is_complete(self) -> bool:
        return self._state is ConsumerState.SHUTDOWN_COMPLETE

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def is_due(self, now_ns: int) -> bool:
        return not self.is_complete and now_ns >= self._next_due_ns

    @property
    def next_due_ns(self) -> int:
        """When (``clock_ns``) the next step is due: 0 for at once."""
        return self._next_due_ns

    def request_shutdown(self) -> None:
        """Ask for a graceful shutdown: the processor gets ``shutdown_requested`` at its next step, then the
        lease is given back — transferred to the next owner during a KCL 3.x handoff, else released."""
        self._shutdown_wanted = True
        self._next_due_ns = 0

    def _fire(self, event: ConsumerEvent, reason: ShutdownReason | None = None) -> None:
        new_state = transition(self._state, event)
        if new_state in (ConsumerState.SHUTTING_DOWN, ConsumerState.SHUTDOWN_COMPLETE) and self._reason is None:
            self._reason = reason
        logger.debug("shard %s: %s --%s--> %s", self.shard_id, self._state.value, event.value, new_state.value)
        self._state = new_state
        if new_state is ConsumerState.SHUTDOWN_COMPLETE and self.shard_state is not None:
            self.shard_state.close()  # what is still pending is discarded

    def _due_in(self, millis: int) -> None:
        self._next_due_ns = self._clock_ns() + millis * 1_000_000

    # -- the step ----------------------------------------------------------------------------------

    def step(self) -> None:
        """Do one unit of work. Never raises: errors are logged and the step is retried after a back-off that
        grows with jitter; a permanent error (missing stream, damaged database, access denied) is also reported
        to ``on_permanent_error``, which stops the worker once it repeats (:mod:`shardwise.lifecycle.faults`)."""
        with self._lock:
            try:
                failures = self._failures
                self._step()
                if self._failures == failures:  # _process counts a failed process_records without raising
                    self._failures = 0
            except LeaseLostError:
                self._lose_lease()
            except Exception as exc:
                self._failures += 1
                self._due_in(self._faults.failed(exc, self._state.value, self._failures))

    def _step(self) -> None:
        if self._state is not ConsumerState.SHUTTING_DOWN and not self._renewer.holds(self.shard_id, self.token):
            self._lose_lease()
            return
        if self._shutdown_wanted and self._state in (
            ConsumerState.WAITING_ON_PARENT_SHARDS,
            ConsumerState.INITIALIZING,
            ConsumerState.PROCESSING,
        ):
            self._fire(ConsumerEvent.SHUTDOWN_REQUESTED, ShutdownReason.REQUESTED)
            if self.is_complete:
                self._give_back()
                return
        state = self._state
        if state is ConsumerState.WAITING_ON_PARENT_SHARDS:
            self._wait_for_parents()
        elif state is ConsumerState.INITIALIZING:
            self._initialize()
        elif state is ConsumerState.PROCESSING:
            self._process()
        elif state is ConsumerState.SHUTDOWN_REQUESTED:
            self._notify_shutdown_requested()
        elif state is ConsumerState.SHUTTING_DOWN:
            self._shut_down()

    def _lose_lease(self) -> None:
        if self.is_complete:
            return
        self._fire(ConsumerEvent.LEASE_LOST, ShutdownReason.LEASE_LOST)
        if self._state is ConsumerState.SHUTTING_DOWN and self._reason is not ShutdownReason.LEASE_LOST:
            # Lost while already shutting down for another reason: the processor can no longer checkpoint.
            self._reason = ShutdownReason.LEASE_LOST
        self._next_due_ns = 0

    def _wait_for_parents(self) -> None:
        for parent in sorted(self._initial.parent_shard_ids):
            parent_lease = self._store.get_lease(parent)
            if parent_lease is not None and not parent_lease.is_complete:
                logger.debug("shard %s waits for parent %s to reach SHARD_END", self.shard_id, parent)
                self._due_in(self._config.parent_shard_poll_interval_ms)
                return
        self._fire(ConsumerEvent.PARENTS_DONE)

    def _initialize(self) -> None:
        held = self._renewer.get(self.shard_id)
        lease = held.lease if held is not None else self._initial
        if lease.is_complete:
            # Taken at SHARD_END (a previous owner finished it): make sure the children exist, nothing else.
            self._fire(ConsumerEvent.SHARD_ENDED, ShutdownReason.SHARD_END)
            return
        start = lease.checkpoint
        if self._holder is not None:
            # Open and restore the shard's state before the processor hears of it; its position wins.
            state = self._holder.state or self._open_state(lease)
            start = state.start_position(lease.checkpoint)
            if state.finished:  # committed at SHARD_END; only the lease checkpoint was missing
                self._renewer.write_checkpoint(self.shard_id, self.token, SHARD_END, pending=None, pending_state=None)
                self._fire(ConsumerEvent.SHARD_ENDED, ShutdownReason.SHARD_END)
                return
            if start > lease.checkpoint:
                self.checkpointer.advance(start)
        self._start = start
        # Work out where to read before telling the processor anything: a configuration error here must not
        # call initialize() again on every retry.
        reader = ShardReader(
            self._source,
            self.shard_id,
            starting_position(start, self._config.initial_timestamp),
            shard_range=lease.hash_key_range,
        )
        self._processor.initialize(
            InitializationInput(
                shard_id=self.shard_id,
                extended_sequence_number=lease.checkpoint,
                pending_checkpoint_sequence_number=lease.pending_checkpoint,
                pending_checkpoint_state=lease.pending_checkpoint_state,
                state=self._store_view,
            )
        )
        self._processor_initialized = True
        self._reader = reader
        self._fire(ConsumerEvent.INITIALIZED)

    def _open_state(self, lease: Lease) -> ShardState:
        assert self._state_services is not None
        assert self._holder is not None
        merge = getattr(self._processor, "merge_state", None)
        state = ShardState.open(
            self._state_services(),
            shard_id=self.shard_id,
            lease_checkpoint=lease.checkpoint,
            parent_shard_ids=lease.parent_shard_ids,
            lease_store=self._store,
            merge=merge if callable(merge) else None,
        )
        self._holder.state = state
        return state

    def _process(self) -> None:
        assert self._reader is not None
        if self._pending is None:
            batch = self._reader.read(limit=self._config.max_records)
            self._pending = (batch.records, batch)
        records, batch = self._pending
        start = self._start
        state = self.shard_state
        if state is not None and state.position is not None:
            start = max(start, state.position)  # a batch delivered again: what the store holds is not applied again
        if not start.is_sentinel:
            records = [r for r in records if r.extended_sequence_number > start]
        delayed = False
        if not self._renewer.holds(self.shard_id, self.token):
            # Lost or expired on this worker's clock while reading: deliver nothing.
            self._lose_lease()
            return
        if records or self._config.call_process_records_even_for_empty_list:
            permitted = self.checkpointer.largest_permitted
            if records:
                self.checkpointer.advance(records[-1].extended_sequence_number)
            self.checkpointer.reset_write_result()
            try:
                self._processor.process_records(
                    ProcessRecordsInput(
                        records=records,
                        checkpointer=self.checkpointer,
                        millis_behind_latest=batch.millis_behind_latest,
                        child_shards=tuple(batch.child_shards),
                        state=self._store_view,
                    )
                )
            except LeaseLostError:
                raise
            except Exception:
                if state is not None:
                    state.discard()
                # The batch is delivered again: until then its records may not be checkpointed (e.g. by a
                # shutdown_requested that checkpoints "everything delivered" during the backoff).
                self.checkpointer.retract(permitted)
                self._failures += 1
                failed_write = self.checkpointer.failed_write
                if failed_write is not None:
                    self._checkpoint_failed(failed_write, f"the same {len(records)} record(s) will be delivered again")
                    return
                logger.exception(
                    "shard %s: the record processor's process_records raised; the same %d record(s) "
                    "(from %s) will be delivered again in %d ms",
                    self.shard_id,
                    len(records),
                    records[0].sequence_number if records else "-",
                    self._config.task_backoff_time_ms,
                )
                self._due_in(self._config.task_backoff_time_ms)
                return
            if self._on_records is not None and records:
                self._on_records(self.shard_id, len(records), sum(len(r.data) for r in records))
            failed_write = self.checkpointer.failed_write
            if failed_write is not None:  # the processor caught its checkpoint's error and went on
                if self._checkpoint_failed(failed_write, "the processor went on without it"):
                    return
                delayed = True
            elif self.checkpointer.wrote:
                self._checkpoint_failures = 0
        if state is not None and not delayed and state.commit_due() and self._uncommitted(state):
            # Also after an empty read: what the last batches changed is committed even when no record follows.
            delayed = self._interval_commit()
            if delayed and self._state is not ConsumerState.PROCESSING:
                return  # the lease was given up
        self._pending = None
        if batch.shard_ended:
            self.checkpointer.advance(SHARD_END)
            self._children = tuple(batch.child_shards)
            self._fire(ConsumerEvent.SHARD_ENDED, ShutdownReason.SHARD_END)
            self._next_due_ns = 0
        elif delayed:
            pass  # due after the checkpoint back-off
        elif len(batch.records) >= self._config.max_records:
            self._next_due_ns = 0
        else:
            self._due_in(self._config.idle_time_between_reads_ms)

    def _uncommitted(self, state: ShardState) -> bool:
        """Whether the store has pending changes or records were delivered past the last checkpoint."""
        return state.store.has_pending() or self.checkpointer.largest_permitted > self.checkpointer.last_checkpoint

    def _interval_commit(self) -> bool:
        """The commit interval passed: checkpoint everything delivered (which commits the state); True when that
        failed (then backing off, or the lease was given up)."""
        self.checkpointer.reset_write_result()
        try:
            self.checkpointer.checkpoint()
        except LeaseLostError:
            raise
        except Exception as exc:
            self._checkpoint_failed(exc, "the state commit is tried again at the next batch")
            return True
        self._checkpoint_failures = 0
        return False

    def _checkpoint_failed(self, error: Exception, then: str) -> bool:
        """Back off after a failed checkpoint, or give the lease up after too many permanent failures (True)."""
        self._checkpoint_failures += 1
        transient = isinstance(error, DependencyError)
        retry = after_checkpoint_failure(
            self._checkpoint_failures,
            transient=transient,
            backoff_ms=self._config.task_backoff_time_ms,
            backoff_max_ms=self._config.checkpoint_backoff_max_ms,
            max_failures=self._config.max_checkpoint_failures,
        )
        cause = f"{type(error).__name__}: {error}"
        if retry.give_up:
            logger.error(
                "shard %s: checkpoint failed %d times in a row (%s); giving the lease up: the processor gets "
                "lease_lost and the lease is no longer renewed, so it expires and another worker may take it. "
                "Fix the cause (a malformed lease item: see `shardwise leases` and repair it), then the shard "
                "is processed again from its last checkpoint",
                self.shard_id,
                self._checkpoint_failures,
                cause,
            )
            self._renewer.drop(self.shard_id, self.token)
            self._lose_lease()
            return True
        kind = "transient" if transient else f"permanent, attempt {self._checkpoint_failures} of "
        kind += "" if transient else str(self._config.max_checkpoint_failures)
        logger.warning(
            "shard %s: checkpoint failed (%s; %s); %s; retrying in %d ms",
            self.shard_id,
            kind,
            cause,
            then,
            retry.delay_ms,
            exc_info=error if not isinstance(error, ShardwiseError) else None,
        )
        self._due_in(retry.delay_ms)
        return False

    def _notify_shutdown_requested(self) -> None:
        self._processor.shutdown_requested(
            ShutdownRequestedInput(shard_id=self.shard_id, checkpointer=self.checkpointer, state=self._store_view)
        )
        self._fire(ConsumerEvent.SHUTDOWN_NOTIFIED, ShutdownReason.REQUESTED)
        self._next_due_ns = 0

    def _children_of_this_shard(self) -> Sequence[ChildShard]:
        if self._children:
            return self._children
        # Some sources (kinesalite) report no ChildShards: find the children by their parent ids.
        return tuple(
            ChildShard(s.shard_id, s.parent_shard_ids, s.hash_key_range)
            for s in self._source.list_shards()
            if self.shard_id in s.parent_shard_ids
        )

    def _shut_down(self) -> None:
        reason = self._reason
        if reason is ShutdownReason.LEASE_LOST:
            if self.shard_state is not None:
                self.shard_state.discard()
            if self._processor_initialized:
                self._processor.lease_lost(LeaseLostInput(shard_id=self.shard_id))
            self._renewer.drop(self.shard_id, self.token)
        elif reason is ShutdownReason.SHARD_END:
            if not self._end_shard():
                return
        elif reason is ShutdownReason.REQUESTED:
            self._give_back()
        self._fire(ConsumerEvent.SHUTDOWN_DONE)

    def _give_back(self) -> None:
        if self._renewer.in_handoff(self.shard_id):
            self._renewer.complete_handoff(self.shard_id, self.token)
        else:
            self._renewer.release(self.shard_id, self.token)

    def _end_shard(self) -> bool:
        """Finish the shard; False when its checkpoint failed and is retried after a back-off (or given up)."""
        held = self._renewer.get(self.shard_id)
        if held is None or held.token != self.token:
            raise LeaseLostError(f"lease {self.shard_id} was lost at shard end")
        # Children first, so they exist whatever happens next (KCL's ShutdownTask order).
        self._create_child_leases(held.lease, self._children_of_this_shard())
        if self._processor_initialized and not held.lease.is_complete:
            self.checkpointer.reset_write_result()
            try:
                self._processor.shard_ended(
                    ShardEndedInput(shard_id=self.shard_id, checkpointer=self.checkpointer, state=self._store_view)
                )
            except LeaseLostError:
                raise
            except Exception:
                if self.checkpointer.failed_write is None:
                    raise
            failed_write = self.checkpointer.failed_write
            if failed_write is not None:
                self._checkpoint_failed(failed_write, "shard_ended will be called again")
                return False
            after = self._renewer.get(self.shard_id)
            if after is None or not after.lease.is_complete:
                raise ShardEndError(
                    f"Application didn't checkpoint at end of shard {self.shard_id}. Application must "
                    "checkpoint upon shard end (call checkpointer.checkpoint() in shard_ended); the shard end "
                    "will be retried and the child shards wait until it succeeds."
                )
        # Done with this shard: stop renewing; the lease expires and is cleaned up once children progress.
        self._renewer.drop(self.shard_id, self.token)
        return True
