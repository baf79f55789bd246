"""Describe and change an application's feature versions: the library behind ``shardwise features``.

The operations and their wording follow Kafka's ``kafka-features`` tool (KIP-584/778/1022):

* :func:`describe` — per feature, the levels the live fleet supports (the intersection of every live worker's
  advertised range; this release's own range when no worker advertises), the finalized level and the epoch;
* :func:`update` — ``upgrade`` / ``downgrade`` / ``disable`` one or more features, or every feature to a
  release's defaults, all-or-nothing, validated in Kafka's order (:func:`~shardwise.versions.features.
  validate_updates`), optionally as a dry run; written with one conditional transaction on the epoch read;
* :func:`version_mapping` and :func:`feature_dependencies` — offline, from the registry.

Expected outcomes (validation failures, lost races, missing tables, backend errors) are results with
``ok = False``; only bad arguments raise (:class:`~shardwise.errors.ConfigurationError`).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from shardwise.backends import Backend, BackendConfig, Capabilities, open_backend
from shardwise.errors import ConfigurationError, ShardwiseError
from shardwise.tables.items import Layout
from shardwise.versions.feature_store import (
    DEFAULT_ACTIVE_WINDOW_S,
    FeatureChange,
    FeatureStore,
    FinalizedFeatures,
)
from shardwise.versions.features import (
    CURRENT_RELEASE,
    MAX_LEVEL,
    REGISTRY,
    RELEASES,
    TABLE_LAYOUT,
    FeatureUpdate,
    SupportedRange,
    UpdateContext,
    UpgradeType,
    WorkerSupport,
    default_levels,
    fleet_range,
    implied_levels,
    parse_release,
    release_pin_ranges,
    validate_updates,
    workers_out_of_range,
)

__all__ = [
    "DescribeResult",
    "FeatureDescription",
    "FeaturesTarget",
    "Operation",
    "UpdateOutcome",
    "UpdateResult",
    "describe",
    "feature_dependencies",
    "parse_feature_level",
    "release_updates",
    "update",
    "version_mapping",
]

Operation = Literal["upgrade", "downgrade", "disable"]

_ALL_FAILED = "The update failed for all features since the following feature had an error: "


@dataclass(frozen=True, slots=True)
class FeaturesTarget:
    """The application whose features are managed, and where its tables are."""

    application_name: str
    lease_table_name: str | None = None
    coordinator_table_name: str | None = None
    worker_metrics_table_name: str | None = None

    def __post_init__(self) -> None:
        if not self.application_name:
            raise ConfigurationError("an application name is required (--application-name)")

    @property
    def lease_table(self) -> str:
        return self.lease_table_name or self.application_name


# -- results --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FeatureDescription:
    name: str
    supported: SupportedRange
    finalized: int
    epoch: int
    source: str

    def line(self) -> str:
        """Kafka's describe line (fields separated by a tab)."""
        epoch = "-" if self.epoch < 0 else str(self.epoch)
        return (
            f"Feature: {self.name}\tSupportedMinVersion: {self.supported.min_level}\t"
            f"SupportedMaxVersion: {self.supported.max_level}\tFinalizedVersionLevel: {self.finalized}\tEpoch: {epoch}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "feature": self.name,
            "supported_min_version": self.supported.min_level,
            "supported_max_version": self.supported.max_level,
            "finalized_version_level": self.finalized,
            "epoch": None if self.epoch < 0 else self.epoch,
            "source": self.source,
        }


@dataclass(frozen=True, slots=True)
class DescribeResult:
    ok: bool
    features: tuple[FeatureDescription, ...] = ()
    workers: tuple[WorkerSupport, ...] = ()
    epoch: int = -1
    client_version: str | None = None
    layout: str | None = None
    history: tuple[FeatureChange, ...] = ()
    error: str | None = None

    @property
    def exit_status(self) -> int:
        return 0 if self.ok else 1

    def lines(self) -> list[str]:
        return [feature.line() for feature in self.features]

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "error": self.error,
            "epoch": None if self.epoch < 0 else self.epoch,
            "client_version": self.client_version,
            "layout": self.layout,
            "features": [feature.to_dict() for feature in self.features],
            "workers": [
                {
                    "worker_id": worker.worker_id,
                    "release": worker.release,
                    "supported": {
                        name: {"min": r.min_level, "max": r.max_level} for name, r in sorted(worker.ranges.items())
                    },
                }
                for worker in self.workers
            ],
            "history": [change.to_dict() for change in self.history],
        }


@dataclass(frozen=True, slots=True)
class UpdateOutcome:
    feature: str
    level: int
    ok: bool
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"feature": self.feature, "level": self.level, "ok": self.ok, "message": self.message}


@dataclass(frozen=True, slots=True)
class UpdateResult:
    """The outcome of one request: one sentence per feature (sorted by name), in Kafka's words."""

    operation: Operation
    dry_run: bool
    outcomes: tuple[UpdateOutcome, ...]
    error: str | None = None
    epoch_before: int = -1
    epoch_after: int = -1
    warnings: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.error is None and all(outcome.ok for outcome in self.outcomes)

    @property
    def failed(self) -> int:
        return sum(1 for outcome in self.outcomes if not outcome.ok)

    @property
    def exit_status(self) -> int:
        return 0 if self.ok else 1

    @property
    def trailer(self) -> str | None:
        """Kafka's closing line when anything failed."""
        if self.ok:
            return None
        return f"{self.failed} out of {len(self.outcomes)} operation(s) failed."

    def lines(self) -> list[str]:
        return [outcome.message for outcome in self.outcomes]

    def to_dict(self) -> dict[str, Any]:
        return {
            "operation": self.operation,
            "dry_run": self.dry_run,
            "ok": self.ok,
            "error": self.error,
            "epoch_before": None if self.epoch_before < 0 else self.epoch_before,
            "epoch_after": None if self.epoch_after < 0 else self.epoch_after,
            "outcomes": [outcome.to_dict() for outcome in self.outcomes],
            "warnings": list(self.warnings),
        }


# -- parsing --------------------------------------------------------------------------------------------------


def parse_feature_level(text: str) -> tuple[str, int]:
    """``name=level`` as Kafka's tool parses it (ConfigurationError with its message otherwise)."""
    if "=" not in text:
        raise ConfigurationError(f"Can't parse feature=level string {text}: equals sign not found.")
    name, _, raw = text.partition("=")
    name, raw = name.strip(), raw.strip()
    try:
        level = int(raw)
    except ValueError:
        raise ConfigurationError(
            f"Can't parse feature=level string {text}: unable to parse {raw} as a short."
        ) from None
    if not -32768 <= level <= MAX_LEVEL:
        raise ConfigurationError(f"Can't parse feature=level string {text}: unable to parse {raw} as a short.")
    return name, level


def _unknown_release(text: str) -> ConfigurationError:
    return ConfigurationError(f"Unknown release version {text}. Supported release versions are {', '.join(RELEASES)}")


def release_updates(operation: Operation, release_text: str) -> dict[str, int]:
    """Every feature to ``release``'s default; on upgrade, features whose default is 0 are left out."""
    release = parse_release(release_text)
    if release is None:
        raise _unknown_release(release_text)
    levels = default_levels(release)
    if operation == "upgrade":
        levels = {name: level for name, level in levels.items() if level != 0}
    return levels


def version_mapping(release_text: str | None = None) -> list[str]:
    """``<feature>=<level>`` for every feature at ``release`` (default: this release), in registry order."""
    release = CURRENT_RELEASE if release_text is None else parse_release(release_text)
    if release is None:
        raise ConfigurationError(
            f"Unknown release version '{release_text}'. Supported versions are: {RELEASES[0]} to {RELEASES[-1]}"
        )
    return [f"{name}={level}" for name, level in default_levels(release).items()]


def feature_dependencies(specs: Sequence[str]) -> list[str]:
    """The dependencies of each ``name=level``, in Kafka's wording."""
    if not specs:
        raise ConfigurationError("You must specify at least one feature with --feature")
    lines: list[str] = []
    seen: set[str] = set()
    for spec in specs:
        name, level = parse_feature_level(spec)
        if name in seen:
            raise ConfigurationError(f"Feature {name} was specified more than once.")
        seen.add(name)
        feature = REGISTRY.get(name)
        if feature is None:
            raise ConfigurationError(f"Unknown feature: {name}")
        entry = feature.level(level)
        if entry is None:
            if level == 0:
                lines.append(f"{name}={level} has no dependencies.")
                continue
            raise ConfigurationError(f"No feature:{name} with feature level {level}")
        if not entry.requires:
            lines.append(f"{name}={level} has no dependencies.")
        else:
            lines.append(f"{name}={level} requires:")
            lines.extend(f"    {dependency}={needed}" for dependency, needed in sorted(entry.requires.items()))
    return lines


# -- opening --------------------------------------------------------------------------------------------------


#: ``table.layout``'s level for each layout.
_LAYOUT_LEVEL: dict[Layout, int] = {"legacy": 1, "single-table": 2}


@dataclass(slots=True)
class _Opened:
    store: FeatureStore
    layout: Layout
    capabilities: Capabilities

    @property
    def layout_choices(self) -> tuple[int, ...]:
        """The ``table.layout`` levels the backend offers."""
        return tuple(sorted(_LAYOUT_LEVEL[layout] for layout in self.capabilities.layouts))


def _backend(config: BackendConfig, target: FeaturesTarget) -> Backend:
    """The backend of ``config``, once the target's table names suit it and its storage exists (an embedded
    backend's database file is not created by a read)."""
    backend = open_backend(config)
    if not backend.capabilities.legacy_layout and (target.coordinator_table_name or target.worker_metrics_table_name):
        raise ConfigurationError(
            "--coordinator-state-table-name / --worker-metrics-table-name name DynamoDB tables of the legacy "
            "layout; the embedded (SQLite) backend has only the single-table layout: drop them or pass "
            "--backend aws"
        )
    admin = backend.table_admin()
    if not admin.database_exists():
        raise ConfigurationError(
            f"no SQLite database {admin.database_file}: start a worker first, or pass the database with --db"
        )
    return backend


def _open(target: FeaturesTarget, backend: Backend, layout: Layout | None = None) -> _Opened:
    store = backend.open_lease_store(target.lease_table)
    tables = backend.open_coordinator_tables(
        store,
        target.application_name,
        layout=layout,
        coordinator_table_name=target.coordinator_table_name,
        worker_metrics_table_name=target.worker_metrics_table_name,
    )
    return _Opened(FeatureStore(tables.coordinator, tables.worker_metrics), tables.layout, backend.capabilities)


def _own_ranges() -> dict[str, SupportedRange]:
    return release_pin_ranges(CURRENT_RELEASE)


# -- describe -------------------------------------------------------------------------------------------------


def describe(
    target: FeaturesTarget,
    backend: BackendConfig,
    *,
    active_window_s: float = DEFAULT_ACTIVE_WINDOW_S,
    now_epoch_s: Callable[[], float] = time.time,
) -> DescribeResult:
    """Read the finalized levels and the live workers' ranges; one line per feature of this release's registry
    (and any finalized feature it does not know), sorted by name."""
    try:
        opened = _open(target, _backend(backend, target))
        finalized = opened.store.read()
        workers = opened.store.workers(now_epoch_s(), active_window_s)
    except ConfigurationError:
        raise
    except ShardwiseError as exc:
        return DescribeResult(False, error=f"Could not describe the features of {target.application_name}: {exc}")
    own = _own_ranges()
    names = sorted(set(REGISTRY) | set(finalized.finalized()))
    features = []
    for name in names:
        supported = fleet_range(name, workers)
        if supported is None:
            supported = own.get(name, SupportedRange(0, 0))
        features.append(
            FeatureDescription(
                name, supported, finalized.levels.get(name, 0), finalized.epoch, finalized.sources.get(name, "")
            )
        )
    return DescribeResult(
        True,
        tuple(features),
        tuple(workers),
        finalized.epoch,
        None if finalized.migration is None else finalized.migration.client_version,
        finalized.layout,
        finalized.history,
    )


# -- update ---------------------------------------------------------------------------------------------------


def _verb(operation: Operation) -> tuple[str, str]:
    return {
        "upgrade": ("upgrade", "upgraded"),
        "downgrade": ("downgrade", "downgraded"),
        "disable": ("disable", "disabled"),
    }[operation]


def _success(operation: Operation, name: str, level: int, dry_run: bool) -> str:
    _, past = _verb(operation)
    if operation == "disable":
        return f"{name} can be disabled." if dry_run else f"{name} was disabled."
    return f"{name} can be {past} to {level}." if dry_run else f"{name} was {past} to {level}."


def _failure(operation: Operation, name: str, level: int, dry_run: bool, message: str) -> str:
    verb, _ = _verb(operation)
    prefix = "Can not" if dry_run else "Could not"
    if operation == "disable":
        return f"{prefix} disable {name}. {message}"
    return f"{prefix} {verb} {name} to {level}. {message}"


def default_operator() -> str:
    return f"shardwise-features@{socket.gethostname()}:{os.getpid()}"


def update(
    target: FeaturesTarget,
    backend: BackendConfig,
    operation: Operation,
    levels: Mapping[str, int],
    *,
    unsafe: bool = False,
    dry_run: bool = False,
    modified_by: str | None = None,
    from_release: bool = False,
    active_window_s: float = DEFAULT_ACTIVE_WINDOW_S,
    now_epoch_s: Callable[[], float] = time.time,
) -> UpdateResult:
    """Apply ``levels`` (feature → level; 0 disables) all-or-nothing. ``operation`` decides the upgrade type
    (``upgrade``: UPGRADE; ``downgrade``/``disable``: SAFE_DOWNGRADE, or UNSAFE_DOWNGRADE with ``unsafe``).

    ``from_release``: the levels are a release's defaults (``--release-version``). ``table.layout`` is then left
    out once the application's layout is chosen — this release cannot move it, and a release's default layout
    only matters to new applications — with a warning, instead of failing the whole request."""
    if not levels:
        raise ConfigurationError(f"You must specify at least one feature to {operation}")
    if operation == "upgrade" and unsafe:
        raise ConfigurationError("--unsafe applies to downgrade and disable only")
    if operation == "upgrade":
        kind = UpgradeType.UPGRADE
    else:
        kind = UpgradeType.UNSAFE_DOWNGRADE if unsafe else UpgradeType.SAFE_DOWNGRADE
    requested = [FeatureUpdate(name, level, kind) for name, level in sorted(levels.items())]

    def all_failed(message: str, epoch: int = -1) -> UpdateResult:
        outcomes = tuple(
            UpdateOutcome(u.feature, u.level, False, _failure(operation, u.feature, u.level, dry_run, message))
            for u in requested
        )
        return UpdateResult(operation, dry_run, outcomes, message, epoch, epoch)

    bootstrap_layout: Layout | None = None
    wanted_layout = levels.get(TABLE_LAYOUT)
    try:
        opened_backend = _backend(backend, target)
        opened = _open(target, opened_backend)
        finalized = opened.store.read()
        if wanted_layout in (1, 2) and finalized.layout is None and len(opened.layout_choices) > 1:
            bootstrap_layout = "legacy" if wanted_layout == 1 else "single-table"
            if bootstrap_layout != opened.layout:
                opened = _open(target, opened_backend, bootstrap_layout)
                finalized = opened.store.read()
        workers = opened.store.workers(now_epoch_s(), active_window_s)
    except ConfigurationError:
        raise
    except ShardwiseError as exc:
        return all_failed(f"{_ALL_FAILED}could not read the features of {target.application_name}: {exc}")
    notes: tuple[str, ...] = ()
    current_layout = finalized.levels.get(TABLE_LAYOUT, 0)
    if (
        from_release
        and finalized.layout is not None
        and TABLE_LAYOUT in levels
        and levels[TABLE_LAYOUT] != current_layout
        and len(levels) > 1
    ):
        notes = (
            f"table.layout stays at {current_layout}: the application's layout is chosen and this release cannot "
            f"move it (the release's default, {levels[TABLE_LAYOUT]}, applies to new applications).",
        )
        levels = {name: level for name, level in levels.items() if name != TABLE_LAYOUT}
        requested = [u for u in requested if u.feature != TABLE_LAYOUT]
    context = UpdateContext(
        client_version=finalized.client_version,
        layout_fixed=finalized.layout is not None,
        layout_choices=opened.layout_choices,
    )
    implied = implied_levels(finalized.levels, levels, finalized.client_version)
    checked = [
        *requested,
        *(FeatureUpdate(name, level, UpgradeType.UPGRADE) for name, level in sorted(implied.items())),
    ]
    # The request must be valid on its own (its dependencies included); what it implies through the shared
    # Migration3.0 item must then be valid too (e.g. runnable by every live worker).
    problem = validate_updates(finalized.levels, requested, workers, context)
    if problem is None and implied:
        problem = validate_updates(finalized.levels, checked, workers, context)
    if problem is not None:
        return all_failed(_ALL_FAILED + problem[1], finalized.epoch)
    proposed = {u.feature: u.level for u in checked}
    warnings = (
        notes
        + tuple(
            f"{name} is finalized at {level} too: lease.assignment and lease.discovery are one Migration3.0 item."
            for name, level in sorted(implied.items())
        )
        + tuple(
            f"Worker {worker} only supports versions {_range_text(workers, worker, name)} of {name}: it will stop "
            f"processing (cleanly) when it sees level {level}; restart it on a release that supports it."
            for worker, name, level in workers_out_of_range(proposed, workers)
        )
    )
    if not dry_run:
        if not opened.store.coordinator.exists():
            if opened.layout == "legacy":
                try:
                    opened.store.coordinator.create_if_not_exists()
                except ShardwiseError as exc:
                    return all_failed(f"{_ALL_FAILED}could not create {opened.store.coordinator.table_name}: {exc}")
            else:
                return all_failed(
                    f"{_ALL_FAILED}the lease table {opened.store.coordinator.table_name} does not exist; start a "
                    "worker of the application first (it creates the table)",
                    finalized.epoch,
                )
        try:
            written = opened.store.apply(finalized, proposed, modified_by or default_operator())
        except ShardwiseError as exc:
            return all_failed(f"{_ALL_FAILED}the write failed: {exc}", finalized.epoch)
        if written is None:
            return all_failed(
                f"{_ALL_FAILED}the finalized features changed while this update was being validated (epoch "
                f"{finalized.epoch if finalized.epoch >= 0 else '-'} is no longer current, or Migration3.0 changed); "
                "nothing was written. Run `shardwise features describe` and retry.",
                finalized.epoch,
            )
        epoch_after = written.epoch
    else:
        epoch_after = finalized.epoch
    outcomes = tuple(
        UpdateOutcome(u.feature, u.level, True, _success(operation, u.feature, u.level, dry_run)) for u in requested
    )
    return UpdateResult(operation, dry_run, outcomes, None, finalized.epoch, epoch_after, warnings)


def _range_text(workers: Sequence[WorkerSupport], worker_id: str, feature: str) -> str:
    for worker in workers:
        if worker.worker_id == worker_id:
            return str(worker.range_of(feature))
    return "0-0"


def read_finalized(target: FeaturesTarget, backend: BackendConfig) -> FinalizedFeatures:
    """The finalized levels (raises ShardwiseError on backend faults)."""
    return _open(target, _backend(backend, target)).store.read()
