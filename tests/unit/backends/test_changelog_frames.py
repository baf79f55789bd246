"""The DynamoDB changelog's chunk framing: what is packed reads back exactly, chunks respect their size, and any
other bytes are a MalformedItemError (never another exception, never a read past the end)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shardwise.backends.aws.changelog_frames import (
    CHANGE_OVERHEAD_BYTES,
    CHUNK_HEADER_BYTES,
    decode_chunk,
    encode_chunks,
)
from shardwise.backends.changelog_rules import compaction_due
from shardwise.errors import MalformedItemError, StateStoreError
from shardwise.state.port import Change

changes_strategy = st.lists(
    st.tuples(st.binary(max_size=40), st.one_of(st.none(), st.binary(max_size=120))), max_size=60
)


@settings(max_examples=200, deadline=None)
@given(changes=changes_strategy, chunk_bytes=st.integers(min_value=200, max_value=2000))
def test_packed_changes_read_back_in_order_within_the_size(changes: list[Change], chunk_bytes: int) -> None:
    chunks = encode_chunks(changes, chunk_bytes)
    assert chunks
    assert all(len(chunk) <= chunk_bytes for chunk in chunks)
    decoded = [change for index, chunk in enumerate(chunks) for change in decode_chunk(chunk, f"chunk {index}")]
    assert decoded == changes


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=200))
def test_arbitrary_bytes_decode_or_are_malformed(data: bytes) -> None:
    problem = None
    try:
        decode_chunk(data, "shard/log#1")
    except MalformedItemError as exc:
        problem = exc.key
    assert problem in (None, "shard/log#1")


@settings(max_examples=200, deadline=None)
@given(changes=changes_strategy.filter(bool), cut=st.integers(min_value=1, max_value=50))
def test_a_truncated_chunk_is_malformed(changes: list[Change], cut: int) -> None:
    (chunk,) = encode_chunks(changes, 1 << 20)
    with pytest.raises(MalformedItemError):
        decode_chunk(chunk[: max(0, len(chunk) - cut)], "k")


def test_a_huge_count_is_refused_before_any_work() -> None:
    with pytest.raises(MalformedItemError, match="claims 4294967295 changes"):
        decode_chunk(struct.pack(">4sI", b"SWC1", 0xFFFFFFFF) + b"\x00" * 9, "k")


def test_a_change_larger_than_a_chunk_names_the_limit() -> None:
    limit = 100
    fits = b"v" * (limit - CHUNK_HEADER_BYTES - CHANGE_OVERHEAD_BYTES - 1)
    assert len(encode_chunks([(b"k", fits)], limit)) == 1
    with pytest.raises(StateStoreError, match=f"chunk limit of {limit - CHUNK_HEADER_BYTES} bytes"):
        encode_chunks([(b"k", fits + b"!")], limit)


def test_an_empty_commit_is_one_empty_chunk() -> None:
    (chunk,) = encode_chunks([], 1000)
    assert decode_chunk(chunk, "k") == []


@pytest.mark.parametrize(
    ("log_changes", "snapshot_keys", "due"),
    [(100, 0, False), (101, 0, True), (5000, 5000, False), (5001, 5000, True)],
)
def test_compaction_is_due_past_100_and_the_snapshot_keys(log_changes: int, snapshot_keys: int, due: bool) -> None:
    assert compaction_due(log_changes, snapshot_keys) is due
