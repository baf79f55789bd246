"""The checkpointer a record processor uses to record how far it has got in its shard.

Semantics are KCL's ``ShardRecordProcessorCheckpointer``: ``checkpoint()`` records the largest sequence number
delivered so far (or ``SHARD_END`` once the shard has ended); an explicit position must lie between the last
checkpoint and the largest delivered position; ``prepare_checkpoint`` writes a pending checkpoint (optionally
with application state) that a later ``PreparedCheckpointer.checkpoint()`` commits. Writes are conditional on
the lease this worker holds: once the lease is lost, checkpointing raises :class:`LeaseLostError`.

The checkpointer remembers whether the writes since the shard consumer last asked succeeded or failed
(:attr:`Checkpointer.failed_write`, :attr:`Checkpointer.wrote`), so the consumer can tell a checkpoint that
keeps failing from a processor error, whether the processor passed the failure on or swallowed it.
"""

from __future__ import annotations

import threading
from typing import Protocol, runtime_checkable

from shardwise.checkpoint.sequence import SHARD_END, ExtendedSequenceNumber, parse_sequence_number
from shardwise.errors import InvalidCheckpointError, LeaseLostError

__all__ = ["CheckpointWriter", "Checkpointer", "Positioned", "PreparedCheckpointer"]


@runtime_checkable
class Positioned(Protocol):
    """Anything with a position in its shard: a delivered :class:`~shardwise.retrieval.model.Record`."""

    @property
    def extended_sequence_number(self) -> ExtendedSequenceNumber: ...


class CheckpointWriter(Protocol):
    """Writes a checkpoint to the lease held under ``token`` (an acquisition of the lease by this worker).

    Raises :class:`~shardwise.errors.LeaseLostError` when the lease is no longer held under that token.
    """

    def write_checkpoint(
        self,
        lease_key: str,
        token: str,
        checkpoint: ExtendedSequenceNumber,
        *,
        pending: ExtendedSequenceNumber | None,
        pending_state: bytes | None,
    ) -> None: ...


def _position(sequence_number: str | Positioned, sub_sequence_number: int | None) -> ExtendedSequenceNumber:
    if not isinstance(sequence_number, str) and isinstance(sequence_number, Positioned):
        if sub_sequence_number is not None:
            raise InvalidCheckpointError("pass either a Record or a sequence number with a sub-sequence number")
        return sequence_number.extended_sequence_number
    try:
        if not isinstance(sequence_number, str):  # bytes would pass the digit check and reach the lease table
            raise TypeError(f"a sequence number is a str, not {type(sequence_number).__name__}")
        parse_sequence_number(sequence_number)
        return ExtendedSequenceNumber(sequence_number, sub_sequence_number or 0)
    except (TypeError, ValueError) as exc:
        raise InvalidCheckpointError(f"cannot checkpoint at {sequence_number!r}: {exc}") from exc


class Checkpointer:
    """Checkpoints one shard for one acquisition of its lease. Safe to call from the processor's thread."""

    def __init__(
        self,
        lease_key: str,
        token: str,
        writer: CheckpointWriter,
        *,
        last_checkpoint: ExtendedSequenceNumber,
        pending_checkpoint: ExtendedSequenceNumber | None = None,
    ) -> None:
        self.lease_key = lease_key
        self._token = token
        self._writer = writer
        self._last = last_checkpoint
        self._largest_permitted = last_checkpoint
        self._pending = pending_checkpoint
        self._lock = threading.Lock()
        self._failed_write: Exception | None = None
        self._wrote = False

    @property
    def failed_write(self) -> Exception | None:
        """The error of the last write since :meth:`reset_write_result` if it failed (a lost lease excepted)."""
        return self._failed_write

    @property
    def wrote(self) -> bool:
        """Whether a write succeeded since :meth:`reset_write_result`."""
        return self._wrote

    def reset_write_result(self) -> None:
        """Forget earlier write results (the shard consumer calls this before each call into the processor)."""
        self._failed_write = None
        self._wrote = False

    def _write(
        self, target: ExtendedSequenceNumber, *, pending: ExtendedSequenceNumber | None, pending_state: bytes | None
    ) -> None:
        try:
            self._writer.write_checkpoint(
                self.lease_key, self._token, target, pending=pending, pending_state=pending_state
            )
        except LeaseLostError:
            raise
        except Exception as exc:
            self._failed_write = exc
            raise
        self._failed_write = None
        self._wrote = True

    @property
    def last_checkpoint(self) -> ExtendedSequenceNumber:
        return self._last

    @property
    def pending_checkpoint(self) -> ExtendedSequenceNumber | None:
        return self._pending

    @property
    def largest_permitted(self) -> ExtendedSequenceNumber:
        """The largest position delivered to the processor (``SHARD_END`` once the shard has ended)."""
        return self._largest_permitted

    def advance(self, delivered: ExtendedSequenceNumber) -> None:
        """Called by the shard consumer after delivering records up to ``delivered`` (or SHARD_END)."""
        with self._lock:
            self._largest_permitted = max(self._largest_permitted, delivered)

    def retract(self, delivered: ExtendedSequenceNumber) -> None:
        """Called by the shard consumer when a batch whose processing failed will be delivered again: the
        largest permitted position goes back to ``delivered`` (never behind the last checkpoint)."""
        with self._lock:
            self._largest_permitted = max(delivered, self._last)

    def _validated(
        self, sequence_number: str | Positioned | None, sub_sequence_number: int | None
    ) -> ExtendedSequenceNumber:
        if sequence_number is None:
            if sub_sequence_number is not None:
                raise InvalidCheckpointError("a sub-sequence number needs a sequence number")
            return self._largest_permitted
        target = _position(sequence_number, sub_sequence_number)
        if not self._last <= target <= self._largest_permitted:
            raise InvalidCheckpointError(
                f"Could not checkpoint at extended sequence number {target} as it did not fall into acceptable "
                f"range between the last checkpoint {self._last} and the greatest extended sequence number "
                f"passed to this record processor {self._largest_permitted}"
            )
        return target

    def checkpoint(
        self, sequence_number: str | Positioned | None = None, sub_sequence_number: int | None = None
    ) -> None:
        """Record progress up to and including ``sequence_number`` (default: everything delivered so far).

        Raises :class:`InvalidCheckpointError` for a position outside [last checkpoint, largest delivered] and
        :class:`LeaseLostError` if this worker no longer holds the lease.
        """
        with self._lock:
            target = self._validated(sequence_number, sub_sequence_number)
            if target == self._last and self._pending is None:
                return
            self._write(target, pending=None, pending_state=None)
            self._last = target
            self._pending = None

    def prepare_checkpoint(
        self,
        sequence_number: str | Positioned | None = None,
        sub_sequence_number: int | None = None,
        *,
        application_state: bytes | None = None,
    ) -> PreparedCheckpointer:
        """Write a pending checkpoint (two-phase); commit it with the returned object's ``checkpoint()``."""
        with self._lock:
            target = self._validated(sequence_number, sub_sequence_number)
            if target == SHARD_END:
                raise InvalidCheckpointError("SHARD_END cannot be prepared; call checkpoint() at shard end")
            self._write(self._last, pending=target, pending_state=application_state)
            self._pending = target
        return PreparedCheckpointer(self, target)

    def _commit(self, target: ExtendedSequenceNumber) -> None:
        with self._lock:
            if target < self._last:
                raise InvalidCheckpointError(f"prepared checkpoint {target} is behind the last checkpoint {self._last}")
            self._write(target, pending=None, pending_state=None)
            self._last = target
            self._pending = None


class PreparedCheckpointer:
    """A prepared (pending) checkpoint; ``checkpoint()`` commits it."""

    def __init__(self, owner: Checkpointer, pending: ExtendedSequenceNumber) -> None:
        self._owner = owner
        self.pending_checkpoint = pending

    def checkpoint(self) -> None:
        self._owner._commit(self.pending_checkpoint)
