#!/usr/bin/env python
"""An amazon-kclpy record processor on the older **v2** API (``amazon_kclpy.v2.processor``): ``shutdown(
shutdown_input)`` with ``reason`` TERMINATE (checkpoint!) or ZOMBIE instead of v3's ``lease_lost`` and
``shard_ended``. Same output as ``sample_kclpy_app.py`` (one ``shard_id<TAB>sequence_number<TAB>partition_key
<TAB>data`` line per record in ``$KCLPY_SAMPLE_OUTPUT``); it checkpoints after every batch.
"""

from __future__ import annotations

import fcntl
import os
import sys
from typing import Any

from amazon_kclpy import kcl  # type: ignore[import-not-found]
from amazon_kclpy.v2 import processor  # type: ignore[import-not-found]

OUTPUT_ENV = "KCLPY_SAMPLE_OUTPUT"


def _clean(text: str) -> str:
    return text.replace("\t", "\\t").replace("\n", "\\n")


def _append(path: str, text: str) -> None:
    """One ``write`` under an exclusive ``flock``, flushed to disk (the daemon runs a process per shard)."""
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
    def __init__(self) -> None:
        self._output = os.environ.get(OUTPUT_ENV, "")
        self._shard_id = "?"

    def log(self, message: str) -> None:
        sys.stderr.write(f"[{self._shard_id}] {message}\n")

    def initialize(self, initialize_input: Any) -> None:
        self._shard_id = initialize_input.shard_id
        self.log(f"initialized at {initialize_input.sequence_number}")

    def process_records(self, process_records_input: Any) -> None:
        lines = [
            f"{self._shard_id}\t{record.sequence_number}\t{_clean(record.partition_key)}\t"
            f"{_clean(record.binary_data.decode('utf-8', 'replace'))}\n"
            for record in process_records_input.records
        ]
        if lines and self._output:
            _append(self._output, "".join(lines))
        if process_records_input.records:
            last = process_records_input.records[-1]
            try:
                process_records_input.checkpointer.checkpoint(last.sequence_number, last.sub_sequence_number)
            except kcl.CheckpointError as error:
                self.log(f"checkpoint failed: {error.value}")

    def shutdown(self, shutdown_input: Any) -> None:
        self.log(f"shutdown {shutdown_input.reason}")
        if shutdown_input.reason == "TERMINATE":
            shutdown_input.checkpointer.checkpoint()

    def shutdown_requested(self, shutdown_requested_input: Any) -> None:
        self.log("shutdown requested: checkpointing")
        shutdown_requested_input.checkpointer.checkpoint()


if __name__ == "__main__":
    kcl.KCLProcess(RecordProcessor()).run()
