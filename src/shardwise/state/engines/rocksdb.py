"""The RocksDB engine (``rocksdict``, extra ``shardwise[rocksdb]``): one database in ``<store>/rocksdb/``.

* the default column family holds the state (RocksDB's bytewise comparator: byte order);
* level 2 keeps ``format`` and ``position`` in the column family ``offsets``, written in the same
  ``WriteBatch`` as the data (as Quix Streams does); level 1 has no ``offsets`` column family, so a worker that
  knows only level 1 cannot open a level-2 store (RocksDB refuses to open a database without naming all its
  column families) and wipes it;
* a restore that replaces the store deletes the old key range and writes the new state in ONE ``WriteBatch``:
  a crash leaves the old store or the restored one;
* every write is synced (``WriteOptions.sync``): a commit survives a power loss, like the SQLite engine's.

``rocksdict`` is imported here and nowhere else.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shardwise.errors import StateStoreError
from shardwise.state.engines.base import EngineStore
from shardwise.state.engines.sidecar import SidecarError, decode_meta, encode_meta
from shardwise.state.port import FORMAT_IN_STORE, Change, CommitMeta

rocksdict: Any
try:
    import rocksdict
except ImportError:  # pragma: no cover - exercised only without the extra
    rocksdict = None

__all__ = [
    "DIR_NAME",
    "RocksProbe",
    "RocksStore",
    "available",
    "create",
    "owns",
    "probe",
    "require",
    "set_format",
    "wipe",
]

DIR_NAME = "rocksdb"
OFFSETS_CF = "offsets"
_FORMAT_KEY = b"format"
_POSITION_KEY = b"position"


def available() -> bool:
    return rocksdict is not None


def require() -> Any:
    if rocksdict is None:
        raise StateStoreError(
            "state.engine is rocksdb but the rocksdict package is not installed: install shardwise[rocksdb] "
            '(pip install "shardwise[rocksdb]"), or set state.engine = "sqlite"'
        )
    return rocksdict


@dataclass(frozen=True, slots=True)
class RocksProbe:
    level: int | None
    problem: str | None
    empty: bool
    meta: CommitMeta | None


def owns(path: Path) -> bool:
    return (path / DIR_NAME).exists()


def wipe(path: Path) -> None:
    target = path / DIR_NAME
    if target.is_dir():
        shutil.rmtree(target)
    else:
        target.unlink(missing_ok=True)


def _options(*, create: bool) -> Any:
    rd = require()
    options = rd.Options(raw_mode=True)
    options.create_if_missing(create)
    return options


def _open(path: Path, *, level: int | None, create: bool = False, read_only: bool = False) -> Any:
    """Open with exactly the column families of ``level`` (None: whatever is there)."""
    rd = require()
    directory = str(path / DIR_NAME)
    if read_only:
        return rd.Rdict(directory, _options(create=False), access_type=rd.AccessType.read_only())
    if level is None:
        return rd.Rdict(directory, _options(create=create))
    families = {OFFSETS_CF: rd.Options(raw_mode=True)} if level == FORMAT_IN_STORE else {}
    return rd.Rdict(directory, _options(create=create), column_families=families)


def _sync() -> Any:
    options = require().WriteOptions()
    options.sync = True
    return options


def _read_offsets(db: Any) -> tuple[int | None, CommitMeta | None]:
    offsets = db.get_column_family(OFFSETS_CF)
    try:
        raw_format = offsets.get(_FORMAT_KEY)
        raw_position = offsets.get(_POSITION_KEY)
    finally:
        del offsets
    if raw_format is None:
        return None, None
    level = int(bytes(raw_format).decode("ascii"))
    meta = None if raw_position is None else decode_meta(bytes(raw_position).decode("ascii"))
    return level, meta


def probe(path: Path) -> RocksProbe:
    rd = require()
    directory = path / DIR_NAME
    if not (directory / "CURRENT").is_file():
        return RocksProbe(None, "no CURRENT file", True, None)
    db = None
    try:
        families = rd.Rdict.list_cf(str(directory))
        db = _open(path, level=None, read_only=True)
        iterator = db.iter()
        iterator.seek_to_first()
        empty = not iterator.valid()
        del iterator
        if OFFSETS_CF not in families:
            return RocksProbe(1, None, empty, None)
        level, meta = _read_offsets(db)
        # an offsets family without a format key: an upgrade created it and stopped before its batch → level 1
        return RocksProbe(1 if level is None else level, None, empty, meta)
    except (SidecarError, ValueError, UnicodeDecodeError) as exc:
        return RocksProbe(None, f"bad position in the offsets column family: {exc}", True, None)
    except Exception as exc:  # rocksdict raises plain Exception for every RocksDB status
        return RocksProbe(None, str(exc).splitlines()[0] if str(exc) else type(exc).__name__, True, None)
    finally:
        if db is not None:
            db.close()


def count_keys(path: Path) -> int:
    """The committed keys, read without taking the store's lock (a worker may hold it)."""
    db = _open(path, level=None, read_only=True)
    try:
        iterator = db.iter()
        iterator.seek_to_first()
        count = 0
        while iterator.valid():
            count += 1
            iterator.next()
        del iterator
        return count
    finally:
        db.close()


def create(path: Path, *, level: int) -> None:
    db = _open(path, level=None, create=True)
    try:
        if level == FORMAT_IN_STORE:
            _mark_in_store(db, None)
    finally:
        db.close()


def _mark_in_store(db: Any, meta: CommitMeta | None) -> None:
    rd = require()
    if OFFSETS_CF not in rd.Rdict.list_cf(db.path()):
        db.create_column_family(OFFSETS_CF, rd.Options(raw_mode=True))
    handle = db.get_column_family_handle(OFFSETS_CF)
    batch = rd.WriteBatch(raw_mode=True)
    batch.put(_FORMAT_KEY, str(FORMAT_IN_STORE).encode(), handle)
    if meta is None:
        batch.delete(_POSITION_KEY, handle)
    else:
        batch.put(_POSITION_KEY, encode_meta(meta).encode(), handle)
    db.write(batch, _sync())
    del handle


def set_format(path: Path, *, level: int, meta: CommitMeta | None) -> None:
    """Level 2: the offsets family with ``meta`` (one synced batch); level 1: the offsets family dropped."""
    db = _open(path, level=None)
    try:
        if level == FORMAT_IN_STORE:
            _mark_in_store(db, meta)
        elif OFFSETS_CF in require().Rdict.list_cf(db.path()):
            db.drop_column_family(OFFSETS_CF)
    finally:
        db.close()


class RocksStore(EngineStore):
    def __init__(self, path: Path, *, shard_id: str, format_level: int, committed: CommitMeta | None) -> None:
        super().__init__(path, shard_id=shard_id, format_level=format_level, committed=committed)
        self._rd = require()
        try:
            self._db = _open(path, level=format_level)
        except Exception as exc:
            raise self._fail(exc) from exc
        self._offsets = self._db.get_column_family_handle(OFFSETS_CF) if format_level == FORMAT_IN_STORE else None
        self._write_options = _sync()

    def _fail(self, exc: Exception) -> StateStoreError:
        return StateStoreError(
            f"state store {self._path / DIR_NAME} (shard {self._shard_id}) failed: {exc}; a store that cannot be "
            "read is wiped and restored from the changelog when the shard is next opened"
        )

    def _committed_get(self, key: bytes) -> bytes | None:
        try:
            value = self._db.get(key)
        except Exception as exc:
            raise self._fail(exc) from exc
        return None if value is None else bytes(value)

    def _committed_range(self, start: bytes | None, end: bytes | None) -> Iterator[tuple[bytes, bytes]]:
        iterator = self._db.iter()
        if start is None:
            iterator.seek_to_first()
        else:
            iterator.seek(start)
        while iterator.valid():
            key = bytes(iterator.key())
            if end is not None and key >= end:
                return
            yield key, bytes(iterator.value())
            iterator.next()

    def _committed_count(self) -> int:
        return sum(1 for _ in self._committed_range(None, None))

    def _bounds(self) -> tuple[bytes, bytes] | None:
        iterator = self._db.iter()
        iterator.seek_to_first()
        if not iterator.valid():
            return None
        first = bytes(iterator.key())
        iterator.seek_to_last()
        return first, bytes(iterator.key())

    def _write(self, changes: Iterable[Change], meta: CommitMeta, *, replace: bool, in_store: bool) -> int:
        batch = self._rd.WriteBatch(raw_mode=True)
        applied = 0
        try:
            if replace:
                bounds = self._bounds()
                if bounds is not None:
                    batch.delete_range(bounds[0], bounds[1])
                    batch.delete(bounds[1])
            for key, value in changes:
                if value is None:
                    batch.delete(key)
                else:
                    batch.put(key, value)
                applied += 1
            if in_store:
                batch.put(_POSITION_KEY, encode_meta(meta).encode(), self._offsets)
            self._db.write(batch, self._write_options)
        except StateStoreError:
            raise
        except Exception as exc:
            raise self._fail(exc) from exc
        return applied

    def _close(self) -> None:
        self._offsets = None
        self._db.close()
