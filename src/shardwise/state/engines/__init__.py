"""The local state-store engines and :func:`open_local_store`, which finds what is on disk, decides the format
(:func:`~shardwise.state.engines.formats.decide`, pure) and applies the decision.

A store lives in its own directory (``<state.dir>/<application>/<shard_id>/``): the SQLite engine's
``store.sqlite`` or the RocksDB engine's ``rocksdb/``, and at level 1 the sidecar ``.checkpoint`` (plus the
``.committing`` marker while a level-1 commit is under way).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from shardwise.errors import StateStoreError
from shardwise.state.engines import rocksdb as rocksdb_engine
from shardwise.state.engines import sqlite as sqlite_engine
from shardwise.state.engines.base import COMMITTING_MARKER, EngineStore, directory_size
from shardwise.state.engines.formats import Action, Decision, Found, decide
from shardwise.state.engines.sidecar import (
    SIDECAR_NAME,
    SidecarError,
    read_sidecar,
    remove_sidecar,
    write_sidecar,
)
from shardwise.state.port import FORMAT_IN_STORE, FORMAT_SIDECAR, KNOWN_FORMATS, CommitMeta, OpenedStore

__all__ = ["ENGINES", "EngineStore", "StoreDescription", "describe_local_store", "open_local_store", "wipe_local_store"]

ENGINES = ("sqlite", "rocksdb")
_MODULES: dict[str, ModuleType] = {"sqlite": sqlite_engine, "rocksdb": rocksdb_engine}
_STORES: dict[str, type[EngineStore]] = {"sqlite": sqlite_engine.SqliteStore, "rocksdb": rocksdb_engine.RocksStore}


def open_local_store(path: Path, *, shard_id: str, engine: str, write_level: int, readable_level: int) -> OpenedStore:
    """Open (or create, upgrade, convert down, or wipe and create) the store of ``shard_id`` in ``path``.

    Never raises for a bad store on disk (that is wiped: the outcome and its one-line detail say so); raises
    :class:`~shardwise.errors.StateStoreError` for what the operator must fix: an unknown engine, ``rocksdict``
    missing for ``engine="rocksdb"``, a directory that cannot be created or written."""
    if engine not in ENGINES:
        raise StateStoreError(f"state.engine {engine!r} is not one of {', '.join(ENGINES)}: set state.engine to one")
    if engine == "rocksdb":
        rocksdb_engine.require()  # the "install shardwise[rocksdb]" error
    _ensure_writable(path)
    module = _MODULES[engine]
    where = f"state store {path} (shard {shard_id})"
    found, in_store, sidecar = _look(path, shard_id=shard_id, engine=engine)
    decision = decide(found, engine=engine, write_level=write_level, readable_level=readable_level, where=where)
    try:
        committed = _apply(
            decision, path, module, shard_id=shard_id, write_level=write_level, in_store=in_store, sidecar=sidecar
        )
        store = _STORES[engine](path, shard_id=shard_id, format_level=write_level, committed=committed)
    except (OSError, StateStoreError) as exc:
        raise StateStoreError(
            f"{where}: cannot {decision.action} the {engine} store ({exc}); check the state directory "
            "(state.dir) is on a working, writable disk"
        ) from exc
    return OpenedStore(store, decision.outcome, decision.detail)


def _ensure_writable(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-probe"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise StateStoreError(
            f"state directory {path} is not writable ({exc.strerror or exc}): fix its permissions or point "
            "state.dir at a writable directory"
        ) from exc


def _look(path: Path, *, shard_id: str, engine: str) -> tuple[Found, CommitMeta | None, CommitMeta | None]:
    engines = frozenset(name for name, module in _MODULES.items() if module.owns(path))
    sidecar_meta: CommitMeta | None = None
    sidecar_problem: str | None = None
    try:
        sidecar_meta = read_sidecar(path, shard_id=shard_id)
    except SidecarError as exc:
        sidecar_problem = str(exc)
    except OSError as exc:
        sidecar_problem = f"unreadable: {exc}"
    has_sidecar = (path / SIDECAR_NAME).exists()
    committing = (path / COMMITTING_MARKER).exists()
    if engine not in engines:
        return Found(engines, sidecar=has_sidecar, committing=committing), None, None
    probed = _MODULES[engine].probe(path)
    found = Found(
        engines,
        level=probed.level,
        problem=probed.problem,
        empty=probed.empty,
        sidecar=has_sidecar,
        sidecar_problem=sidecar_problem,
        committing=committing,
    )
    return found, probed.meta, sidecar_meta


def _apply(
    decision: Decision,
    path: Path,
    module: ModuleType,
    *,
    shard_id: str,
    write_level: int,
    in_store: CommitMeta | None,
    sidecar: CommitMeta | None,
) -> CommitMeta | None:
    """Carry out ``decision``; returns the committed position of the store as opened."""
    if decision.action == Action.WIPE:
        for child in path.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    if decision.action in (Action.WIPE, Action.CREATE):
        module.create(path, level=write_level)
        return None
    if decision.action == Action.UPGRADE:
        module.set_format(path, level=FORMAT_IN_STORE, meta=sidecar)
        remove_sidecar(path)
        return sidecar
    if decision.action == Action.CONVERT_DOWN:
        if in_store is None:
            remove_sidecar(path)
        else:
            write_sidecar(path, shard_id=shard_id, meta=in_store)
        module.set_format(path, level=FORMAT_SIDECAR, meta=None)
        return in_store
    # OPEN
    if decision.cleanup:
        remove_sidecar(path)
        (path / COMMITTING_MARKER).unlink(missing_ok=True)
    return sidecar if write_level == FORMAT_SIDECAR else in_store


@dataclass(frozen=True, slots=True)
class StoreDescription:
    """A store on disk as an operator sees it (read without changing anything)."""

    path: Path
    engine: str | None  # None: no store there
    format_level: int | None
    committed: CommitMeta | None
    key_count: int | None  # None when the store cannot be read
    size_bytes: int
    problem: str | None  # why the next open would wipe it (one line), None when it opens as it is


def describe_local_store(path: Path, *, shard_id: str) -> StoreDescription:
    """What is in ``path`` (for ``shardwise state describe``): engine, level, committed position, keys, size,
    and whether the next open (by a worker of this version) would wipe it. Changes nothing on disk; reads a
    store a running worker holds (RocksDB is opened read-only)."""
    if not path.is_dir():
        return StoreDescription(path, None, None, None, None, 0, None)
    found_engines = [name for name, module in _MODULES.items() if module.owns(path)]
    engine = found_engines[0] if found_engines else ENGINES[0]
    size = directory_size(path)
    if engine == "rocksdb" and not rocksdb_engine.available():
        return StoreDescription(path, engine, None, None, None, size, "rocksdict is not installed here")
    found, in_store, sidecar = _look(path, shard_id=shard_id, engine=engine)
    top = max(KNOWN_FORMATS)
    decision = decide(found, engine=engine, write_level=top, readable_level=top, where=f"state store {path}")
    if not found_engines:
        problem = decision.detail if decision.action == Action.WIPE else None
        return StoreDescription(path, None, None, None, None, size, problem)
    if decision.action == Action.WIPE:
        return StoreDescription(path, engine, found.level, None, None, size, decision.detail)
    committed = sidecar if found.level == FORMAT_SIDECAR else in_store
    try:
        keys: int | None = _MODULES[engine].count_keys(path)
    except Exception:  # an engine fault while counting: the describe line says so instead of a count
        keys = None
    return StoreDescription(path, engine, found.level, committed, keys, size, None)


def wipe_local_store(path: Path) -> None:
    """Remove the store in ``path`` (``shardwise state wipe``; the framework restores it on the next open)."""
    if path.is_dir():
        shutil.rmtree(path)
