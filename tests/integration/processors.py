"""Record processors run by the ``shardwise run`` worker subprocesses of the integration tests.

The workers import this module as ``processors`` (the fleet harness puts ``tests/integration`` on their
``PYTHONPATH``); the tests import it as ``integration.processors`` for the schema and the readers below.

Every processor writes what it sees to a results SQLite database (path in ``$SHARDWISE_TEST_RESULTS``)
*before* checkpointing, so a crash can only cause duplicates, never a loss — which is exactly what the tests
count:

``$SHARDWISE_TEST_CHECKPOINT_DELAY_MS`` makes a processor pause between recording a batch and checkpointing it.
``$SHARDWISE_TEST_DEBUG_LOGGERS`` (comma-separated logger names) turns those loggers to DEBUG in the worker (its
``-v`` handler passes every level), so a test can read e.g. the leader's per-run assignment lines in the log.

* ``processed`` — one row per record delivery: ``(data, partition_key, shard_id, sequence_number,
  sub_sequence_number, worker_id, time_ns)``; ``time_ns`` is the wall clock (``time.time_ns``, comparable
  across the processes of one host) taken when the batch reached the processor.
* ``attempts`` — :class:`FlakyProcessor` only: one row per delivery of a batch holding ``poison-`` records,
  per poison record, with the outcome (``failure`` or ``success``) and the first sequence number and size of
  the batch, so a test can see that the *same* batch was delivered again.
* ``lifecycle`` — :class:`LifecycleRecordingProcessor` only: one row per ``initialize`` (with the position the
  processor starts after), per *successful* checkpoint (with the position checkpointed), per
  ``shutdown_requested`` / ``shard_ended`` (after their checkpoint) and per ``lease_lost``, so a test can tell
  where each owner of a shard started and where the previous one last checkpointed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from shardwise.processor import (
    BaseRecordProcessor,
    InitializationInput,
    LeaseLostInput,
    ProcessRecordsInput,
    ShardEndedInput,
    ShutdownRequestedInput,
)
from shardwise.retrieval.model import Record

__all__ = [
    "CHECKPOINT_DELAY_ENV",
    "DEBUG_LOGGERS_ENV",
    "POISON_PREFIX",
    "RESULTS_ENV",
    "WORKER_ENV",
    "Attempt",
    "FlakyProcessor",
    "Lifecycle",
    "LifecycleRecordingProcessor",
    "Processed",
    "RecordingProcessor",
    "connect_results",
    "read_attempts",
    "read_lifecycle",
    "read_processed",
]

RESULTS_ENV = "SHARDWISE_TEST_RESULTS"
WORKER_ENV = "SHARDWISE_TEST_WORKER"
#: Milliseconds to sleep between recording a batch and checkpointing it (default 0): widens the window in
#: which a crash leaves processed-but-not-checkpointed records behind.
CHECKPOINT_DELAY_ENV = "SHARDWISE_TEST_CHECKPOINT_DELAY_MS"
POISON_PREFIX = b"poison-"
DEBUG_LOGGERS_ENV = "SHARDWISE_TEST_DEBUG_LOGGERS"
for _name in filter(None, os.environ.get(DEBUG_LOGGERS_ENV, "").split(",")):
    logging.getLogger(_name.strip()).setLevel(logging.DEBUG)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS processed (
    data TEXT NOT NULL,
    partition_key TEXT NOT NULL,
    shard_id TEXT NOT NULL,
    sequence_number TEXT NOT NULL,
    sub_sequence_number INTEGER NOT NULL,
    worker_id TEXT NOT NULL,
    time_ns INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS attempts (
    data TEXT NOT NULL,
    shard_id TEXT NOT NULL,
    worker_id TEXT NOT NULL,
    outcome TEXT NOT NULL CHECK (outcome IN ('failure', 'success')),
    batch_first_sequence_number TEXT NOT NULL,
    batch_size INTEGER NOT NULL,
    time_ns INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS lifecycle (
    shard_id TEXT NOT NULL,
    worker_id TEXT NOT NULL,
    event TEXT NOT NULL,
    sequence_number TEXT NOT NULL,
    time_ns INTEGER NOT NULL
);
"""


def connect_results(path: str | Path) -> sqlite3.Connection:
    """A connection to the results database (created if missing). Autocommit; usable from any thread."""
    conn = sqlite3.connect(path, timeout=60, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 60000")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.executescript(_SCHEMA)
    return conn


class RecordingProcessor(BaseRecordProcessor):
    """Writes every record it is given to ``processed``, then checkpoints the batch."""

    def __init__(self) -> None:
        path = os.environ.get(RESULTS_ENV)
        if not path:
            raise RuntimeError(f"{type(self).__name__} needs ${RESULTS_ENV}: the results database")
        self._conn = connect_results(path)
        self._worker_id = os.environ.get(WORKER_ENV, f"pid-{os.getpid()}")
        self._shard_id = "?"
        self._checkpoint_delay_s = int(os.environ.get(CHECKPOINT_DELAY_ENV) or 0) / 1000

    def initialize(self, initialization_input: InitializationInput) -> None:
        self._shard_id = initialization_input.shard_id

    def process_records(self, process_records_input: ProcessRecordsInput) -> None:
        records = process_records_input.records
        now = time.time_ns()
        self._before_recording(records, now)
        self._record(records, now)
        if self._checkpoint_delay_s:
            time.sleep(self._checkpoint_delay_s)
        process_records_input.checkpointer.checkpoint()

    def _before_recording(self, records: Sequence[Record], now_ns: int) -> None:
        """Hook run before the batch is recorded; raising here makes the worker deliver it again."""

    def _record(self, records: Sequence[Record], now_ns: int) -> None:
        rows = [
            (
                record.data.decode(),
                record.partition_key,
                self._shard_id,
                record.sequence_number,
                record.sub_sequence_number,
                self._worker_id,
                now_ns,
            )
            for record in records
        ]
        with self._transaction() as conn:
            conn.executemany("INSERT INTO processed VALUES (?, ?, ?, ?, ?, ?, ?)", rows)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` … ``COMMIT`` (``ROLLBACK`` on error) on the autocommit connection."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")


class FlakyProcessor(RecordingProcessor):
    """Like :class:`RecordingProcessor`, but the first delivery of a batch holding a ``poison-`` record that
    has never failed before raises ``RuntimeError("poison")`` (after recording the failure in ``attempts``,
    which every worker process shares). The worker must deliver the same batch again; that delivery succeeds
    and is recorded as a ``success`` for each of its poison records."""

    def _before_recording(self, records: Sequence[Record], now_ns: int) -> None:
        poison = [r.data.decode() for r in records if r.data.startswith(POISON_PREFIX)]
        if not poison:
            return
        first, size = records[0].sequence_number, len(records)
        with self._transaction() as conn:
            failed_before = {
                row[0]
                for row in conn.execute(
                    f"SELECT data FROM attempts WHERE outcome = 'failure' AND data IN ({', '.join('?' * len(poison))})",
                    poison,
                )
            }
            fresh = [data for data in poison if data not in failed_before]
            outcome = "failure" if fresh else "success"
            conn.executemany(
                "INSERT INTO attempts VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(data, self._shard_id, self._worker_id, outcome, first, size, now_ns) for data in poison],
            )
        if fresh:
            raise RuntimeError("poison")


class LifecycleRecordingProcessor(RecordingProcessor):
    """Like :class:`RecordingProcessor`, and also writes its life to ``lifecycle``: ``initialize`` (the
    position it starts after: a sentinel such as ``TRIM_HORIZON`` or a sequence number), ``checkpoint`` after
    each successful checkpoint of a batch, ``shutdown_requested`` and ``shard_ended`` after their checkpoint,
    and ``lease_lost``. A checkpoint that raises (lease lost) writes nothing."""

    def initialize(self, initialization_input: InitializationInput) -> None:
        super().initialize(initialization_input)
        self._log("initialize", initialization_input.extended_sequence_number.sequence_number)

    def process_records(self, process_records_input: ProcessRecordsInput) -> None:
        super().process_records(process_records_input)
        if process_records_input.records:
            self._log("checkpoint", process_records_input.checkpointer.last_checkpoint.sequence_number)

    def shutdown_requested(self, shutdown_requested_input: ShutdownRequestedInput) -> None:
        checkpointer = shutdown_requested_input.checkpointer
        checkpointer.checkpoint()
        self._log("shutdown_requested", checkpointer.last_checkpoint.sequence_number)

    def shard_ended(self, shard_ended_input: ShardEndedInput) -> None:
        checkpointer = shard_ended_input.checkpointer
        checkpointer.checkpoint()
        self._log("shard_ended", checkpointer.last_checkpoint.sequence_number)

    def lease_lost(self, lease_lost_input: LeaseLostInput) -> None:
        self._log("lease_lost", "")

    def _log(self, event: str, sequence_number: str) -> None:
        self._conn.execute(
            "INSERT INTO lifecycle VALUES (?, ?, ?, ?, ?)",
            (self._shard_id, self._worker_id, event, sequence_number, time.time_ns()),
        )


# -- reading the results (test side) -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Processed:
    data: str
    partition_key: str
    shard_id: str
    sequence_number: str
    sub_sequence_number: int
    worker_id: str
    time_ns: int


@dataclass(frozen=True, slots=True)
class Attempt:
    data: str
    shard_id: str
    worker_id: str
    outcome: str
    batch_first_sequence_number: str
    batch_size: int
    time_ns: int


def read_processed(path: str | Path) -> list[Processed]:
    """Every delivery recorded so far, in the order they were written."""
    conn = connect_results(path)
    try:
        return [Processed(*row) for row in conn.execute("SELECT * FROM processed ORDER BY rowid")]
    finally:
        conn.close()


@dataclass(frozen=True, slots=True)
class Lifecycle:
    shard_id: str
    worker_id: str
    event: str
    sequence_number: str
    time_ns: int


def read_lifecycle(path: str | Path) -> list[Lifecycle]:
    """Every :class:`LifecycleRecordingProcessor` event so far, in the order they were written."""
    conn = connect_results(path)
    try:
        return [Lifecycle(*row) for row in conn.execute("SELECT * FROM lifecycle ORDER BY rowid")]
    finally:
        conn.close()


def read_attempts(path: str | Path) -> list[Attempt]:
    conn = connect_results(path)
    try:
        return [Attempt(*row) for row in conn.execute("SELECT * FROM attempts ORDER BY rowid")]
    finally:
        conn.close()
