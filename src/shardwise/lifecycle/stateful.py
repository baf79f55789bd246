"""A stateful processor's shard state as the framework drives it: open (restore, republish, seed from parents),
commit in the fixed order, discard, close — and the pure decisions behind them.

Commit order, always (``docs/architecture.md``, "State stores and the changelog")::

    (1) changelog.append(pending changes, meta)   (2) store.commit(meta)   (3) the lease checkpoint

so ``lease checkpoint ≤ local position ≤ changelog head`` holds at every instant. :class:`StatefulHolder` wraps
the worker's :class:`~shardwise.lifecycle.holder.LeaseHolder` so that every checkpoint the processor takes runs
(1) and (2) before the lease write (3). A test hook, :func:`set_commit_observer`, is called between the writes
(``"after-changelog"``, ``"after-store"``) — the crash scenarios kill the process there.

Opening a shard's state (:meth:`ShardState.open`), after the local store was opened (and upgraded, converted
or wiped by :func:`~shardwise.state.engines.open_local_store`), is one of four cases (:func:`open_case`):

(a) the changelog has a head: restore what the local store lacks (everything when the lineage differs);
(b) no head but the local store has commits (the changelog table was lost): publish the whole local state as
    commit 1 of a new lineage and adopt it locally (one WARNING line);
(c) no head, an empty store, a lease with parents at a sentinel checkpoint (a new child after a reshard): seed
    from the parents' changelogs (a merge unions them; a key in both: the processor's ``merge_state``, by default
    the later parent in lease-key order wins with one WARNING), committed as commit 1 at the lease checkpoint;
    a parent whose children all have a changelog head loses its changelog;
(d) otherwise (an application that becomes stateful): empty state at the lease checkpoint.

Reading then starts after ``max(lease checkpoint, store position)`` (:func:`start_position`): the store's
position wins, so a record whose effect the store holds is never applied again.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from shardwise.checkpoint.sequence import SHARD_END, ExtendedSequenceNumber
from shardwise.errors import (
    ChangelogConflictError,
    ConfigurationError,
    InvalidStateError,
    MalformedItemError,
    ShardwiseError,
)
from shardwise.leases.model import HeldLease
from shardwise.leases.store import LeaseStore
from shardwise.lifecycle.holder import LeaseHolder
from shardwise.lifecycle.state_rules import (
    MergeFunction,
    OpenCase,
    commit_due,
    merge_states,
    next_commit,
    open_case,
    start_position,
)
from shardwise.metrics.sink import BYTES, COUNT, MILLISECONDS, MetricsSink, NullMetricsSink
from shardwise.state.port import (
    FORMAT_IN_STORE,
    KNOWN_FORMATS,
    Change,
    Changelog,
    CommitMeta,
    LocalStore,
    OpenedStore,
    OpenOutcome,
    restore_from,
)

__all__ = [
    "COMPACTION_CHECK_COMMITS",
    "METRICS_OPERATION",
    "CommitObserver",
    "MergeFunction",
    "OpenCase",
    "ShardState",
    "StateConfig",
    "StateServices",
    "StateSettings",
    "StatefulHolder",
    "StoreOpener",
    "commit_due",
    "ensured_once",
    "merge_states",
    "next_commit",
    "open_case",
    "set_commit_observer",
    "start_position",
]

logger = logging.getLogger(__name__)

#: Every this many commits of a shard, its changelog is asked whether the log wants a snapshot (one read).
COMPACTION_CHECK_COMMITS = 16

#: The metrics operation of state stores: Commits, CommitTime, RestoredKeys, RestoreTime, StoreKeys, StoreSizeBytes.
METRICS_OPERATION = "StateStore"

#: ``(stage, shard_id)``: called between the writes of a commit (stage ``"after-changelog"``, ``"after-store"``).
CommitObserver = Callable[[str, str], None]

_observer: CommitObserver | None = None


def set_commit_observer(observer: CommitObserver | None) -> None:
    """Install (or remove, with None) the process-wide commit observer — a test hook: the crash scenarios kill
    their own process at a stage. Called on the committing consumer's thread."""
    global _observer  # noqa: PLW0603 - one hook per process, by design
    _observer = observer


def _observe(stage: str, shard_id: str) -> None:
    observer = _observer
    if observer is not None:
        observer(stage, shard_id)


# -- configuration -----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StateSettings:
    """The ``[state]`` config section (used only when the processor is stateful).

    * ``dir``: where the local stores live, ``<dir>/<application>/<shard_id>/`` (relative to the worker's cwd);
    * ``engine``: ``"sqlite"`` (stdlib) or ``"rocksdb"`` (``pip install 'shardwise[rocksdb]'``);
    * ``commit_interval_ms``: after a batch, when this long has passed since the last commit, the framework
      checkpoints everything delivered (which commits the store), as Kafka Streams commits regularly;
    * ``changelog_table``: the changelog table (default ``<application>-state`` on DynamoDB).
    """

    dir: str = "shardwise-state"
    engine: Literal["sqlite", "rocksdb"] = "sqlite"
    commit_interval_ms: int = 5_000
    changelog_table: str | None = None

    def __post_init__(self) -> None:
        if not self.dir:
            raise ConfigurationError("state.dir must name a directory (default 'shardwise-state')")
        if self.engine not in ("sqlite", "rocksdb"):
            raise ConfigurationError(f"state.engine must be 'sqlite' or 'rocksdb', got {self.engine!r}")
        if self.commit_interval_ms <= 0:
            raise ConfigurationError(f"state.commit_interval_ms must be > 0, got {self.commit_interval_ms}")
        if self.changelog_table is not None and not self.changelog_table:
            raise ConfigurationError("state.changelog_table must not be empty (leave it unset for '<app>-state')")


@dataclass(frozen=True, slots=True)
class StateConfig:
    """What one shard's state needs: where its store lives (``dir_path / shard_id``), the engine, the commit
    interval and the format levels (``write_level``: the finalized ``state.format``, or this worker's highest
    when not finalized; ``readable_level``: the highest this worker reads)."""

    dir_path: Path
    engine: str = "sqlite"
    commit_interval_ms: int = 5_000
    write_level: int = FORMAT_IN_STORE
    readable_level: int = FORMAT_IN_STORE

    def __post_init__(self) -> None:
        if self.write_level not in KNOWN_FORMATS:
            raise ConfigurationError(
                f"this worker cannot write state.format level {self.write_level} (it knows "
                f"{', '.join(map(str, KNOWN_FORMATS))}): a worker pinned to a release before 0.3 has no state "
                "stores; unpin it (features.release) to run a stateful processor"
            )
        if self.readable_level < self.write_level:
            raise ConfigurationError(
                f"state.format: readable level {self.readable_level} is below the written level {self.write_level}"
            )
        if self.commit_interval_ms <= 0:
            raise ConfigurationError(f"state.commit_interval_ms must be > 0, got {self.commit_interval_ms}")

    def store_path(self, shard_id: str) -> Path:
        return self.dir_path / shard_id


class StoreOpener(Protocol):
    """:func:`shardwise.state.engines.open_local_store`'s signature."""

    def __call__(
        self, path: Path, *, shard_id: str, engine: str, write_level: int, readable_level: int
    ) -> OpenedStore: ...


@dataclass(frozen=True, slots=True)
class StateServices:
    """What a shard consumer of a stateful processor is given: the config, the changelog (opened, and created if
    missing, on first use: :func:`ensured_once`), the store opener, the metrics sink and a clock."""

    config: StateConfig
    changelog: Callable[[], Changelog]
    open_store: StoreOpener
    metrics: MetricsSink = field(default_factory=NullMetricsSink)
    clock_ns: Callable[[], int] = time.monotonic_ns


def ensured_once(open_changelog: Callable[[], Changelog]) -> Callable[[], Changelog]:
    """The changelog, opened and ``ensure_exists``-ed once, on the first call (a failed attempt is retried)."""
    lock = threading.Lock()
    opened: list[Changelog] = []

    def get() -> Changelog:
        with lock:
            if not opened:
                changelog = open_changelog()
                changelog.ensure_exists()
                opened.append(changelog)
            return opened[0]

    return get


# -- the shell ---------------------------------------------------------------------------------------------------

_open_paths: set[Path] = set()
_open_paths_lock = threading.Lock()


class ShardState:
    """One shard's local store for one lease acquisition, opened and restored; see the module docstring."""

    def __init__(
        self, shard_id: str, store: LocalStore, changelog: Changelog, services: StateServices, path: Path
    ) -> None:
        self.shard_id = shard_id
        self.store = store
        self._changelog = changelog
        self._services = services
        self._path = path
        self._last_commit_ns = services.clock_ns()
        self._closed = False
        self._commits_unchecked = 0  # commits since the changelog was last asked about compaction

    # -- open --------------------------------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        services: StateServices,
        *,
        shard_id: str,
        lease_checkpoint: ExtendedSequenceNumber,
        parent_shard_ids: Iterable[str] = (),
        lease_store: LeaseStore | None = None,
        merge: MergeFunction | None = None,
    ) -> ShardState:
        """Open the shard's store, restore or seed it (cases (a)-(d)). Raises ``InvalidStateError`` (retried)
        while the previous consumer of the shard on this worker still has the store open."""
        config = services.config
        path = config.store_path(shard_id).resolve()
        with _open_paths_lock:
            if path in _open_paths:
                raise InvalidStateError(
                    f"shard {shard_id}: its state store {path} is still open by the previous consumer of the shard "
                    "on this worker; retrying"
                )
            _open_paths.add(path)
        try:
            opened = services.open_store(
                path,
                shard_id=shard_id,
                engine=config.engine,
                write_level=config.write_level,
                readable_level=config.readable_level,
            )
        except BaseException:
            _release(path)
            raise
        if opened.detail:
            wiped = opened.outcome in (OpenOutcome.WIPED_NEWER, OpenOutcome.WIPED_CORRUPT, OpenOutcome.WIPED_ENGINE)
            logger.log(logging.WARNING if wiped else logging.INFO, "%s", opened.detail)  # names store and shard
        state: ShardState | None = None
        try:
            changelog = services.changelog()
            state = cls(shard_id, opened.store, changelog, services, path)
            try:
                state._prepare(lease_checkpoint, sorted(parent_shard_ids), lease_store, merge)
            except MalformedItemError as exc:
                raise MalformedItemError(
                    exc.key,
                    f"{exc.problem} (changelog {changelog.name}); the shard waits: repair the item, or start "
                    f"its state over: shardwise state wipe --app <application> --shard {shard_id} --changelog",
                ) from exc
        except BaseException:
            opened.store.discard()
            opened.store.close()
            _release(path)
            raise
        return state

    def _prepare(
        self,
        lease_checkpoint: ExtendedSequenceNumber,
        parents: list[str],
        lease_store: LeaseStore | None,
        merge: MergeFunction | None,
    ) -> None:
        head = self._changelog.head(self.shard_id)
        case = open_case(
            has_head=head is not None,
            local_has_commits=self.store.committed() is not None,
            has_parents=bool(parents),
            checkpoint_is_sentinel=lease_checkpoint.is_sentinel,
        )
        if case is OpenCase.RESTORE:
            self._restore()
        elif case is OpenCase.REPUBLISH:
            self._republish()
        elif case is OpenCase.SEED_FROM_PARENTS:
            self._seed(lease_checkpoint, parents, lease_store, merge)
        self._report_size()

    def _restore(self) -> None:
        started = self._services.clock_ns()
        result = restore_from(self._changelog, self.store, self.shard_id)
        applied = 0 if result is None else result[1]
        elapsed_ms = (self._services.clock_ns() - started) / 1_000_000
        self._put("RestoredKeys", applied, COUNT)
        self._put("RestoreTime", elapsed_ms, MILLISECONDS)
        if result is not None and applied:
            head = result[0]
            logger.info(
                "shard %s: restored %d change(s) from changelog %s (commit %d, position %s) in %.0f ms",
                self.shard_id,
                applied,
                self._changelog.name,
                head.commit,
                head.position,
                elapsed_ms,
            )

    def _republish(self) -> None:
        committed = self.store.committed()
        assert committed is not None
        changes: list[Change] = [(key, value) for key, value in self.store.range()]
        meta = CommitMeta(1, committed.position, uuid.uuid4().hex)
        logger.warning(
            "shard %s: changelog %s has no entry for the shard but the local store holds %d key(s) at %s (the "
            "changelog table was lost or recreated?): publishing the local state as commit 1 of a new lineage",
            self.shard_id,
            self._changelog.name,
            len(changes),
            committed.position,
        )
        self._changelog.append(self.shard_id, changes, meta, format_level=self.store.format_level)
        self.store.commit(meta)

    def _seed(
        self,
        lease_checkpoint: ExtendedSequenceNumber,
        parents: list[str],
        lease_store: LeaseStore | None,
        merge: MergeFunction | None,
    ) -> None:
        states: list[list[Change]] = []
        seeded_from: list[str] = []
        for parent in parents:
            plan = self._changelog.plan_restore(parent, lineage=None, after_commit=None)
            if plan is not None:
                states.append(list(plan.changes))
                seeded_from.append(parent)
        if not states:
            return
        merged, conflicts = merge_states(states, merge)
        if conflicts and merge is None:
            logger.warning(
                "shard %s: %d key(s) are in the state of both merged parents %s (e.g. %r); the later parent's value "
                "wins — define merge_state(key, left, right) on the processor to combine them",
                self.shard_id,
                len(conflicts),
                " and ".join(seeded_from),
                conflicts[0],
            )
        for key in sorted(merged):
            self.store.put(key, merged[key])
        self.commit(lease_checkpoint)
        logger.info(
            "shard %s: seeded %d key(s) from the state of parent(s) %s",
            self.shard_id,
            len(merged),
            ", ".join(seeded_from),
        )
        if lease_store is not None:
            self._forget_finished_parents(seeded_from, lease_store)

    def _forget_finished_parents(self, parents: list[str], lease_store: LeaseStore) -> None:
        for parent in parents:
            lease = lease_store.get_lease(parent)
            if lease is None or not lease.child_shard_ids:
                continue
            if all(self._changelog.head(child) is not None for child in lease.child_shard_ids):
                self._changelog.delete(parent)
                logger.info(
                    "shard %s: every child of %s has its state; its changelog is deleted", self.shard_id, parent
                )

    # -- running -----------------------------------------------------------------------------------------------

    @property
    def position(self) -> ExtendedSequenceNumber | None:
        """The committed position (None: nothing committed yet)."""
        committed = self.store.committed()
        return None if committed is None else committed.position

    def start_position(self, lease_checkpoint: ExtendedSequenceNumber) -> ExtendedSequenceNumber:
        return start_position(lease_checkpoint, self.position)

    @property
    def finished(self) -> bool:
        """Whether the store says the shard is finished (committed at ``SHARD_END``)."""
        position = self.position
        return position is not None and position == SHARD_END

    def commit_due(self) -> bool:
        return commit_due(self._last_commit_ns, self._services.clock_ns(), self._services.config.commit_interval_ms)

    def commit(self, position: ExtendedSequenceNumber) -> None:
        """Commit what is pending with ``position`` (never behind the committed one): changelog, then store.
        Nothing happens when nothing is pending and the position is already committed."""
        committed = self.store.committed()
        if committed is not None and position < committed.position:
            position = committed.position
        if committed is not None and not self.store.has_pending() and committed.position == position:
            self._last_commit_ns = self._services.clock_ns()
            return
        meta = next_commit(committed, position, lambda: uuid.uuid4().hex)
        started = self._services.clock_ns()
        self._changelog.append(self.shard_id, self.store.pending(), meta, format_level=self.store.format_level)
        _observe("after-changelog", self.shard_id)
        self.store.commit(meta)
        _observe("after-store", self.shard_id)
        now = self._services.clock_ns()
        self._last_commit_ns = now
        self._commits_unchecked += 1
        self._put("Commits", 1, COUNT)
        self._put("CommitTime", (now - started) / 1_000_000, MILLISECONDS)

    def maintain(self) -> None:
        """After a commit and its lease checkpoint, every :data:`COMPACTION_CHECK_COMMITS` commits: snapshot the
        shard's changelog when its log has outgrown the last snapshot, so a restore stays bounded. Best effort:
        a failure is logged and tried again later; a lost shard is found by the next commit."""
        committed = self.store.committed()
        if self._commits_unchecked < COMPACTION_CHECK_COMMITS or committed is None or self.store.has_pending():
            return
        self._commits_unchecked = 0
        try:
            if self._changelog.needs_compaction(self.shard_id):
                self._changelog.compact(self.shard_id, self.store.range(), committed)
                logger.info(
                    "shard %s: changelog %s compacted at commit %d",
                    self.shard_id,
                    self._changelog.name,
                    committed.commit,
                )
        except ShardwiseError as exc:
            logger.warning("shard %s: changelog compaction failed (tried again later): %s", self.shard_id, exc)

    def discard(self) -> None:
        if not self._closed:
            self.store.discard()

    def close(self) -> None:
        """Discard what is pending and close the store (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            self.store.discard()
            self._report_size()
            self.store.close()
        finally:
            _release(self._path)

    def _report_size(self) -> None:
        stats = self.store.stats()
        self._put("StoreKeys", stats.key_count, COUNT)
        self._put("StoreSizeBytes", stats.size_bytes, BYTES)

    def _put(self, name: str, value: float, unit: str) -> None:
        self._services.metrics.put(METRICS_OPERATION, name, value, unit, dimensions={"ShardId": self.shard_id})


def _release(path: Path) -> None:
    with _open_paths_lock:
        _open_paths.discard(path)


class StatefulHolder:
    """A :class:`~shardwise.lifecycle.holder.LeaseHolder` whose checkpoint writes commit the shard's state first
    (changelog, then store), then write the lease checkpoint. A prepared (pending) checkpoint commits nothing.
    A commit that finds the changelog moved by another worker (:class:`~shardwise.errors.ChangelogConflictError`,
    a lost lease) stops the lease being held here."""

    def __init__(self, inner: LeaseHolder) -> None:
        self._inner = inner
        self.state: ShardState | None = None

    def write_checkpoint(
        self,
        lease_key: str,
        token: str,
        checkpoint: ExtendedSequenceNumber,
        *,
        pending: ExtendedSequenceNumber | None,
        pending_state: bytes | None,
    ) -> None:
        state = self.state
        if state is not None and pending is None:
            try:
                state.commit(checkpoint)
            except ChangelogConflictError:
                self._inner.drop(lease_key, token)
                raise
        self._inner.write_checkpoint(lease_key, token, checkpoint, pending=pending, pending_state=pending_state)
        if state is not None and pending is None:
            state.maintain()

    def get(self, lease_key: str) -> HeldLease | None:
        return self._inner.get(lease_key)

    def holds(self, lease_key: str, token: str) -> bool:
        return self._inner.holds(lease_key, token)

    def drop(self, lease_key: str, token: str | None = None) -> HeldLease | None:
        return self._inner.drop(lease_key, token)

    def in_handoff(self, lease_key: str) -> bool:
        return self._inner.in_handoff(lease_key)

    def complete_handoff(self, lease_key: str, token: str) -> bool:
        return self._inner.complete_handoff(lease_key, token)

    def release(self, lease_key: str, token: str) -> bool:
        return self._inner.release(lease_key, token)
