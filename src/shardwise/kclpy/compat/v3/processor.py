"""``amazon_kclpy.v3.processor`` as shardwise provides it: the v3 record-processor API (``version = 3``)."""

from __future__ import annotations

from typing import Any

__all__ = ["RecordProcessorBase"]


class RecordProcessorBase:
    """A v3 record processor: ``initialize``, ``process_records``, ``lease_lost``, ``shard_ended`` (must
    checkpoint) and ``shutdown_requested``. Each receives one input from :mod:`amazon_kclpy.messages`."""

    version = 3

    def initialize(self, initialize_input: Any) -> None:
        raise NotImplementedError

    def process_records(self, process_records_input: Any) -> None:
        raise NotImplementedError

    def lease_lost(self, lease_lost_input: Any) -> None:
        raise NotImplementedError

    def shard_ended(self, shard_ended_input: Any) -> None:
        raise NotImplementedError

    def shutdown_requested(self, shutdown_requested_input: Any) -> None:
        raise NotImplementedError
