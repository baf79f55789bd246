"""The level-1 sidecar file: its exact text, round trips, atomic replacement, strict parsing."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shardwise.checkpoint.sequence import ExtendedSequenceNumber as Esn
from shardwise.checkpoint.sequence import SentinelCheckpoint
from shardwise.state.engines.sidecar import (
    SIDECAR_NAME,
    SidecarError,
    decode_meta,
    encode_meta,
    format_sidecar,
    parse_sidecar,
    read_sidecar,
    remove_sidecar,
    write_sidecar,
)
from shardwise.state.port import CommitMeta

SHARD = "shardId-000000000001"

positions = st.one_of(
    st.builds(Esn, st.integers(0, 10**40).map(str), st.integers(0, 2**31)),
    st.sampled_from([Esn.sentinel(s) for s in SentinelCheckpoint]),
)
metas = st.builds(
    CommitMeta,
    st.integers(1, 2**63),
    positions,
    st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=40),
)


def test_the_file_has_kafkas_offset_checkpoint_shape() -> None:
    meta = CommitMeta(12, Esn("4959", 3), "0f3a")
    assert format_sidecar(SHARD, meta) == f"0\n1\n{SHARD} 4959 3 12 0f3a\n"


@given(meta=metas)
def test_text_round_trips(meta: CommitMeta) -> None:
    assert parse_sidecar(format_sidecar(SHARD, meta), shard_id=SHARD) == meta
    assert decode_meta(encode_meta(meta)) == meta


@given(meta=metas, cut=st.integers(0, 200))
def test_every_truncation_is_refused(meta: CommitMeta, cut: int) -> None:
    text = format_sidecar(SHARD, meta)
    truncated = text[: min(cut, len(text) - 1)]
    with pytest.raises(SidecarError):
        parse_sidecar(truncated, shard_id=SHARD)


def test_the_sequence_number_text_is_kept_verbatim() -> None:
    meta = CommitMeta(1, Esn("000123", 0), "l")
    assert parse_sidecar(format_sidecar(SHARD, meta), shard_id=SHARD).position.sequence_number == "000123"


def test_write_read_and_remove(tmp_path: Path) -> None:
    assert read_sidecar(tmp_path, shard_id=SHARD) is None
    first = CommitMeta(1, Esn("10"), "l")
    second = CommitMeta(2, Esn("20", 1), "l")
    write_sidecar(tmp_path, shard_id=SHARD, meta=first)
    write_sidecar(tmp_path, shard_id=SHARD, meta=second)
    assert read_sidecar(tmp_path, shard_id=SHARD) == second
    assert sorted(p.name for p in tmp_path.iterdir()) == [SIDECAR_NAME]  # the .tmp file was renamed over it
    remove_sidecar(tmp_path)
    assert read_sidecar(tmp_path, shard_id=SHARD) is None


def test_an_oversized_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / SIDECAR_NAME).write_text("0\n1\n" + "x" * 70_000 + "\n")
    with pytest.raises(SidecarError, match="larger than"):
        read_sidecar(tmp_path, shard_id=SHARD)
