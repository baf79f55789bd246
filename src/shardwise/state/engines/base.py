"""What both engines share: the pending batch (read your writes), the commit-number rules, and the level-1
protocol around an engine's atomic write (``.committing`` marker → data → sidecar → marker removed).

An engine supplies the committed-state primitives (:meth:`EngineStore._committed_get`, ``_committed_range``,
``_committed_count``) and ONE atomic write (:meth:`EngineStore._write`): changes, optionally preceded by
emptying the store (restore), plus the position when it is kept inside the store (level 2).
"""

from __future__ import annotations

import heapq
import os
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from pathlib import Path

from shardwise.errors import StateStoreError
from shardwise.state.engines.sidecar import fsync_directory, write_sidecar
from shardwise.state.port import FORMAT_IN_STORE, FORMAT_SIDECAR, Change, CommitMeta, StoreStats

__all__ = ["COMMITTING_MARKER", "EngineStore", "directory_size", "merge_range"]

#: Created before a level-1 store writes data and removed after its sidecar is written: a level-1 store found
#: with it may hold data that its sidecar does not describe, and is wiped and restored.
COMMITTING_MARKER = ".committing"


class EngineStore(ABC):
    """A :class:`~shardwise.state.port.LocalStore` minus the engine's own I/O."""

    def __init__(self, path: Path, *, shard_id: str, format_level: int, committed: CommitMeta | None) -> None:
        if format_level not in (FORMAT_SIDECAR, FORMAT_IN_STORE):
            raise ValueError(f"format level {format_level} is not one this engine writes")
        self._path = path
        self._shard_id = shard_id
        self._level = format_level
        self._committed_meta = committed
        self._pending: dict[bytes, bytes | None] = {}
        self._count: int | None = None  # committed keys, once counted
        self._closed = False

    # --- engine primitives ---------------------------------------------------------------------------------

    @abstractmethod
    def _committed_get(self, key: bytes) -> bytes | None: ...

    @abstractmethod
    def _committed_range(self, start: bytes | None, end: bytes | None) -> Iterator[tuple[bytes, bytes]]: ...

    @abstractmethod
    def _committed_count(self) -> int: ...

    @abstractmethod
    def _write(self, changes: Iterable[Change], meta: CommitMeta, *, replace: bool, in_store: bool) -> int:
        """One atomic, durable write of ``changes`` (after emptying the store when ``replace``), with ``meta``
        inside the store when ``in_store``; returns the number of changes written."""

    @abstractmethod
    def _close(self) -> None: ...

    # --- StateStore ----------------------------------------------------------------------------------------

    @property
    def shard_id(self) -> str:
        return self._shard_id

    @property
    def path(self) -> Path:
        return self._path

    def get(self, key: bytes) -> bytes | None:
        self._check_open()
        if key in self._pending:
            return self._pending[key]
        return self._committed_get(key)

    def put(self, key: bytes, value: bytes) -> None:
        self._check_open()
        _require_bytes(key, value)
        self._pending[key] = value

    def delete(self, key: bytes) -> None:
        self._check_open()
        _require_bytes(key, b"")
        self._pending[key] = None

    def range(self, start: bytes | None = None, end: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        self._check_open()
        pending = sorted(
            (key, value)
            for key, value in self._pending.items()
            if (start is None or key >= start) and (end is None or key < end)
        )
        return merge_range(self._committed_range(start, end), pending)

    def __len__(self) -> int:
        self._check_open()
        count = self._known_count()
        for key, value in self._pending.items():
            exists = self._committed_get(key) is not None
            if value is None and exists:
                count -= 1
            elif value is not None and not exists:
                count += 1
        return count

    # --- LocalStore ----------------------------------------------------------------------------------------

    @property
    def format_level(self) -> int:
        return self._level

    def committed(self) -> CommitMeta | None:
        return self._committed_meta

    def pending(self) -> list[Change]:
        return sorted(self._pending.items())

    def has_pending(self) -> bool:
        return bool(self._pending)

    def discard(self) -> None:
        self._pending.clear()

    def commit(self, meta: CommitMeta) -> None:
        self._check_open()
        last = self._committed_meta
        if last is not None and last.lineage == meta.lineage and meta.commit != last.commit + 1:
            raise StateStoreError(
                f"state store {self._path}: commit {meta.commit} of lineage {meta.lineage} does not follow the "
                f"store's commit {last.commit}; only commit {last.commit + 1} (or a new lineage) may come next"
            )
        self._check_meta(meta)
        changes = self.pending()
        delta = self._count_delta(changes) if self._count is not None else None
        self._durable_write(changes, meta, replace=False)
        if self._count is not None and delta is not None:
            self._count += delta
        self._committed_meta = meta
        self._pending.clear()

    def restore(self, changes: Iterator[Change], meta: CommitMeta, *, replace: bool) -> int:
        self._check_open()
        if self._pending:
            raise StateStoreError(
                f"state store {self._path}: restore needs an empty pending batch ({len(self._pending)} pending "
                "changes); discard or commit them first"
            )
        self._check_meta(meta)
        applied = self._durable_write(changes, meta, replace=replace)
        self._count = None
        self._committed_meta = meta
        return applied

    def stats(self) -> StoreStats:
        self._check_open()
        return StoreStats(key_count=self._known_count(), size_bytes=directory_size(self._path))

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._pending.clear()
            self._close()

    # --- helpers -------------------------------------------------------------------------------------------

    def _durable_write(self, changes: Iterable[Change], meta: CommitMeta, *, replace: bool) -> int:
        if self._level == FORMAT_IN_STORE:
            return self._write(changes, meta, replace=replace, in_store=True)
        marker = self._path / COMMITTING_MARKER
        marker.touch()
        fsync_directory(self._path)
        applied = self._write(changes, meta, replace=replace, in_store=False)
        write_sidecar(self._path, shard_id=self._shard_id, meta=meta)
        marker.unlink()
        fsync_directory(self._path)
        return applied

    def _check_meta(self, meta: CommitMeta) -> None:
        if meta.commit < 1:
            raise StateStoreError(f"state store {self._path}: commit numbers start at 1, got {meta.commit}")
        lineage = meta.lineage
        if not lineage or len(lineage) > 200 or not lineage.isascii() or not lineage.isprintable() or " " in lineage:
            raise StateStoreError(
                f"state store {self._path}: lineage {lineage!r} must be 1 to 200 printable ASCII characters "
                "without spaces (a uuid4 hex)"
            )

    def _known_count(self) -> int:
        if self._count is None:
            self._count = self._committed_count()
        return self._count

    def _count_delta(self, changes: list[Change]) -> int:
        delta = 0
        for key, value in changes:
            exists = self._committed_get(key) is not None
            delta += (value is not None and not exists) - (value is None and exists)
        return delta

    def _check_open(self) -> None:
        if self._closed:
            raise StateStoreError(f"state store {self._path} (shard {self._shard_id}) is closed")


def _require_bytes(key: object, value: object) -> None:
    if type(key) is not bytes or type(value) is not bytes:
        raise TypeError("state store keys and values are bytes (shardwise.state.typed offers str keys and JSON)")


def merge_range(
    committed: Iterator[tuple[bytes, bytes]], pending: list[tuple[bytes, bytes | None]]
) -> Iterator[tuple[bytes, bytes]]:
    """Committed pairs overlaid with sorted pending changes (a pending value wins; a pending delete hides the
    key), in byte order."""
    tagged_committed = ((key, 1, value) for key, value in committed)
    tagged_pending = ((key, 0, value) for key, value in pending)
    last: bytes | None = None
    for key, _tag, value in heapq.merge(tagged_pending, tagged_committed, key=lambda item: (item[0], item[1])):
        if key == last:
            continue  # the pending change (tag 0) came first and decided this key
        last = key
        if value is not None:
            yield key, value


def directory_size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_size
            except FileNotFoundError:
                continue
    return total
