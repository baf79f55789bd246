"""Sequence numbers, sentinel checkpoints and their ordering.

Kinesis sequence numbers are decimal strings of up to 128 digits. They are compared as integers, never as
strings ("9" < "10"). A checkpoint is either a real sequence number (with a KPL sub-sequence number) or one of
KCL's sentinels: ``TRIM_HORIZON``, ``LATEST``, ``AT_TIMESTAMP`` (the initial positions of a lease nobody has
checkpointed yet) and ``SHARD_END`` (the shard is closed and fully processed).

Sentinels order as in KCL's ``ExtendedSequenceNumber``: AT_TIMESTAMP < TRIM_HORIZON < LATEST < any real
sequence number < SHARD_END.
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass

__all__ = ["ExtendedSequenceNumber", "SentinelCheckpoint", "parse_sequence_number"]


class SentinelCheckpoint(str, enum.Enum):
    """KCL's sentinel checkpoint values, stored verbatim in the lease's ``checkpoint`` attribute."""

    TRIM_HORIZON = "TRIM_HORIZON"
    LATEST = "LATEST"
    AT_TIMESTAMP = "AT_TIMESTAMP"
    SHARD_END = "SHARD_END"


# Values used only for ordering sentinels among themselves and against real sequence numbers (all >= 0).
_SENTINEL_ORDER = {
    SentinelCheckpoint.AT_TIMESTAMP: -3,
    SentinelCheckpoint.TRIM_HORIZON: -2,
    SentinelCheckpoint.LATEST: -1,
}
_MAX_DIGITS = 128


def parse_sequence_number(text: str) -> int:
    """Return the integer value of a Kinesis sequence number, or raise ``ValueError`` naming the problem."""
    if not text or len(text) > _MAX_DIGITS or not text.isascii() or not text.isdigit():
        raise ValueError(
            f"{text!r} is not a sequence number: expected 1 to {_MAX_DIGITS} decimal digits "
            f"or one of {', '.join(s.value for s in SentinelCheckpoint)}"
        )
    return int(text)


@functools.total_ordering
@dataclass(frozen=True, slots=True)
class ExtendedSequenceNumber:
    """A checkpoint position: a sequence number (or sentinel) plus the KPL sub-sequence number.

    ``sequence_number`` keeps the exact text that Kinesis returned (leading zeros and all), because that text
    is what is written into the lease table and handed to ``AT_SEQUENCE_NUMBER``; ordering uses its integer
    value.
    """

    sequence_number: str
    sub_sequence_number: int = 0

    def __post_init__(self) -> None:
        if self.sub_sequence_number < 0:
            raise ValueError(f"sub-sequence number must be >= 0, got {self.sub_sequence_number}")
        if self.sequence_number not in SentinelCheckpoint._value2member_map_:
            parse_sequence_number(self.sequence_number)

    @classmethod
    def sentinel(cls, value: SentinelCheckpoint) -> ExtendedSequenceNumber:
        return cls(value.value, 0)

    @property
    def sentinel_value(self) -> SentinelCheckpoint | None:
        """The sentinel this position is, or ``None`` for a real sequence number."""
        member = SentinelCheckpoint._value2member_map_.get(self.sequence_number)
        return member if isinstance(member, SentinelCheckpoint) else None

    @property
    def is_sentinel(self) -> bool:
        return self.sentinel_value is not None

    @property
    def is_shard_end(self) -> bool:
        return self.sequence_number == SentinelCheckpoint.SHARD_END.value

    @property
    def numeric(self) -> int:
        """Integer value of a real sequence number. Raises ``ValueError`` for a sentinel."""
        if self.is_sentinel:
            raise ValueError(f"{self.sequence_number} is a sentinel, not a sequence number")
        return int(self.sequence_number)

    def _sort_key(self) -> tuple[int, int, int]:
        sentinel = self.sentinel_value
        if sentinel is SentinelCheckpoint.SHARD_END:
            return (2, 0, 0)
        if sentinel is not None:
            return (0, _SENTINEL_ORDER[sentinel], 0)
        return (1, int(self.sequence_number), self.sub_sequence_number)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, ExtendedSequenceNumber):
            return NotImplemented
        return self._sort_key() < other._sort_key()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ExtendedSequenceNumber):
            return NotImplemented
        return self._sort_key() == other._sort_key()

    def __hash__(self) -> int:
        return hash(self._sort_key())

    def __str__(self) -> str:
        if self.is_sentinel or self.sub_sequence_number == 0:
            return self.sequence_number
        return f"{self.sequence_number}/{self.sub_sequence_number}"


TRIM_HORIZON = ExtendedSequenceNumber.sentinel(SentinelCheckpoint.TRIM_HORIZON)
LATEST = ExtendedSequenceNumber.sentinel(SentinelCheckpoint.LATEST)
AT_TIMESTAMP = ExtendedSequenceNumber.sentinel(SentinelCheckpoint.AT_TIMESTAMP)
SHARD_END = ExtendedSequenceNumber.sentinel(SentinelCheckpoint.SHARD_END)
