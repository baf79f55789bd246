"""``amazon_kclpy.messages`` as shardwise provides it: the objects a kclpy record processor receives.

Each input is built from the JSON object the MultiLangDaemon would have sent (``action``, ``shardId``,
``sequenceNumber``, …), exposes the same read-only attributes as amazon-kclpy's, and has the same
``dispatch(checkpointer, record_processor)``. A :class:`Record` carries ``data`` (base64 text, as on the wire)
and decodes ``binary_data``; ``approximate_arrival_timestamp`` is a naive local ``datetime``, exactly as
amazon-kclpy builds it (``datetime.fromtimestamp(millis / 1000)``), and ``timestamp_millis`` the epoch millis.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from datetime import datetime
from typing import Any

__all__ = [
    "CheckpointInput",
    "InitializeInput",
    "LeaseLostCheckpointer",
    "LeaseLostInput",
    "MessageDispatcher",
    "ProcessRecordsInput",
    "Record",
    "ShardEndedInput",
    "ShutdownInput",
    "ShutdownRequestedInput",
]


class MessageDispatcher:
    """Base of the inputs: ``dispatch`` calls the matching method of a (v3) record processor."""

    _action: str = ""

    @property
    def action(self) -> str:
        """The MultiLangDaemon action this input stands for (``initialize``, ``processRecords``, …)."""
        return self._action

    def dispatch(self, checkpointer: Any, record_processor: Any) -> None:
        raise NotImplementedError


class InitializeInput(MessageDispatcher):
    """``initialize``: the shard and where processing starts (the lease's checkpoint, or a sentinel such as
    ``TRIM_HORIZON`` / ``LATEST`` for a shard nobody has checkpointed)."""

    def __init__(self, json_dict: Mapping[str, Any]) -> None:
        self._shard_id: str = json_dict["shardId"]
        self._sequence_number: str | None = json_dict["sequenceNumber"]
        self._sub_sequence_number: int | None = json_dict["subSequenceNumber"]
        self._action = json_dict["action"]

    @property
    def shard_id(self) -> str:
        return self._shard_id

    @property
    def sequence_number(self) -> str | None:
        return self._sequence_number

    @property
    def sub_sequence_number(self) -> int | None:
        return self._sub_sequence_number

    def dispatch(self, checkpointer: Any, record_processor: Any) -> None:
        record_processor.initialize(self)


class _WithCheckpointer(MessageDispatcher):
    """An input whose ``checkpointer`` is the one it is dispatched with."""

    def __init__(self, json_dict: Mapping[str, Any]) -> None:
        self._checkpointer: Any = None
        self._action = json_dict["action"]

    @property
    def checkpointer(self) -> Any:
        return self._checkpointer


class ProcessRecordsInput(_WithCheckpointer):
    """``processRecords``: a batch of records, how far behind the stream's tip it is, and the checkpointer."""

    def __init__(self, json_dict: Mapping[str, Any]) -> None:
        self._records: list[Record] = list(json_dict["records"])
        self._millis_behind_latest: int | None = json_dict["millisBehindLatest"]
        super().__init__(json_dict)

    @property
    def records(self) -> list[Record]:
        return self._records

    @property
    def millis_behind_latest(self) -> int | None:
        return self._millis_behind_latest

    def dispatch(self, checkpointer: Any, record_processor: Any) -> None:
        self._checkpointer = checkpointer
        record_processor.process_records(self)


class LeaseLostCheckpointer:
    """The checkpointer a v2 processor gets with a ZOMBIE shutdown: every checkpoint fails."""

    def checkpoint(self, sequence_number: Any = None, sub_sequence_number: Any = None) -> None:
        from shardwise.kclpy.errors import checkpoint_error_class  # noqa: PLC0415 - avoids an import cycle

        raise checkpoint_error_class()("Checkpointing is not allowed when the lease is lost")


class ShutdownInput:
    """The v2 API's ``shutdown`` input: ``reason`` TERMINATE (the shard ended: checkpoint!) or ZOMBIE (the
    lease was lost: checkpointing fails)."""

    @staticmethod
    def zombie() -> ShutdownInput:
        return ShutdownInput("ZOMBIE", LeaseLostCheckpointer())

    @staticmethod
    def terminate(checkpointer: Any) -> ShutdownInput:
        return ShutdownInput("TERMINATE", checkpointer)

    def __init__(self, reason: str, checkpointer: Any) -> None:
        self._action = "shutdown"
        self._reason = reason
        self._checkpointer = checkpointer

    @property
    def reason(self) -> str:
        return self._reason

    @property
    def checkpointer(self) -> Any:
        return self._checkpointer

    @property
    def action(self) -> str:
        return self._action


class LeaseLostInput(MessageDispatcher):
    """``leaseLost``: another worker has the shard now; no checkpointing is possible."""

    def __init__(self, json_dict: Mapping[str, Any]) -> None:
        self._action = json_dict["action"]

    def dispatch(self, checkpointer: Any, record_processor: Any) -> None:
        record_processor.lease_lost(self)


class ShardEndedInput(_WithCheckpointer):
    """``shardEnded``: the shard was split or merged and fully read; the processor **must** call
    ``checkpointer.checkpoint()`` or the shard end is retried (and the children wait)."""

    def dispatch(self, checkpointer: Any, record_processor: Any) -> None:
        self._checkpointer = checkpointer
        record_processor.shard_ended(self)


class ShutdownRequestedInput(_WithCheckpointer):
    """``shutdownRequested``: the worker is shutting down (or handing the lease over); a last chance to
    checkpoint before the lease is released."""

    def dispatch(self, checkpointer: Any, record_processor: Any) -> None:
        self._checkpointer = checkpointer
        record_processor.shutdown_requested(self)


class CheckpointInput:
    """The daemon's answer to a checkpoint request (``error`` is a Java exception name, or ``None``)."""

    def __init__(self, json_dict: Mapping[str, Any]) -> None:
        self._sequence_number: str | None = json_dict["sequenceNumber"]
        self._sub_sequence_number: int | None = json_dict["subSequenceNumber"]
        self._error: str | None = json_dict.get("error")

    @property
    def sequence_number(self) -> str | None:
        return self._sequence_number

    @property
    def sub_sequence_number(self) -> int | None:
        return self._sub_sequence_number

    @property
    def error(self) -> str | None:
        return self._error


class Record:
    """One Kinesis record (or one KPL sub-record), as the MultiLangDaemon sends it: ``data`` is base64 text."""

    def __init__(self, json_dict: Mapping[str, Any]) -> None:
        self._json_dict = dict(json_dict)
        self._sequence_number: str = json_dict["sequenceNumber"]
        self._sub_sequence_number: int = json_dict["subSequenceNumber"]
        self._timestamp_millis = int(json_dict["approximateArrivalTimestamp"])
        self._approximate_arrival_timestamp = datetime.fromtimestamp(self._timestamp_millis / 1000.0)
        self._partition_key: str = json_dict["partitionKey"]
        self._data: str = json_dict["data"]
        self._binary: bytes | None = None

    @classmethod
    def from_values(
        cls,
        *,
        data: bytes,
        partition_key: str,
        sequence_number: str,
        sub_sequence_number: int,
        timestamp_millis: int,
    ) -> Record:
        """A record from its parts (what the daemon's ``JsonFriendlyRecord`` carries), keeping the raw bytes."""
        record = cls(
            {
                "action": "record",
                "data": base64.b64encode(data).decode("ascii"),
                "partitionKey": partition_key,
                "sequenceNumber": sequence_number,
                "subSequenceNumber": sub_sequence_number,
                "approximateArrivalTimestamp": timestamp_millis,
            }
        )
        record._binary = data
        return record

    @property
    def binary_data(self) -> bytes:
        """The record's bytes (``data`` decoded from base64)."""
        return self._binary if self._binary is not None else base64.b64decode(self._data)

    @property
    def sequence_number(self) -> str:
        return self._sequence_number

    @property
    def sub_sequence_number(self) -> int:
        return self._sub_sequence_number

    @property
    def timestamp_millis(self) -> int:
        return self._timestamp_millis

    @property
    def approximate_arrival_timestamp(self) -> datetime:
        return self._approximate_arrival_timestamp

    @property
    def partition_key(self) -> str:
        return self._partition_key

    @property
    def data(self) -> str:
        """The record's bytes as base64 text."""
        return self._data

    def get(self, field: str) -> Any:
        """A field of the JSON object by its wire name (``data``, ``partitionKey``, ``sequenceNumber``, …)."""
        return self._json_dict[field]

    def __getitem__(self, field: str) -> Any:
        return self.get(field)

    def __repr__(self) -> str:
        return (
            f"Record(partition_key={self._partition_key!r}, sequence_number={self._sequence_number!r}, "
            f"sub_sequence_number={self._sub_sequence_number})"
        )
