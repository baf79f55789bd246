"""describe_local_store and wipe_local_store: what an operator sees, read without changing anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from shardwise.checkpoint.sequence import ExtendedSequenceNumber
from shardwise.state.engines import ENGINES, describe_local_store, open_local_store, wipe_local_store
from shardwise.state.engines.base import COMMITTING_MARKER
from shardwise.state.port import CommitMeta, OpenOutcome

SHARD = "shardId-000000000005"
META = CommitMeta(2, ExtendedSequenceNumber("777", 1), "lin")


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def listing(path: Path) -> list[tuple[str, int]]:
    return sorted((str(p.relative_to(path)), p.stat().st_size) for p in path.rglob("*") if p.is_file())


@pytest.mark.parametrize("level", [1, 2])
def test_a_store_is_described_while_it_is_open(tmp_path: Path, engine: str, level: int) -> None:
    path = tmp_path / SHARD
    store = open_local_store(path, shard_id=SHARD, engine=engine, write_level=level, readable_level=2).store
    store.put(b"a", b"1")
    store.commit(CommitMeta(1, ExtendedSequenceNumber("5"), "lin"))
    store.put(b"b", b"2")
    store.commit(META)
    store.put(b"pending", b"x")
    described = describe_local_store(path, shard_id=SHARD)  # the store is still open (RocksDB holds its lock)
    assert (described.engine, described.format_level, described.committed) == (engine, level, META)
    assert described.key_count == 2
    assert described.size_bytes > 0
    assert described.problem is None
    store.close()


def test_describing_changes_nothing_and_names_what_an_open_would_wipe(tmp_path: Path, engine: str) -> None:
    path = tmp_path / SHARD
    store = open_local_store(path, shard_id=SHARD, engine=engine, write_level=1, readable_level=2).store
    store.put(b"a", b"1")
    store.commit(META)
    store.close()
    (path / COMMITTING_MARKER).touch()
    before = listing(path)
    described = describe_local_store(path, shard_id=SHARD)
    assert listing(path) == before
    assert described.engine == engine
    assert described.problem is not None and ".committing" in described.problem and str(path) in described.problem
    assert described.key_count is None
    reopened = open_local_store(path, shard_id=SHARD, engine=engine, write_level=1, readable_level=2)
    assert reopened.outcome == OpenOutcome.WIPED_CORRUPT
    reopened.store.close()


def test_no_store_and_wipe(tmp_path: Path, engine: str) -> None:
    path = tmp_path / SHARD
    assert describe_local_store(path, shard_id=SHARD).engine is None
    open_local_store(path, shard_id=SHARD, engine=engine, write_level=2, readable_level=2).store.close()
    assert describe_local_store(path, shard_id=SHARD).key_count == 0
    wipe_local_store(path)
    assert not path.exists()
    wipe_local_store(path)  # nothing there: nothing to do
