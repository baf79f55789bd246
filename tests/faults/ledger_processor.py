"""The record processor of the fault-injection fleets (``ledger_processor:LedgerProcessor``).

The ``shardwise run`` workers import this module as ``ledger_processor`` (the fault fleets put ``tests/faults`` on
their ``PYTHONPATH``). It appends to a shared SQLite ledger (path in ``$SHARDWISE_FAULTS_LEDGER``), *before* it
checkpoints, so a fault can cause duplicates but never hide a loss:

* ``deliveries`` — one row per delivered record: worker id, shard, sequence number, record id (the data) and
  ``time.monotonic()`` when the batch reached the processor (CLOCK_MONOTONIC is system-wide on Linux, so the
  times of all workers and of the test compare, and a jump of the wall clock does not move them);
* ``events`` — ``initialize``, ``lease_lost``, ``shutdown_requested``, ``shard_ended`` and
  ``checkpoint_failed`` (a checkpoint the worker refused, e.g. because the lease was lost), with the same clock.

It checkpoints as a real application would: after a batch, once ``$SHARDWISE_FAULTS_CHECKPOINT_MS`` ms (default
0: every batch) have passed since its last checkpoint of the shard, and always at shutdown or shard end. A
refused checkpoint is treated as KCL applications treat ``ShutdownException``: noted, not raised. While the
file named by ``$SHARDWISE_FAULTS_SLOW_FLAG`` exists, every non-empty batch is held ``$SHARDWISE_FAULTS_SLOW_MS``
ms after it is recorded (a processor slower than the failover time).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

from shardwise.checkpoint.checkpointer import Checkpointer
from shardwise.errors import ShardwiseError
from shardwise.processor import (
    BaseRecordProcessor,
    InitializationInput,
    LeaseLostInput,
    ProcessRecordsInput,
    ShardEndedInput,
    ShutdownRequestedInput,
)

__all__ = [
    "CHECKPOINT_MS_ENV",
    "FAKETIME_SHIM_ENV",
    "LEDGER_ENV",
    "SLOW_FLAG_ENV",
    "SLOW_MS_ENV",
    "WORKER_ENV",
    "LedgerProcessor",
    "connect_ledger",
]

LEDGER_ENV = "SHARDWISE_FAULTS_LEDGER"
WORKER_ENV = "SHARDWISE_FAULTS_WORKER"
SLOW_FLAG_ENV = "SHARDWISE_FAULTS_SLOW_FLAG"
SLOW_MS_ENV = "SHARDWISE_FAULTS_SLOW_MS"
CHECKPOINT_MS_ENV = "SHARDWISE_FAULTS_CHECKPOINT_MS"
FAKETIME_SHIM_ENV = "SHARDWISE_FAULTS_FAKETIME_SHIM"


def _install_faketime_shim() -> None:
    """Work around libfaketime 0.9.10 in a worker whose wall clock it fakes (``$SHARDWISE_FAULTS_FAKETIME_SHIM``
    set; this module is imported before the worker runs).

    With ``DONT_FAKE_MONOTONIC=1`` (the wall clock jumps, CLOCK_MONOTONIC does not), libfaketime's interposed
    ``clock_nanosleep`` fails every absolute sleep on CLOCK_MONOTONIC with EINVAL, so Python's ``time.sleep``
    raises ``OSError: [Errno 22]`` at once — something no real clock jump does. Waiting on an event (a semaphore
    wait on CLOCK_MONOTONIC) is not affected, so ``time.sleep`` becomes that. Everything else libfaketime fakes
    (``time.time``, ``datetime.now``, SigV4 signing dates, log timestamps) stays faked.
    """
    never = threading.Event()

    def sleep(seconds: float) -> None:
        if seconds < 0:
            raise ValueError("sleep length must be non-negative")
        never.wait(seconds)

    time.sleep = sleep  # type: ignore[assignment]


if os.environ.get(FAKETIME_SHIM_ENV):
    _install_faketime_shim()

_SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    record_id TEXT NOT NULL,
    shard_id TEXT NOT NULL,
    sequence_number TEXT NOT NULL,
    worker_id TEXT NOT NULL,
    t REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    shard_id TEXT NOT NULL,
    worker_id TEXT NOT NULL,
    event TEXT NOT NULL,
    t REAL NOT NULL
);
"""


def connect_ledger(path: str | Path) -> sqlite3.Connection:
    """A connection to the ledger (created if missing): autocommit, WAL, a long busy timeout."""
    conn = sqlite3.connect(path, timeout=60, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 60000")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.executescript(_SCHEMA)
    return conn


class LedgerProcessor(BaseRecordProcessor):
    """Records every delivery and lifecycle event in the ledger, then checkpoints."""

    def __init__(self) -> None:
        path = os.environ.get(LEDGER_ENV)
        if not path:
            raise RuntimeError(f"LedgerProcessor needs ${LEDGER_ENV}: the ledger database")
        self._conn = connect_ledger(path)
        self._worker_id = os.environ.get(WORKER_ENV, f"pid-{os.getpid()}")
        self._shard_id = "?"
        self._slow_flag = os.environ.get(SLOW_FLAG_ENV)
        self._slow_s = int(os.environ.get(SLOW_MS_ENV) or 0) / 1000
        self._checkpoint_every_s = int(os.environ.get(CHECKPOINT_MS_ENV) or 0) / 1000
        self._last_checkpoint = time.monotonic()

    def initialize(self, initialization_input: InitializationInput) -> None:
        self._shard_id = initialization_input.shard_id
        self._last_checkpoint = time.monotonic()
        self._event("initialize")

    def process_records(self, process_records_input: ProcessRecordsInput) -> None:
        records = process_records_input.records
        if not records:
            return
        now = time.monotonic()
        rows = [(r.data.decode(), self._shard_id, r.sequence_number, self._worker_id, now) for r in records]
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            self._conn.executemany("INSERT INTO deliveries VALUES (?, ?, ?, ?, ?)", rows)
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")
        if self._slow_flag and self._slow_s and os.path.exists(self._slow_flag):
            time.sleep(self._slow_s)
        if time.monotonic() - self._last_checkpoint >= self._checkpoint_every_s:
            self._checkpoint(process_records_input.checkpointer)

    def lease_lost(self, lease_lost_input: LeaseLostInput) -> None:
        self._event("lease_lost")

    def shard_ended(self, shard_ended_input: ShardEndedInput) -> None:
        self._checkpoint(shard_ended_input.checkpointer)
        self._event("shard_ended")

    def shutdown_requested(self, shutdown_requested_input: ShutdownRequestedInput) -> None:
        self._checkpoint(shutdown_requested_input.checkpointer)
        self._event("shutdown_requested")

    def _checkpoint(self, checkpointer: Checkpointer) -> None:
        self._last_checkpoint = time.monotonic()
        try:
            checkpointer.checkpoint()
        except ShardwiseError:
            self._event("checkpoint_failed")

    def _event(self, event: str) -> None:
        self._conn.execute(
            "INSERT INTO events VALUES (?, ?, ?, ?)", (self._shard_id, self._worker_id, event, time.monotonic())
        )
