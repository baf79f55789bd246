"""``shardwise state``: the state stores of a stateful application, per shard, and incident handling.

* :func:`describe_state` lists, per shard (a lease, a changelog or a local store names it): the format level (of
  the local store when the state directory has one, else of the changelog head), the committed position and
  commit (the changelog head's), the lease checkpoint and owner, the key count and the changelog's size. A local
  store is read without changing anything (:func:`~shardwise.state.engines.describe_local_store`): describe
  never upgrades, converts or wipes.
* :func:`restore_shard` rebuilds a shard's local store from its changelog: the store is deleted, created anew
  in the changelog head's format level and filled with the head's state.
* :func:`wipe_shard` deletes a shard's local store and, with ``changelog=True``, its changelog too (the shard's
  state starts over empty at the lease checkpoint).

Both refuse a shard whose lease is held (an owner is set and the shard is not finished) unless ``force``: a
worker holding the lease keeps its store open and would write over what was done. A lease is released by its
worker on a graceful shutdown and taken away once it expires, so stopping the worker (or waiting) frees it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from shardwise.errors import ConfigurationError, MalformedItemError, StateStoreError
from shardwise.leases.model import Lease
from shardwise.leases.store import LeaseStore
from shardwise.state.engines import ENGINES, describe_local_store, open_local_store, wipe_local_store
from shardwise.state.port import (
    FORMAT_IN_STORE,
    KNOWN_FORMATS,
    Changelog,
    ChangelogHead,
    CommitMeta,
    restore_from,
)

__all__ = [
    "ENGINES",
    "LocalView",
    "ShardState",
    "StateHeld",
    "describe_state",
    "inspect_local",
    "local_store_path",
    "read_state",
    "restore_shard",
    "wipe_shard",
]


class StateHeld(StateStoreError):
    """The shard's lease is held by a worker: the command refuses to touch its state without ``force``."""


@dataclass(frozen=True, slots=True)
class LocalView:
    """What a local store holds, read on a copy: its format level, last commit, key count and size; or the
    problem that keeps it from being opened (the worker would wipe it and restore it from the changelog)."""

    format_level: int | None
    committed: CommitMeta | None
    key_count: int | None
    size_bytes: int
    problem: str | None = None


@dataclass(frozen=True, slots=True)
class ShardState:
    shard_id: str
    lease: Lease | None
    head: ChangelogHead | None
    changelog_keys: int | None
    changelog_items: int | None
    changelog_bytes: int | None
    local: LocalView | None
    changelog_problem: str | None = None  # the shard's changelog items are malformed (a worker waits on it)

    @property
    def format_level(self) -> int | None:
        if self.local is not None and self.local.format_level is not None:
            return self.local.format_level
        return None if self.head is None else self.head.format_level

    @property
    def format_source(self) -> str:
        if self.local is not None and self.local.format_level is not None:
            return "local"
        return "changelog" if self.head is not None else "-"

    @property
    def key_count(self) -> int | None:
        if self.local is not None and self.local.key_count is not None:
            return self.local.key_count
        return self.changelog_keys


def local_store_path(state_dir: Path, application_name: str, shard_id: str) -> Path:
    """Where a worker keeps a shard's store: ``<state.dir>/<application>/<shard_id>/``."""
    return state_dir / application_name / shard_id


def inspect_local(path: Path, shard_id: str) -> LocalView | None:
    """The local store at ``path`` as a worker would find it (None: no store there); changes nothing."""
    found = describe_local_store(path, shard_id=shard_id)
    if found.engine is None and found.problem is None:
        return None
    if found.problem is not None:
        return LocalView(found.format_level, None, None, found.size_bytes, problem=found.problem)
    return LocalView(found.format_level, found.committed, found.key_count, found.size_bytes)


def describe_state(
    leases: LeaseStore,
    changelog: Changelog,
    *,
    application_name: str,
    state_dir: Path | None = None,
) -> list[ShardState]:
    """Every shard a lease, the changelog or the state directory names, in shard-id order."""
    by_key = {lease.lease_key: lease for lease in leases.scan_leases().leases}
    logged = set(changelog.shard_ids())
    local_dir = None if state_dir is None else state_dir / application_name
    on_disk = set() if local_dir is None or not local_dir.is_dir() else {p.name for p in local_dir.iterdir()}
    rows: list[ShardState] = []
    for shard_id in sorted(set(by_key) | logged | on_disk):
        head, stats, problem = None, None, None
        if shard_id in logged:
            try:
                head, stats = changelog.head(shard_id), changelog.stats(shard_id)
            except MalformedItemError as exc:
                problem = str(exc)
        local = None
        if local_dir is not None and shard_id in on_disk:
            local = inspect_local(local_dir / shard_id, shard_id)
        rows.append(
            ShardState(
                shard_id=shard_id,
                lease=by_key.get(shard_id),
                head=head,
                changelog_keys=None if stats is None else stats.key_count,
                changelog_items=None if stats is None else stats.items,
                changelog_bytes=None if stats is None else stats.size_bytes,
                local=local,
                changelog_problem=problem,
            )
        )
    return rows


def _check_not_held(leases: LeaseStore, shard_id: str, *, force: bool, what: str) -> Lease | None:
    lease = leases.get_lease(shard_id)
    if lease is not None and lease.lease_owner is not None and not lease.is_complete and not force:
        raise StateHeld(
            f"shard {shard_id}: its lease is held by {lease.lease_owner!r}; not {what} a store a worker has open "
            "(stop that worker, or wait until the lease is released or expires, or add --force)"
        )
    return lease


def _known_shard(leases: LeaseStore, changelog: Changelog, path: Path | None, shard_id: str, app: str) -> None:
    if leases.get_lease(shard_id) is not None or _has_changelog(changelog, shard_id):
        return
    if path is not None and path.exists():
        return
    raise ConfigurationError(
        f"application {app!r} has no shard {shard_id!r} (no lease, no changelog in {changelog.name}, no local "
        f"store); check --shard (shardwise state describe --app {app} lists the shards)"
    )


def _has_changelog(changelog: Changelog, shard_id: str) -> bool:
    """Whether the shard has a changelog head — a malformed one counts (wipe deletes it)."""
    try:
        return changelog.head(shard_id) is not None
    except MalformedItemError:
        return True


def restore_shard(
    leases: LeaseStore,
    changelog: Changelog,
    *,
    application_name: str,
    shard_id: str,
    state_dir: Path,
    engine: str = "sqlite",
    force: bool = False,
) -> tuple[ChangelogHead, int]:
    """Rebuild the shard's local store from its changelog (see the module); returns the head and the keys
    restored. Raises :class:`StateHeld`, or :class:`~shardwise.errors.ConfigurationError` for an unknown
    shard or one without a changelog."""
    path = local_store_path(state_dir, application_name, shard_id)
    _known_shard(leases, changelog, path, shard_id, application_name)
    _check_not_held(leases, shard_id, force=force, what="rebuilding")
    head = changelog.head(shard_id)
    if head is None:
        raise ConfigurationError(
            f"shard {shard_id} has no changelog in {changelog.name}: there is nothing to restore it from "
            f"(shardwise state wipe --app {application_name} --shard {shard_id} starts it over empty)"
        )
    level = head.format_level if head.format_level in KNOWN_FORMATS else FORMAT_IN_STORE
    wipe_local_store(path)
    path.mkdir(parents=True, exist_ok=True)
    opened = open_local_store(path, shard_id=shard_id, engine=engine, write_level=level, readable_level=level)
    try:
        restored = restore_from(changelog, opened.store, shard_id)
    finally:
        opened.store.close()
    assert restored is not None  # the head was there a moment ago; a shard's changelog is deleted only by wipe
    return restored


def wipe_shard(
    leases: LeaseStore,
    changelog: Changelog,
    *,
    application_name: str,
    shard_id: str,
    state_dir: Path,
    with_changelog: bool = False,
    force: bool = False,
) -> tuple[bool, bool]:
    """Delete the shard's local store (and its changelog with ``with_changelog``); returns whether a local
    store and a changelog were deleted."""
    path = local_store_path(state_dir, application_name, shard_id)
    _known_shard(leases, changelog, path, shard_id, application_name)
    _check_not_held(leases, shard_id, force=force, what="deleting")
    local = path.exists()
    wipe_local_store(path)
    logged = False
    if with_changelog and _has_changelog(changelog, shard_id):
        changelog.delete(shard_id)
        logged = True
    return local, logged


def read_state(changelog: Changelog, shard_id: str) -> Iterator[tuple[bytes, bytes]]:
    """The shard's committed state as the changelog holds it (live keys only, key order not guaranteed); nothing
    when the shard has no changelog."""
    plan = changelog.plan_restore(shard_id, lineage=None, after_commit=None)
    if plan is not None:
        for key, value in plan.changes:
            if value is not None:
                yield key, value
