"""Feature versions (issue #6, Kafka KIP-584 style) end to end, with real ``shardwise run`` worker processes and
the ``shardwise features`` CLI, on the local backend (SQLite leases + local stream) and on the AWS stand-ins
(DynamoDB on moto, Kinesis on kinesis-local).

8 shards, 3 workers started ``--client-version-config compatible-with-2x`` (so the fleet sits in
``UPGRADE_FROM_2X``: ``lease.assignment`` 1, ``lease.discovery`` 2; the stabilization period keeps its 10-minute
default, so the leader's automatic flip never comes during the test), a producer writing one uniquely numbered
record per shard per tick all along, every delivery written to a results database before its checkpoint
(``processors.RecordingProcessor``), and each worker logging its metrics (``--metrics log``), from which the
test reads its ``CurrentState`` (operation ``Migration``):

a. ``w3`` pinned to release 0.2 (``lease.assignment`` 0-1): once ``features describe`` lists all three workers,
   ``features upgrade --feature lease.assignment=2`` exits 1 naming ``w3`` and writes nothing;
b. ``w3`` restarted unpinned (SIGTERM, exit 0): once it advertises 0-2 the upgrade succeeds, ``Migration3.0``
   becomes ``CLIENT_VERSION_3X_WITH_ROLLBACK`` and every worker switches to the 3.x generation (``3xWorker``),
   the leases still spread over the three; a worker pinned to 0.2 is now refused admission;
c. ``features downgrade --release-version 0.2``: ``lease.assignment`` back to 1, ``UPGRADE_FROM_2X``, every
   worker back on 2.x (``2xCompatibleWorker``); the history shows both changes, epochs 2 and 1;
d. a worker of release 0.1 (``lease.discovery`` only up to 1) is refused admission;
e. every record produced was processed, and every worker exits 0 on SIGTERM.

Timings are shortened: failover 2 s, the migration item polled every 1 s without jitter, worker metrics (and
the feature advertisements with them) reported every 1 s, leader lock 6 s with a 1 s heartbeat.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from shardwise.versions.features import CURRENT_RELEASE
from shardwise.versions.migration_rules import METRIC_2X_WORKER, METRIC_3X_WORKER
from shardwise.versions.migration_state import ClientVersion
from support.fleet import Backend, Fleet, StreamAdmin, taker_interval_s
from support.scenario import ClientVersionScenario, FreshStreams
from support.traffic import ShardTicker

SHARDS = 8
WORKERS = ("w1", "w2", "w3")
PINNED = "w3"
FAILOVER_MS = 2_000
TAKER_S = taker_interval_s(FAILOVER_MS)  # 4.05 s
POLL_MS = 1_000
REPORTER_MS = 1_000
LEADER_LEASE_MS = 6_000
ASSIGNMENT_MS = 2 * FAILOVER_MS  # the default lease_assignment_interval_ms
DISCOVERY_MS = ASSIGNMENT_MS // 2 - 25  # KCL's fixed discovery interval (see test_kcl3x)
WORKER_ARGS = (
    "--client-version-config",
    "compatible-with-2x",
    "--initial-position",
    "TRIM_HORIZON",
    "--failover-time-ms",
    str(FAILOVER_MS),
    "--idle-time-between-reads-ms",
    "100",
    "--max-records",
    "500",
    "--metrics",
    "log",
    "--set",
    "shard_sync_interval_ms=2000",
    "--set",
    "consumer.task_backoff_time_ms=200",
    "--set",
    f"migration.client_version_poll_interval_ms={POLL_MS}",
    "--set",
    "migration.client_version_poll_jitter_ms=0",
    "--set",
    f"worker_metrics.reporter_frequency_ms={REPORTER_MS}",
    "--set",
    "worker_metrics.in_memory_capture_frequency_ms=250",
    "--set",
    "worker_metrics.cpu_source=none",
    "--set",
    f"coordination.leader_lease_duration_ms={LEADER_LEASE_MS}",
    "--set",
    "coordination.leader_heartbeat_period_ms=1000",
    "--set",
    f"coordination.max_lease_discovery_interval_ms={DISCOVERY_MS}",
)
PIN_0_2 = ("--set", 'features.release="0.2"')
PIN_0_1 = ("--set", 'features.release="0.1"')
PROCESSOR = "processors:RecordingProcessor"
#: A switch of generation shows within one poll of Migration3.0 (no jitter); the rest is slack for a busy host.
SWITCH_S = POLL_MS / 1000 + 15


# -- the scenario ---------------------------------------------------------------------------------------------


class Scenario(ClientVersionScenario):
    """One application on one fresh stream (see :class:`ClientVersionScenario`), and the ``shardwise features``
    side: the CLI, the advertised feature ranges and workers that must be refused admission."""

    def __init__(self, fleet: Fleet, admin: StreamAdmin, results: Path) -> None:
        super().__init__(fleet, admin, results, workers=WORKERS, shards=SHARDS)

    def refused_start(self, worker_id: str, extra_args: Sequence[str]) -> subprocess.CompletedProcess[str]:
        """Start a worker that must be refused admission; returns the finished process (output captured)."""
        done = subprocess.run(
            self.fleet.command(worker_id, extra_args),
            check=False,
            capture_output=True,
            text=True,
            timeout=90,
            stdin=subprocess.DEVNULL,
            env=self.fleet.worker_env(worker_id),
        )
        print(f"$ shardwise run ... --worker-id {worker_id} {' '.join(extra_args)} -> exit {done.returncode}")
        return done

    def features(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``shardwise features ARGS --app APP <backend>`` as a subprocess (output printed)."""
        target = self.fleet.backend.table_cli_args()
        command = [sys.executable, "-m", "shardwise", "features", *args, "--app", self.fleet.application, *target]
        done = subprocess.run(
            command, check=False, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
        )
        if "--json" not in args:
            print(f"$ shardwise features {' '.join(args)} -> exit {done.returncode}\n{done.stdout}{done.stderr}")
        return done

    def describe(self) -> dict[str, Any]:
        done = self.features("describe", "--json")
        assert done.returncode == 0, done.stdout + done.stderr
        result: dict[str, Any] = json.loads(done.stdout)
        return result

    def advertised(self) -> dict[str, tuple[int, int]]:
        """Per live worker (per ``features describe``): its advertised ``lease.assignment`` range."""
        ranges = {}
        for worker in self.describe()["workers"]:
            supported = worker["supported"].get("lease.assignment", {"min": 0, "max": 0})
            ranges[worker["worker_id"]] = (supported["min"], supported["max"])
        return ranges

    def wait_advertised(self, expected: Mapping[str, tuple[int, int]], timeout_s: float, what: str) -> None:
        self.fleet.wait_until(
            lambda: self.advertised() == dict(expected),
            timeout_s,
            lambda: f"{what}: lease.assignment ranges {dict(expected)}; now {self.advertised()}",
            interval_s=0.5,
        )


# -- fixtures --------------------------------------------------------------------------------------------------


@pytest.fixture
def scenario(fresh_streams: FreshStreams) -> Scenario:
    fleet, admin, results = fresh_streams.open(
        "features", SHARDS, processor=PROCESSOR, worker_args=WORKER_ARGS, results_file="results.db"
    )
    return Scenario(fleet, admin, results)


# -- the test --------------------------------------------------------------------------------------------------


def _refused(done: subprocess.CompletedProcess[str], feature: str, level: int, wants: tuple[int, int]) -> None:
    shown = f"exit {done.returncode}\nstdout: {done.stdout}\nstderr: {done.stderr[-4000:]}"
    assert done.returncode != 0, shown
    expected = (
        f"Unable to start because the worker does not support finalized version {level} of {feature}. "
        f"The worker wants a version between {wants[0]} and {wants[1]}, inclusive."
    )
    assert expected in done.stderr, shown


@pytest.mark.slow
def test_feature_upgrade_and_downgrade_with_a_live_fleet(scenario: Scenario, backend: Backend, tick_s: float) -> None:
    fleet = scenario.fleet
    producer = ShardTicker(scenario.put, scenario.shard_keys(), "f", tick_s)
    producer.start()
    started = time.monotonic()

    def elapsed() -> str:
        return f"{time.monotonic() - started:.0f}s"

    try:
        # a. One worker pinned to release 0.2: the upgrade to lease.assignment 2 is refused, naming it.
        for worker_id in WORKERS:
            scenario.start(worker_id, PIN_0_2 if worker_id == PINNED else ())
        scenario.wait_version(ClientVersion.UPGRADE_FROM_2X, 30, "the fleet started compatible-with-2x")
        scenario.wait_advertised({"w1": (0, 2), "w2": (0, 2), PINNED: (0, 1)}, 30, "every worker advertises")
        scenario.wait_states(dict.fromkeys(WORKERS, METRIC_2X_WORKER), SWITCH_S, "the fleet started")
        counts = scenario.wait_everyone_holds(6 * TAKER_S + 20, "the fleet started")
        print(f"{elapsed()}: 3 workers advertise, {PINNED} pinned to 0.2; leases {counts}")

        refused = scenario.features("upgrade", "--feature", "lease.assignment=2")
        shown = refused.stdout + refused.stderr
        assert refused.returncode == 1, shown
        assert f"Worker {PINNED} only supports versions 0-1" in refused.stdout, shown
        assert refused.stderr.strip().splitlines()[-1] == "1 out of 1 operation(s) failed.", shown
        described = scenario.describe()
        assert described["epoch"] is None and described["history"] == [], described
        assert described["client_version"] == ClientVersion.UPGRADE_FROM_2X.value, described
        assert [w["worker_id"] for w in described["workers"]] == list(WORKERS), described
        assert [w["release"] for w in described["workers"]] == [CURRENT_RELEASE, CURRENT_RELEASE, "0.2"], described
        # SQLite has only the single-table layout; a compatible-with-2x fleet starting afresh on DynamoDB puts its
        # coordinator items in the legacy one (<app>-CoordinatorState), so that KCL 2.x workers see no new items.
        layout = {"single-table": 2, "legacy": 1}[described["layout"]]
        assert layout == (2 if backend.kind == "local" else 1), described

        # b. The pinned worker restarted on this release: the upgrade succeeds and the fleet switches to 3.x.
        scenario.restart(PINNED)
        scenario.wait_advertised(dict.fromkeys(WORKERS, (0, 2)), 30, f"{PINNED} restarted unpinned")
        scenario.wait_states(dict.fromkeys(WORKERS, METRIC_2X_WORKER), SWITCH_S, f"{PINNED} restarted unpinned")
        counts = scenario.wait_everyone_holds(6 * TAKER_S + 20, f"{PINNED} restarted unpinned")
        print(f"{elapsed()}: {PINNED} restarted unpinned; leases {counts}")

        upgraded = scenario.features("upgrade", "--feature", "lease.assignment=2")
        assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
        assert upgraded.stdout.strip() == "lease.assignment was upgraded to 2.", upgraded.stdout
        assert upgraded.stderr == "", upgraded.stderr  # no worker is out of range: no warning
        state = scenario.migration()
        assert state is not None and state.version is ClientVersion.V3X_WITH_ROLLBACK, state
        assert state.modified_by.startswith("shardwise-features"), state
        assert state.history[0].client_version == ClientVersion.UPGRADE_FROM_2X.value, state
        scenario.wait_states(dict.fromkeys(WORKERS, METRIC_3X_WORKER), SWITCH_S, "upgraded to lease.assignment 2")
        counts = scenario.wait_everyone_holds(FAILOVER_MS / 1000 + 30, "upgraded to lease.assignment 2")
        assert fleet.alive() == list(WORKERS), fleet.report()
        print(f"{elapsed()}: lease.assignment 2, every worker on 3.x; leases {counts}")

        # d. (at level 2) A worker pinned to 0.2 cannot join.
        _refused(scenario.refused_start("w-old-0-2", PIN_0_2), "lease.assignment", 2, (0, 1))

        # c. Back to release 0.2's levels: lease.assignment 1, every worker back on 2.x.
        downgraded = scenario.features("downgrade", "--release-version", "0.2")
        if layout == 1:
            # The legacy layout (table.layout 1) is below release 0.2's default (2) and can never move: the
            # release's levels are applied without it, with a warning.
            assert "Warning: table.layout stays at 1" in downgraded.stderr, downgraded.stderr
        assert downgraded.returncode == 0, downgraded.stdout + downgraded.stderr
        assert "lease.assignment was downgraded to 1." in downgraded.stdout.splitlines(), downgraded.stdout
        state = scenario.migration()
        assert state is not None and state.version is ClientVersion.UPGRADE_FROM_2X, state
        assert state.history[0].client_version == ClientVersion.V3X_WITH_ROLLBACK.value, state
        scenario.wait_states(dict.fromkeys(WORKERS, METRIC_2X_WORKER), SWITCH_S, "downgraded to release 0.2")
        counts = scenario.wait_everyone_holds(6 * TAKER_S + 20, "downgraded to release 0.2")
        print(f"{elapsed()}: lease.assignment 1, every worker back on 2.x; leases {counts}")

        described = scenario.describe()
        assert described["epoch"] == 2, described
        assert described["client_version"] == ClientVersion.UPGRADE_FROM_2X.value, described
        levels = {f["feature"]: f["finalized_version_level"] for f in described["features"]}
        # state.format was never finalized (0), which release 0.2 (no state stores) leaves as it is.
        assert levels == {"lease.assignment": 1, "lease.discovery": 2, "table.layout": layout, "state.format": 0}, (
            described
        )
        history = described["history"]
        assert [entry["epoch"] for entry in history] == [2, 1], history
        assert history[0]["changes"] == {"lease.assignment": {"from": 2, "to": 1}}, history
        assert history[1]["changes"] == {"lease.assignment": {"from": 1, "to": 2}}, history
        assert history[0]["modified_at_ms"] >= history[1]["modified_at_ms"], history

        # d. (after the downgrade) A worker of release 0.1 cannot run lease.discovery 2.
        _refused(scenario.refused_start("w-old-0-1", PIN_0_1), "lease.discovery", 2, (0, 1))
        assert fleet.alive() == list(WORKERS), fleet.report()
        assert scenario.migration() == state, "a refused worker changed Migration3.0"
        assert sorted(scenario.advertised()) == list(WORKERS), "a refused worker advertised"
    finally:
        producer.stop.set()
    producer.finish()

    # e. No record lost.
    scenario.wait_all_processed(90)
    print(f"{len(scenario.produced)} records, all processed; {elapsed()} in all")
    scenario.stop_all()
