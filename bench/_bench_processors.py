"""Record processors the idle and cold-start benchmarks run with ``python -m shardwise run``."""

from __future__ import annotations

import json
import os
import resource
import time

from shardwise.processor import BaseRecordProcessor, ProcessRecordsInput


class IdleProcessor(BaseRecordProcessor):
    """Checkpoints every batch it gets (on an idle stream: none)."""

    def process_records(self, process_records_input: ProcessRecordsInput) -> None:
        if process_records_input.records:
            process_records_input.checkpointer.checkpoint()


class FirstRecordProcessor(BaseRecordProcessor):
    """At the first delivered record, appends this process's wall time and CPU seconds (all threads, from
    process start) as a JSON line to the file named by ``BENCH_FIRST_RECORD_FILE``."""

    def process_records(self, process_records_input: ProcessRecordsInput) -> None:
        if not process_records_input.records:
            return
        usage = resource.getrusage(resource.RUSAGE_SELF)
        line = json.dumps({"wall": time.time(), "cpu_s": usage.ru_utime + usage.ru_stime})
        with open(os.environ["BENCH_FIRST_RECORD_FILE"], "a", encoding="utf-8") as out:
            out.write(line + "\n")
