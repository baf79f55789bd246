"""Shared SQLite plumbing for the embedded backends: per-thread connections and error translation.

Every embedded backend opens the database file in WAL mode with a busy timeout, so that several worker
processes (and threads) on one machine can share it. Writes that read-then-modify run inside
``BEGIN IMMEDIATE`` transactions, which take the write lock up front instead of failing on upgrade.

A new database file is created readable and writable by its owner only (0600), whatever the umask (it holds
checkpoints and, for the local stream, the records); SQLite gives its ``-wal``, ``-shm`` and ``-journal`` files
the database file's mode. An existing file keeps the mode its owner gave it.

sqlite3 errors are translated here (:func:`translate_error`), by SQLite's result code:

* ``SQLITE_BUSY`` / ``SQLITE_LOCKED`` ("database is locked") after the busy timeout, I/O errors, a full disk →
  :class:`~shardwise.errors.DependencyError` (transient);
* ``SQLITE_CORRUPT`` ("database disk image is malformed"), ``SQLITE_NOTADB`` ("file is not a database"),
  ``SQLITE_READONLY``, ``SQLITE_CANTOPEN``, ``SQLITE_PERM``, ``SQLITE_AUTH`` →
  :class:`~shardwise.errors.UnusableStoreError` (permanent: the message names the file and the fix);
* anything else → :class:`~shardwise.errors.DependencyError`.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

from shardwise.errors import ConfigurationError, DependencyError, ShardwiseError, UnusableStoreError

__all__ = ["FILE_MODE", "SQLiteDatabase", "translate_error", "translate_errors"]

#: The mode of the database file and its -wal, -shm and -journal files: owner read/write only.
FILE_MODE = 0o600

# SQLite primary result codes (https://sqlite.org/rescode.html).
_SQLITE_PERM, _SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_READONLY = 3, 5, 6, 8
_SQLITE_CORRUPT, _SQLITE_CANTOPEN, _SQLITE_AUTH, _SQLITE_NOTADB = 11, 14, 23, 26
_UNUSABLE_CODES = frozenset(
    {_SQLITE_PERM, _SQLITE_READONLY, _SQLITE_CORRUPT, _SQLITE_CANTOPEN, _SQLITE_AUTH, _SQLITE_NOTADB}
)
_UNUSABLE_TEXTS = (
    "malformed",
    "not a database",
    "readonly database",
    "unable to open database",
    "disk image",
    "authorization denied",
)
_BUSY_TEXTS = ("database is locked", "database table is locked", "busy")


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
            _create_private(self.path)
            conn = sqlite3.connect(
                self.path, timeout=self.busy_timeout_s, isolation_level=None, check_same_thread=False
            )
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_s * 1000)}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()
            conn.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.Error as exc:
            raise translate_error(self.path, exc) from exc
        except OSError as exc:
            raise UnusableStoreError(
                f"cannot open database {self.path}: {exc.strerror or exc}; check its permissions or pass another "
                "--db path"
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
    """Translate sqlite3 errors into shardwise's tree at the backend boundary (see :func:`translate_error`)."""
    try:
        yield
    except sqlite3.Error as exc:
        raise translate_error(path, exc) from exc


def translate_error(path: Path, exc: sqlite3.Error) -> ShardwiseError:
    """The shardwise error for a sqlite3 error on the database at ``path`` (the table in the module docstring)."""
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+; the message is the fallback
    primary = code & 0xFF if isinstance(code, int) else None
    text = str(exc).lower()
    if primary in (_SQLITE_BUSY, _SQLITE_LOCKED) or (primary is None and any(t in text for t in _BUSY_TEXTS)):
        return DependencyError(f"SQLite database {path} is busy ({exc}); retrying")
    if primary in _UNUSABLE_CODES or (primary is None and any(t in text for t in _UNUSABLE_TEXTS)):
        if primary == _SQLITE_READONLY or "readonly" in text:
            fix = "make the file (and its directory) writable by this user, or pass another --db path"
        elif primary in (_SQLITE_CANTOPEN, _SQLITE_PERM) or "unable to open" in text:
            fix = "check that the file and its directory exist and are readable and writable, or pass another --db path"
        else:
            fix = "it is damaged or not a shardwise database: restore it from a backup or pass another --db path"
        return UnusableStoreError(f"SQLite database {path} cannot be used ({exc}); {fix}")
    return DependencyError(f"SQLite database {path}: {exc}")


def _create_private(path: Path) -> None:
    """Create ``path`` empty with mode 0600 if it does not exist (SQLite would create it with 0644 & ~umask)."""
    with contextlib.suppress(FileExistsError):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        os.close(fd)
