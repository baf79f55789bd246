"""The level-1 sidecar checkpoint file ``.checkpoint`` beside a store (the shape of Kafka Streams' legacy
``OffsetCheckpoint`` file, with shardwise's fields).

Text, ``\\n``-separated lines::

    0                                   <- format version
    1                                   <- number of entries
    <shard_id> <sequence_number> <sub_sequence_number> <commit> <lineage>

Written to ``.checkpoint.tmp``, flushed, fsynced and renamed over ``.checkpoint`` (then the directory is
fsynced), so a reader sees the old file or the new one, never a torn one. Parsing is strict: a wrong version,
count or field, or a truncated file raises :class:`SidecarError` (the store is then wiped and restored).

The position fields (``<sequence_number> <sub_sequence_number> <commit> <lineage>``) are also how the RocksDB
engine keeps the position inside the store (:func:`encode_meta` / :func:`decode_meta`).
"""

from __future__ import annotations

import os
from pathlib import Path

from shardwise.checkpoint.sequence import ExtendedSequenceNumber
from shardwise.state.port import CommitMeta

__all__ = [
    "SIDECAR_NAME",
    "SidecarError",
    "decode_meta",
    "encode_meta",
    "fsync_directory",
    "read_sidecar",
    "remove_sidecar",
    "write_sidecar",
]

SIDECAR_NAME = ".checkpoint"
_VERSION = "0"
_MAX_BYTES = 64 * 1024


class SidecarError(ValueError):
    """The sidecar file is not a valid level-1 checkpoint (the message says what is wrong)."""


def encode_meta(meta: CommitMeta) -> str:
    pos = meta.position
    return f"{pos.sequence_number} {pos.sub_sequence_number} {meta.commit} {meta.lineage}"


def decode_meta(text: str) -> CommitMeta:
    """The inverse of :func:`encode_meta`; raises :class:`SidecarError` naming the problem."""
    fields = text.split(" ")
    if len(fields) != 4:
        raise SidecarError(f"expected 4 position fields, found {len(fields)} in {text!r}")
    sequence, sub_text, commit_text, lineage = fields
    if not _is_decimal(sub_text) or not _is_decimal(commit_text):
        raise SidecarError(f"sub-sequence number and commit must be decimal integers in {text!r}")
    commit = int(commit_text)
    if commit < 1:
        raise SidecarError(f"commit must be >= 1 in {text!r}")
    if not lineage or not lineage.isascii() or not lineage.isprintable():
        raise SidecarError(f"lineage must be printable ASCII in {text!r}")
    try:
        position = ExtendedSequenceNumber(sequence, int(sub_text))
    except ValueError as exc:
        raise SidecarError(f"bad position in {text!r}: {exc}") from None
    return CommitMeta(commit, position, lineage)


def _is_decimal(text: str) -> bool:
    return bool(text) and text.isascii() and text.isdigit() and len(text) <= 20


def format_sidecar(shard_id: str, meta: CommitMeta) -> str:
    return f"{_VERSION}\n1\n{shard_id} {encode_meta(meta)}\n"


def parse_sidecar(text: str, *, shard_id: str) -> CommitMeta:
    """Parse a sidecar's text strictly; raises :class:`SidecarError`."""
    if not text.endswith("\n"):
        raise SidecarError("the file ended prematurely (no final newline)")
    lines = text[:-1].split("\n")
    if len(lines) < 2:
        raise SidecarError("the file ended prematurely (no version and count)")
    if lines[0] != _VERSION:
        raise SidecarError(f"unknown checkpoint version {lines[0]!r} (expected {_VERSION})")
    if lines[1] != "1":
        raise SidecarError(f"expected an entry count of 1, found {lines[1]!r}")
    if len(lines) != 3:
        raise SidecarError(f"expected exactly 1 entry, found {len(lines) - 2}")
    owner, _, rest = lines[2].partition(" ")
    if owner != shard_id:
        raise SidecarError(f"the entry is for shard {owner!r}, not {shard_id!r}")
    return decode_meta(rest)


def read_sidecar(directory: Path, *, shard_id: str) -> CommitMeta | None:
    """The position in ``directory/.checkpoint``, None when there is no such file; raises :class:`SidecarError`."""
    path = directory / SIDECAR_NAME
    try:
        with path.open("rb") as handle:
            data = handle.read(_MAX_BYTES + 1)
    except FileNotFoundError:
        return None
    if len(data) > _MAX_BYTES:
        raise SidecarError(f"the file is larger than {_MAX_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise SidecarError("the file is not UTF-8 text") from None
    return parse_sidecar(text, shard_id=shard_id)


def write_sidecar(directory: Path, *, shard_id: str, meta: CommitMeta) -> None:
    """Write the sidecar atomically (tmp file, fsync, rename, fsync of the directory)."""
    tmp = directory / (SIDECAR_NAME + ".tmp")
    with tmp.open("wb") as handle:
        handle.write(format_sidecar(shard_id, meta).encode())
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(directory / SIDECAR_NAME)
    fsync_directory(directory)


def remove_sidecar(directory: Path) -> None:
    for name in (SIDECAR_NAME, SIDECAR_NAME + ".tmp"):
        (directory / name).unlink(missing_ok=True)
    fsync_directory(directory)


def fsync_directory(directory: Path) -> None:
    """Make a rename, creation or removal in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
