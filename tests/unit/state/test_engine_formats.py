"""open_local_store: every outcome on both engines (create, open, upgrade 1 → 2, convert down 2 → 1, wipes for a
newer or unknown format, corruption, an unclean level-1 store and the other engine's files), and the pure
decision behind it, with Hypothesis."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shardwise.checkpoint.sequence import ExtendedSequenceNumber
from shardwise.errors import StateStoreError
from shardwise.state.engines import ENGINES, open_local_store
from shardwise.state.engines import rocksdb as rocks_engine
from shardwise.state.engines.base import COMMITTING_MARKER
from shardwise.state.engines.formats import Action, Found, decide
from shardwise.state.engines.sidecar import SIDECAR_NAME
from shardwise.state.port import CommitMeta, OpenedStore, OpenOutcome

SHARD = "shardId-000000000003"
META = CommitMeta(4, ExtendedSequenceNumber("49590338271490256608559692538361571095921575989136588898", 2), "lin")
DATA = [(b"a", b"1"), (b"b", b"2"), (b"c", b"3")]


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "app" / SHARD


def open_at(path: Path, engine: str, write_level: int, readable_level: int = 2) -> OpenedStore:
    return open_local_store(path, shard_id=SHARD, engine=engine, write_level=write_level, readable_level=readable_level)


def make_store(path: Path, engine: str, level: int) -> None:
    """A store at ``level`` holding DATA, committed at META (commit 3 then 4)."""
    store = open_at(path, engine, level).store
    store.put(b"a", b"1")
    store.put(b"b", b"2")
    store.put(b"gone", b"x")
    store.commit(CommitMeta(3, ExtendedSequenceNumber("5"), META.lineage))
    store.put(b"c", b"3")
    store.delete(b"gone")
    store.commit(META)
    store.close()


def assert_wiped(opened: OpenedStore, outcome: str, path: Path, *, says: str) -> None:
    assert opened.outcome == outcome, opened.detail
    assert "\n" not in opened.detail
    assert str(path) in opened.detail
    assert says in opened.detail
    assert "restored from the changelog" in opened.detail
    assert opened.store.committed() is None
    assert list(opened.store.range()) == []
    assert not (path / SIDECAR_NAME).exists()
    assert not (path / COMMITTING_MARKER).exists()
    opened.store.close()


def test_a_missing_store_is_created_at_the_write_level(path: Path, engine: str) -> None:
    for level in (1, 2):
        opened = open_at(path / str(level), engine, level)
        assert (opened.outcome, opened.detail) == (OpenOutcome.CREATED, "")
        assert opened.store.format_level == level
        opened.store.close()


@pytest.mark.parametrize("level", [1, 2])
def test_a_store_at_the_write_level_opens_as_it_is(path: Path, engine: str, level: int) -> None:
    make_store(path, engine, level)
    assert (path / SIDECAR_NAME).exists() == (level == 1)
    opened = open_at(path, engine, level)
    assert (opened.outcome, opened.detail) == (OpenOutcome.OPENED, "")
    assert opened.store.committed() == META
    assert list(opened.store.range()) == DATA
    opened.store.close()


def test_level_1_upgrades_to_2_keeping_data_and_position(path: Path, engine: str) -> None:
    make_store(path, engine, 1)
    opened = open_at(path, engine, 2)
    assert opened.outcome == OpenOutcome.UPGRADED
    assert str(path) in opened.detail and "\n" not in opened.detail
    assert not (path / SIDECAR_NAME).exists()
    assert opened.store.format_level == 2
    assert opened.store.committed() == META
    assert list(opened.store.range()) == DATA
    opened.store.put(b"d", b"4")
    opened.store.commit(CommitMeta(5, ExtendedSequenceNumber("6"), META.lineage))
    opened.store.close()
    again = open_at(path, engine, 2)
    assert again.outcome == OpenOutcome.OPENED
    assert again.store.committed() == CommitMeta(5, ExtendedSequenceNumber("6"), META.lineage)
    assert len(again.store) == 4
    again.store.close()


def test_level_2_converts_down_to_1_when_writing_1(path: Path, engine: str) -> None:
    make_store(path, engine, 2)
    opened = open_at(path, engine, 1)
    assert opened.outcome == OpenOutcome.CONVERTED_DOWN
    assert str(path) in opened.detail and "\n" not in opened.detail
    assert (path / SIDECAR_NAME).exists()
    assert opened.store.committed() == META
    assert list(opened.store.range()) == DATA
    opened.store.close()
    # now a true level-1 store: a worker that knows only level 1 opens it as it is
    pinned = open_at(path, engine, 1, readable_level=1)
    assert pinned.outcome == OpenOutcome.OPENED
    assert pinned.store.committed() == META
    assert list(pinned.store.range()) == DATA
    pinned.store.close()


def test_a_worker_reading_only_level_1_wipes_a_level_2_store(path: Path, engine: str) -> None:
    make_store(path, engine, 2)
    opened = open_at(path, engine, 1, readable_level=1)
    assert_wiped(opened, OpenOutcome.WIPED_NEWER, path, says="state.format 2")
    assert opened.store.format_level == 1


def test_a_level_2_rocksdb_store_cannot_be_opened_without_its_offsets_family(path: Path) -> None:
    """What a level-1-only RocksDB worker relies on: the database refuses to open naming only `default`."""
    make_store(path, "rocksdb", 2)
    with pytest.raises(Exception, match="offsets"):
        rocks_engine._open(path, level=1)


def set_unknown_level(path: Path, engine: str, level: int) -> None:
    if engine == "sqlite":
        conn = sqlite3.connect(path / "store.sqlite")
        conn.execute(f"PRAGMA user_version = {level}")
        conn.commit()
        conn.close()
    else:
        db = rocks_engine._open(path, level=None)
        offsets = db.get_column_family("offsets")
        offsets[b"format"] = str(level).encode()
        del offsets
        db.close()


def test_an_unknown_newer_level_is_wiped(path: Path, engine: str) -> None:
    make_store(path, engine, 2)
    set_unknown_level(path, engine, 3)
    assert_wiped(open_at(path, engine, 2), OpenOutcome.WIPED_NEWER, path, says="state.format 3")


def test_a_truncated_sqlite_file_is_wiped(path: Path) -> None:
    store = open_at(path, "sqlite", 2).store
    for i in range(2000):
        store.put(b"key%05d" % i, b"v" * 50)
    store.commit(META)
    store.close()
    file = path / "store.sqlite"
    assert not (path / "store.sqlite-wal").exists() or (path / "store.sqlite-wal").stat().st_size == 0
    size = file.stat().st_size
    with file.open("r+b") as handle:
        handle.truncate(size // 2 + 100)
    assert_wiped(open_at(path, "sqlite", 2), OpenOutcome.WIPED_CORRUPT, path, says="truncated")


@pytest.mark.parametrize(
    "content", [b"", b"not a database at all " * 100, os.urandom(8192)], ids=["empty", "text", "random"]
)
def test_a_garbage_store_file_is_wiped(path: Path, engine: str, content: bytes) -> None:
    make_store(path, engine, 2)
    target = path / "store.sqlite" if engine == "sqlite" else path / "rocksdb" / "CURRENT"
    target.write_bytes(content)
    opened = open_at(path, engine, 2)
    if engine == "sqlite" and content == b"":
        # a zero-length file is what SQLite itself leaves before its first write: no kv table → unreadable
        assert_wiped(opened, OpenOutcome.WIPED_CORRUPT, path, says="no kv table")
    else:
        assert_wiped(opened, OpenOutcome.WIPED_CORRUPT, path, says="unreadable")


def test_a_rocksdb_directory_without_its_current_file_is_wiped(path: Path) -> None:
    make_store(path, "rocksdb", 2)
    (path / "rocksdb" / "CURRENT").unlink()
    assert_wiped(open_at(path, "rocksdb", 2), OpenOutcome.WIPED_CORRUPT, path, says="no CURRENT file")


@pytest.mark.parametrize(
    ("sidecar", "says"),
    [
        (f"0\n1\n{SHARD} 5 0 3 li", "ended prematurely"),
        ("0\n", "ended prematurely"),
        (f"1\n1\n{SHARD} 5 0 3 lin\n", "unknown checkpoint version"),
        (f"0\n2\n{SHARD} 5 0 3 lin\n{SHARD} 6 0 4 lin\n", "entry count"),
        (f"0\n1\n{SHARD} 5 0 3\n", "4 position fields"),
        (f"0\n1\n{SHARD} 5 0 3 lin extra\n", "4 position fields"),
        ("0\n1\nshardId-000000000009 5 0 3 lin\n", "not 'shardId-000000000003'"),
        (f"0\n1\n{SHARD} five 0 3 lin\n", "bad position"),
        (f"0\n1\n{SHARD} 5 -1 3 lin\n", "decimal"),
        (f"0\n1\n{SHARD} 5 0 0 lin\n", "commit must be >= 1"),
    ],
    ids=["truncated", "no-count", "version", "count", "few-fields", "many-fields", "shard", "seq", "sub", "commit"],
)
def test_a_bad_sidecar_wipes_a_level_1_store(path: Path, sidecar: str, says: str) -> None:
    # the sidecar is engine-independent: SQLite here, both engines in the next test
    make_store(path, "sqlite", 1)
    (path / SIDECAR_NAME).write_text(sidecar)
    assert_wiped(open_at(path, "sqlite", 2), OpenOutcome.WIPED_CORRUPT, path, says=says)


def test_a_non_utf8_sidecar_wipes_a_level_1_store(path: Path, engine: str) -> None:
    make_store(path, engine, 1)
    (path / SIDECAR_NAME).write_bytes(b"0\n1\n\xff\xfe\n")
    assert_wiped(open_at(path, engine, 1), OpenOutcome.WIPED_CORRUPT, path, says="not UTF-8")


def test_level_1_data_without_a_sidecar_is_wiped(path: Path, engine: str) -> None:
    make_store(path, engine, 1)
    (path / SIDECAR_NAME).unlink()
    assert_wiped(open_at(path, engine, 1), OpenOutcome.WIPED_CORRUPT, path, says="no .checkpoint")


@pytest.mark.parametrize("write_level", [1, 2])
def test_a_level_1_store_left_mid_commit_is_wiped(path: Path, engine: str, write_level: int) -> None:
    make_store(path, engine, 1)
    (path / COMMITTING_MARKER).touch()
    assert_wiped(open_at(path, engine, write_level), OpenOutcome.WIPED_CORRUPT, path, says=".committing")


def test_a_level_2_store_ignores_leftovers_of_an_interrupted_conversion(path: Path, engine: str) -> None:
    make_store(path, engine, 2)
    (path / SIDECAR_NAME).write_text("stale")
    (path / COMMITTING_MARKER).touch()
    opened = open_at(path, engine, 2)
    assert opened.outcome == OpenOutcome.OPENED
    assert opened.store.committed() == META
    assert not (path / SIDECAR_NAME).exists()
    assert not (path / COMMITTING_MARKER).exists()
    opened.store.close()


def test_a_rocksdb_upgrade_interrupted_before_its_batch_is_still_level_1(path: Path) -> None:
    make_store(path, "rocksdb", 1)
    db = rocks_engine._open(path, level=None)
    db.create_column_family("offsets", rocks_engine.require().Options(raw_mode=True))
    db.close()
    opened = open_at(path, "rocksdb", 2)
    assert opened.outcome == OpenOutcome.UPGRADED
    assert opened.store.committed() == META
    assert list(opened.store.range()) == DATA
    opened.store.close()


@pytest.mark.parametrize("level", [1, 2])
def test_the_other_engines_store_is_wiped(path: Path, engine: str, level: int) -> None:
    other = "rocksdb" if engine == "sqlite" else "sqlite"
    make_store(path, other, level)
    opened = open_at(path, engine, 2)
    assert_wiped(opened, OpenOutcome.WIPED_ENGINE, path, says=f"a {other} store")
    assert not (path / ("rocksdb" if other == "rocksdb" else "store.sqlite")).exists()


def test_leftover_files_without_a_store_are_wiped(path: Path, engine: str) -> None:
    path.mkdir(parents=True)
    (path / SIDECAR_NAME).write_text(f"0\n1\n{SHARD} 5 0 3 lin\n")
    assert_wiped(open_at(path, engine, 1), OpenOutcome.WIPED_CORRUPT, path, says="without a store")


def test_a_directory_that_cannot_be_created_is_an_operator_error(tmp_path: Path, engine: str) -> None:
    blocker = tmp_path / "state"
    blocker.write_text("a file where the state directory should be")
    with pytest.raises(StateStoreError, match=r"not writable .*state\.dir") as caught:
        open_at(blocker / "app" / SHARD, engine, 2)
    assert "\n" not in str(caught.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through directory permissions")
def test_a_read_only_directory_is_an_operator_error(path: Path, engine: str) -> None:
    path.mkdir(parents=True)
    path.chmod(0o500)
    try:
        with pytest.raises(StateStoreError, match="fix its permissions"):
            open_at(path, engine, 2)
    finally:
        path.chmod(0o700)


def test_an_unknown_engine_is_an_operator_error(path: Path) -> None:
    with pytest.raises(StateStoreError, match=r"state\.engine 'lmdb' is not one of sqlite, rocksdb"):
        open_at(path, "lmdb", 2)


def test_rocksdb_without_rocksdict_names_the_extra(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rocks_engine, "rocksdict", None)
    with pytest.raises(StateStoreError, match=r"install shardwise\[rocksdb\]"):
        open_at(path, "rocksdb", 2)
    assert not path.exists()


# --- the pure decision --------------------------------------------------------------------------------------

found_states = st.builds(
    Found,
    engines=st.frozensets(st.sampled_from(ENGINES)),
    level=st.none() | st.integers(-1, 4),
    problem=st.none() | st.just("bad header"),
    empty=st.booleans(),
    sidecar=st.booleans(),
    sidecar_problem=st.none() | st.just("bad version"),
    committing=st.booleans(),
)


@given(
    found=found_states,
    engine=st.sampled_from(ENGINES),
    levels=st.sampled_from([(1, 1), (1, 2), (2, 2)]),
)
def test_the_decision_never_opens_what_it_cannot_trust(found: Found, engine: str, levels: tuple[int, int]) -> None:
    write_level, readable_level = levels
    decision = decide(found, engine=engine, write_level=write_level, readable_level=readable_level, where="W")
    wiped = decision.outcome.startswith("wiped")
    assert wiped == (decision.action == Action.WIPE)
    if decision.outcome in (OpenOutcome.CREATED, OpenOutcome.OPENED):
        assert decision.detail == ""
    else:
        assert decision.detail.startswith("W: found ")
        assert "\n" not in decision.detail
    if found.engines - {engine}:
        assert decision.outcome == OpenOutcome.WIPED_ENGINE
    if decision.action in (Action.OPEN, Action.UPGRADE, Action.CONVERT_DOWN):
        assert found.engines == {engine}
        assert found.problem is None
        assert found.level is not None and 1 <= found.level <= readable_level
    if decision.action == Action.OPEN:
        assert found.level == write_level
    if decision.action == Action.UPGRADE:
        assert (found.level, write_level) == (1, 2)
    if decision.action == Action.CONVERT_DOWN:
        assert (found.level, write_level) == (2, 1)
    if found.level == 1 and decision.action in (Action.OPEN, Action.UPGRADE):
        # a level-1 store is trusted only with a good sidecar (or none and no data) and no commit under way
        assert not found.committing
        assert found.sidecar_problem is None
        assert found.sidecar or found.empty
    if engine not in found.engines and not found.engines and not found.sidecar and not found.committing:
        assert decision.action == Action.CREATE


@given(
    engine=st.sampled_from(ENGINES),
    level=st.integers(2, 9),
    empty=st.booleans(),
    sidecar=st.booleans(),
    committing=st.booleans(),
)
def test_a_level_above_what_the_worker_reads_is_always_wiped_as_newer(
    engine: str, level: int, empty: bool, sidecar: bool, committing: bool
) -> None:
    found = Found(frozenset({engine}), level=level, empty=empty, sidecar=sidecar, committing=committing)
    decision = decide(found, engine=engine, write_level=1, readable_level=1, where="W")
    assert decision.outcome == OpenOutcome.WIPED_NEWER
    assert f"state.format {level}" in decision.detail


@pytest.mark.parametrize(("write_level", "readable_level"), [(2, 1), (3, 3), (0, 2)])
def test_the_decision_refuses_impossible_levels(write_level: int, readable_level: int) -> None:
    with pytest.raises(ValueError, match="cannot write"):
        decide(Found(frozenset()), engine="sqlite", write_level=write_level, readable_level=readable_level, where="W")
