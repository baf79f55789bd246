"""``amazon_kclpy.v2.processor`` as shardwise provides it: the v2 record-processor API (``version = 2``)."""

from __future__ import annotations

from typing import Any

__all__ = ["RecordProcessorBase"]


class RecordProcessorBase:
    """A v2 record processor: ``initialize``, ``process_records``, ``shutdown(shutdown_input)`` (``reason``
    TERMINATE at a shard end — checkpoint! — or ZOMBIE after a lost lease) and ``shutdown_requested``."""

    version = 2

    def initialize(self, initialize_input: Any) -> None:
        raise NotImplementedError

    def process_records(self, process_records_input: Any) -> None:
        raise NotImplementedError

    def shutdown(self, shutdown_input: Any) -> None:
        raise NotImplementedError

    def shutdown_requested(self, shutdown_requested_input: Any) -> None:
        return None
