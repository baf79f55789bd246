"""The 128-bit hash-key space of a stream.

Kinesis maps a record to a shard by the MD5 of its partition key, read as an unsigned 128-bit big-endian
integer (or by an explicit hash key given as a decimal string). Each shard owns a closed range
``[starting_hash_key, ending_hash_key]``; the ranges of the open shards tile ``[0, 2**128 - 1]``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

__all__ = ["MAX_HASH_KEY", "HashKeyRange", "hash_key_for", "parse_hash_key"]

MAX_HASH_KEY = 2**128 - 1


def hash_key_for(partition_key: str) -> int:
    """The hash key Kinesis assigns to a partition key: MD5 of its UTF-8 bytes as a 128-bit integer."""
    return int.from_bytes(hashlib.md5(partition_key.encode("utf-8")).digest(), "big")


def parse_hash_key(text: str) -> int:
    """Parse a decimal hash key, raising ``ValueError`` that names the allowed range."""
    if not text.isascii() or not text.isdigit() or int(text) > MAX_HASH_KEY:
        raise ValueError(f"{text!r} is not a hash key: expected a decimal integer from 0 to 2**128-1")
    return int(text)


@dataclass(frozen=True, slots=True)
class HashKeyRange:
    """A closed range of hash keys, ``start <= key <= end``."""

    start: int
    end: int

    def __post_init__(self) -> None:
        if not 0 <= self.start <= self.end <= MAX_HASH_KEY:
            raise ValueError(f"invalid hash key range [{self.start}, {self.end}]")

    def __contains__(self, key: object) -> bool:
        return isinstance(key, int) and self.start <= key <= self.end

    @classmethod
    def from_strings(cls, start: str, end: str) -> HashKeyRange:
        return cls(parse_hash_key(start), parse_hash_key(end))

    def is_adjacent_to(self, other: HashKeyRange) -> bool:
        return self.end + 1 == other.start or other.end + 1 == self.start
