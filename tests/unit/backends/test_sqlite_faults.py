"""The SQLite boundary (backends/sqlite/connection.py): damaged, foreign and read-only databases are unusable
(permanent), a locked one is busy (transient); and database files are created readable by their owner only."""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from shardwise.backends.sqlite.connection import SQLiteDatabase, translate_error
from shardwise.backends.sqlite.leases import SQLiteLeaseStore
from shardwise.backends.sqlite.stream import LocalStreamStore
from shardwise.errors import DependencyError, Fault, UnusableStoreError, classify


def damage_table_pages(db: Path, table: str) -> None:
    """Overwrite the first bytes of the root page (the b-tree page header) of ``table`` and of its indexes."""
    conn = sqlite3.connect(db)
    try:
        pages = [row[0] for row in conn.execute("SELECT rootpage FROM sqlite_master WHERE tbl_name = ?", (table,))]
        (page_size,) = conn.execute("PRAGMA page_size").fetchone()
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    with db.open("r+b") as file:
        for page in pages:
            file.seek((page - 1) * page_size)
            file.write(b"\xff" * 64)


def test_a_damaged_page_is_an_unusable_store_naming_the_file_and_the_fix(tmp_path: Path) -> None:
    db = tmp_path / "shardwise.db"
    store = SQLiteLeaseStore(db, "app")
    store.create_table_if_not_exists()
    store.close()
    damage_table_pages(db, "shardwise_leases")
    store = SQLiteLeaseStore(db, "app")
    try:
        with pytest.raises(UnusableStoreError, match="malformed") as caught:
            store.list_leases()
    finally:
        store.close()
    message = str(caught.value)
    assert str(db) in message
    assert "restore it from a backup or pass another --db path" in message
    assert classify(caught.value) is Fault.PERMANENT


def test_a_file_that_is_not_a_database_is_an_unusable_store(tmp_path: Path) -> None:
    db = tmp_path / "notes.db"
    db.write_bytes(b"these are my notes, not a database\n" * 200)
    with pytest.raises(UnusableStoreError, match="not a database"):
        SQLiteLeaseStore(db, "app").table_exists()


def test_writing_a_read_only_database_is_an_unusable_store(tmp_path: Path) -> None:
    db = tmp_path / "ro.db"
    sqlite3.connect(db).execute("CREATE TABLE t (x)").connection.close()
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        with pytest.raises(sqlite3.OperationalError) as caught:
            conn.execute("INSERT INTO t VALUES (1)")
    finally:
        conn.close()
    error = translate_error(db, caught.value)
    assert isinstance(error, UnusableStoreError)
    assert "writable" in str(error)


def test_a_locked_database_is_busy_and_transient(tmp_path: Path) -> None:
    db = tmp_path / "locked.db"
    holder = SQLiteDatabase(db)
    waiter = SQLiteDatabase(db, busy_timeout_s=0.05)
    holding = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with holder.transaction() as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS t (x)")
            holding.set()
            release.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert holding.wait(10)
        with pytest.raises(DependencyError, match="busy") as caught, waiter.transaction():
            pass
        assert classify(caught.value) is Fault.TRANSIENT
    finally:
        release.set()
        thread.join(10)
        holder.close()
        waiter.close()


@pytest.fixture(params=[0o000, 0o022, 0o002])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    previous = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(previous)


def test_database_files_are_created_readable_by_their_owner_only(tmp_path: Path, umask: int) -> None:
    db = tmp_path / "private.db"
    streams = LocalStreamStore(db)
    store = SQLiteLeaseStore(db, "app")
    try:
        streams.create_stream("orders", 2)
        store.create_table_if_not_exists()
        files = [db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")]
        assert all(path.exists() for path in files), sorted(p.name for p in tmp_path.iterdir())
        modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in files}
        assert modes == dict.fromkeys(modes, 0o600), f"umask {umask:03o}: {modes}"
    finally:
        store.close()
        streams.close()


def test_an_existing_database_keeps_its_mode(tmp_path: Path) -> None:
    db = tmp_path / "shared.db"
    sqlite3.connect(db).close()
    db.chmod(0o640)
    store = SQLiteLeaseStore(db, "app")
    try:
        store.create_table_if_not_exists()
    finally:
        store.close()
    assert stat.S_IMODE(db.stat().st_mode) == 0o640
