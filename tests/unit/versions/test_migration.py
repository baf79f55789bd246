"""The worker side of the KCL 2.x → 3.x fleet migration (kcl-protocol.md §4, §10.3).

Three layers: the pure state table, behaviours and readiness decision; the :class:`MigrationCoordinator` with a
fake host and a fake clock against a real SQLite ``Migration3.0`` item; and small fleets of in-process
:class:`Worker` s on one SQLite file with second-scale timings, whose coordination switches at runtime when the
item changes (written by the readiness monitor, or by someone else as AWS's KclMigrationTool.py would).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from shardwise.assignment.model import WorkerMetricStats, metrics_to_attributes
from shardwise.assignment.taker import TakerConfig
from shardwise.assignment.utilization import AssignmentConfig
from shardwise.backends.sqlite.items import SQLiteItemTable, open_sqlite_item_tables
from shardwise.backends.sqlite.leases import SQLiteLeaseStore
from shardwise.backends.sqlite.stream import LocalStreamStore
from shardwise.checkpoint.sequence import TRIM_HORIZON
from shardwise.cli import run as run_cli
from shardwise.cli.main import cli
from shardwise.config import build_config
from shardwise.errors import ConfigurationError, DependencyError, InvalidStateError
from shardwise.leases.model import Lease
from shardwise.leasing.assigner import LeaseAssignmentManager
from shardwise.leasing.shard_sync import InitialPosition
from shardwise.lifecycle.consumer import ConsumerConfig
from shardwise.metrics.sink import InMemoryMetricsSink
from shardwise.processor import BaseRecordProcessor, ProcessRecordsInput
from shardwise.versions.migration import MigrationCoordinator, ReadinessProbe
from shardwise.versions.migration_rules import (
    CLIENT_VERSION_CONFIGS,
    OPERATION,
    ClientVersionConfig,
    MigrationConfig,
    MigrationStep,
    ReadinessInputs,
    Stabilizer,
    StateBehaviour,
    behaviour,
    initial_state,
    is_expected_transition,
    live_lease_owners,
)
from shardwise.versions.migration_state import ClientVersion, MigrationState, MigrationStore
from shardwise.worker import CoordinationConfig, Worker, WorkerConfig
from shardwise.worker.migration import MigrationRunner
from shardwise.worker_metrics import WorkerMetricsConfig

MS = 1_000_000
UPGRADE = ClientVersion.UPGRADE_FROM_2X
V2X = ClientVersion.V2X
V3XWR = ClientVersion.V3X_WITH_ROLLBACK
V3X = ClientVersion.V3X
ROLLBACK_TOOL = "KclMigrationTool-rollback"
ROLLFORWARD_TOOL = "KclMigrationTool-rollforward"


class FakeClock:
    """A monotonic nanosecond clock moved by hand (well above 0, like ``time.monotonic_ns``)."""

    def __init__(self, start_ns: int = 5_000_000 * MS) -> None:
        self.now = start_ns

    def __call__(self) -> int:
        return self.now

    def advance_ms(self, ms: int) -> None:
        self.now += ms * MS


def key(n: int) -> str:
    return f"shardId-{n:012d}"


# -- the state table (§4.1) ---------------------------------------------------------------------------------

INITIAL_STATE_TABLE: list[tuple[ClientVersionConfig, ClientVersion | None, ClientVersion, bool]] = [
    ("compatible-with-2x", None, UPGRADE, True),
    ("compatible-with-2x", V3XWR, V3XWR, False),
    ("compatible-with-2x", V2X, V2X, False),
    ("compatible-with-2x", UPGRADE, UPGRADE, False),
    ("compatible-with-2x", V3X, V3X, False),
    ("3x", None, V3X, True),
    ("3x", V3XWR, V3X, True),
    ("3x", V2X, V2X, False),  # sticky: a rolled-back fleet stays rolled back until the tool rolls forward
    ("3x", UPGRADE, UPGRADE, False),
    ("3x", V3X, V3X, False),
]


@pytest.mark.parametrize(("config", "persisted", "expected", "write"), INITIAL_STATE_TABLE)
def test_initial_state_follows_kcls_table(
    config: ClientVersionConfig, persisted: ClientVersion | None, expected: ClientVersion, write: bool
) -> None:
    assert initial_state(config, persisted) == (expected, write)


def test_the_table_covers_every_config_and_persisted_version() -> None:
    covered = {(config, persisted) for config, persisted, _, _ in INITIAL_STATE_TABLE}
    persisted_values = [None, *(v for v in ClientVersion if v is not ClientVersion.INIT)]
    assert covered == {(c, p) for c in CLIENT_VERSION_CONFIGS for p in persisted_values}


def test_initial_state_rejects_a_persisted_init_and_an_unknown_config() -> None:
    with pytest.raises(InvalidStateError, match="CLIENT_VERSION_INIT"):
        initial_state("3x", ClientVersion.INIT)
    with pytest.raises(ConfigurationError, match="client_version_config"):
        initial_state("2x", None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        (UPGRADE, StateBehaviour("lease-count-2x", True, True, False, True, True)),
        (V3XWR, StateBehaviour("utilization-3x", True, False, False, False, True)),
        (V2X, StateBehaviour("lease-count-2x", False, False, False, False, True)),
        (V3X, StateBehaviour("utilization-3x", True, True, True, False, False)),
    ],
)
def test_behaviour_per_state(version: ClientVersion, expected: StateBehaviour) -> None:
    assert behaviour(version) == expected
    assert behaviour(version).leader_decider == ("lock" if expected.assignment == "utilization-3x" else "deterministic")


def test_only_kcls_transitions_are_followed() -> None:
    # KCL's, plus 2X -> 3X_WITH_ROLLBACK: `shardwise features upgrade` of lease.assignment and lease.discovery at once,
    # and 3X_WITH_ROLLBACK -> UPGRADE_FROM_2X: `shardwise features downgrade` of lease.assignment alone.
    expected = {
        (UPGRADE, V3XWR),
        (UPGRADE, V2X),
        (V3XWR, V2X),
        (V3XWR, V3X),
        (V3XWR, UPGRADE),
        (V2X, UPGRADE),
        (V2X, V3XWR),
    }
    versions = [UPGRADE, V3XWR, V2X, V3X]
    for current in versions:
        for new in versions:
            if new is not current:
                assert is_expected_transition(current, new) == ((current, new) in expected), (current, new)


def test_migration_config_is_validated() -> None:
    assert MigrationConfig().stabilization_period_ms == 600_000
    with pytest.raises(ConfigurationError, match="client_version_poll_interval_ms"):
        MigrationConfig(client_version_poll_interval_ms=0)
    with pytest.raises(ConfigurationError, match="client_version_poll_jitter_ms"):
        MigrationConfig(client_version_poll_jitter_ms=-1)
    with pytest.raises(ConfigurationError, match="stabilization_period_ms"):
        MigrationConfig(stabilization_period_ms=True)
    with pytest.raises(ConfigurationError, match="client_version_config"):
        WorkerConfig("app", "stream", client_version_config="2x")  # type: ignore[arg-type]


def test_config_file_section_and_run_flag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    worker_config, _ = build_config(
        {
            "application_name": "app",
            "stream_name": "s",
            "client_version_config": "compatible-with-2x",
            "migration": {"stabilization_period_ms": 1_000, "client_version_poll_interval_ms": 5_000},
        }
    )
    assert worker_config.client_version_config == "compatible-with-2x"
    assert worker_config.migration == MigrationConfig(
        stabilization_period_ms=1_000, client_version_poll_interval_ms=5_000
    )
    with pytest.raises(ConfigurationError, match=r"migration\.stabilization_period_ms"):
        build_config({"application_name": "a", "stream_name": "s", "migration": {"stabilization_period_ms": "x"}})
    assert build_config({"application_name": "a", "stream_name": "s"})[0].client_version_config is None

    seen: list[WorkerConfig] = []

    class CapturingWorker:
        def __init__(self, config: WorkerConfig, **_: object) -> None:
            seen.append(config)
            self.worker_id = config.worker_id
            self.stop_reason = None

        def run(self) -> None:
            return None

    monkeypatch.setattr(run_cli, "Worker", CapturingWorker)
    args = ["run", "shardwise.processor:BaseRecordProcessor", "--app", "app", "--stream", "s"]
    args += ["--db", str(tmp_path / "cli.db"), "--client-version-config", "3x"]
    args += ["--set", "migration.readiness_check_interval_ms=1000"]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert seen[0].client_version_config == "3x" and seen[0].migration.readiness_check_interval_ms == 1_000
    assert "--client-version-config" in CliRunner().invoke(cli, ["run", "--help"]).output


# -- readiness (§4.3, minus KCL's traps) ---------------------------------------------------------------------


def test_ready_when_the_index_is_active_and_every_lease_owner_reports_metrics() -> None:
    ready = ReadinessInputs(True, frozenset({"a", "b"}), frozenset({"a", "b"}))
    assert ready.ready and ready.worker_metrics_ready and not ready.missing_metrics


def test_more_workers_than_leases_is_ready() -> None:
    inputs = ReadinessInputs(True, frozenset({"a"}), frozenset({"a", "idle-1", "idle-2"}))
    assert inputs.ready


def test_a_lease_owner_without_metrics_blocks() -> None:
    inputs = ReadinessInputs(True, frozenset({"a", "old-binary"}), frozenset({"a"}))
    assert not inputs.ready and not inputs.worker_metrics_ready
    assert inputs.missing_metrics == {"old-binary"}


def test_an_inactive_index_blocks() -> None:
    inputs = ReadinessInputs(False, frozenset({"a"}), frozenset({"a"}))
    assert inputs.worker_metrics_ready and not inputs.ready


def test_unowned_and_expired_leases_have_no_owner_to_wait_for() -> None:
    leases = [
        Lease(key(0), TRIM_HORIZON, lease_owner="a"),
        Lease(key(1), TRIM_HORIZON),  # unowned: ignored (KCL would block on it)
        Lease(key(2), TRIM_HORIZON, lease_owner="dead"),  # expired: its owner is presumed dead
    ]
    assert live_lease_owners(leases, {key(2)}) == {"a"}


def test_stabilizer_fires_after_the_period_of_continuous_readiness() -> None:
    clock = FakeClock()
    stabilizer = Stabilizer(10_000, clock)
    assert not stabilizer.update(True)
    clock.advance_ms(9_999)
    assert not stabilizer.update(True)
    clock.advance_ms(1)
    assert stabilizer.update(True)


def test_stabilizer_restarts_on_a_false_reading_and_on_reset() -> None:
    clock = FakeClock()
    stabilizer = Stabilizer(10_000, clock)
    stabilizer.update(True)
    clock.advance_ms(8_000)
    assert not stabilizer.update(False)
    assert stabilizer.ready_since_ns is None
    stabilizer.update(True)
    clock.advance_ms(8_000)
    assert not stabilizer.update(True)
    stabilizer.reset()  # e.g. leadership lost
    clock.advance_ms(8_000)
    assert not stabilizer.update(True)
    clock.advance_ms(10_000)
    assert stabilizer.update(True)


def test_a_zero_period_fires_on_the_first_ready_reading() -> None:
    assert Stabilizer(0, FakeClock()).update(True)
    with pytest.raises(ConfigurationError):
        Stabilizer(-1, FakeClock())


# -- the readiness probe on a real lease table -----------------------------------------------------------------


@pytest.fixture
def lease_store(tmp_path: Path) -> SQLiteLeaseStore:
    store = SQLiteLeaseStore(tmp_path / "leases.db", "app")
    store.create_table_if_not_exists()
    return store


def item_tables(store: SQLiteLeaseStore) -> tuple[SQLiteItemTable, SQLiteItemTable]:
    coordinator, metrics, _ = open_sqlite_item_tables(store, "app")
    return coordinator, metrics


def report_metrics(items: SQLiteItemTable, worker: str, lut: float) -> None:
    items.upsert(worker, metrics_to_attributes(WorkerMetricStats(worker, lut=int(lut))))


def test_probe_ignores_unowned_leases_and_the_dead_owner_of_an_expired_lease(lease_store: SQLiteLeaseStore) -> None:
    _, metrics = item_tables(lease_store)
    clock = FakeClock()
    epoch = [1_800_000_000.0]
    for n in range(4):
        lease_store.create_lease_if_not_exists(Lease(key(n), TRIM_HORIZON))
    leases = {lease.lease_key: lease for lease in lease_store.list_leases()}
    lease_store.take_lease(leases[key(0)], "alive")
    lease_store.take_lease(leases[key(1)], "dead")
    lease_store.take_lease(leases[key(2)], "idle-with-metrics-only")
    lease_store.evict_lease(lease_store.get_lease(key(2)))  # type: ignore[arg-type]  # key(2), key(3) unowned
    report_metrics(metrics, "alive", epoch[0])
    report_metrics(metrics, "idle", epoch[0])
    config = TakerConfig(failover_time_ms=10_000)
    probe = ReadinessProbe(
        lease_store,
        metrics,
        lease_store,
        taker_config=config,
        metrics_config=WorkerMetricsConfig(),
        clock_ns=clock,
        clock_epoch_s=lambda: epoch[0],
    )
    first = probe.read()
    # A lease seen for the first time counts as alive: the dead worker blocks until its lease expires.
    assert first.gsi_active and first.lease_owners == {"alive", "dead"} and not first.ready
    assert first.active_metrics_workers == {"alive", "idle"}

    def renew_alive() -> None:
        lease = lease_store.get_lease(key(0))
        assert lease is not None and lease_store.renew_lease(lease) is not None

    clock.advance_ms(5_000)
    renew_alive()
    assert not probe.read().ready  # "dead" unchanged for 5 s only
    clock.advance_ms(5_001)
    renew_alive()
    report_metrics(metrics, "alive", epoch[0])
    second = probe.read()
    assert second.lease_owners == {"alive"} and second.ready
    # Metrics older than 2 x the reporter period are not fresh.
    epoch[0] += 61
    assert not probe.read().worker_metrics_ready
    # A new observer (after a leadership change) judges from scratch.
    probe.reset()
    report_metrics(metrics, "alive", epoch[0])
    assert probe.read().lease_owners == {"alive", "dead"}


def test_probe_without_an_owner_index_is_never_ready(lease_store: SQLiteLeaseStore) -> None:
    _, metrics = item_tables(lease_store)
    probe = ReadinessProbe(lease_store, metrics, None, taker_config=TakerConfig(), metrics_config=WorkerMetricsConfig())
    inputs = probe.read()
    assert inputs.worker_metrics_ready and not inputs.gsi_active and not inputs.ready


def test_the_first_leader_term_after_a_switch_holds_rebalancing(lease_store: SQLiteLeaseStore) -> None:
    _, metrics = item_tables(lease_store)
    epoch = 1_800_000_000.0
    for n in range(4):
        lease = lease_store.create_lease_if_not_exists(Lease(key(n), TRIM_HORIZON))
        assert lease is not None and lease_store.take_lease(lease, "w1") is not None
    report_metrics(metrics, "w1", epoch)
    report_metrics(metrics, "w2", epoch)  # w2 holds nothing: lease-count rebalancing would move two leases
    clock = FakeClock()
    manager = LeaseAssignmentManager(
        lease_store,
        metrics,
        config=AssignmentConfig(),
        failover_time_ms=10_000,
        strategy="lease-count",
        clock_ns=clock,
        clock_epoch_s=lambda: epoch,
        rng=random.Random(1),
    )
    manager.reset(skip_rebalance_until_ns=clock.now + 5_000 * MS)
    for _ in range(3):  # run 0 (the cadence's rebalancing run) and two runs inside the hold
        assert manager.run_once().decision.moves == ()
        clock.advance_ms(2_000)
    assert manager.run_once().decision.rebalance_moves  # run 3: past the hold, on the cadence
    manager.reset(skip_rebalance_until_ns=clock.now - 1)  # a hold already over still skips the first run
    assert manager.run_once().decision.moves == ()


# -- the coordinator with a fake host ------------------------------------------------------------------------


class FakeHost:
    """The worker as the coordinator sees it: whether it leads, and the steps it applied (``fail_apply``: the
    next steps fail to apply, as a worker that cannot open the owner index would)."""

    def __init__(self, worker_id: str, *, leader: bool = True) -> None:
        self.worker_id = worker_id
        self.leader = leader
        self.applied: list[tuple[ClientVersion, StateBehaviour]] = []
        self.fail_apply: Exception | None = None

    def is_leader(self) -> bool:
        return self.leader

    def apply(self, step: MigrationStep) -> None:
        if self.fail_apply is not None:
            raise self.fail_apply
        self.applied.append((step.version, step.behaviour))

    @property
    def versions(self) -> list[ClientVersion]:
        return [version for version, _ in self.applied]


class Driven:
    """A coordinator driven as the worker drives it (its :class:`MigrationRunner`): every step the coordinator
    returns is applied by the host at once, then confirmed. Each call returns what the coordinator's calls
    returned before they returned steps: the version run afterwards, the readiness reading."""

    def __init__(self, coordinator: MigrationCoordinator, host: FakeHost) -> None:
        self.coordinator = coordinator
        self.runner = MigrationRunner(coordinator, host.apply, clock_ns=time.monotonic_ns)

    def initialize(self) -> ClientVersion:
        self.runner.initialize()
        version = self.coordinator.version
        assert version is not None
        return version

    def poll_once(self) -> ClientVersion | None:
        self.runner.run_step(self.coordinator.poll_once())
        return self.coordinator.version

    def check_readiness_once(self) -> ReadinessInputs | None:
        self.runner.run_step(self.coordinator.check_readiness_once())
        return self.coordinator.last_readiness

    @property
    def version(self) -> ClientVersion | None:
        return self.coordinator.version

    @property
    def state(self) -> MigrationState | None:
        return self.coordinator.state

    @property
    def behaviour(self) -> StateBehaviour | None:
        return self.coordinator.behaviour

    @property
    def stabilizer(self) -> Stabilizer:
        return self.coordinator.stabilizer


class FakeProbe:
    def __init__(self, inputs: ReadinessInputs | None = None) -> None:
        self.inputs = inputs or ReadinessInputs(True, frozenset({"w1"}), frozenset({"w1"}))
        self.reads = 0
        self.resets = 0

    def read(self) -> ReadinessInputs:
        self.reads += 1
        return self.inputs

    def reset(self) -> None:
        self.resets += 1


class FlakyStore(MigrationStore):
    """A migration store whose next transitions or reads can fail like an unreachable backend."""

    def __init__(self, items: SQLiteItemTable) -> None:
        super().__init__(items)
        self.transition_failures = 0
        self.read_failures = 0

    def read(self) -> MigrationState | None:
        if self.read_failures:
            self.read_failures -= 1
            raise DependencyError("throttled")
        return super().read()

    def transition(
        self, current: MigrationState, to: ClientVersion, modified_by: str, *, allowed_from: tuple[str, ...] = ()
    ) -> MigrationState | None:
        if self.transition_failures:
            self.transition_failures -= 1
            raise DependencyError("throttled")
        return super().transition(current, to, modified_by, allowed_from=allowed_from)


@pytest.fixture
def coordinator_items(lease_store: SQLiteLeaseStore) -> SQLiteItemTable:
    return item_tables(lease_store)[0]


def make_coordinator(
    items: SQLiteItemTable,
    config: ClientVersionConfig = "compatible-with-2x",
    *,
    host: FakeHost | None = None,
    probe: FakeProbe | None = None,
    clock: FakeClock | None = None,
    metrics: InMemoryMetricsSink | None = None,
    stabilization_ms: int = 10_000,
    store: MigrationStore | None = None,
) -> tuple[Driven, FakeHost]:
    host = host or FakeHost("w1")
    coordinator = MigrationCoordinator(
        host.worker_id,
        store or MigrationStore(items),
        MigrationConfig(stabilization_period_ms=stabilization_ms),
        config,
        is_leader=host.is_leader,
        probe=probe or FakeProbe(),
        metrics=metrics,
        clock_ns=clock or FakeClock(),
        rng=random.Random(7),
        sleep=lambda _s: None,
    )
    return Driven(coordinator, host), host


def tool(items: SQLiteItemTable, to: ClientVersion, by: str) -> MigrationState:
    """What KclMigrationTool.py does: a conditional update from the states it allows."""
    store = MigrationStore(items)
    state = store.read()
    assert state is not None
    allowed = (V2X.value,) if to is UPGRADE else (UPGRADE.value, V3XWR.value)
    written = store.transition(state, to, by, allowed_from=allowed)
    assert written is not None
    return written


def test_compatible_worker_on_an_empty_table_writes_upgrade_from_2x(coordinator_items: SQLiteItemTable) -> None:
    coordinator, host = make_coordinator(coordinator_items)
    assert coordinator.initialize() is UPGRADE
    state = MigrationStore(coordinator_items).read()
    assert state is not None and state.version is UPGRADE and state.modified_by == "w1"
    assert [entry.client_version for entry in state.history] == [ClientVersion.INIT.value]
    assert host.versions == [UPGRADE] and host.applied[0][1].assignment == "lease-count-2x"


def test_3x_worker_on_an_empty_table_writes_3x(coordinator_items: SQLiteItemTable) -> None:
    coordinator, host = make_coordinator(coordinator_items, "3x")
    assert coordinator.initialize() is V3X
    assert host.versions == [V3X]
    assert not coordinator.behaviour or not coordinator.behaviour.watch  # terminal


def test_3x_worker_finishes_a_migration_in_3x_with_rollback(coordinator_items: SQLiteItemTable) -> None:
    MigrationStore(coordinator_items).create(V3XWR, "someone")
    coordinator, _ = make_coordinator(coordinator_items, "3x")
    assert coordinator.initialize() is V3X
    state = MigrationStore(coordinator_items).read()
    assert state is not None and state.version is V3X
    assert state.history[0].client_version == V3XWR.value


def test_3x_worker_stays_rolled_back_until_the_tool_rolls_forward(coordinator_items: SQLiteItemTable) -> None:
    created = MigrationStore(coordinator_items).create(V2X, ROLLBACK_TOOL)
    assert created is not None
    clock = FakeClock()
    coordinator, host = make_coordinator(coordinator_items, "3x", clock=clock, stabilization_ms=0)
    assert coordinator.initialize() is V2X
    assert MigrationStore(coordinator_items).read() == created  # nothing written
    assert host.applied[-1][1].assignment == "lease-count-2x" and not host.applied[-1][1].report_worker_metrics
    assert coordinator.poll_once() is V2X
    tool(coordinator_items, UPGRADE, ROLLFORWARD_TOOL)
    assert coordinator.poll_once() is UPGRADE
    assert coordinator.check_readiness_once() is not None
    assert host.versions == [V2X, UPGRADE, V3XWR]


def test_start_up_race_on_an_empty_table_has_one_creator(coordinator_items: SQLiteItemTable) -> None:
    barrier = threading.Barrier(4)
    results: list[ClientVersion] = []

    def start(n: int) -> None:
        coordinator, _ = make_coordinator(coordinator_items, host=FakeHost(f"w{n}"))
        barrier.wait()
        results.append(coordinator.initialize())

    threads = [threading.Thread(target=start, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert results == [UPGRADE] * 4
    state = MigrationStore(coordinator_items).read()
    assert state is not None and len(state.history) == 1  # created once, never rewritten


def test_start_up_retries_reads_then_gives_up_to_the_workers_retries(coordinator_items: SQLiteItemTable) -> None:
    store = FlakyStore(coordinator_items)
    store.read_failures = 2
    coordinator, _ = make_coordinator(coordinator_items, store=store)
    assert coordinator.initialize() is UPGRADE
    store.read_failures = 3
    with pytest.raises(DependencyError):
        make_coordinator(coordinator_items, store=store)[0].initialize()


def test_an_unknown_client_version_fails_the_start(coordinator_items: SQLiteItemTable) -> None:
    coordinator_items.put_if_absent("Migration3.0", {"cv": "CLIENT_VERSION_4X", "mb": "x", "mts": 1})
    coordinator, host = make_coordinator(coordinator_items)
    with pytest.raises(InvalidStateError, match="CLIENT_VERSION_4X"):
        coordinator.initialize()
    assert host.applied == []


def test_the_watcher_follows_the_tools_rollback_and_roll_forward(coordinator_items: SQLiteItemTable) -> None:
    MigrationStore(coordinator_items).create(V3XWR, "leader")
    metrics = InMemoryMetricsSink()
    coordinator, host = make_coordinator(coordinator_items, metrics=metrics)
    assert coordinator.initialize() is V3XWR
    assert coordinator.poll_once() is V3XWR
    assert metrics.total(OPERATION, "CurrentState:3xWorker") == 2  # on entry and on the poll
    rolled_back = tool(coordinator_items, V2X, ROLLBACK_TOOL)
    assert coordinator.poll_once() is V2X
    assert coordinator.state == rolled_back and rolled_back.modified_by == ROLLBACK_TOOL
    assert host.applied[-1][1] == behaviour(V2X)
    assert coordinator.poll_once() is V2X
    assert metrics.total(OPERATION, "CurrentState:2xCompatibleWorker") == 2
    tool(coordinator_items, UPGRADE, ROLLFORWARD_TOOL)
    assert coordinator.poll_once() is UPGRADE
    assert host.versions == [V3XWR, V2X, UPGRADE]


def test_the_watcher_logs_unknown_and_unexpected_versions_and_keeps_polling(
    coordinator_items: SQLiteItemTable, caplog: pytest.LogCaptureFixture
) -> None:
    store = MigrationStore(coordinator_items)
    store.create(V2X, ROLLBACK_TOOL)
    coordinator, host = make_coordinator(coordinator_items)
    coordinator.initialize()
    coordinator_items.update("Migration3.0", set_attributes={"cv": "CLIENT_VERSION_9X"})
    with caplog.at_level(logging.ERROR, logger="shardwise.versions.migration"):
        assert coordinator.poll_once() is V2X
    assert "unknown client version 'CLIENT_VERSION_9X'" in caplog.text
    caplog.clear()
    coordinator_items.update("Migration3.0", set_attributes={"cv": V3X.value})  # 2X -> 3X: not a KCL move
    with caplog.at_level(logging.ERROR, logger="shardwise.versions.migration"):
        assert coordinator.poll_once() is V2X
    assert "unexpected client version change" in caplog.text
    coordinator_items.update("Migration3.0", set_attributes={"cv": UPGRADE.value})
    assert coordinator.poll_once() is UPGRADE
    assert host.versions == [V2X, UPGRADE]


def test_no_watcher_in_3x(coordinator_items: SQLiteItemTable) -> None:
    store = FlakyStore(coordinator_items)
    coordinator, _ = make_coordinator(coordinator_items, "3x", store=store)
    coordinator.initialize()
    store.read_failures = 1  # would raise if the item were read
    assert coordinator.poll_once() is V3X
    assert coordinator.check_readiness_once() is None


def test_a_failed_state_switch_is_retried_at_the_next_poll(coordinator_items: SQLiteItemTable) -> None:
    MigrationStore(coordinator_items).create(UPGRADE, "w0")
    coordinator, host = make_coordinator(coordinator_items)
    coordinator.initialize()
    tool(coordinator_items, V2X, ROLLBACK_TOOL)
    host.fail_apply = DependencyError("boom")
    with pytest.raises(DependencyError):
        coordinator.poll_once()
    assert coordinator.version is UPGRADE
    host.fail_apply = None
    assert coordinator.poll_once() is V2X


def running(coordinator: MigrationCoordinator) -> ClientVersion | None:
    """The version the coordinator runs, read afresh (no earlier assertion narrows it)."""
    return coordinator.version


def reading(coordinator: MigrationCoordinator) -> ReadinessInputs | None:
    return coordinator.last_readiness


def test_the_coordinator_returns_steps_and_runs_a_version_only_once_entered(
    coordinator_items: SQLiteItemTable,
) -> None:
    MigrationStore(coordinator_items).create(UPGRADE, "w0")
    metrics = InMemoryMetricsSink()
    leader = [False]
    coordinator = MigrationCoordinator(
        "w1",
        MigrationStore(coordinator_items),
        MigrationConfig(stabilization_period_ms=0),
        "compatible-with-2x",
        is_leader=lambda: leader[0],
        probe=FakeProbe(),
        metrics=metrics,
        clock_ns=FakeClock(),
    )
    start = coordinator.initialize()
    assert start == MigrationStep(UPGRADE, behaviour(UPGRADE), initial=True)
    assert running(coordinator) is None and metrics.total(OPERATION, "CurrentState:2xCompatibleWorker") == 0
    assert coordinator.poll_once() is None  # nothing is watched before the worker runs a version
    coordinator.entered(start)
    assert running(coordinator) is UPGRADE and metrics.total(OPERATION, "CurrentState:2xCompatibleWorker") == 1
    # The monitor asks whether this worker leads, and reads nothing when it does not.
    assert coordinator.check_readiness_once() is None and reading(coordinator) is None
    leader[0] = True
    flip = coordinator.check_readiness_once()
    assert flip == MigrationStep.to(V3XWR) and not flip.initial
    inputs = reading(coordinator)
    assert inputs is not None and inputs.ready
    assert running(coordinator) is UPGRADE  # written, not run yet
    # Not entered (the worker failed to apply it): the next check finds the item moved on and returns it again,
    # without writing a second time.
    assert coordinator.check_readiness_once() == MigrationStep.to(V3XWR)
    state = MigrationStore(coordinator_items).read()
    assert state is not None and [entry.client_version for entry in state.history] == [
        UPGRADE.value,
        ClientVersion.INIT.value,
    ]
    coordinator.entered(MigrationStep.to(V3XWR))
    assert running(coordinator) is V3XWR and coordinator.poll_once() is None
    tool(coordinator_items, V2X, ROLLBACK_TOOL)
    assert coordinator.poll_once() == MigrationStep.to(V2X)
    assert coordinator.poll_once() == MigrationStep.to(V2X)  # until entered
    coordinator.entered(MigrationStep.to(V2X))
    assert running(coordinator) is V2X and coordinator.poll_once() is None


def test_readiness_flips_to_3x_with_rollback_after_the_stabilization_period(
    coordinator_items: SQLiteItemTable,
) -> None:
    clock = FakeClock()
    metrics = InMemoryMetricsSink()
    probe = FakeProbe()
    coordinator, host = make_coordinator(coordinator_items, clock=clock, probe=probe, metrics=metrics)
    coordinator.initialize()
    for _ in range(10):
        assert coordinator.check_readiness_once() is not None
        assert coordinator.version is UPGRADE
        clock.advance_ms(1_000)
    coordinator.check_readiness_once()
    assert coordinator.version is V3XWR and host.versions == [UPGRADE, V3XWR]
    state = MigrationStore(coordinator_items).read()
    assert state is not None and state.version is V3XWR and state.modified_by == "w1"
    assert state.history[0].client_version == UPGRADE.value
    assert metrics.values(OPERATION, "GsiReadyStatus") == [1.0] * 11
    assert metrics.values(OPERATION, "WorkerMetricsReadyStatus") == [1.0] * 11
    assert coordinator.check_readiness_once() is None  # the monitor is done
    assert probe.reads == 11


def test_a_false_reading_restarts_the_stabilization(coordinator_items: SQLiteItemTable) -> None:
    clock = FakeClock()
    metrics = InMemoryMetricsSink()
    probe = FakeProbe()
    coordinator, _ = make_coordinator(coordinator_items, clock=clock, probe=probe, metrics=metrics)
    coordinator.initialize()
    coordinator.check_readiness_once()
    clock.advance_ms(9_000)
    probe.inputs = ReadinessInputs(True, frozenset({"w1", "w2"}), frozenset({"w1"}))
    coordinator.check_readiness_once()
    probe.inputs = ReadinessInputs(True, frozenset({"w1"}), frozenset({"w1"}))
    clock.advance_ms(1_000)
    coordinator.check_readiness_once()
    clock.advance_ms(9_999)
    coordinator.check_readiness_once()
    assert coordinator.version is UPGRADE
    clock.advance_ms(1)
    coordinator.check_readiness_once()
    assert coordinator.version is V3XWR
    assert metrics.values(OPERATION, "WorkerMetricsReadyStatus") == [1.0, 0.0, 1.0, 1.0, 1.0]


def test_only_the_leader_monitors_and_losing_leadership_restarts_the_stabilization(
    coordinator_items: SQLiteItemTable,
) -> None:
    clock = FakeClock()
    probe = FakeProbe()
    host = FakeHost("w1", leader=False)
    coordinator, _ = make_coordinator(coordinator_items, clock=clock, probe=probe, host=host)
    coordinator.initialize()
    assert coordinator.check_readiness_once() is None and probe.reads == 0
    host.leader = True
    coordinator.check_readiness_once()
    clock.advance_ms(9_000)
    host.leader = False
    coordinator.check_readiness_once()
    assert coordinator.stabilizer.ready_since_ns is None and probe.resets >= 1
    host.leader = True
    clock.advance_ms(1_000)
    coordinator.check_readiness_once()
    clock.advance_ms(9_000)
    coordinator.check_readiness_once()
    assert coordinator.version is UPGRADE
    clock.advance_ms(1_000)
    coordinator.check_readiness_once()
    assert coordinator.version is V3XWR


def test_a_failed_flip_counts_a_fault_and_is_retried(coordinator_items: SQLiteItemTable) -> None:
    metrics = InMemoryMetricsSink()
    store = FlakyStore(coordinator_items)
    coordinator, _ = make_coordinator(coordinator_items, store=store, metrics=metrics, stabilization_ms=0)
    coordinator.initialize()
    store.transition_failures = 1
    coordinator.check_readiness_once()
    assert coordinator.version is UPGRADE and metrics.total(OPERATION, "Fault") == 1
    coordinator.check_readiness_once()
    assert coordinator.version is V3XWR


def test_concurrent_flips_from_two_coordinators_have_exactly_one_winner(coordinator_items: SQLiteItemTable) -> None:
    MigrationStore(coordinator_items).create(UPGRADE, "w0")
    coordinators = [make_coordinator(coordinator_items, host=FakeHost(f"w{n}"), stabilization_ms=0) for n in (1, 2)]
    for coordinator, _ in coordinators:
        coordinator.initialize()
    barrier = threading.Barrier(2)

    def flip(coordinator: Driven) -> None:
        barrier.wait()
        coordinator.check_readiness_once()

    threads = [threading.Thread(target=flip, args=(c,)) for c, _ in coordinators]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    state = MigrationStore(coordinator_items).read()
    assert state is not None and state.version is V3XWR
    assert state.modified_by in {"w1", "w2"}
    # Exactly one write: the history holds the creation and one UPGRADE_FROM_2X entry.
    assert [entry.client_version for entry in state.history] == [UPGRADE.value, ClientVersion.INIT.value]
    for coordinator, host in coordinators:
        assert coordinator.version is V3XWR and host.versions == [UPGRADE, V3XWR]


def test_the_thread_polls_with_jitter_and_stops_in_3x(coordinator_items: SQLiteItemTable) -> None:
    MigrationStore(coordinator_items).create(V3XWR, "leader")
    host = FakeHost("w1")
    coordinator = MigrationCoordinator(
        host.worker_id,
        MigrationStore(coordinator_items),
        MigrationConfig(client_version_poll_interval_ms=20, client_version_poll_jitter_ms=10),
        "compatible-with-2x",
        is_leader=host.is_leader,
        probe=FakeProbe(),
    )
    runner = MigrationRunner(coordinator, host.apply, clock_ns=time.monotonic_ns)
    runner.start()
    try:
        tool(coordinator_items, V2X, ROLLBACK_TOOL)
        wait_for(lambda: coordinator.version is V2X, 5, "the rollback")
        tool(coordinator_items, UPGRADE, ROLLFORWARD_TOOL)
        wait_for(lambda: coordinator.version is UPGRADE, 5, "the roll-forward")
        store = MigrationStore(coordinator_items)
        state = store.read()
        assert state is not None
        store.transition(state, V3XWR, "leader")
        wait_for(lambda: coordinator.version is V3XWR, 5, "the flip")
        state = store.read()
        assert state is not None
        store.transition(state, V3X, "restarted-3x-worker")
        wait_for(lambda: coordinator.version is V3X, 5, "3X")
        thread = runner._thread
        assert thread is not None
        thread.join(5)
        assert not thread.is_alive()  # 3X is final: the watcher stopped on its own
    finally:
        runner.stop()
    assert host.versions == [V3XWR, V2X, UPGRADE, V3XWR, V3X]


# -- in-process workers on one SQLite file ---------------------------------------------------------------------

FAILOVER_MS = 1_500


class CheckpointingProcessor(BaseRecordProcessor):
    def process_records(self, process_records_input: ProcessRecordsInput) -> None:
        if process_records_input.records:
            process_records_input.checkpointer.checkpoint()


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.02)


class Fleet:
    """In-process workers sharing one SQLite file (leases, coordinator items and the stream)."""

    def __init__(self, db: Path, app: str, shards: int) -> None:
        self.db = db
        self.app = app
        self.streams = LocalStreamStore(db)
        self.streams.create_stream(app, shards)
        self.store = SQLiteLeaseStore(db, app)
        self.workers: list[Worker] = []
        self.metrics: dict[str, InMemoryMetricsSink] = {}
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self._producer = threading.Thread(target=self._produce, daemon=True)
        self._producer.start()

    def _produce(self) -> None:
        n = 0
        while not self._stop.is_set():
            self.streams.put_records(self.app, [(b"x" * 50, f"k{n + i}") for i in range(20)])
            n += 20
            self._stop.wait(0.1)

    def start(self, worker_id: str, client_version_config: ClientVersionConfig, *, stabilization_ms: int) -> Worker:
        config = WorkerConfig(
            self.app,
            self.app,
            worker_id=worker_id,
            initial_position=InitialPosition.trim_horizon(),
            leases=TakerConfig(failover_time_ms=FAILOVER_MS, max_leases_for_worker=2),
            consumer=ConsumerConfig(idle_time_between_reads_ms=100, parent_shard_poll_interval_ms=200),
            # lut is in whole seconds: a reporter period well above 1 s keeps "fresh" (2 periods) stable.
            worker_metrics=WorkerMetricsConfig(
                in_memory_capture_frequency_ms=100, reporter_frequency_ms=1_500, cpu_source="none"
            ),
            coordination=CoordinationConfig(leader_lease_duration_ms=3_000, leader_heartbeat_period_ms=500),
            client_version_config=client_version_config,
            migration=MigrationConfig(
                client_version_poll_interval_ms=300,
                client_version_poll_jitter_ms=100,
                readiness_check_interval_ms=200,
                stabilization_period_ms=stabilization_ms,
            ),
            shard_sync_interval_ms=500,
            shutdown_timeout_ms=5_000,
        )
        metrics = InMemoryMetricsSink()
        worker = Worker(
            config,
            store=SQLiteLeaseStore(self.db, self.app),
            source=self.streams.stream(self.app),
            processor_factory=CheckpointingProcessor,
            metrics=metrics,
        )
        self.metrics[worker_id] = metrics
        thread = threading.Thread(target=worker.run, name=worker_id, daemon=True)
        thread.start()
        self.workers.append(worker)
        self._threads.append(thread)
        return worker

    def stop(self) -> None:
        self._stop.set()
        for worker in self.workers:
            worker.request_shutdown()
        for thread in self._threads:
            thread.join(15)
        self._producer.join(5)

    def held(self) -> dict[str, frozenset[str]]:
        return {w.worker_id: frozenset(lease.lease_key for lease in w.held_leases()) for w in self.workers}

    def owners(self) -> dict[str, str | None]:
        return {lease.lease_key: lease.lease_owner for lease in self.store.list_leases()}

    def migration_state(self) -> MigrationState:
        coordinator, _, _ = open_sqlite_item_tables(self.store, self.app)
        state = MigrationStore(coordinator).read()
        assert state is not None
        return state

    def write(self, to: ClientVersion, by: str) -> MigrationState:
        coordinator, _, _ = open_sqlite_item_tables(self.store, self.app)
        return tool(coordinator, to, by) if by.startswith("KclMigrationTool") else _transition(coordinator, to, by)

    def all_in(self, version: ClientVersion) -> bool:
        mode = behaviour(version).assignment
        return all(w.client_version is version and w.mode == mode for w in self.workers)

    def balanced(self, shards: int) -> bool:
        held = self.held()
        owners = self.owners()
        return (
            sum(len(keys) for keys in held.values()) == shards
            and all(keys for keys in held.values())
            and all(owners.get(k) == w for w, keys in held.items() for k in keys)
        )

    def processed(self) -> int:
        return sum(w.stats.records_processed for w in self.workers)


def _transition(items: SQLiteItemTable, to: ClientVersion, by: str) -> MigrationState:
    store = MigrationStore(items)
    state = store.read()
    assert state is not None
    written = store.transition(state, to, by)
    assert written is not None
    return written


@pytest.fixture
def fleet_factory(tmp_path: Path) -> Iterator[Callable[[int], Fleet]]:
    fleets: list[Fleet] = []

    def make(shards: int) -> Fleet:
        fleet = Fleet(tmp_path / f"fleet-{len(fleets)}.db", "app", shards)
        fleets.append(fleet)
        return fleet

    yield make
    for fleet in fleets:
        fleet.stop()


def wait_stable(
    fleet: Fleet, shards: int, *, settle_s: float = 1.0, timeout_s: float = 30
) -> dict[str, frozenset[str]]:
    """Wait until every worker holds a lease and the assignment has not changed for ``settle_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        wait_for(lambda: fleet.balanced(shards), max(0.1, deadline - time.monotonic()), "every worker holding leases")
        snapshot = fleet.held()
        time.sleep(settle_s)
        if fleet.held() == snapshot and fleet.balanced(shards):
            return snapshot
        if time.monotonic() > deadline:
            raise AssertionError(f"the assignment never settled: {fleet.held()}")


def test_workers_switch_both_ways_at_runtime_without_moving_a_lease(
    fleet_factory: Callable[[int], Fleet],
) -> None:
    shards = 4
    fleet = fleet_factory(shards)
    for n in range(3):
        # A stabilization period far beyond the test: the flip to 3.x is written here, not by the monitor.
        fleet.start(f"worker-{n}", "compatible-with-2x", stabilization_ms=3_600_000)
    wait_for(lambda: fleet.all_in(UPGRADE), 20, "every worker in UPGRADE_FROM_2X")
    assert fleet.migration_state().version is UPGRADE
    held = wait_stable(fleet, shards)
    assert all(w.reports_worker_metrics for w in fleet.workers)
    _, metrics_items, _ = open_sqlite_item_tables(fleet.store, fleet.app)
    wait_for(lambda: {r.key for r in metrics_items.scan()} == set(held), 10, "worker metrics of every worker")

    # 2.x -> 3.x (the leader's monitor would write this; here the test does).
    fleet.write(V3XWR, "worker-0")
    wait_for(lambda: fleet.all_in(V3XWR), 10, "every worker in 3X_WITH_ROLLBACK")
    assert fleet.held() == held, "the switch to 3.x moved a lease"
    assert all(fleet.held().values()), "a worker fell to zero leases at the switch"
    assert fleet.owners() == {k: w for w, keys in held.items() for k in keys}
    wait_for(lambda: sum(w.is_leader() for w in fleet.workers) == 1, 10, "a lock leader")
    processed = fleet.processed()
    wait_for(lambda: fleet.processed() > processed, 10, "records processed in 3.x mode")
    assert fleet.held() == held, "the first leader term moved a lease"

    # 3.x -> 2.x, as KclMigrationTool.py --mode rollback writes it.
    fleet.write(V2X, ROLLBACK_TOOL)
    wait_for(lambda: fleet.all_in(V2X), 10, "every worker rolled back to 2X")
    assert fleet.held() == held, "the rollback moved a lease"
    assert not any(w.reports_worker_metrics for w in fleet.workers)
    processed = fleet.processed()
    wait_for(lambda: fleet.processed() > processed, 10, "records processed after the rollback")
    time.sleep(2 * FAILOVER_MS / 1000)  # a taker run on fresh observations: nothing looks expired
    assert fleet.held() == held, "the 2.x taker moved a lease after the rollback"

    # Roll forward again: back to 2.x taking with metrics reported.
    fleet.write(UPGRADE, ROLLFORWARD_TOOL)
    wait_for(lambda: fleet.all_in(UPGRADE), 10, "every worker rolled forward to UPGRADE_FROM_2X")
    assert all(w.reports_worker_metrics for w in fleet.workers)
    assert fleet.held() == held
    for worker in fleet.workers:
        assert fleet.metrics[worker.worker_id].total(OPERATION, "CurrentState:3xWorker") >= 1
        assert fleet.metrics[worker.worker_id].total(OPERATION, "CurrentState:2xCompatibleWorker") >= 1


def test_the_readiness_monitor_flips_the_fleet_on_its_own_with_more_workers_than_shards(
    fleet_factory: Callable[[int], Fleet],
) -> None:
    shards = 2
    fleet = fleet_factory(shards)
    for n in range(3):
        fleet.start(f"worker-{n}", "compatible-with-2x", stabilization_ms=1_500)
    wait_for(lambda: fleet.all_in(V3XWR), 40, "the readiness monitor to flip the fleet to 3X_WITH_ROLLBACK")
    state = fleet.migration_state()
    assert state.version is V3XWR and state.modified_by in {w.worker_id for w in fleet.workers}
    assert [entry.client_version for entry in state.history] == [UPGRADE.value, ClientVersion.INIT.value]
    emitted = [fleet.metrics[w.worker_id].values(OPERATION, "GsiReadyStatus") for w in fleet.workers]
    assert any(values and values[-1] == 1.0 for values in emitted)
    wait_for(lambda: sum(len(keys) for keys in fleet.held().values()) == shards, 20, "every lease held in 3.x")
