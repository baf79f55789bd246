"""Run an amazon-kclpy record processor (v1, v2 or v3 API) as a shardwise :class:`RecordProcessor`.

The adapter stands where amazon-kclpy's ``KCLProcess`` and the Java MultiLangDaemon stood, with no process,
pipe or JSON in between:

==============================  ==========================================================================
shardwise calls                 the kclpy processor gets (v3 / v2 / v1 API)
==============================  ==========================================================================
``initialize``                  ``initialize(InitializeInput)`` / same / ``initialize(shard_id)``
``process_records``             ``process_records(ProcessRecordsInput)`` / same /
                                ``process_records(records, checkpointer)``
``lease_lost``                  ``lease_lost(LeaseLostInput)`` / ``shutdown(ShutdownInput ZOMBIE)`` /
                                ``shutdown(checkpointer, "ZOMBIE")``
``shard_ended``                 ``shard_ended(ShardEndedInput)`` / ``shutdown(ShutdownInput TERMINATE)`` /
                                ``shutdown(checkpointer, "TERMINATE")``
``shutdown_requested``          ``shutdown_requested(ShutdownRequestedInput)`` / same /
                                ``shutdown_requested(checkpointer)``; then, as KCL's ``ShutdownTask`` does
                                for a requested shutdown or a graceful handoff, the ``lease_lost`` row
==============================  ==========================================================================

``lease_lost`` reaches the processor at most once.

The API version is read as amazon-kclpy reads it — the processor's ``version`` attribute (1, 2 or 3; what the
``RecordProcessorBase`` classes set) — or, for a class without one, from its methods (``lease_lost`` and
``shard_ended``: v3; ``shutdown(shutdown_input)``: v2; ``shutdown(checkpointer, reason)``: v1).

Like amazon-kclpy's ``KCLProcess``, an exception raised by the processor is logged (with its traceback) and
swallowed: the worker carries on and the batch is **not** delivered again (shardwise's native processors get
it again instead; pass ``redeliver_on_error=True`` for that). A shard end the processor did not checkpoint is
retried, as KCL does.

A kclpy processor with the class attribute ``shardwise_stateful = True`` is a stateful processor
(:class:`~shardwise.processor.StatefulRecordProcessor`): its inputs carry the shard's state store as ``.state``
(initialize, process_records, shard_ended, shutdown_requested), every checkpoint commits the store first, and a
batch it raises on is delivered again with its pending changes discarded — so its state changes exactly once.

The inputs are built as the daemon's JSON objects and dispatched as ``KCLProcess`` dispatches them; their
classes are amazon-kclpy's own (``amazon_kclpy.messages``) when the package is installed, else shardwise's
stand-ins with the same attributes (:mod:`shardwise.kclpy.compat.messages`).

The checkpointer has amazon-kclpy's signature, ``checkpoint(sequence_number=None, sub_sequence_number=None)``,
and raises amazon-kclpy's ``CheckpointError`` (shardwise's compatible one when amazon-kclpy is not installed)
whose ``value`` is the Java exception name the daemon would have sent (:func:`~shardwise.kclpy.errors.
kcl_error_name`).
"""

from __future__ import annotations

import base64
import importlib
import inspect
import logging
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

from shardwise.checkpoint.checkpointer import Checkpointer
from shardwise.errors import ConfigurationError, ShardwiseError
from shardwise.kclpy.compat import messages
from shardwise.kclpy.errors import checkpoint_error_class, kcl_error_name
from shardwise.processor import (
    BaseRecordProcessor,
    InitializationInput,
    LeaseLostInput,
    ProcessRecordsInput,
    RecordProcessor,
    RecordProcessorFactory,
    ShardEndedInput,
    ShutdownRequestedInput,
)
from shardwise.retrieval.model import Record
from shardwise.state.port import StateStore

__all__ = [
    "KclpyCheckpointer",
    "KclpyProcessorAdapter",
    "kclpy_api_version",
    "kclpy_factory",
    "kclpy_messages_module",
    "to_kclpy_record",
]

logger = logging.getLogger(__name__)

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MILLISECOND = timedelta(milliseconds=1)
_REQUIRED_METHODS = {
    1: ("initialize", "process_records", "shutdown"),
    2: ("initialize", "process_records", "shutdown"),
    3: ("initialize", "process_records", "lease_lost", "shard_ended", "shutdown_requested"),
}


def kclpy_api_version(processor: object) -> int:
    """1, 2 or 3: the amazon-kclpy API a processor (instance or class) implements.

    Raises :class:`ConfigurationError` for an object that is not a kclpy record processor.
    """
    version = getattr(processor, "version", None)
    if isinstance(version, int) and not isinstance(version, bool) and version in (1, 2, 3):
        detected = version
    elif hasattr(processor, "lease_lost") and hasattr(processor, "shard_ended"):
        detected = 3
    elif callable(shutdown := getattr(processor, "shutdown", None)):
        detected = 1 if _positional_parameters(shutdown) >= 2 else 2
    else:
        name = processor.__name__ if isinstance(processor, type) else type(processor).__name__
        raise ConfigurationError(
            f"{name} is not an amazon-kclpy record processor: it has no version attribute (1, 2 or 3) and neither "
            "lease_lost/shard_ended (v3) nor shutdown (v1/v2); derive it from amazon_kclpy.v3.processor."
            "RecordProcessorBase"
        )
    missing = [name for name in _REQUIRED_METHODS[detected] if not callable(getattr(processor, name, None))]
    if missing:
        name = processor.__name__ if isinstance(processor, type) else type(processor).__name__
        raise ConfigurationError(f"{name} (amazon-kclpy v{detected} API) lacks {', '.join(missing)}")
    return detected


def _positional_parameters(method: Callable[..., Any]) -> int:
    try:
        parameters = inspect.signature(method).parameters.values()
    except (TypeError, ValueError):
        return 1
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    count = sum(1 for p in parameters if p.kind in kinds)
    if inspect.isfunction(method):  # looked up on a class: ``self`` is still in the signature
        count -= 1
    return count


def _epoch_millis(stamp: datetime) -> int:
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=timezone.utc)
    return (stamp - _EPOCH) // _MILLISECOND


def _record_json(record: Record) -> dict[str, Any]:
    """The JSON object the MultiLangDaemon sends for a record (its ``JsonFriendlyRecord``)."""
    return {
        "action": "record",
        "data": base64.b64encode(record.data).decode("ascii"),
        "partitionKey": record.partition_key,
        "sequenceNumber": record.sequence_number,
        "subSequenceNumber": record.sub_sequence_number,
        "approximateArrivalTimestamp": _epoch_millis(record.approximate_arrival_timestamp),
    }


def to_kclpy_record(record: Record) -> messages.Record:
    """A shardwise record as the kclpy ``Record`` the MultiLangDaemon would have sent."""
    return messages.Record.from_values(
        data=record.data,
        partition_key=record.partition_key,
        sequence_number=record.sequence_number,
        sub_sequence_number=record.sub_sequence_number,
        timestamp_millis=_epoch_millis(record.approximate_arrival_timestamp),
    )


class KclpyCheckpointer:
    """amazon-kclpy's ``Checkpointer`` over a shardwise :class:`~shardwise.checkpoint.checkpointer.Checkpointer`.

    ``checkpoint()`` records everything delivered so far; ``checkpoint(sequence_number)`` (a ``str``, or an
    ``int``) that record with sub-sequence number 0, ``checkpoint(sequence_number, sub_sequence_number)`` that
    KPL sub-record; a sub-sequence number without a sequence number is ignored, as the Java daemon does.
    A failure raises ``error_class(<Java exception name>)``.
    """

    def __init__(self, checkpointer: Checkpointer, error_class: type[Exception] | None = None) -> None:
        self._checkpointer = checkpointer
        self._error_class = error_class if error_class is not None else checkpoint_error_class()

    @property
    def shardwise_checkpointer(self) -> Checkpointer:
        return self._checkpointer

    def checkpoint(self, sequence_number: str | int | None = None, sub_sequence_number: int | None = None) -> None:
        sequence: Any = sequence_number
        if isinstance(sequence_number, int) and not isinstance(sequence_number, bool):
            sequence = str(sequence_number)  # JSON numbers reach the daemon's String field as their digits
        sub: Any = sub_sequence_number
        if isinstance(sub, str) and sub.strip().isdigit():
            sub = int(sub)
        if sequence is not None and sub is not None and (not isinstance(sub, int) or isinstance(sub, bool)):
            raise self._error_class("IllegalArgumentException")
        try:
            if sequence is None:
                self._checkpointer.checkpoint()
            else:
                self._checkpointer.checkpoint(sequence, sub)
        except ShardwiseError as exc:
            raise self._error_class(kcl_error_name(exc)) from exc


class _V2Bridge:
    """A v2 processor seen through the v3 API (what amazon-kclpy's ``V2toV3Processor`` does)."""

    def __init__(self, delegate: Any, messages_module: Any) -> None:
        self._delegate = delegate
        self._messages = messages_module

    def initialize(self, initialize_input: Any) -> None:
        self._delegate.initialize(initialize_input)

    def process_records(self, process_records_input: Any) -> None:
        self._delegate.process_records(process_records_input)

    def lease_lost(self, lease_lost_input: Any) -> None:
        self._delegate.shutdown(self._messages.ShutdownInput.zombie())

    def shard_ended(self, shard_ended_input: Any) -> None:
        self._delegate.shutdown(self._messages.ShutdownInput.terminate(shard_ended_input.checkpointer))

    def shutdown_requested(self, shutdown_requested_input: Any) -> None:
        method = getattr(self._delegate, "shutdown_requested", None)
        if callable(method):  # amazon-kclpy's v1/v2 base classes do nothing here
            method(shutdown_requested_input)


class _V1Bridge:
    """A v1 processor seen through the v2 API (what amazon-kclpy's ``V1toV2Processor`` does)."""

    def __init__(self, delegate: Any) -> None:
        self._delegate = delegate

    def initialize(self, initialize_input: Any) -> None:
        self._delegate.initialize(initialize_input.shard_id)

    def process_records(self, process_records_input: Any) -> None:
        self._delegate.process_records(process_records_input.records, process_records_input.checkpointer)

    def shutdown(self, shutdown_input: Any) -> None:
        self._delegate.shutdown(shutdown_input.checkpointer, shutdown_input.reason)

    def shutdown_requested(self, shutdown_requested_input: Any) -> None:
        method = getattr(self._delegate, "shutdown_requested", None)
        if callable(method):
            method(shutdown_requested_input.checkpointer)


def kclpy_messages_module() -> Any:
    """The module whose classes the processor's inputs are: amazon-kclpy's ``messages`` when the package is
    importable (so ``isinstance`` checks against it hold), else shardwise's stand-in."""
    try:
        return importlib.import_module("amazon_kclpy.messages")
    except ImportError:
        return messages


class KclpyProcessorAdapter:
    """One amazon-kclpy processor instance (one shard, one lease acquisition) as a shardwise processor.

    Each call becomes the input the MultiLangDaemon would have sent — built from the same JSON object, with the
    classes of ``messages_module`` (:func:`kclpy_messages_module` by default) — and is dispatched with the
    kclpy checkpointer, exactly as amazon-kclpy's ``KCLProcess`` dispatches it: to the processor itself (v3) or
    through the v2 → v3 (and v1 → v2) bridges.
    """

    def __init__(
        self,
        delegate: Any,
        *,
        api_version: int | None = None,
        error_class: type[Exception] | None = None,
        messages_module: Any = None,
        redeliver_on_error: bool = False,
    ) -> None:
        self.delegate = delegate
        self.api_version = api_version if api_version is not None else kclpy_api_version(delegate)
        self.messages = messages_module if messages_module is not None else kclpy_messages_module()
        self._error_class = error_class if error_class is not None else checkpoint_error_class()
        self._redeliver_on_error = redeliver_on_error
        if self.api_version == 3:
            self._target: Any = delegate
        elif self.api_version == 2:
            self._target = _V2Bridge(delegate, self.messages)
        else:
            self._target = _V2Bridge(_V1Bridge(delegate), self.messages)
        self._shard_id = "?"
        self._checkpointer: KclpyCheckpointer | None = None
        self._lease_lost_sent = False
        #: An amazon-kclpy processor opts into a state store with ``shardwise_stateful = True``: its
        #: process_records (and shard-ended, shutdown-requested) input then carries the store as ``.state``, and a
        #: batch it raises on is delivered again (its pending changes discarded) rather than skipped.
        self.shardwise_stateful = getattr(delegate, "shardwise_stateful", False) is True

    def _kclpy_checkpointer(self, checkpointer: Checkpointer) -> KclpyCheckpointer:
        current = self._checkpointer
        if current is None or current.shardwise_checkpointer is not checkpointer:
            current = KclpyCheckpointer(checkpointer, self._error_class)
            self._checkpointer = current
        return current

    def _dispatch(self, message: Any, checkpointer: KclpyCheckpointer | None, *, redeliverable: bool = False) -> None:
        try:
            message.dispatch(checkpointer, self._target)
        except Exception:
            if redeliverable and (self._redeliver_on_error or self.shardwise_stateful):
                raise
            logger.exception(
                "shard %s: the kclpy record processor raised in %s (API v%d); as under amazon-kclpy the error is "
                "logged and the worker carries on",
                self._shard_id,
                message.action,
                self.api_version,
            )

    def _with_state(self, message: Any, state: StateStore | None) -> Any:
        if self.shardwise_stateful:
            message.state = state
        return message

    def _record(self, record: Record) -> Any:
        if self.messages is messages:
            return to_kclpy_record(record)
        return self.messages.Record(_record_json(record))

    # -- shardwise's RecordProcessor ---------------------------------------------------------------------

    def initialize(self, initialization_input: InitializationInput) -> None:
        self._shard_id = initialization_input.shard_id
        position = initialization_input.extended_sequence_number
        message = self.messages.InitializeInput(
            {
                "action": "initialize",
                "shardId": self._shard_id,
                "sequenceNumber": position.sequence_number,
                "subSequenceNumber": position.sub_sequence_number,
            }
        )
        self._dispatch(self._with_state(message, initialization_input.state), None)

    def process_records(self, process_records_input: ProcessRecordsInput) -> None:
        checkpointer = self._kclpy_checkpointer(process_records_input.checkpointer)
        message = self._with_state(
            self.messages.ProcessRecordsInput(
                {
                    "action": "processRecords",
                    "records": [self._record(record) for record in process_records_input.records],
                    "millisBehindLatest": process_records_input.millis_behind_latest,
                }
            ),
            process_records_input.state,
        )
        self._dispatch(message, checkpointer, redeliverable=True)

    def lease_lost(self, lease_lost_input: LeaseLostInput) -> None:
        if self._lease_lost_sent:
            return
        self._lease_lost_sent = True
        self._dispatch(self.messages.LeaseLostInput({"action": "leaseLost"}), None)

    def shard_ended(self, shard_ended_input: ShardEndedInput) -> None:
        checkpointer = self._kclpy_checkpointer(shard_ended_input.checkpointer)
        message = self.messages.ShardEndedInput({"action": "shardEnded"})
        self._dispatch(self._with_state(message, shard_ended_input.state), checkpointer)

    def shutdown_requested(self, shutdown_requested_input: ShutdownRequestedInput) -> None:
        checkpointer = self._kclpy_checkpointer(shutdown_requested_input.checkpointer)
        message = self.messages.ShutdownRequestedInput({"action": "shutdownRequested"})
        self._dispatch(self._with_state(message, shutdown_requested_input.state), checkpointer)
        # KCL's ShutdownTask then ends a requested shutdown (or a graceful handoff) like a lost lease: the
        # processor gets leaseLost (v2: shutdown ZOMBIE) before its lease is given up — where kclpy
        # processors commonly release their resources.
        self.lease_lost(LeaseLostInput(shard_id=self._shard_id))


def kclpy_factory(
    factory: Callable[[], Any],
    *,
    error_class: type[Exception] | None = None,
    redeliver_on_error: bool = False,
) -> RecordProcessorFactory:
    """Wrap a factory of kclpy processors (usually the processor class) into a shardwise processor factory.

    A class is checked at once (:func:`kclpy_api_version`), so a wrong ``--processor`` fails before the worker
    starts. A shardwise-native processor (a :class:`~shardwise.processor.BaseRecordProcessor`) is passed
    through unwrapped.
    """
    resolved = error_class if error_class is not None else checkpoint_error_class()
    messages_module = kclpy_messages_module()
    if isinstance(factory, type) and not issubclass(factory, BaseRecordProcessor):
        kclpy_api_version(factory)

    def make() -> RecordProcessor:
        processor = factory()
        if isinstance(processor, BaseRecordProcessor):
            return processor
        return KclpyProcessorAdapter(
            processor, error_class=resolved, messages_module=messages_module, redeliver_on_error=redeliver_on_error
        )

    return make
