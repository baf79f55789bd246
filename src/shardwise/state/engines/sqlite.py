"""The SQLite engine (stdlib ``sqlite3``): one database file ``store.sqlite`` per shard store.

* ``kv(key BLOB PRIMARY KEY, value BLOB) WITHOUT ROWID`` holds the state, sorted by key (BLOBs compare with
  ``memcmp``: byte order);
* level 2 keeps the position in ``meta`` (one row), written in the same transaction as the data;
* ``PRAGMA user_version`` is the format level (a level-1-only worker sees 2 > 1 and wipes).

Journal: WAL with ``synchronous=FULL`` — each commit fsyncs the WAL before it returns, so a commit survives a
power loss too, not only a killed process (``NORMAL`` in WAL mode may lose the last commits on power loss, which
would leave the local store behind the lease checkpoint written after it; the changelog would repair it, but
only at the cost of a restore). One fsync per commit is what the commit interval amortizes.

``check_same_thread=False``: processors run on pool threads, one at a time per shard, never concurrently.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from shardwise.checkpoint.sequence import ExtendedSequenceNumber
from shardwise.errors import StateStoreError
from shardwise.state.engines.base import EngineStore
from shardwise.state.port import FORMAT_IN_STORE, Change, CommitMeta

__all__ = ["FILE_NAME", "SqliteProbe", "SqliteStore", "count_keys", "create", "owns", "probe", "set_format", "wipe"]

FILE_NAME = "store.sqlite"
_SUFFIXES = ("", "-wal", "-shm", "-journal")
_HEADER = b"SQLite format 3\x00"


@dataclass(frozen=True, slots=True)
class SqliteProbe:
    level: int | None
    problem: str | None
    empty: bool
    meta: CommitMeta | None  # the in-store position (level 2)


def owns(path: Path) -> bool:
    return any((path / (FILE_NAME + suffix)).exists() for suffix in _SUFFIXES)


def wipe(path: Path) -> None:
    for suffix in _SUFFIXES:
        (path / (FILE_NAME + suffix)).unlink(missing_ok=True)


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path / FILE_NAME, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    return conn


def _header_problem(file: Path) -> str | None:
    """Truncation or a non-SQLite file, from the 100-byte header (SQLite itself notices only on use)."""
    with file.open("rb") as handle:
        data = handle.read(100)
    size = file.stat().st_size
    if size == 0:
        return None  # created, never written (SQLite writes the header on the first transaction)
    if len(data) < 100 or not data.startswith(_HEADER):
        return f"{file.name} is not an SQLite database"
    page_size = int.from_bytes(data[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    if page_size < 512 or page_size & (page_size - 1):
        return f"{file.name} has a bad page size {page_size}"
    pages = int.from_bytes(data[28:32], "big")
    valid = data[24:28] == data[92:96]
    if size % page_size or (valid and pages and size < pages * page_size):
        return f"{file.name} is truncated ({size} bytes; its header says {pages} pages of {page_size})"
    return None


def probe(path: Path) -> SqliteProbe:
    file = path / FILE_NAME
    try:
        if file.exists():
            problem = _header_problem(file)
            if problem is not None:
                return SqliteProbe(None, problem, True, None)
        conn = sqlite3.connect(f"file:{file}?mode=rw", uri=True, isolation_level=None)
        try:
            level = int(conn.execute("PRAGMA user_version").fetchone()[0])
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if "kv" not in tables:
                return SqliteProbe(None, "no kv table", True, None)
            empty = conn.execute("SELECT 1 FROM kv LIMIT 1").fetchone() is None
            meta = _read_meta(conn) if level == FORMAT_IN_STORE and "meta" in tables else None
            if level == FORMAT_IN_STORE and "meta" not in tables:
                return SqliteProbe(None, "level 2 without a meta table", empty, None)
            return SqliteProbe(level, None, empty, meta)
        finally:
            conn.close()
    except (sqlite3.Error, OSError, ValueError) as exc:
        return SqliteProbe(None, f"{type(exc).__name__}: {exc}", True, None)


def _read_meta(conn: sqlite3.Connection) -> CommitMeta | None:
    row = conn.execute("SELECT commit_number, sequence_number, sub_sequence_number, lineage FROM meta").fetchone()
    if row is None:
        return None
    return CommitMeta(int(row[0]), ExtendedSequenceNumber(str(row[1]), int(row[2])), str(row[3]))


def _write_meta(conn: sqlite3.Connection, meta: CommitMeta) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO meta (id, commit_number, sequence_number, sub_sequence_number, lineage) "
        "VALUES (0, ?, ?, ?, ?)",
        (meta.commit, meta.position.sequence_number, meta.position.sub_sequence_number, meta.lineage),
    )


_META_DDL = (
    "CREATE TABLE IF NOT EXISTS meta (id INTEGER PRIMARY KEY CHECK (id = 0), commit_number INTEGER NOT NULL, "
    "sequence_number TEXT NOT NULL, sub_sequence_number INTEGER NOT NULL, lineage TEXT NOT NULL)"
)


def count_keys(path: Path) -> int:
    """The committed keys, read only."""
    conn = sqlite3.connect(f"file:{path / FILE_NAME}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT count(*) FROM kv").fetchone()[0])
    finally:
        conn.close()


def create(path: Path, *, level: int) -> None:
    """A new, empty store at ``level`` (one transaction)."""
    conn = _connect(path)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("CREATE TABLE kv (key BLOB PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID")
        if level == FORMAT_IN_STORE:
            conn.execute(_META_DDL)
        conn.execute(f"PRAGMA user_version = {int(level)}")
        conn.execute("COMMIT")
    finally:
        conn.close()


def set_format(path: Path, *, level: int, meta: CommitMeta | None) -> None:
    """Re-mark the store at ``level`` in one transaction: level 2 gets ``meta`` inside; level 1 loses it."""
    conn = _connect(path)
    try:
        conn.execute("BEGIN IMMEDIATE")
        if level == FORMAT_IN_STORE:
            conn.execute(_META_DDL)
            conn.execute("DELETE FROM meta")
            if meta is not None:
                _write_meta(conn, meta)
        else:
            conn.execute("DROP TABLE IF EXISTS meta")
        conn.execute(f"PRAGMA user_version = {int(level)}")
        conn.execute("COMMIT")
    finally:
        conn.close()


def _batches(changes: Iterable[Change], size: int = 1000) -> Iterator[list[Change]]:
    """``changes`` in batches of distinct keys (order between batches kept), so each batch's deletes and puts
    can run as two ``executemany`` without reordering writes to one key."""
    batch: list[Change] = []
    keys: set[bytes] = set()
    for change in changes:
        if change[0] in keys or len(batch) >= size:
            yield batch
            batch, keys = [], set()
        batch.append(change)
        keys.add(change[0])
    if batch:
        yield batch


class SqliteStore(EngineStore):
    def __init__(self, path: Path, *, shard_id: str, format_level: int, committed: CommitMeta | None) -> None:
        super().__init__(path, shard_id=shard_id, format_level=format_level, committed=committed)
        self._conn = _connect(path)

    def _fail(self, exc: sqlite3.Error) -> StateStoreError:
        return StateStoreError(
            f"state store {self._path / FILE_NAME} (shard {self._shard_id}) failed: {type(exc).__name__}: {exc}; "
            "a store that cannot be read is wiped and restored from the changelog when the shard is next opened"
        )

    def _committed_get(self, key: bytes) -> bytes | None:
        try:
            row = self._conn.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        except sqlite3.Error as exc:
            raise self._fail(exc) from exc
        return None if row is None else bytes(row[0])

    def _committed_range(self, start: bytes | None, end: bytes | None) -> Iterator[tuple[bytes, bytes]]:
        clauses, args = [], []
        if start is not None:
            clauses.append("key >= ?")
            args.append(start)
        if end is not None:
            clauses.append("key < ?")
            args.append(end)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        try:
            rows = self._conn.execute(f"SELECT key, value FROM kv{where} ORDER BY key", args).fetchall()
        except sqlite3.Error as exc:
            raise self._fail(exc) from exc
        return ((bytes(key), bytes(value)) for key, value in rows)

    def _committed_count(self) -> int:
        try:
            return int(self._conn.execute("SELECT count(*) FROM kv").fetchone()[0])
        except sqlite3.Error as exc:
            raise self._fail(exc) from exc

    def _write(self, changes: Iterable[Change], meta: CommitMeta, *, replace: bool, in_store: bool) -> int:
        conn = self._conn
        applied = 0
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                if replace:
                    conn.execute("DELETE FROM kv")
                for batch in _batches(changes):
                    puts = [(key, value) for key, value in batch if value is not None]
                    deletes = [(key,) for key, value in batch if value is None]
                    conn.executemany("DELETE FROM kv WHERE key = ?", deletes)
                    conn.executemany("INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)", puts)
                    applied += len(batch)
                if in_store:
                    _write_meta(conn, meta)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise self._fail(exc) from exc
        return applied

    def _close(self) -> None:
        self._conn.close()
