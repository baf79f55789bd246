"""The features record and advertisements on the embedded backend, and the rules the migration leader reads."""

from __future__ import annotations

from pathlib import Path

from shardwise.backends import open_coordinator_tables
from shardwise.backends.sqlite.leases import SQLiteLeaseStore
from shardwise.versions.feature_store import (
    FEATURES_KEY,
    FeatureStore,
    holds_assignment,
)
from shardwise.versions.features import SupportedRange, worker_supported_ranges
from shardwise.versions.migration_rules import ReadinessInputs
from shardwise.versions.migration_state import ClientVersion, MigrationState, MigrationStore


def _store(tmp_path: Path, clock: list[int]) -> FeatureStore:
    leases = SQLiteLeaseStore(str(tmp_path / "f.db"), "app")
    leases.create_table_if_not_exists()
    tables = open_coordinator_tables(leases, "app")
    return FeatureStore(tables.coordinator, tables.worker_metrics, clock_ms=lambda: clock[0])


def test_apply_is_conditional_on_the_epoch_and_writes_migration_in_the_same_transaction(tmp_path: Path) -> None:
    clock = [1_000]
    store = _store(tmp_path, clock)
    empty = store.read()
    assert empty.epoch == -1 and empty.finalized() == {}
    first = store.apply(empty, {"lease.discovery": 2, "lease.assignment": 1}, "op-1")
    assert first is not None and first.epoch == 1
    migration = MigrationStore(store.coordinator).read()
    assert migration is not None and migration.version is ClientVersion.UPGRADE_FROM_2X
    # A second writer that read the empty state loses, and nothing of it is written.
    assert store.apply(empty, {"lease.discovery": 1, "lease.assignment": 1}, "op-2") is None
    now = store.read()
    assert now.epoch == 1 and now.levels["lease.discovery"] == 2 and now.levels["table.layout"] == 2
    clock[0] = 2_000
    second = store.apply(now, {"lease.assignment": 2}, "op-3")
    assert second is not None and second.epoch == 2
    assert [change.epoch for change in store.read().history] == [2, 1]
    assert store.read().history[0].changes == {"lease.assignment": (1, 2)}
    migration = MigrationStore(store.coordinator).read()
    assert migration is not None and migration.version is ClientVersion.V3X_WITH_ROLLBACK
    assert migration.history[0].client_version == ClientVersion.UPGRADE_FROM_2X.value


def test_a_kcl_side_change_of_migration_shows_at_once(tmp_path: Path) -> None:
    store = _store(tmp_path, [1_000])
    MigrationStore(store.coordinator).create(ClientVersion.V3X, "java-worker")
    view = store.read()
    assert view.levels["lease.assignment"] == 2 and view.levels["lease.discovery"] == 2
    assert view.sources["lease.assignment"] == "Migration3.0 (CLIENT_VERSION_3X)"


def test_advertisements_are_live_for_the_window_and_withdrawn(tmp_path: Path) -> None:
    store = _store(tmp_path, [1_000])
    ranges = worker_supported_ranges(assignment="lease-count-2x", follows_migration=True, release="0.2")
    store.advertise("w1", ranges, "0.2", 100.0)
    [worker] = store.workers(now_epoch_s=150.0)
    assert worker.worker_id == "w1" and worker.release == "0.2"
    assert worker.range_of("lease.assignment") == SupportedRange(0, 1)
    assert store.workers(now_epoch_s=161.0) == []
    store.withdraw("w1")
    assert store.workers(now_epoch_s=100.0) == []


def test_an_operators_level_1_holds_the_automatic_flip_until_kcl_changes_migration_again(tmp_path: Path) -> None:
    clock = [1_000]
    store = _store(tmp_path, clock)
    written = store.apply(store.read(), {"lease.discovery": 2, "lease.assignment": 1}, "op")
    assert written is not None and written.migration is not None
    record = store.coordinator.get(FEATURES_KEY)
    assert record is not None
    assert holds_assignment(record.attributes, written.migration) == "op"
    later = MigrationState(ClientVersion.UPGRADE_FROM_2X.value, "KclMigrationTool-rollforward", 5_000)
    assert holds_assignment(record.attributes, later) is None
    assert holds_assignment(None, written.migration) is None


def test_readiness_waits_for_workers_that_cannot_run_utilization_assignment() -> None:
    ready = ReadinessInputs(True, frozenset({"w1"}), frozenset({"w1"}))
    assert ready.ready
    pinned = ReadinessInputs(True, frozenset({"w1"}), frozenset({"w1"}), frozenset({"w2"}))
    assert not pinned.ready
