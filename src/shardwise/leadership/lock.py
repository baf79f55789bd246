"""The KCL 3.x leader lock, item-compatible with the DynamoDB lock client (kcl-protocol.md §3.2, §6.1, §11).

The ``Leader`` item carries exactly what ``amazon-dynamodb-lock-client`` writes: ``ownerName`` (S, the worker
id), ``leaseDuration`` (S, milliseconds, e.g. ``"120000"``), ``recordVersionNumber`` (S, a UUID that changes
on every heartbeat) and, for a lock released without being deleted, ``isReleased`` (``"1"``). Java workers and
this lock therefore contend for one lock:

* **acquire** an absent lock with a put-if-absent;
* **heartbeat** by swapping ``recordVersionNumber`` for a new UUID, conditioned on ``ownerName`` being this
  worker and ``recordVersionNumber`` being the one it last wrote (failure = leadership lost);
* **release** by deleting the item, conditioned on the same two attributes;
* **take over** a lock held by someone else only after having observed the *same* ``recordVersionNumber``
  for longer than the item's ``leaseDuration`` on this worker's own monotonic clock — never by comparing
  clocks across machines — with an update conditioned on that ``recordVersionNumber``. A released lock
  (``isReleased``) may be taken at once.

Both halves of KCL #1803 follow from the take-over rule: a killed leader stops changing the version number,
so every contender eventually sees it unchanged for ``leaseDuration`` and exactly one wins the conditional
update; a live leader heartbeats more often than ``leaseDuration``, so no contender ever sees one version
for that long. The rule is the pure function :func:`decide_lock_action`; :class:`LeaderLock` runs it.

Reading costs (issue 15): a contender reads the item eventually consistently (half a read unit; a stale read
can only delay a take-over, never cause a wrong one, since every write is conditioned on the version number
read) and only when the lock could have expired: once ``leaseDuration`` after it first saw the current version
number (:func:`next_contender_check`), not every heartbeat period as KCL's non-leaders do — when the holder is a
shardwise leader; a lock held by anyone else (a Java worker) is read every heartbeat period, as KCL does. A dead
shardwise leader is therefore replaced within two lease durations of its last heartbeat (one, plus the time until
a contender first reads that heartbeat), and one that stops gracefully within one lease duration. A shardwise
leader also writes what the others would otherwise read for themselves (``shardwiseLeader``: its name, saying it
signals assignments on lease items; ``shardwiseMalformedLeases``: how many unreadable lease items its latest scan
met; ``shardwiseFinalizedFeatures``: the finalized feature levels it last read, so the others read the feature
items only when these change) — attributes the lock client and KCL ignore.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from shardwise.errors import ConfigurationError, MalformedItemError, ShardwiseError
from shardwise.tables.items import ItemRecord, ItemTable

__all__ = [
    "ATTR_FINALIZED_FEATURES",
    "ATTR_IS_RELEASED",
    "ATTR_LEASE_DURATION",
    "ATTR_MALFORMED_LEASES",
    "ATTR_OWNER_NAME",
    "ATTR_PUBLISHED_BY",
    "ATTR_RECORD_VERSION_NUMBER",
    "IS_RELEASED_VALUE",
    "LEADER_KEY",
    "LeaderLock",
    "LockAction",
    "LockItem",
    "LockObservation",
    "decide_lock_action",
    "lock_from_record",
    "next_contender_check",
]

#: Key of the leader-lock item (written in the format of the DynamoDB lock client KCL uses).
LEADER_KEY = "Leader"


@dataclass(frozen=True, slots=True)
class LockItem:
    """The ``Leader`` item, as the DynamoDB lock client writes it (kcl-protocol.md §3.2)."""

    owner_name: str
    lease_duration_ms: int
    record_version_number: str
    is_released: bool = False
    #: ``shardwiseLeader``: the name of the shardwise leader that wrote it (``None`` if absent).
    published_by: str | None = None
    #: ``shardwiseMalformedLeases``: unreadable lease items in that leader's latest scan (``None`` if absent).
    malformed_leases: int | None = None
    #: ``shardwiseFinalizedFeatures``: the finalized levels that leader last read, as
    #: :meth:`~shardwise.versions.feature_store.FinalizedFeatures.summary` writes them (``None`` if absent).
    finalized_features: str | None = None

    @property
    def from_shardwise_leader(self) -> bool:
        """Whether the current holder is a shardwise leader (it wrote its own name; a lock taken over by a Java
        worker keeps the attribute of its previous holder, under another ``ownerName``)."""
        return not self.is_released and self.published_by == self.owner_name


logger = logging.getLogger(__name__)

ATTR_OWNER_NAME = "ownerName"
ATTR_LEASE_DURATION = "leaseDuration"
ATTR_RECORD_VERSION_NUMBER = "recordVersionNumber"
ATTR_IS_RELEASED = "isReleased"
IS_RELEASED_VALUE = "1"
ATTR_PUBLISHED_BY = "shardwiseLeader"
ATTR_MALFORMED_LEASES = "shardwiseMalformedLeases"
ATTR_FINALIZED_FEATURES = "shardwiseFinalizedFeatures"


class LockAction(enum.Enum):
    """What a contender does next about the lock item it just read."""

    CREATE = "create"  # no lock item: put one if still absent
    HEARTBEAT = "heartbeat"  # the lock is mine: swap my version number
    TAKE_RELEASED = "take-released"  # the holder released it: take it now
    TAKE_EXPIRED = "take-expired"  # unchanged for longer than its lease duration: take it over
    WAIT = "wait"  # someone else holds it and may be alive


@dataclass(frozen=True, slots=True)
class LockObservation:
    """A version number of someone else's lock and when (this observer's clock, seconds) it was first seen."""

    record_version_number: str
    first_seen: float


def decide_lock_action(
    current: LockItem | None,
    *,
    owner: str,
    held_rvn: str | None,
    observation: LockObservation | None,
    now: float,
) -> tuple[LockAction, LockObservation | None]:
    """The take-over rule: the next action, and the observation to remember for the next call.

    ``held_rvn`` is the version number this worker last wrote while holding the lock (``None`` if it does not
    believe it holds it); ``now`` and ``observation.first_seen`` are readings of the observer's monotonic
    clock in seconds. A lock held by someone else is taken over only once its version number has stayed the
    same for *more than* its ``leaseDuration`` since this observer first saw it; any new version restarts the
    wait.
    """
    if current is None:
        return LockAction.CREATE, None
    if held_rvn is not None and current.owner_name == owner and current.record_version_number == held_rvn:
        return LockAction.HEARTBEAT, None
    if current.is_released:
        return LockAction.TAKE_RELEASED, None
    if observation is None or observation.record_version_number != current.record_version_number:
        return LockAction.WAIT, LockObservation(current.record_version_number, now)
    if now - observation.first_seen > current.lease_duration_ms / 1000:
        return LockAction.TAKE_EXPIRED, observation
    return LockAction.WAIT, observation


def next_contender_check(
    observation: LockObservation, lease_duration_ms: int, now: float, min_period_s: float
) -> float:
    """When a contender that saw someone else's lock (``observation``) should read it again: as soon as it could
    have expired (just over ``lease_duration_ms`` after the version number was first seen, the earliest moment
    :func:`decide_lock_action` may take it over), and never sooner than ``min_period_s`` from ``now``."""
    return max(now + min_period_s, observation.first_seen + lease_duration_ms / 1000 + _EXPIRY_MARGIN_S)


#: How long after a lock could have expired a contender reads it (its take-over rule needs "more than").
_EXPIRY_MARGIN_S = 0.25


def lock_from_record(record: ItemRecord, default_lease_duration_ms: int) -> LockItem:
    """The lock in a ``Leader`` item. ``recordVersionNumber`` is required (``MalformedItemError`` otherwise:
    delete the item to let a new leader be elected); an unreadable ``leaseDuration`` counts as
    ``default_lease_duration_ms``."""
    attributes = record.attributes
    rvn = attributes.get(ATTR_RECORD_VERSION_NUMBER)
    if not isinstance(rvn, str) or not rvn:
        raise MalformedItemError(
            record.key,
            f"{ATTR_RECORD_VERSION_NUMBER} must be a non-empty string, got {rvn!r}; delete the item so that a "
            "new leader can be elected",
        )
    owner = attributes.get(ATTR_OWNER_NAME)
    published_by = attributes.get(ATTR_PUBLISHED_BY)
    features = attributes.get(ATTR_FINALIZED_FEATURES)
    return LockItem(
        owner_name=owner if isinstance(owner, str) else "",
        lease_duration_ms=_lease_duration_ms(
            record.key, attributes.get(ATTR_LEASE_DURATION), default_lease_duration_ms
        ),
        record_version_number=rvn,
        is_released=attributes.get(ATTR_IS_RELEASED) == IS_RELEASED_VALUE,
        published_by=published_by if isinstance(published_by, str) else None,
        malformed_leases=_count(attributes.get(ATTR_MALFORMED_LEASES)),
        finalized_features=features if isinstance(features, str) else None,
    )


def _count(raw: object) -> int | None:
    """A published count (a whole number >= 0, as a number or a string), else ``None``."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, str):
        try:
            raw = int(raw)
        except ValueError:
            return None
    return raw if isinstance(raw, int) and raw >= 0 else None


def _lease_duration_ms(key: str, raw: object, default: int) -> int:
    if isinstance(raw, int) and not isinstance(raw, bool) and raw > 0:
        return raw
    if isinstance(raw, str):
        try:
            value = int(raw)
        except ValueError:
            value = 0
        if value > 0:
            return value
    logger.warning("lock item %r: unreadable %s %r, assuming %d ms", key, ATTR_LEASE_DURATION, raw, default)
    return default


def _new_rvn() -> str:
    return str(uuid.uuid4())


class LeaderLock:
    """This worker's side of the ``Leader`` lock in a coordinator :class:`ItemTable`.

    ``clock`` is a monotonic clock in seconds (injectable for tests); ``new_rvn`` makes version numbers.
    Thread-safe: calls are serialized. :meth:`try_acquire`, :meth:`heartbeat` and :meth:`release` raise the
    item table's infrastructure errors; :meth:`is_leader` never raises.

    This worker considers itself leader only until ``leaseDuration`` after the start of its last successful
    write, even if heartbeats fail for infrastructure reasons: a contender's wait starts when it first reads
    that write, so the two never overlap (with clocks running at the same rate).
    """

    def __init__(
        self,
        items: ItemTable,
        owner: str,
        *,
        lease_duration_ms: int = 120_000,
        heartbeat_period_ms: int = 30_000,
        clock: Callable[[], float] = time.monotonic,
        new_rvn: Callable[[], str] = _new_rvn,
        published: Callable[[], Mapping[str, str]] | None = None,
    ) -> None:
        if not owner:
            raise ConfigurationError("the lock owner (worker id) must not be empty")
        durations: tuple[tuple[str, object], ...] = (
            ("lease_duration_ms", lease_duration_ms),
            ("heartbeat_period_ms", heartbeat_period_ms),
        )
        for name, value in durations:
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigurationError(f"{name} must be a whole number of milliseconds > 0, got {value!r}")
        if heartbeat_period_ms >= lease_duration_ms:
            raise ConfigurationError(
                f"heartbeat_period_ms ({heartbeat_period_ms}) must be shorter than lease_duration_ms "
                f"({lease_duration_ms}), or other workers would take the lock from a live leader "
                "(KCL: heartbeat 30000, lease 120000)"
            )
        self._items = items
        self._owner = owner
        self._lease_duration_ms = lease_duration_ms
        self._heartbeat_period_s = heartbeat_period_ms / 1000
        self._clock = clock
        self._new_rvn = new_rvn
        self._mutex = threading.RLock()
        self._held_rvn: str | None = None
        self._held_until = float("-inf")
        self._observation: LockObservation | None = None
        self._next_check: float | None = None
        #: Extra attributes every write of this worker's carries (see the module docstring).
        self._published = published
        self._last_seen: LockItem | None = None

    def __repr__(self) -> str:
        return f"LeaderLock(owner={self._owner!r}, table={self._items.table_name!r})"

    @property
    def owner(self) -> str:
        return self._owner

    @property
    def lease_duration_ms(self) -> int:
        return self._lease_duration_ms

    # -- reading ---------------------------------------------------------------------------------------

    def current(self, *, consistent: bool = True) -> LockItem | None:
        """The lock item as it is now (a strongly consistent read unless ``consistent`` is False), or ``None``
        if there is none."""
        record = self._items.get(LEADER_KEY, consistent=consistent)
        item = None if record is None else lock_from_record(record, self._lease_duration_ms)
        self._last_seen = item
        return item

    def last_seen(self) -> LockItem | None:
        """The lock item as this worker last read or wrote it (no store call; ``None`` before, or if absent)."""
        with self._mutex:
            return self._last_seen

    # -- the protocol ----------------------------------------------------------------------------------

    def _attributes(self, rvn: str) -> dict[str, Any]:
        return {
            ATTR_OWNER_NAME: self._owner,
            ATTR_LEASE_DURATION: str(self._lease_duration_ms),
            ATTR_RECORD_VERSION_NUMBER: rvn,
            **self._publications(),
        }

    def _publications(self) -> dict[str, str]:
        return {} if self._published is None else dict(self._published())

    def _seen_written(self, attributes: Mapping[str, Any]) -> None:
        self._last_seen = lock_from_record(ItemRecord(LEADER_KEY, dict(attributes)), self._lease_duration_ms)

    def _now_holding(self, rvn: str, started: float) -> None:
        self._held_rvn = rvn
        self._held_until = started + self._lease_duration_ms / 1000
        self._observation = None

    def _drop(self, reason: str) -> None:
        if self._held_rvn is not None:
            logger.warning("worker %r lost leadership: %s", self._owner, reason)
        self._held_rvn = None
        self._held_until = float("-inf")

    def try_acquire(self) -> bool:
        """One acquisition attempt (a read and at most one conditional write); True if this worker now holds
        the lock. Heartbeats instead if it already does."""
        with self._mutex:
            now = self._clock()
            # A contender reads eventually consistently (a stale read only delays a take-over: every write below
            # is conditioned on what was read); a holder reads consistently, as a stale version number would
            # make it drop a lock it holds.
            current = self.current(consistent=self._held_rvn is not None)
            action, self._observation = decide_lock_action(
                current, owner=self._owner, held_rvn=self._held_rvn, observation=self._observation, now=now
            )
            if action is LockAction.HEARTBEAT:
                return self._heartbeat(now)
            if action is LockAction.WAIT:
                assert current is not None
                self._drop(f"the lock is held by {current.owner_name!r}")
                return False
            rvn = self._new_rvn()
            attributes = self._attributes(rvn)
            if action is LockAction.CREATE:
                won = self._items.put_if_absent(LEADER_KEY, attributes)
            else:
                assert current is not None
                expect: dict[str, Any] = {ATTR_RECORD_VERSION_NUMBER: current.record_version_number}
                if action is LockAction.TAKE_RELEASED:
                    expect[ATTR_IS_RELEASED] = IS_RELEASED_VALUE
                won = (
                    self._items.update(
                        LEADER_KEY, set_attributes=attributes, remove_attributes=[ATTR_IS_RELEASED], expect=expect
                    )
                    is not None
                )
            if not won:
                # Someone else got there first: watch their lock from scratch.
                self._observation = None
                self._drop("another worker acquired the lock")
                return False
            self._now_holding(rvn, now)
            self._seen_written(attributes)
            previous = "" if current is None else f" from {current.owner_name!r} ({action.value})"
            logger.info("worker %r acquired the leader lock%s", self._owner, previous)
            return True

    def heartbeat(self) -> bool:
        """Renew the lock: swap its version number, conditioned on this worker's name and last version number.
        False if this worker does not hold the lock (any more)."""
        with self._mutex:
            return self._heartbeat(self._clock())

    def _heartbeat(self, now: float) -> bool:
        held = self._held_rvn
        if held is None:
            return False
        rvn = self._new_rvn()
        updated = self._items.update(
            LEADER_KEY,
            set_attributes={
                ATTR_RECORD_VERSION_NUMBER: rvn,
                ATTR_LEASE_DURATION: str(self._lease_duration_ms),
                **self._publications(),
            },
            expect={ATTR_OWNER_NAME: self._owner, ATTR_RECORD_VERSION_NUMBER: held},
        )
        if updated is None:
            self._drop("the lock item changed (taken over, released or deleted)")
            return False
        self._now_holding(rvn, now)
        self._seen_written(updated.attributes)
        return True

    def release(self) -> bool:
        """Give up the lock: delete the item if it still carries this worker's name and version number. True
        if deleted. This worker stops being leader whatever the outcome, and waits one heartbeat period
        before :meth:`is_leader` tries to acquire again, so that others get a chance."""
        with self._mutex:
            held = self._held_rvn
            self._held_rvn = None
            self._held_until = float("-inf")
            self._observation = None
            self._next_check = self._clock() + self._heartbeat_period_s
            if held is None:
                return False
            deleted = self._items.delete(
                LEADER_KEY, expect={ATTR_OWNER_NAME: self._owner, ATTR_RECORD_VERSION_NUMBER: held}
            )
            if deleted:
                logger.info("worker %r released the leader lock", self._owner)
            return deleted

    def is_leader(self) -> bool:
        """Whether this worker is the leader, touching the store at most once per heartbeat period: a
        heartbeat when leading and due, an acquisition attempt (:meth:`try_acquire`) when not — and, while
        someone else holds a lock that looks alive, not before it could have expired
        (:func:`next_contender_check`). Between those, the last answer holds (while leading: until
        ``leaseDuration`` after the last successful write). Infrastructure errors are logged, never raised."""
        with self._mutex:
            now = self._clock()
            if self._next_check is None or now >= self._next_check:
                self._next_check = now + self._heartbeat_period_s
                try:
                    if self._held_rvn is not None:
                        self._heartbeat(now)
                    else:
                        self.try_acquire()
                except ShardwiseError as exc:
                    logger.warning("worker %r: leader lock check failed: %s", self._owner, exc)
                observation, seen = self._observation, self._last_seen
                # Only a shardwise holder's lock is read this sparsely: its followers hear of what changes from it
                # (signals, published counts). A Java holder's followers read every heartbeat period, as KCL's do,
                # so that a graceful release (the item deleted) is noticed as soon as KCL would notice it.
                if (
                    self._held_rvn is None
                    and observation is not None
                    and seen is not None
                    and seen.from_shardwise_leader
                ):
                    self._next_check = next_contender_check(
                        observation, seen.lease_duration_ms, now, self._heartbeat_period_s
                    )
            return self._held_rvn is not None and self._clock() < self._held_until

    def holds_lock(self) -> bool:
        """Whether this worker believes it holds the lock right now (no store call)."""
        with self._mutex:
            return self._held_rvn is not None and self._clock() < self._held_until
