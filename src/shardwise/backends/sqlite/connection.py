"""Shared SQLite plumbing for the embedded backends: per-thread connections and error translation.

Every embedded backend opens the database file in WAL mode with a busy timeout, so that several worker
processes (and threads) on one machine can share it. Writes that read-then-modify run inside
``BEGIN IMMEDIATE`` transactions, which take the write lock up front instead of failing on upgrade.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

from shardwise.errors import ConfigurationError, DependencyError

__all__ = ["SQLiteDatabase"]


class SQLiteDatabase:
    """One database file, with a connection per thread (sqlite3 connections are not shared across threads)."""

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout_s: float = 30.0) -> None:
        if busy_timeout_s <= 0:
            raise ConfigurationError(f"busy_timeout_s must be > 0 seconds, got {busy_timeout_s}")
        self.path = Path(path)
        self.busy_timeout_s = busy_timeout_s
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def connection(self) -> sqlite3.Connection:
        if self._pid != os.getpid():
            # A forked child must not use (or close) its parent's connections: start afresh.
            self._local = threading.local()
            self._all = []
            self._lock = threading.Lock()
            self._pid = os.getpid()
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._open()
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def _open(self) -> sqlite3.Connection:
        if not self.path.parent.exists():
            raise ConfigurationError(
                f"cannot open database {self.path}: directory {self.path.parent} does not exist; create it "
                "or pass another --db path"
            )
        try:
            conn = sqlite3.connect(
                self.path, timeout=self.busy_timeout_s, isolation_level=None, check_same_thread=False
            )
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_s * 1000)}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()
            conn.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.DatabaseError as exc:
            raise ConfigurationError(
                f"{self.path} is not a usable SQLite database ({exc}); point --db at a shardwise database "
                "file or a new path"
            ) from exc
        if mode is None or str(mode[0]).lower() != "wal":
            conn.close()
            raise ConfigurationError(
                f"{self.path}: could not switch to WAL journal mode (got {mode}); use a local file system"
            )
        return conn

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (``BEGIN IMMEDIATE`` … ``COMMIT``, rolled back on any exception).

        sqlite3 errors raised inside are translated into shardwise's exception tree.
        """
        conn = self.connection()
        with translate_errors(self.path):
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @contextlib.contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """A consistent read (one implicit snapshot per statement; use ``transaction`` for multi-step)."""
        with translate_errors(self.path):
            yield self.connection()

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            self._all.clear()
        self._local = threading.local()


@contextlib.contextmanager
def translate_errors(path: Path) -> Iterator[None]:
    """Translate sqlite3 errors into shardwise's tree at the backend boundary."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        raise DependencyError(f"SQLite database {path}: {exc}") from exc
    except sqlite3.DatabaseError as exc:
        raise ConfigurationError(
            f"{path} is not a usable shardwise database ({exc}); point --db at another file"
        ) from exc
