"""Cluster-wide feature versions, after Kafka's KIP-584 / KIP-778 / KIP-1022 (pure part: no I/O).

Every fleet-wide behaviour change of shardwise ships as a **feature** with int16 **levels** (0 = off, not
finalized). This module holds:

* the **registry** compiled into this release: each feature's levels, the shardwise release that first makes
  a level the default, and its dependencies on other features (:data:`REGISTRY`, :func:`default_levels`);
* **supported ranges** — the ``[min, max]`` levels a worker can run with (:class:`SupportedRange`,
  :func:`worker_supported_ranges`), limited by its mode and by an optional release pin;
* the **validation** of a requested change, all-or-nothing and in Kafka's order (:func:`validate_updates`),
  against the finalized levels, every live worker's supported range and the dependencies of the proposed set;
* **admission**: which finalized level a worker cannot run with (:func:`admission_problem`).

Four features exist so far. Two of them are *reflected* from KCL's ``Migration3.0`` item so that Java KCL
workers and AWS's ``KclMigrationTool.py`` keep working (:func:`levels_from_client_version`):

=================  =======================================================  =========================
feature            levels                                                   Migration3.0 ``cv``
=================  =======================================================  =========================
lease.assignment   1 lease-count taking (KCL 2.x), 2 utilization-aware      1: 2X, UPGRADE_FROM_2X;
                   leader (KCL 3.x; needs lease.discovery 2)                2: 3X_WITH_ROLLBACK, 3X
lease.discovery    1 table scan, 2 owner index ``LeaseOwnerToLeaseKeyIndex``  1: 2X; 2: the others
table.layout       1 legacy coordinator + worker-metrics tables, 2 single   (the layout the
                   table (KCL 3.5)                                          coordinator items are in)
state.format       1 offsets in a sidecar checkpoint file beside the        (not reflected)
                   store (Kafka Streams <= 4.2), 2 offsets inside the
                   store, atomic with the data (KIP-1035; release 0.4)
=================  =======================================================  =========================
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

from shardwise.errors import ConfigurationError
from shardwise.versions.migration_state import ClientVersion

__all__ = [
    "CURRENT_RELEASE",
    "LEASE_ASSIGNMENT",
    "LEASE_DISCOVERY",
    "MAX_LEVEL",
    "REGISTRY",
    "RELEASES",
    "STATE_FORMAT",
    "TABLE_LAYOUT",
    "Feature",
    "FeatureLevel",
    "FeatureUpdate",
    "FeaturesConfig",
    "SupportedRange",
    "UpdateContext",
    "UpgradeType",
    "WorkerSupport",
    "admission_problem",
    "client_version_for",
    "default_levels",
    "dependency_problem",
    "first_unsupported",
    "fleet_range",
    "implied_levels",
    "levels_from_client_version",
    "parse_release",
    "release_pin_ranges",
    "validate_updates",
    "worker_supported_ranges",
]

#: Kafka's feature levels are int16.
MAX_LEVEL = 32767

LEASE_ASSIGNMENT = "lease.assignment"
LEASE_DISCOVERY = "lease.discovery"
TABLE_LAYOUT = "table.layout"
STATE_FORMAT = "state.format"

#: shardwise releases that changed a feature default, oldest first (``--release-version`` takes these).
RELEASES: tuple[str, ...] = ("0.1", "0.2", "0.3", "0.4")
CURRENT_RELEASE = RELEASES[-1]


@dataclass(frozen=True, slots=True)
class FeatureLevel:
    """One level of a feature: the release where it becomes the default, and what it needs."""

    level: int
    since: str
    description: str
    requires: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Feature:
    name: str
    description: str
    levels: tuple[FeatureLevel, ...]

    @property
    def max_level(self) -> int:
        return self.levels[-1].level

    def level(self, level: int) -> FeatureLevel | None:
        for entry in self.levels:
            if entry.level == level:
                return entry
        return None

    def default_for(self, release: str) -> int:
        """The highest level whose release is at or before ``release`` (0 if none)."""
        index = RELEASES.index(release)
        chosen = 0
        for entry in self.levels:
            if RELEASES.index(entry.since) <= index:
                chosen = entry.level
        return chosen


#: The features this release knows, in registry order.
REGISTRY: Mapping[str, Feature] = {
    feature.name: feature
    for feature in (
        Feature(
            LEASE_ASSIGNMENT,
            "how leases are shared out among workers",
            (
                FeatureLevel(1, "0.1", "lease-count taking and stealing by every worker (KCL 2.x)"),
                FeatureLevel(
                    2,
                    "0.3",
                    "utilization-aware assignment by one leader, with graceful handoff (KCL 3.x)",
                    {LEASE_DISCOVERY: 2},
                ),
            ),
        ),
        Feature(
            LEASE_DISCOVERY,
            "how a worker finds the leases assigned to it",
            (
                FeatureLevel(1, "0.1", "scan of the lease table"),
                FeatureLevel(2, "0.2", "query of the owner index LeaseOwnerToLeaseKeyIndex"),
            ),
        ),
        Feature(
            TABLE_LAYOUT,
            "where the coordinator and worker-metrics items live",
            (
                FeatureLevel(
                    1, "0.1", "separate <app>-CoordinatorState and <app>-WorkerMetricStats tables (KCL 3.0-3.4)"
                ),
                FeatureLevel(2, "0.2", "single table: the items live in the lease table (KCL 3.5)"),
            ),
        ),
        Feature(
            STATE_FORMAT,
            "where a stateful processor's store keeps its input position",
            (
                FeatureLevel(1, "0.3", "offsets in a sidecar checkpoint file beside the store (Kafka Streams <= 4.2)"),
                FeatureLevel(2, "0.4", "offsets inside the store, atomic with the data (KIP-1035)"),
            ),
        ),
    )
}


def parse_release(text: str) -> str | None:
    """A release as typed (``0.3``, ``0.3.1`` → ``0.3``) to a known release, or None."""
    parts = text.strip().split(".")
    if len(parts) < 2 or not all(part.isdigit() for part in parts[:2]):
        return None
    release = f"{int(parts[0])}.{int(parts[1])}"
    return release if release in RELEASES else None


def default_levels(release: str) -> dict[str, int]:
    """Every feature's default level at ``release`` (registry order; 0 for features not yet on)."""
    return {name: feature.default_for(release) for name, feature in REGISTRY.items()}


# -- supported ranges ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, order=True)
class SupportedRange:
    """The levels ``[min_level, max_level]`` a worker can run with; ``[0, 0]`` = does not support it."""

    min_level: int
    max_level: int

    def __contains__(self, level: object) -> bool:
        return isinstance(level, int) and self.min_level <= level <= self.max_level

    @property
    def supported(self) -> bool:
        return self.max_level > 0

    def __str__(self) -> str:
        return f"{self.min_level}-{self.max_level}"


UNSUPPORTED = SupportedRange(0, 0)


def release_pin_ranges(release: str) -> dict[str, SupportedRange]:
    """What a binary of ``release`` supports: from 0 (not finalized) to the highest level it shipped."""
    index = RELEASES.index(release)
    ranges: dict[str, SupportedRange] = {}
    for name, feature in REGISTRY.items():
        shipped = [entry.level for entry in feature.levels if RELEASES.index(entry.since) <= index]
        ranges[name] = SupportedRange(0, max(shipped)) if shipped else UNSUPPORTED
    return ranges


def worker_supported_ranges(
    *,
    assignment: str,
    follows_migration: bool,
    final_3x: bool = False,
    release: str | None = None,
    max_levels: Mapping[str, int] | None = None,
) -> dict[str, SupportedRange]:
    """The ranges a worker advertises.

    * ``follows_migration`` (a ``client_version_config`` is set): the worker follows ``Migration3.0`` and runs
      either generation, ``lease.assignment`` 0-2 — except once in ``CLIENT_VERSION_3X`` (``final_3x``), which
      KCL never leaves: 2-2;
    * a pure ``lease-count-2x`` worker runs only the 2.x generation: ``lease.assignment`` 0-1;
    * a pure ``utilization-3x`` worker runs only the 3.x generation: ``lease.assignment`` 2-2,
      ``lease.discovery`` 2-2.

    ``release`` pins the worker to what that older release supported; ``max_levels`` lowers single maxima.
    A range that ends up empty becomes ``[0, 0]`` (does not support the feature).
    """
    ranges = release_pin_ranges(release or CURRENT_RELEASE)
    limits: dict[str, tuple[int, int]] = {}
    if follows_migration:
        if final_3x:
            limits[LEASE_ASSIGNMENT] = (2, 2)
            limits[LEASE_DISCOVERY] = (2, 2)
    elif assignment == "utilization-3x":
        limits[LEASE_ASSIGNMENT] = (2, 2)
        limits[LEASE_DISCOVERY] = (2, 2)
    else:
        limits[LEASE_ASSIGNMENT] = (0, 1)
    for name, cap in (max_levels or {}).items():
        low, high = limits.get(name, (0, MAX_LEVEL))
        limits[name] = (low, min(high, cap))
    result: dict[str, SupportedRange] = {}
    for name, base in ranges.items():
        low, high = limits.get(name, (0, MAX_LEVEL))
        low, high = max(base.min_level, low), min(base.max_level, high)
        result[name] = SupportedRange(low, high) if low <= high and high > 0 else UNSUPPORTED
    return result


@dataclass(frozen=True, slots=True)
class WorkerSupport:
    """A live worker and the ranges it advertised (a feature it did not advertise counts as ``[0, 0]``)."""

    worker_id: str
    ranges: Mapping[str, SupportedRange]
    release: str | None = None

    def range_of(self, feature: str) -> SupportedRange:
        return self.ranges.get(feature, UNSUPPORTED)


def fleet_range(feature: str, workers: Sequence[WorkerSupport]) -> SupportedRange | None:
    """The levels every one of ``workers`` supports (the intersection), ``[0, 0]`` if none; None without workers."""
    if not workers:
        return None
    low = max(worker.range_of(feature).min_level for worker in workers)
    high = min(worker.range_of(feature).max_level for worker in workers)
    return SupportedRange(low, high) if low <= high and high > 0 else UNSUPPORTED


def first_unsupported(
    finalized: Mapping[str, int], ranges: Mapping[str, SupportedRange]
) -> tuple[str, int, SupportedRange] | None:
    """The first finalized (non-zero) level outside ``ranges``: ``(feature, level, range)``, or None."""
    for name in sorted(finalized):
        level = finalized[name]
        supported = ranges.get(name, UNSUPPORTED)
        if level != 0 and level not in supported:
            return name, level, supported
    return None


def admission_problem(
    finalized: Mapping[str, int], ranges: Mapping[str, SupportedRange], *, who: str = "worker"
) -> str | None:
    """Why a worker with ``ranges`` cannot run with the ``finalized`` levels (Kafka's registration check), or None.
    Levels of 0 are not finalized and admit everyone."""
    for name in sorted(finalized):
        level = finalized[name]
        if level == 0:
            continue
        supported = ranges.get(name, UNSUPPORTED)
        if level not in supported:
            return (
                f"the {who} does not support finalized version {level} of {name}. "
                f"The {who} wants a version between {supported.min_level} and {supported.max_level}, inclusive."
            )
    return None


@dataclass(frozen=True, slots=True)
class FeaturesConfig:
    """The ``[features]`` config section: what this worker advertises.

    * ``release``: pin the worker to what an older shardwise release supported (e.g. ``"0.2"``), to rehearse a
      rolling upgrade or to hold back a worker;
    * ``max_levels``: lower single maxima, as ``"name=level,name=level"`` (e.g. ``"lease.assignment=1"``).
    """

    release: str | None = None
    max_levels: str | None = None

    def __post_init__(self) -> None:
        if self.release is not None and parse_release(self.release) is None:
            raise ConfigurationError(
                f"features.release must be a shardwise release ({', '.join(RELEASES)}), got {self.release!r}"
            )
        self.parsed_max_levels()

    @property
    def pinned_release(self) -> str:
        return CURRENT_RELEASE if self.release is None else (parse_release(self.release) or CURRENT_RELEASE)

    def parsed_max_levels(self) -> dict[str, int]:
        result: dict[str, int] = {}
        if not self.max_levels:
            return result
        for part in self.max_levels.split(","):
            name, sep, raw = part.strip().partition("=")
            name = name.strip()
            if not sep or not raw.strip().isdigit():
                raise ConfigurationError(
                    f"features.max_levels must look like 'lease.assignment=1,table.layout=2', got {self.max_levels!r}"
                )
            if name not in REGISTRY:
                raise ConfigurationError(
                    f"features.max_levels names unknown feature {name!r}; known: {', '.join(REGISTRY)}"
                )
            result[name] = int(raw)
        return result


# -- Migration3.0 <-> levels -----------------------------------------------------------------------------------

_REFLECTED = (LEASE_ASSIGNMENT, LEASE_DISCOVERY)


def levels_from_client_version(version: ClientVersion) -> dict[str, int]:
    """The ``lease.assignment`` and ``lease.discovery`` levels a ``Migration3.0`` client version means."""
    if version in (ClientVersion.V3X, ClientVersion.V3X_WITH_ROLLBACK):
        return {LEASE_ASSIGNMENT: 2, LEASE_DISCOVERY: 2}
    if version is ClientVersion.UPGRADE_FROM_2X:
        return {LEASE_ASSIGNMENT: 1, LEASE_DISCOVERY: 2}
    return {LEASE_ASSIGNMENT: 1, LEASE_DISCOVERY: 1}


def client_version_for(levels: Mapping[str, int], current: ClientVersion | None) -> ClientVersion:
    """The ``Migration3.0`` client version for the proposed levels (``current`` kept when it already means them:
    ``3X`` stays ``3X``)."""
    assignment, discovery = levels.get(LEASE_ASSIGNMENT, 0), levels.get(LEASE_DISCOVERY, 0)
    if current is not None and levels_from_client_version(current) == {
        LEASE_ASSIGNMENT: assignment,
        LEASE_DISCOVERY: discovery,
    }:
        return current
    if assignment >= 2:
        return ClientVersion.V3X_WITH_ROLLBACK
    if discovery >= 2:
        return ClientVersion.UPGRADE_FROM_2X
    return ClientVersion.V2X


# -- validation ------------------------------------------------------------------------------------------------


class UpgradeType(enum.IntEnum):
    """Kafka's ``UpdateFeatures`` upgrade types."""

    UNKNOWN = 0
    UPGRADE = 1
    SAFE_DOWNGRADE = 2
    UNSAFE_DOWNGRADE = 3


@dataclass(frozen=True, slots=True)
class FeatureUpdate:
    feature: str
    level: int
    upgrade_type: UpgradeType = UpgradeType.UPGRADE


@dataclass(frozen=True, slots=True)
class UpdateContext:
    """What validation needs to know besides levels and workers.

    * ``client_version``: the ``Migration3.0`` version (None: no item);
    * ``layout_fixed``: the application's coordinator items exist, so ``table.layout`` can no longer change;
    * ``layout_choices``: the layouts the backend can create (SQLite: only 2).
    """

    client_version: ClientVersion | None = None
    layout_fixed: bool = False
    layout_choices: Collection[int] = (1, 2)


def dependency_problem(proposed: Mapping[str, int], changed: Collection[str]) -> tuple[str, int, str] | None:
    """The first dependency the ``proposed`` levels break that involves a ``changed`` feature:
    ``(feature, level, reason)`` — the reason in Kafka's words — or None."""
    for name in sorted(changed):
        level = proposed.get(name, 0)
        entry = REGISTRY[name].level(level) if name in REGISTRY else None
        for dependency, needed in sorted((entry.requires if entry else {}).items()):
            if proposed.get(dependency, 0) < needed:
                return (
                    name,
                    level,
                    f"{name} could not be set to {level} because it depends on {dependency} level {needed}",
                )
    for name in sorted(changed):
        level = proposed.get(name, 0)
        for other, other_level in sorted(proposed.items()):
            other_entry = REGISTRY[other].level(other_level) if other in REGISTRY else None
            required = other_entry.requires.get(name) if other_entry is not None else None
            if required is not None and level < required:
                return (
                    name,
                    level,
                    f"{name} could not be set to {level} because {other}={other_level} depends on {name} "
                    f"level {required}",
                )
    return None


def _feature_specific_problem(update: FeatureUpdate, current: int, context: UpdateContext) -> str | None:
    """Downgrades that would lose data (refused unless unsafe) and changes with no path at all (always refused)."""
    name, level = update.feature, update.level
    if name in _REFLECTED and level == 0 and current != 0:
        return (
            f"{name} is kept in KCL's Migration3.0 item, which has no 'off' state; there is no safe path to level 0. "
            f"Downgrade it to 1 instead."
        )
    if (
        name == LEASE_ASSIGNMENT
        and current == 2
        and level < 2
        and context.client_version is ClientVersion.V3X
        and update.upgrade_type is not UpgradeType.UNSAFE_DOWNGRADE
    ):
        return (
            "Refusing to perform the requested downgrade because it might lose data: the fleet finished its "
            "migration (CLIENT_VERSION_3X), which KCL never rolls back; leases may carry graceful-handoff state "
            "that KCL 2.x workers ignore. Workers in CLIENT_VERSION_3X stop and must be restarted. "
            "Use --unsafe to downgrade anyway."
        )
    if name == TABLE_LAYOUT and level == 0 and not context.layout_fixed:
        return (
            "Writing the features record places the application's coordinator items in a layout, which fixes "
            "table.layout; finalize table.layout=1 (legacy tables) or table.layout=2 (single table) instead."
        )
    if name == TABLE_LAYOUT and level != current:
        if context.layout_fixed and current == 2 and level < 2:
            return (
                "There is no safe path from the single-table layout back to separate tables: the coordinator and "
                "worker-metrics items cannot be moved out of the lease table while workers run."
            )
        if context.layout_fixed:
            return (
                "The application's coordinator items already live in the "
                f"{'legacy' if current == 1 else 'single-table'} layout; this release cannot move them. Only an "
                "application without coordinator items can choose its layout."
            )
        if level != 0 and level not in context.layout_choices:
            return "This backend has only the single-table layout (2)."
    return None


def validate_updates(
    finalized: Mapping[str, int],
    updates: Sequence[FeatureUpdate],
    workers: Sequence[WorkerSupport],
    context: UpdateContext | None = None,
) -> tuple[FeatureUpdate, str] | None:
    """Validate a request all-or-nothing; the first invalid update and its full reason
    ("Invalid update version <l> for feature <f>. <reason>"), or None when every update may be applied.

    Order (Kafka's KRaft order, as issue #6 lists it): unknown upgrade type, negative level, unknown feature or
    level; a level outside a live worker's range (naming the worker; with an unsafe downgrade this is allowed:
    those workers stop); a downgrade without the downgrade flag; a "downgrade" to a higher level; dependencies
    of the proposed set (so dependent features change together); lossy downgrades and changes with no path.
    """
    context = context or UpdateContext()
    proposed = dict(finalized.items())
    for update in updates:
        proposed[update.feature] = update.level
    changed = [update.feature for update in updates]

    def invalid(update: FeatureUpdate, reason: str) -> tuple[FeatureUpdate, str]:
        return update, f"Invalid update version {update.level} for feature {update.feature}. {reason}"

    for update in updates:
        name, level = update.feature, update.level
        if update.upgrade_type is UpgradeType.UNKNOWN:
            return invalid(update, "shardwise does not support the given upgrade type.")
        if level < 0:
            return invalid(update, "A feature version cannot be less than 0.")
        feature = REGISTRY.get(name)
        if feature is None:
            known = ", ".join(REGISTRY)
            return invalid(update, f"This release of shardwise does not know this feature (it knows {known}).")
        if level > feature.max_level:
            return invalid(
                update, f"This release of shardwise only knows versions 0-{feature.max_level} of this feature."
            )
        if update.upgrade_type is not UpgradeType.UNSAFE_DOWNGRADE:
            for worker in sorted(workers, key=lambda w: w.worker_id):
                supported = worker.range_of(name)
                if level not in supported:
                    if not supported.supported:
                        return invalid(update, f"Worker {worker.worker_id} does not support this feature.")
                    return invalid(update, f"Worker {worker.worker_id} only supports versions {supported}")
        current = finalized.get(name, 0)
        if level < current and update.upgrade_type is UpgradeType.UPGRADE:
            return invalid(
                update,
                "Can't downgrade the version of this feature without setting the upgrade type to either safe or "
                "unsafe downgrade.",
            )
        if level > current and update.upgrade_type in (UpgradeType.SAFE_DOWNGRADE, UpgradeType.UNSAFE_DOWNGRADE):
            return invalid(update, "Can't downgrade to a newer version.")
    problem = dependency_problem(proposed, changed)
    if problem is not None:
        name, level, reason = problem
        update = next(u for u in updates if u.feature == name)
        return invalid(update, reason + ".")
    for update in updates:
        refusal = _feature_specific_problem(update, finalized.get(update.feature, 0), context)
        if refusal is not None:
            return invalid(update, refusal)
    return None


def implied_levels(
    finalized: Mapping[str, int], proposed: Mapping[str, int], current: ClientVersion | None
) -> dict[str, int]:
    """The reflected features a request changes without naming them: ``lease.assignment`` and
    ``lease.discovery`` are one ``Migration3.0`` item, so creating it (from nothing finalized) sets both."""
    if not any(name in proposed for name in _REFLECTED):
        return {}
    merged = {**finalized, **proposed}
    if not (merged.get(LEASE_ASSIGNMENT, 0) or merged.get(LEASE_DISCOVERY, 0)):
        return {}
    levels = levels_from_client_version(client_version_for(merged, current))
    return {name: level for name, level in levels.items() if name not in proposed and level != finalized.get(name, 0)}


def workers_out_of_range(levels: Mapping[str, int], workers: Sequence[WorkerSupport]) -> list[tuple[str, str, int]]:
    """``(worker, feature, level)`` for every live worker that cannot run the given non-zero levels."""
    result = []
    for worker in workers:
        for name, level in sorted(levels.items()):
            if level != 0 and level not in worker.range_of(name):
                result.append((worker.worker_id, name, level))
    return result
