"""A KCL MultiLangDaemon record processor (amazon_kclpy v3 API) for the Java conformance tests.

The Java KCL worker started by ``support.javakcl`` runs this script once per shard it owns (``executableName``),
with the ``amazon_kclpy`` package of the matching KCL version on ``PYTHONPATH``. It speaks the MultiLang
protocol on stdin/stdout, so it never prints; diagnostics go to stderr, which the daemon copies to its log.

* Every record is appended to ``$JAVAKCL_RECORD_LOG`` as one line ``shard_id<TAB>sequence_number<TAB>
  partition_key<TAB>data`` (data decoded as UTF-8), a whole batch per ``write`` under an exclusive ``flock``
  (the processes of all shards share the file), flushed *before* the batch is checkpointed: a crash can cause
  duplicates, never a loss.
* Lifecycle events go to ``$JAVAKCL_EVENT_LOG`` (if set): ``shard_id<TAB>event<TAB>detail<TAB>time_ns`` for
  ``initialize`` (detail: the position it starts after), ``checkpoint`` (the sequence number), ``lease_lost``,
  ``shard_ended`` and ``shutdown_requested`` (after their checkpoint), and ``checkpoint_failed`` (the error).
* Checkpoints after every batch with records, retrying ``ThrottlingException`` (and other transient errors) a few
  times, giving up at once on ``ShutdownException`` (the lease is gone); checkpoints on shard end and on a
  requested shutdown.
"""

from __future__ import annotations

import fcntl
import os
import sys
import time

from amazon_kclpy import kcl  # type: ignore[import-not-found]
from amazon_kclpy.v3 import processor  # type: ignore[import-not-found]

RECORD_LOG_ENV = "JAVAKCL_RECORD_LOG"
EVENT_LOG_ENV = "JAVAKCL_EVENT_LOG"
CHECKPOINT_ATTEMPTS = 10
RETRY_SLEEP_S = 0.2


def _append(path: str | None, text: str) -> None:
    if not path or not text:
        return
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        data = text.encode()
        while data:
            written = os.write(fd, data)
            data = data[written:]
        os.fsync(fd)
    finally:
        os.close(fd)  # releases the lock


def _clean(text: str) -> str:
    return text.replace("\t", "\\t").replace("\n", "\\n")


class RecordLogger(processor.RecordProcessorBase):  # type: ignore[misc]
    def __init__(self) -> None:
        self._records = os.environ.get(RECORD_LOG_ENV)
        self._events = os.environ.get(EVENT_LOG_ENV)
        self._shard_id = "?"

    def _event(self, event: str, detail: object = "") -> None:
        _append(self._events, f"{self._shard_id}\t{event}\t{_clean(str(detail))}\t{time.time_ns()}\n")

    def _checkpoint(self, checkpointer: object, what: str, sequence_number: str | None = None) -> bool:
        for attempt in range(1, CHECKPOINT_ATTEMPTS + 1):
            try:
                checkpointer.checkpoint(sequence_number)  # type: ignore[attr-defined]
            except kcl.CheckpointError as exc:
                error = str(exc.value)
                if error == "ShutdownException" or attempt == CHECKPOINT_ATTEMPTS:
                    self._event("checkpoint_failed", f"{what}: {error} (attempt {attempt})")
                    sys.stderr.write(f"record_logger {self._shard_id}: checkpoint {what} failed: {error}\n")
                    return False
                # ThrottlingException, or anything transient: try again shortly.
                time.sleep(RETRY_SLEEP_S)
            else:
                return True
        return False

    def initialize(self, initialize_input: object) -> None:
        self._shard_id = initialize_input.shard_id  # type: ignore[attr-defined]
        self._event("initialize", initialize_input.sequence_number)  # type: ignore[attr-defined]

    def process_records(self, process_records_input: object) -> None:
        records = process_records_input.records  # type: ignore[attr-defined]
        if not records:
            return
        lines = [
            f"{self._shard_id}\t{record.sequence_number}\t{_clean(record.partition_key)}\t"
            f"{_clean(record.binary_data.decode('utf-8', errors='replace'))}\n"
            for record in records
        ]
        _append(self._records, "".join(lines))
        last = records[-1].sequence_number
        if self._checkpoint(process_records_input.checkpointer, "batch", last):  # type: ignore[attr-defined]
            self._event("checkpoint", last)

    def lease_lost(self, lease_lost_input: object) -> None:
        self._event("lease_lost")

    def shard_ended(self, shard_ended_input: object) -> None:
        if self._checkpoint(shard_ended_input.checkpointer, "shard end"):  # type: ignore[attr-defined]
            self._event("shard_ended")

    def shutdown_requested(self, shutdown_requested_input: object) -> None:
        if self._checkpoint(shutdown_requested_input.checkpointer, "shutdown"):  # type: ignore[attr-defined]
            self._event("shutdown_requested")


if __name__ == "__main__":
    kcl.KCLProcess(RecordLogger()).run()
