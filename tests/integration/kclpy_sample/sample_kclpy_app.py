#!/usr/bin/env python
"""An amazon-kclpy v3 record processor in the shape of amazon-kclpy's public sample (``samples/
sample_kclpy_app.py``), written for these tests: it imports only ``amazon_kclpy`` and runs unchanged under the
Java MultiLangDaemon (``python sample_kclpy_app.py``) and under ``shardwise run --kclpy-properties``.

* Every record becomes one line ``shard_id<TAB>sequence_number<TAB>partition_key<TAB>data`` (data decoded as
  UTF-8, tabs and newlines escaped) appended to the file named by ``$KCLPY_SAMPLE_OUTPUT``: a whole batch per
  ``write``, under an exclusive ``flock`` (under the Java daemon each shard is its own process) and flushed
  before the batch may be checkpointed, so a crash can cause duplicates, never a loss.
* It checkpoints the largest sequence number seen every ``$KCLPY_SAMPLE_CHECKPOINT_SECONDS`` seconds (default
  60), retrying ``ThrottlingException`` (and any other error but ``ShutdownException``) a few times; it
  checkpoints at shard end and when a shutdown is requested.
* Diagnostics go to stderr (under the daemon, stdout is the protocol channel).
"""

from __future__ import annotations

import fcntl
import os
import sys
import time
from typing import Any

from amazon_kclpy import kcl  # type: ignore[import-not-found]
from amazon_kclpy.v3 import processor  # type: ignore[import-not-found]

OUTPUT_ENV = "KCLPY_SAMPLE_OUTPUT"
CHECKPOINT_SECONDS_ENV = "KCLPY_SAMPLE_CHECKPOINT_SECONDS"


def _clean(text: str) -> str:
    return text.replace("\t", "\\t").replace("\n", "\\n")


def _append(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        data = text.encode()
        while data:
            data = data[os.write(fd, data) :]
        os.fsync(fd)
    finally:
        os.close(fd)


class RecordProcessor(processor.RecordProcessorBase):  # type: ignore[misc]
    """Writes every record to the output file and checkpoints every few seconds, with retries."""

    def __init__(self) -> None:
        self._sleep_seconds = 0.2
        self._checkpoint_retries = 5
        self._checkpoint_freq_seconds = float(os.environ.get(CHECKPOINT_SECONDS_ENV, "60"))
        self._output = os.environ.get(OUTPUT_ENV, "")
        self._shard_id = "?"
        self._largest_seq: tuple[int | None, int | None] = (None, None)
        self._last_checkpoint_time = 0.0

    def log(self, message: str) -> None:
        sys.stderr.write(f"[{self._shard_id}] {message}\n")

    def initialize(self, initialize_input: Any) -> None:
        self._shard_id = initialize_input.shard_id
        self._largest_seq = (None, None)
        self._last_checkpoint_time = time.time()
        self.log(f"initialized at {initialize_input.sequence_number}")

    def checkpoint(
        self, checkpointer: Any, sequence_number: str | None = None, sub_sequence_number: int | None = None
    ) -> None:
        """Checkpoint, retrying on retryable errors (as amazon-kclpy's sample does)."""
        for attempt in range(self._checkpoint_retries):
            try:
                checkpointer.checkpoint(sequence_number, sub_sequence_number)
                return
            except kcl.CheckpointError as error:
                if error.value == "ShutdownException":
                    # Another worker has the lease (or it is being handed over): nothing to checkpoint here.
                    self.log("shutdown exception: skipping the checkpoint")
                    return
                if error.value == "ThrottlingException":
                    if attempt == self._checkpoint_retries - 1:
                        self.log(f"throttled {attempt + 1} times, giving up on this checkpoint")
                        return
                    self.log(f"throttled while checkpointing; retrying in {self._sleep_seconds}s")
                elif error.value == "InvalidStateException":
                    self.log("the KCL reported an invalid state while checkpointing")
                else:
                    self.log(f"error while checkpointing: {error}")
            time.sleep(self._sleep_seconds)

    def should_update_sequence(self, sequence_number: int, sub_sequence_number: int) -> bool:
        largest, largest_sub = self._largest_seq
        return (
            largest is None
            or sequence_number > largest
            or (sequence_number == largest and sub_sequence_number > (largest_sub or 0))
        )

    def process_records(self, process_records_input: Any) -> None:
        lines = []
        for record in process_records_input.records:
            data = record.binary_data.decode("utf-8", "replace")
            seq = int(record.sequence_number)
            sub_seq = record.sub_sequence_number
            lines.append(
                f"{self._shard_id}\t{record.sequence_number}\t{_clean(record.partition_key)}\t{_clean(data)}\n"
            )
            if self.should_update_sequence(seq, sub_seq):
                self._largest_seq = (seq, sub_seq)
        if lines and self._output:
            _append(self._output, "".join(lines))
        if (
            self._largest_seq[0] is not None
            and time.time() - self._last_checkpoint_time > self._checkpoint_freq_seconds
        ):
            self.checkpoint(
                process_records_input.checkpointer,
                str(self._largest_seq[0]),
                self._largest_seq[1],
            )
            self._last_checkpoint_time = time.time()

    def lease_lost(self, lease_lost_input: Any) -> None:
        self.log("lease lost")

    def shard_ended(self, shard_ended_input: Any) -> None:
        self.log("shard ended: checkpointing")
        self.checkpoint(shard_ended_input.checkpointer)

    def shutdown_requested(self, shutdown_requested_input: Any) -> None:
        self.log("shutdown requested: checkpointing")
        self.checkpoint(shutdown_requested_input.checkpointer)


if __name__ == "__main__":
    kcl.KCLProcess(RecordProcessor()).run()
