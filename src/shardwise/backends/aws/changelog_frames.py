"""The binary framing of the DynamoDB changelog's chunks: a commit's (or a snapshot's) changes packed into chunks
of at most a given size, and read back strictly.

A chunk is ``b"SWC1"``, a big-endian ``uint32`` count of changes, then each change as ``uint8`` kind (0: put,
1: delete), ``uint32`` key length, ``uint32`` value length (0 for a delete), the key, the value. Decoding checks
every length against the bytes left before reading, so a damaged chunk can never make it read past its end or
allocate more than the chunk holds; trailing bytes, an unknown kind, a count that does not match are errors.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from shardwise.errors import MalformedItemError, StateStoreError
from shardwise.state.port import Change

__all__ = ["CHANGE_OVERHEAD_BYTES", "CHUNK_HEADER_BYTES", "decode_chunk", "encode_chunks"]

_MAGIC = b"SWC1"
_HEADER = struct.Struct(">4sI")
_CHANGE = struct.Struct(">BII")
_PUT, _DELETE = 0, 1

CHUNK_HEADER_BYTES = _HEADER.size
CHANGE_OVERHEAD_BYTES = _CHANGE.size


def encode_chunks(changes: Sequence[Change], chunk_bytes: int) -> list[bytes]:
    """``changes`` in order, packed into as few chunks of at most ``chunk_bytes`` as greedy packing gives; at
    least one chunk (an empty commit is one empty chunk). A single change that cannot fit a chunk raises
    :class:`StateStoreError` naming the limit, before anything is written."""
    chunks: list[bytes] = []
    body: list[bytes] = []
    count = 0
    size = CHUNK_HEADER_BYTES
    for key, value in changes:
        framed = CHANGE_OVERHEAD_BYTES + len(key) + (0 if value is None else len(value))
        if CHUNK_HEADER_BYTES + framed > chunk_bytes:
            raise StateStoreError(
                f"a state change of {framed} bytes (key {bytes(key[:40])!r}…) exceeds the changelog's chunk limit "
                f"of {chunk_bytes - CHUNK_HEADER_BYTES} bytes per change: keep keys and values smaller (split a "
                "large value over several keys)"
            )
        if size + framed > chunk_bytes:
            chunks.append(_HEADER.pack(_MAGIC, count) + b"".join(body))
            body, count, size = [], 0, CHUNK_HEADER_BYTES
        if value is None:
            body.append(_CHANGE.pack(_DELETE, len(key), 0) + bytes(key))
        else:
            body.append(_CHANGE.pack(_PUT, len(key), len(value)) + bytes(key) + bytes(value))
        count += 1
        size += framed
    chunks.append(_HEADER.pack(_MAGIC, count) + b"".join(body))
    return chunks


def decode_chunk(data: bytes, item_key: str) -> list[Change]:
    """The changes of one chunk; :class:`MalformedItemError` naming ``item_key`` for anything but a
    well-formed chunk."""
    if len(data) < CHUNK_HEADER_BYTES:
        raise MalformedItemError(item_key, f"chunk of {len(data)} bytes is shorter than its header")
    magic, count = _HEADER.unpack_from(data, 0)
    if magic != _MAGIC:
        raise MalformedItemError(item_key, f"chunk does not start with {_MAGIC!r} (got {magic!r})")
    # Every change takes at least its overhead: a count the data cannot hold is rejected before any work.
    if count * CHANGE_OVERHEAD_BYTES > len(data) - CHUNK_HEADER_BYTES:
        raise MalformedItemError(item_key, f"chunk claims {count} changes in {len(data)} bytes")
    changes: list[Change] = []
    offset = CHUNK_HEADER_BYTES
    for index in range(count):
        if offset + CHANGE_OVERHEAD_BYTES > len(data):
            raise MalformedItemError(item_key, f"change {index} is cut off at byte {offset}")
        kind, key_len, value_len = _CHANGE.unpack_from(data, offset)
        offset += CHANGE_OVERHEAD_BYTES
        if kind not in (_PUT, _DELETE) or (kind == _DELETE and value_len != 0):
            raise MalformedItemError(item_key, f"change {index} has an unknown kind {kind} / value length")
        end = offset + key_len + value_len
        if end > len(data):
            raise MalformedItemError(item_key, f"change {index} runs past the chunk's end ({end} > {len(data)})")
        key = data[offset : offset + key_len]
        value = None if kind == _DELETE else data[offset + key_len : end]
        changes.append((key, value))
        offset = end
    if offset != len(data):
        raise MalformedItemError(item_key, f"chunk has {len(data) - offset} bytes after its {count} changes")
    return changes
