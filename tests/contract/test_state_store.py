"""The local state-store contract: one suite, run unchanged on every engine (SQLite, RocksDB) at both format
levels (1: position in a sidecar file; 2: position inside the store)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import shardwise
from shardwise.checkpoint.sequence import SHARD_END, TRIM_HORIZON, ExtendedSequenceNumber
from shardwise.errors import StateStoreError
from shardwise.state.engines import open_local_store
from shardwise.state.port import FORMAT_IN_STORE, CommitMeta, LocalStore, OpenOutcome

SHARD = "shardId-000000000007"


def esn(seq: int, sub: int = 0) -> ExtendedSequenceNumber:
    return ExtendedSequenceNumber(str(seq), sub)


def meta(commit: int, seq: int = 100, *, lineage: str = "lineage-a", sub: int = 0) -> CommitMeta:
    return CommitMeta(commit, esn(seq, sub), lineage)


@pytest.fixture(params=["sqlite", "rocksdb"])
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=[1, 2], ids=["level1", "level2"])
def level(request: pytest.FixtureRequest) -> int:
    return int(request.param)


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    return tmp_path / "app" / SHARD


def open_store(path: Path, engine: str, level: int) -> LocalStore:
    return open_local_store(path, shard_id=SHARD, engine=engine, write_level=level, readable_level=2).store


@pytest.fixture
def store(store_dir: Path, engine: str, level: int) -> Iterator[LocalStore]:
    opened = open_local_store(store_dir, shard_id=SHARD, engine=engine, write_level=level, readable_level=2)
    assert opened.outcome == OpenOutcome.CREATED
    assert opened.store.format_level == level
    yield opened.store
    opened.store.close()


# --- reads, writes, the pending batch ----------------------------------------------------------------------


def test_a_new_store_is_empty_and_uncommitted(store: LocalStore) -> None:
    assert store.shard_id == SHARD
    assert store.committed() is None
    assert store.get(b"k") is None
    assert list(store.range()) == []
    assert len(store) == 0
    assert not store.has_pending()
    assert store.pending() == []


def test_reads_see_pending_writes_over_committed_ones(store: LocalStore) -> None:
    store.put(b"a", b"1")
    store.put(b"b", b"2")
    store.commit(meta(1))
    store.put(b"a", b"10")
    store.delete(b"b")
    store.put(b"c", b"3")
    assert store.get(b"a") == b"10"
    assert store.get(b"b") is None
    assert store.get(b"c") == b"3"
    assert list(store.range()) == [(b"a", b"10"), (b"c", b"3")]
    assert len(store) == 2
    assert store.pending() == [(b"a", b"10"), (b"b", None), (b"c", b"3")]
    assert store.stats().key_count == 2  # committed keys only: a, b


def test_the_last_pending_write_to_a_key_wins(store: LocalStore) -> None:
    store.put(b"k", b"1")
    store.delete(b"k")
    assert store.pending() == [(b"k", None)]
    store.put(b"k", b"2")
    assert store.pending() == [(b"k", b"2")]
    assert len(store) == 1


def test_range_is_in_byte_order_with_half_open_bounds(store: LocalStore) -> None:
    keys = [b"", b"\x00", b"a", b"a\x00", b"ab", b"b", b"\x7f", b"\x80", b"\xff", b"\xff\xff"]
    for key in keys[::2]:
        store.put(key, b"c:" + key)
    store.commit(meta(1))
    for key in keys[1::2]:
        store.put(key, b"p:" + key)
    assert [key for key, _ in store.range()] == sorted(keys)
    assert [key for key, _ in store.range(b"a", b"b")] == [b"a", b"a\x00", b"ab"]
    assert [key for key, _ in store.range(b"\x80")] == [b"\x80", b"\xff", b"\xff\xff"]
    assert [key for key, _ in store.range(None, b"a")] == [b"", b"\x00"]
    assert list(store.range(b"b", b"b")) == []


def test_discard_drops_the_pending_batch_only(store: LocalStore) -> None:
    store.put(b"a", b"1")
    store.commit(meta(1))
    store.put(b"a", b"2")
    store.delete(b"a")
    store.put(b"b", b"2")
    store.discard()
    assert not store.has_pending()
    assert store.get(b"a") == b"1"
    assert store.get(b"b") is None
    assert len(store) == 1


def test_keys_and_values_must_be_bytes(store: LocalStore) -> None:
    with pytest.raises(TypeError, match="bytes"):
        store.put("a", b"1")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="bytes"):
        store.put(b"a", "1")  # type: ignore[arg-type]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("put"), st.binary(max_size=3), st.binary(max_size=4)),
            st.tuples(st.just("delete"), st.binary(max_size=3), st.just(b"")),
            st.tuples(st.sampled_from(["commit", "discard"]), st.just(b""), st.just(b"")),
        ),
        max_size=30,
    ),
    bounds=st.tuples(st.none() | st.binary(max_size=2), st.none() | st.binary(max_size=2)),
)
def test_the_store_behaves_like_a_dict_with_a_pending_layer(
    store: LocalStore, ops: list[tuple[str, bytes, bytes]], bounds: tuple[bytes | None, bytes | None]
) -> None:
    # each example starts from an empty store of a fresh lineage (restore replaces everything)
    store.discard()
    last = store.committed()
    store.restore(
        iter([]), CommitMeta(1, TRIM_HORIZON, f"reset-{0 if last is None else last.commit + 1}"), replace=True
    )
    committed: dict[bytes, bytes] = {}
    view: dict[bytes, bytes] = {}
    for op, key, value in ops:
        if op == "put":
            view[key] = value
            store.put(key, value)
        elif op == "delete":
            view.pop(key, None)
            store.delete(key)
        elif op == "commit":
            previous = store.committed()
            assert previous is not None
            store.commit(CommitMeta(previous.commit + 1, esn(previous.commit + 1), previous.lineage))
            committed = dict(view)
        else:
            store.discard()
            view = dict(committed)
    start, end = bounds
    expected = sorted((k, v) for k, v in view.items() if (start is None or k >= start) and (end is None or k < end))
    assert list(store.range(start, end)) == expected
    assert len(store) == len(view)
    assert all(store.get(k) == v for k, v in view.items())
    assert store.stats().key_count == len(committed)


# --- commits --------------------------------------------------------------------------------------------------


def test_a_commit_persists_data_and_position_across_a_reopen(store_dir: Path, engine: str, level: int) -> None:
    store = open_store(store_dir, engine, level)
    store.put(b"a", b"1")
    store.put(b"b", b"2")
    store.commit(meta(1, 100))
    store.delete(b"a")
    store.put(b"c", b"3")
    store.commit(meta(2, 123, sub=4))
    store.put(b"uncommitted", b"x")
    store.close()

    reopened = open_local_store(store_dir, shard_id=SHARD, engine=engine, write_level=level, readable_level=2)
    assert reopened.outcome == OpenOutcome.OPENED
    assert reopened.detail == ""
    assert reopened.store.committed() == meta(2, 123, sub=4)
    assert list(reopened.store.range()) == [(b"b", b"2"), (b"c", b"3")]
    assert not reopened.store.has_pending()
    reopened.store.close()


def test_sentinel_positions_round_trip(store_dir: Path, engine: str, level: int) -> None:
    store = open_store(store_dir, engine, level)
    store.commit(CommitMeta(1, TRIM_HORIZON, "l"))
    store.commit(CommitMeta(2, SHARD_END, "l"))
    store.close()
    reopened = open_store(store_dir, engine, level)
    assert reopened.committed() == CommitMeta(2, SHARD_END, "l")
    reopened.close()


def test_commit_numbers_follow_on_within_a_lineage(store: LocalStore) -> None:
    store.commit(meta(7))  # the first commit of a store may carry any number
    store.put(b"a", b"1")
    for bad in (7, 9, 6):
        with pytest.raises(StateStoreError, match="does not follow"):
            store.commit(meta(bad))
    assert store.pending() == [(b"a", b"1")]  # a refused commit keeps the batch
    store.commit(meta(8))
    store.commit(meta(3, lineage="lineage-b"))  # a new lineage may start anywhere
    assert store.committed() == meta(3, lineage="lineage-b")
    with pytest.raises(StateStoreError, match="start at 1"):
        store.commit(meta(0, lineage="lineage-c"))
    for lineage in ("", "has space", "ünïcode"):
        with pytest.raises(StateStoreError, match="lineage"):
            store.commit(meta(1, lineage=lineage))
    assert store.committed() == meta(3, lineage="lineage-b")


def test_an_empty_commit_moves_the_position(store: LocalStore) -> None:
    store.commit(meta(1, 10))
    store.commit(meta(2, 20))
    assert store.committed() == meta(2, 20)


def test_a_closed_store_refuses_use(store: LocalStore) -> None:
    store.close()
    with pytest.raises(StateStoreError, match="closed"):
        store.get(b"a")
    store.close()  # idempotent


def test_stats_count_committed_keys_and_bytes_on_disk(store: LocalStore) -> None:
    for i in range(100):
        store.put(b"k%03d" % i, b"v" * 100)
    store.commit(meta(1))
    store.delete(b"k000")
    stats = store.stats()
    assert stats.key_count == 100
    assert stats.size_bytes > 0
    store.commit(meta(2))
    assert store.stats().key_count == 99


# --- restore --------------------------------------------------------------------------------------------------


def test_restore_replace_empties_the_store_first(store_dir: Path, engine: str, level: int) -> None:
    store = open_store(store_dir, engine, level)
    store.put(b"old", b"1")
    store.put(b"\xff\xff", b"2")
    store.commit(meta(1))
    applied = store.restore(
        iter([(b"a", b"1"), (b"b", b"2"), (b"gone", None)]), meta(9, 900, lineage="x"), replace=True
    )
    assert applied == 3
    assert list(store.range()) == [(b"a", b"1"), (b"b", b"2")]
    assert store.committed() == meta(9, 900, lineage="x")
    store.close()
    reopened = open_store(store_dir, engine, level)
    assert list(reopened.range()) == [(b"a", b"1"), (b"b", b"2")]
    assert reopened.committed() == meta(9, 900, lineage="x")
    assert reopened.stats().key_count == 2
    reopened.close()


def test_restore_delta_applies_changes_on_top(store: LocalStore) -> None:
    store.put(b"a", b"1")
    store.put(b"b", b"1")
    store.commit(meta(1))
    applied = store.restore(iter([(b"a", b"2"), (b"b", None), (b"c", b"3")]), meta(4), replace=False)
    assert applied == 3
    assert list(store.range()) == [(b"a", b"2"), (b"c", b"3")]
    assert len(store) == 2
    assert store.committed() == meta(4)
    store.commit(meta(5))  # commits follow the restored one


def test_restore_refuses_a_pending_batch(store: LocalStore) -> None:
    store.put(b"a", b"1")
    with pytest.raises(StateStoreError, match="pending"):
        store.restore(iter([]), meta(1), replace=True)


# --- atomicity under a crash ----------------------------------------------------------------------------------

KEYS = 300

CHILD = textwrap.dedent(
    """
    import os, random, sys, threading, time
    from pathlib import Path
    from shardwise.checkpoint.sequence import ExtendedSequenceNumber
    from shardwise.state.engines import open_local_store
    from shardwise.state.port import CommitMeta

    path, engine, level, seed, keys = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    rng = random.Random(seed)
    store = open_local_store(Path(path), shard_id="SHARD", engine=engine, write_level=level, readable_level=2).store
    last = store.committed()
    commit = 0 if last is None else last.commit
    print("ready", flush=True)
    threading.Timer(rng.uniform(0.05, 0.4), lambda: os._exit(9)).start()
    while True:
        commit += 1
        for i in range(keys):
            store.put(b"k%04d" % i, str(commit).encode())
        if commit % 2:
            store.put(b"odd", b"1")
        else:
            store.delete(b"odd")
        store.commit(CommitMeta(commit, ExtendedSequenceNumber(str(commit)), "crash"))
        time.sleep(rng.uniform(0, 0.01))  # "processing" between commits: crashes land inside and outside them
    """
).replace('"SHARD"', repr(SHARD))


def test_a_crash_leaves_a_whole_commit_never_part_of_one(store_dir: Path, engine: str, level: int) -> None:
    """A child process commits in a loop and exits abruptly (os._exit from a timer thread, mid-write or not);
    after each crash the reopened store's data is exactly what its committed position's commit wrote."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(shardwise.__file__).parents[1]), *sys.path])}
    seen_commits: list[int] = []
    for seed in range(12):
        if len(seen_commits) >= 3:
            break
        child = subprocess.run(
            [sys.executable, "-c", CHILD, str(store_dir), engine, str(level), str(seed), str(KEYS)],
            env=env,
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert child.returncode == 9, child.stderr.decode()[-2000:]
        opened = open_local_store(store_dir, shard_id=SHARD, engine=engine, write_level=level, readable_level=2)
        store = opened.store
        try:
            last = store.committed()
            if opened.outcome == OpenOutcome.WIPED_CORRUPT:
                # level 1 only: killed between its data write and its sidecar (the marker says so) → wiped whole
                assert level != FORMAT_IN_STORE, opened.detail
                assert last is None
                assert len(store) == 0
                continue
            assert opened.outcome == OpenOutcome.OPENED, opened.detail
            if last is None:
                assert len(store) == 0
                continue
            seen_commits.append(last.commit)
            assert last.position == esn(last.commit)
            values = dict(store.range())
            expected = {b"k%04d" % i: str(last.commit).encode() for i in range(KEYS)}
            if last.commit % 2:
                expected[b"odd"] = b"1"
            assert values == expected
        finally:
            store.close()
    assert seen_commits, "no crash round left a committed store behind"
