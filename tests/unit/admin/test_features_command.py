"""``shardwise features``: Kafka's FeatureCommandTest cases, run through the click CLI against a real fleet record.

Every case runs on SQLite and on DynamoDB (moto's server): the lease table is created as a worker would create
it, the features record, ``Migration3.0`` and the workers' advertisements are real items. Output is checked the
way kafka-features prints it (kafka-features-and-state-stores.md A.10, A.12): result lines on stdout, the
"N out of M operation(s) failed." trailer and argument errors on stderr, exit status 1 on any failure.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from shardwise.admin import features as admin
from shardwise.backends import CoordinatorTables, open_coordinator_tables
from shardwise.backends.aws.leases import DynamoDBLeaseStore, DynamoDBLeaseStoreConfig
from shardwise.backends.sqlite.leases import SQLiteLeaseStore
from shardwise.cli.main import cli
from shardwise.config import BackendConfig
from shardwise.leases.store import LeaseStore
from shardwise.versions.feature_store import FEATURES_KEY, FeatureStore
from shardwise.versions.features import (
    LEASE_ASSIGNMENT,
    LEASE_DISCOVERY,
    STATE_FORMAT,
    TABLE_LAYOUT,
    SupportedRange,
    worker_supported_ranges,
)
from shardwise.versions.migration_state import ClientVersion, MigrationStore

REGION = "us-east-1"
ALL_FAILED = "The update failed for all features since the following feature had an error: "
DEPENDS = "lease.assignment could not be set to 2 because it depends on lease.discovery level 2."


def line(name: str, low: int, high: int, level: int, epoch: int | None) -> str:
    return (
        f"Feature: {name}\tSupportedMinVersion: {low}\tSupportedMaxVersion: {high}\t"
        f"FinalizedVersionLevel: {level}\tEpoch: {'-' if epoch is None else epoch}"
    )


@dataclass
class Fleet:
    """One application's lease table on one backend, and what the CLI needs to find it."""

    kind: str
    name: str
    store: LeaseStore
    backend: BackendConfig
    args: list[str]

    def tables(self) -> CoordinatorTables:
        return open_coordinator_tables(self.store, self.name)

    def features(self) -> FeatureStore:
        tables = self.tables()
        return FeatureStore(tables.coordinator, tables.worker_metrics)

    def client_version(self) -> ClientVersion | None:
        state = MigrationStore(self.tables().coordinator).read()
        return None if state is None else state.version

    def set_client_version(self, version: ClientVersion) -> None:
        assert MigrationStore(self.tables().coordinator).create(version, "KCL-worker") is not None

    def advertise(self, worker_id: str, ranges: dict[str, SupportedRange], release: str, at: float) -> None:
        self.features().advertise(worker_id, ranges, release, at)

    @property
    def target(self) -> admin.FeaturesTarget:
        return admin.FeaturesTarget(application_name=self.name)

    def run(self, *args: str) -> Result:
        """``shardwise features <subcommand> --app NAME <backend args> <args>``."""
        subcommand, *rest = args
        return invoke("features", subcommand, "--app", self.name, *self.args, *rest)

    def describe(self) -> list[str]:
        result = self.run("describe")
        assert result.exit_code == 0, result.stderr
        assert result.stderr == ""
        return result.stdout.splitlines()

    def epoch(self) -> int | None:
        data = json.loads(self.run("describe", "--json").stdout)
        epoch = data["epoch"]
        assert epoch is None or isinstance(epoch, int)
        return epoch


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def sqlite_fleet(tmp_path: Path) -> Fleet:
    db = tmp_path / "fleet.db"
    store = SQLiteLeaseStore(db, "orders")
    store.create_table_if_not_exists()
    return Fleet("sqlite", "orders", store, BackendConfig(backend="local", db=str(db)), ["--db", str(db)])


def dynamodb_fleet(endpoint: str) -> Fleet:
    name = f"features-{uuid.uuid4().hex[:10]}"
    store = DynamoDBLeaseStore(
        DynamoDBLeaseStoreConfig(table_name=name, table_poll_interval_s=0.05), endpoint_url=endpoint, region_name=REGION
    )
    store.create_table_if_not_exists()
    backend = BackendConfig(backend="aws", region=REGION, endpoint_url=endpoint)
    return Fleet("dynamodb", name, store, backend, ["--region", REGION, "--endpoint-url", endpoint])


@pytest.fixture(params=["sqlite", pytest.param("dynamodb", marks=pytest.mark.aws)])
def fleet(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Fleet]:
    if request.param == "sqlite":
        yield sqlite_fleet(tmp_path)
    else:
        yield dynamodb_fleet(request.getfixturevalue("moto_server").endpoint_url)


IMPLIED_ASSIGNMENT = (
    "Warning: lease.assignment is finalized at 1 too: lease.assignment and lease.discovery are one Migration3.0 item."
)


def assert_ok(result: Result, *lines: str) -> None:
    # Finalizing lease.discovery first creates Migration3.0, which finalizes lease.assignment at 1 as well.
    assert result.stderr in ("", IMPLIED_ASSIGNMENT + "\n")
    assert result.stdout.splitlines() == list(lines)
    assert result.exit_code == 0


def assert_failed(result: Result, lines: list[str], trailer: str) -> None:
    assert result.stdout.splitlines() == lines
    assert result.stderr.splitlines() == [trailer]
    assert result.exit_code == 1


def assert_usage_error(result: Result, message: str) -> None:
    assert result.stdout == ""
    assert result.stderr.splitlines() == [message]
    assert result.exit_code == 1


FRESH = [
    line(LEASE_ASSIGNMENT, 0, 2, 0, None),
    line(LEASE_DISCOVERY, 0, 2, 0, None),
    line(STATE_FORMAT, 0, 2, 0, None),
    line(TABLE_LAYOUT, 0, 2, 0, None),
]


# ============================================================================================== describe


class TestDescribe:
    def test_a_fleet_without_finalized_features(self, fleet: Fleet) -> None:
        assert fleet.describe() == FRESH

    def test_the_epoch_after_updates(self, fleet: Fleet) -> None:
        assert_ok(fleet.run("upgrade", "--feature", "lease.discovery=2"), "lease.discovery was upgraded to 2.")
        assert fleet.describe() == [
            line(LEASE_ASSIGNMENT, 0, 2, 1, 1),  # reflected from Migration3.0 (UPGRADE_FROM_2X)
            line(LEASE_DISCOVERY, 0, 2, 2, 1),
            line(STATE_FORMAT, 0, 2, 0, 1),  # not finalized; the epoch is the record's
            line(TABLE_LAYOUT, 0, 2, 2, 1),  # the features record put the coordinator items in one table
        ]
        assert_ok(
            fleet.run("upgrade", "--feature", "lease.assignment=2"),
            "lease.assignment was upgraded to 2.",
        )
        assert [entry.rsplit("\t", 1)[1] for entry in fleet.describe()] == ["Epoch: 2"] * 4

    def test_supported_range_is_the_live_fleets(self, fleet: Fleet) -> None:
        now = time.time()
        fleet.advertise(
            "worker-2x", worker_supported_ranges(assignment="lease-count-2x", follows_migration=False), "0.3", now
        )
        fleet.advertise(
            "worker-old",
            worker_supported_ranges(assignment="lease-count-2x", follows_migration=True, release="0.1"),
            "0.1",
            now,
        )
        assert fleet.describe() == [
            line(LEASE_ASSIGNMENT, 0, 1, 0, None),
            line(LEASE_DISCOVERY, 0, 1, 0, None),
            line(STATE_FORMAT, 0, 0, 0, None),  # release 0.1 had no state stores: no common level
            line(TABLE_LAYOUT, 0, 1, 0, None),
        ]
        data = json.loads(fleet.run("describe", "--json").stdout)
        assert [(w["worker_id"], w["release"]) for w in data["workers"]] == [
            ("worker-2x", "0.3"),
            ("worker-old", "0.1"),
        ]
        assert data["workers"][0]["supported"][LEASE_ASSIGNMENT] == {"min": 0, "max": 1}

    def test_json_history_shows_every_applied_change(self, fleet: Fleet) -> None:
        assert fleet.run("upgrade", "--feature", "lease.discovery=2").exit_code == 0
        assert fleet.run("upgrade", "--feature", "lease.assignment=2").exit_code == 0
        assert fleet.run("downgrade", "--feature", "lease.assignment=1").exit_code == 0
        assert fleet.run("upgrade", "--feature", "lease.assignment=2", "--dry-run").exit_code == 0
        assert fleet.run("disable", "--feature", "lease.discovery").exit_code == 1
        result = fleet.run("describe", "--json")
        assert result.exit_code == 0
        data = json.loads(result.stdout)
        assert data["ok"] is True
        assert data["epoch"] == 3
        assert data["client_version"] == ClientVersion.UPGRADE_FROM_2X.value
        assert data["layout"] == "single-table"
        assert [(h["epoch"], h["changes"]) for h in data["history"]] == [
            (3, {LEASE_ASSIGNMENT: {"from": 2, "to": 1}}),
            (2, {LEASE_ASSIGNMENT: {"from": 1, "to": 2}}),
            (1, {LEASE_ASSIGNMENT: {"from": 0, "to": 1}, LEASE_DISCOVERY: {"from": 0, "to": 2}}),
        ]
        assert all(h["modified_by"].startswith("shardwise-features@") for h in data["history"])
        stamps = [h["modified_at_ms"] for h in data["history"]]
        assert stamps == sorted(stamps, reverse=True)
        assert [f["finalized_version_level"] for f in data["features"]] == [1, 2, 0, 2]
        assert data["features"][0]["source"] == "Migration3.0 (CLIENT_VERSION_UPGRADE_FROM_2X)"

    def test_an_application_without_a_lease_table(self, fleet: Fleet) -> None:
        assert_ok(invoke("features", "describe", "--app", "nobody-here", *fleet.args), *FRESH)
        assert_failed(
            invoke("features", "upgrade", "--app", "nobody-here", *fleet.args, "--feature", "lease.discovery=2"),
            [
                f"Could not upgrade lease.discovery to 2. {ALL_FAILED}the lease table nobody-here does not exist; "
                "start a worker of the application first (it creates the table)"
            ],
            "1 out of 1 operation(s) failed.",
        )

    def test_a_missing_sqlite_database(self, tmp_path: Path) -> None:
        missing = tmp_path / "missing.db"
        assert_usage_error(
            invoke("features", "describe", "--app", "orders", "--db", str(missing)),
            f"no SQLite database {missing}: start a worker first, or pass the database with --db",
        )


# ========================================================================================= upgrade/downgrade


class TestUpgradeDowngrade:
    def test_upgrade(self, fleet: Fleet) -> None:
        assert_ok(fleet.run("upgrade", "--feature", "lease.discovery=2"), "lease.discovery was upgraded to 2.")
        assert fleet.client_version() is ClientVersion.UPGRADE_FROM_2X

    def test_downgrade(self, fleet: Fleet) -> None:
        assert fleet.run("upgrade", "--feature", "lease.discovery=2").exit_code == 0
        assert_ok(fleet.run("downgrade", "--feature", "lease.discovery=1"), "lease.discovery was downgraded to 1.")
        assert fleet.client_version() is ClientVersion.V2X
        assert fleet.describe()[1] == line(LEASE_DISCOVERY, 0, 2, 1, 2)

    def test_upgrade_to_a_lower_level_needs_downgrade(self, fleet: Fleet) -> None:
        assert fleet.run("upgrade", "--feature", "lease.discovery=2").exit_code == 0
        assert_failed(
            fleet.run("upgrade", "--feature", "lease.discovery=1"),
            [
                "Could not upgrade lease.discovery to 1. "
                + ALL_FAILED
                + "Invalid update version 1 for feature lease.discovery. Can't downgrade the version of this feature "
                "without setting the upgrade type to either safe or unsafe downgrade."
            ],
            "1 out of 1 operation(s) failed.",
        )

    def test_downgrade_to_a_newer_version(self, fleet: Fleet) -> None:
        assert_failed(
            fleet.run("downgrade", "--feature", "lease.discovery=2"),
            [
                "Could not downgrade lease.discovery to 2. "
                + ALL_FAILED
                + "Invalid update version 2 for feature lease.discovery. Can't downgrade to a newer version."
            ],
            "1 out of 1 operation(s) failed.",
        )
        assert fleet.epoch() is None

    def test_dependencies_change_together(self, fleet: Fleet) -> None:
        alone = fleet.run("upgrade", "--feature", "lease.assignment=2")
        assert_failed(
            alone,
            [
                f"Could not upgrade lease.assignment to 2. {ALL_FAILED}Invalid update version 2 for feature "
                f"lease.assignment. {DEPENDS}"
            ],
            "1 out of 1 operation(s) failed.",
        )
        assert "depends on lease.discovery level 2" in alone.stdout
        assert fleet.epoch() is None
        assert fleet.client_version() is None
        assert_ok(
            fleet.run("upgrade", "--feature", "lease.assignment=2", "--feature", "lease.discovery=2"),
            "lease.assignment was upgraded to 2.",
            "lease.discovery was upgraded to 2.",
        )
        status = invoke("migrate", "status", "--app", fleet.name, *fleet.args, "--json")
        assert status.exit_code == 0, status.output
        assert json.loads(status.stdout)["clientVersion"] == "CLIENT_VERSION_3X_WITH_ROLLBACK"
        assert fleet.client_version() is ClientVersion.V3X_WITH_ROLLBACK

    def test_a_downgrade_may_not_break_a_dependent_feature(self, fleet: Fleet) -> None:
        assert fleet.run("upgrade", "--release-version", "0.3").exit_code == 0
        assert_failed(
            fleet.run("downgrade", "--feature", "lease.discovery=1"),
            [
                f"Could not downgrade lease.discovery to 1. {ALL_FAILED}Invalid update version 1 for feature "
                "lease.discovery. lease.discovery could not be set to 1 because lease.assignment=2 depends on "
                "lease.discovery level 2."
            ],
            "1 out of 1 operation(s) failed.",
        )
        assert_ok(
            fleet.run("downgrade", "--feature", "lease.discovery=1", "--feature", "lease.assignment=1"),
            "lease.assignment was downgraded to 1.",
            "lease.discovery was downgraded to 1.",
        )
        assert fleet.client_version() is ClientVersion.V2X

    def test_every_operation_fails_together(self, fleet: Fleet) -> None:
        result = fleet.run("upgrade", "--feature", "table.layout=2", "--feature", "lease.assignment=2")
        reason = f"{ALL_FAILED}Invalid update version 2 for feature lease.assignment. {DEPENDS}"
        assert_failed(
            result,
            [f"Could not upgrade lease.assignment to 2. {reason}", f"Could not upgrade table.layout to 2. {reason}"],
            "2 out of 2 operation(s) failed.",
        )
        assert fleet.epoch() is None

    def test_unknown_feature_and_level(self, fleet: Fleet) -> None:
        assert_failed(
            fleet.run("upgrade", "--feature", "foo=1"),
            [
                f"Could not upgrade foo to 1. {ALL_FAILED}Invalid update version 1 for feature foo. This release of "
                "shardwise does not know this feature "
                "(it knows lease.assignment, lease.discovery, table.layout, state.format)."
            ],
            "1 out of 1 operation(s) failed.",
        )
        assert_failed(
            fleet.run("upgrade", "--feature", "lease.assignment=3"),
            [
                f"Could not upgrade lease.assignment to 3. {ALL_FAILED}Invalid update version 3 for feature "
                "lease.assignment. This release of shardwise only knows versions 0-2 of this feature."
            ],
            "1 out of 1 operation(s) failed.",
        )
        assert_failed(
            fleet.run("upgrade", "--feature", "lease.assignment=-1"),
            [
                f"Could not upgrade lease.assignment to -1. {ALL_FAILED}Invalid update version -1 for feature "
                "lease.assignment. A feature version cannot be less than 0."
            ],
            "1 out of 1 operation(s) failed.",
        )

    def test_lossy_downgrade_from_3x_needs_unsafe(self, fleet: Fleet) -> None:
        fleet.set_client_version(ClientVersion.V3X)
        assert fleet.describe()[0] == line(LEASE_ASSIGNMENT, 0, 2, 2, None)
        refused = fleet.run("downgrade", "--feature", "lease.assignment=1")
        assert refused.exit_code == 1
        assert refused.stdout.startswith(
            f"Could not downgrade lease.assignment to 1. {ALL_FAILED}Invalid update version 1 for feature "
            "lease.assignment. Refusing to perform the requested downgrade because it might lose data"
        )
        assert refused.stderr.splitlines() == ["1 out of 1 operation(s) failed."]
        assert fleet.client_version() is ClientVersion.V3X
        assert_ok(
            fleet.run("downgrade", "--feature", "lease.assignment=1", "--unsafe"),
            "lease.assignment was downgraded to 1.",
        )
        assert fleet.client_version() is ClientVersion.UPGRADE_FROM_2X

    def test_unsafe_is_for_downgrades(self, fleet: Fleet) -> None:
        result = fleet.run("upgrade", "--feature", "lease.discovery=2", "--unsafe")
        assert result.exit_code == 2  # click: no such option on upgrade
        assert "--unsafe" in result.stderr

    def test_json_output(self, fleet: Fleet) -> None:
        result = fleet.run("upgrade", "--feature", "lease.discovery=2", "--json")
        assert result.exit_code == 0
        data = json.loads(result.stdout)
        assert data["ok"] is True
        assert data["operation"] == "upgrade"
        assert (data["epoch_before"], data["epoch_after"]) == (None, 1)
        assert data["outcomes"] == [
            {"feature": LEASE_DISCOVERY, "level": 2, "ok": True, "message": "lease.discovery was upgraded to 2."}
        ]
        failed = fleet.run("upgrade", "--feature", "lease.assignment=3", "--json")
        assert failed.exit_code == 1
        assert json.loads(failed.stdout)["ok"] is False
        assert failed.stderr.splitlines() == ["1 out of 1 operation(s) failed."]

    def test_choosing_the_layout(self, fleet: Fleet) -> None:
        """An application without coordinator items may choose its layout: DynamoDB has both, SQLite only one."""
        chosen = fleet.run("upgrade", "--feature", "table.layout=1")
        if fleet.kind == "sqlite":
            assert_failed(
                chosen,
                [
                    f"Could not upgrade table.layout to 1. {ALL_FAILED}Invalid update version 1 for feature "
                    "table.layout. This backend has only the single-table layout (2)."
                ],
                "1 out of 1 operation(s) failed.",
            )
            return
        assert_ok(chosen, "table.layout was upgraded to 1.")
        assert fleet.describe()[3] == line(TABLE_LAYOUT, 0, 2, 1, 1)
        assert fleet.tables().layout == "legacy"
        assert json.loads(fleet.run("describe", "--json").stdout)["layout"] == "legacy"
        assert_ok(fleet.run("upgrade", "--feature", "lease.discovery=2"), "lease.discovery was upgraded to 2.")
        assert fleet.client_version() is ClientVersion.UPGRADE_FROM_2X  # in <app>-CoordinatorState
        assert_failed(
            fleet.run("upgrade", "--feature", "table.layout=2"),
            [
                f"Could not upgrade table.layout to 2. {ALL_FAILED}Invalid update version 2 for feature "
                "table.layout. The application's coordinator items already live in the legacy layout; this release "
                "cannot move them. Only an application without coordinator items can choose its layout."
            ],
            "1 out of 1 operation(s) failed.",
        )


# ============================================================================================== disable


class TestDisable:
    def test_reflected_features_cannot_be_disabled(self, fleet: Fleet) -> None:
        assert fleet.run("upgrade", "--feature", "lease.discovery=2").exit_code == 0
        assert_failed(
            fleet.run("disable", "--feature", "lease.assignment"),
            [
                f"Could not disable lease.assignment. {ALL_FAILED}Invalid update version 0 for feature "
                "lease.assignment. lease.assignment is kept in KCL's Migration3.0 item, which has no 'off' state; "
                "there is no safe path to level 0. Downgrade it to 1 instead."
            ],
            "1 out of 1 operation(s) failed.",
        )
        assert fleet.epoch() == 1

    def test_the_layout_cannot_be_disabled_once_chosen(self, fleet: Fleet) -> None:
        assert fleet.run("upgrade", "--feature", "lease.discovery=2").exit_code == 0
        assert_failed(
            fleet.run("disable", "--feature", "table.layout", "--unsafe"),
            [
                f"Could not disable table.layout. {ALL_FAILED}Invalid update version 0 for feature table.layout. "
                "There is no safe path from the single-table layout back to separate tables: the coordinator and "
                "worker-metrics items cannot be moved out of the lease table while workers run."
            ],
            "1 out of 1 operation(s) failed.",
        )

    def test_disabling_a_feature_that_is_not_finalized(self, fleet: Fleet) -> None:
        """Kafka accepts an unchanged level (A.6 step 6): disabling what is off succeeds."""
        assert_ok(
            fleet.run("disable", "--feature", "lease.assignment", "--dry-run"), "lease.assignment can be disabled."
        )
        assert fleet.epoch() is None
        assert_ok(fleet.run("disable", "--feature", "lease.assignment"), "lease.assignment was disabled.")
        assert fleet.describe()[:2] == [line(LEASE_ASSIGNMENT, 0, 2, 0, 1), line(LEASE_DISCOVERY, 0, 2, 0, 1)]
        assert fleet.client_version() is None

    def test_disable_takes_names_only(self, fleet: Fleet) -> None:
        assert_usage_error(
            fleet.run("disable", "--feature", "lease.assignment=0"),
            "disable takes feature names without a level, got lease.assignment=0",
        )


# ============================================================================================== dry run


class TestDryRun:
    def test_dry_run_success_writes_nothing(self, fleet: Fleet) -> None:
        assert_ok(
            fleet.run("upgrade", "--feature", "lease.discovery=2", "--feature", "lease.assignment=2", "--dry-run"),
            "lease.assignment can be upgraded to 2.",
            "lease.discovery can be upgraded to 2.",
        )
        assert fleet.describe() == FRESH
        assert fleet.client_version() is None
        assert fleet.features().coordinator.get(FEATURES_KEY) is None

    def test_dry_run_downgrade_and_disable(self, fleet: Fleet) -> None:
        assert fleet.run("upgrade", "--feature", "lease.discovery=2").exit_code == 0
        assert_ok(
            fleet.run("downgrade", "--feature", "lease.discovery=1", "--dry-run"),
            "lease.discovery can be downgraded to 1.",
        )
        result = fleet.run("disable", "--feature", "lease.discovery", "--dry-run")
        assert result.stdout.startswith(f"Can not disable lease.discovery. {ALL_FAILED}")
        assert result.stderr.splitlines() == ["1 out of 1 operation(s) failed."]
        assert fleet.epoch() == 1
        assert fleet.client_version() is ClientVersion.UPGRADE_FROM_2X

    def test_dry_run_failure_says_can_not(self, fleet: Fleet) -> None:
        assert_failed(
            fleet.run("upgrade", "--feature", "lease.assignment=2", "--dry-run"),
            [
                f"Can not upgrade lease.assignment to 2. {ALL_FAILED}Invalid update version 2 for feature "
                f"lease.assignment. {DEPENDS}"
            ],
            "1 out of 1 operation(s) failed.",
        )

    def test_dry_run_of_a_release(self, fleet: Fleet) -> None:
        assert_ok(
            fleet.run("upgrade", "--release-version", "0.3", "--dry-run"),
            "lease.assignment can be upgraded to 2.",
            "lease.discovery can be upgraded to 2.",
            "state.format can be upgraded to 1.",
            "table.layout can be upgraded to 2.",
        )
        assert fleet.epoch() is None


# ========================================================================================= release version


class TestReleaseVersion:
    def test_upgrade_and_downgrade_to_a_release(self, fleet: Fleet) -> None:
        assert_ok(
            fleet.run("upgrade", "--release-version", "0.3"),
            "lease.assignment was upgraded to 2.",
            "lease.discovery was upgraded to 2.",
            "state.format was upgraded to 1.",
            "table.layout was upgraded to 2.",
        )
        assert fleet.client_version() is ClientVersion.V3X_WITH_ROLLBACK
        assert_ok(
            fleet.run("downgrade", "--release-version", "0.2.7"),
            "lease.assignment was downgraded to 1.",
            "lease.discovery was downgraded to 2.",
            "state.format was downgraded to 0.",  # release 0.2 had no state stores (Kafka's wording for 0)
            "table.layout was downgraded to 2.",
        )
        assert fleet.client_version() is ClientVersion.UPGRADE_FROM_2X
        assert fleet.describe() == [
            line(LEASE_ASSIGNMENT, 0, 2, 1, 2),
            line(LEASE_DISCOVERY, 0, 2, 2, 2),
            line(STATE_FORMAT, 0, 2, 0, 2),
            line(TABLE_LAYOUT, 0, 2, 2, 2),
        ]

    def test_this_release_finalizes_the_in_store_state_format(self, fleet: Fleet) -> None:
        """Release 0.3 finalizes state.format 1 (sidecar checkpoint), 0.4 — this release — 2 (offsets in the store);
        a live worker pinned to 0.3 blocks 2, and a downgrade to 0.3 goes back to 1."""
        assert fleet.run("upgrade", "--release-version", "0.3").exit_code == 0
        pinned = worker_supported_ranges(assignment="lease-count-2x", follows_migration=True, release="0.3")
        fleet.advertise("worker-03", pinned, "0.3", time.time())
        reason = (
            f"{ALL_FAILED}Invalid update version 2 for feature state.format. "
            "Worker worker-03 only supports versions 0-1"
        )
        assert_failed(
            fleet.run("upgrade", "--release-version", "0.4"),
            [
                f"Could not upgrade lease.assignment to 2. {reason}",
                f"Could not upgrade lease.discovery to 2. {reason}",
                f"Could not upgrade state.format to 2. {reason}",
                f"Could not upgrade table.layout to 2. {reason}",
            ],
            "4 out of 4 operation(s) failed.",
        )
        assert fleet.epoch() == 1
        fleet.advertise("worker-03", pinned, "0.3", time.time() - 3600)  # the pinned worker is gone
        assert_ok(
            fleet.run("upgrade", "--release-version", "0.4"),
            "lease.assignment was upgraded to 2.",
            "lease.discovery was upgraded to 2.",
            "state.format was upgraded to 2.",
            "table.layout was upgraded to 2.",
        )
        assert fleet.describe()[2] == line(STATE_FORMAT, 0, 2, 2, 2)
        assert_ok(
            fleet.run("downgrade", "--release-version", "0.3"),
            "lease.assignment was downgraded to 2.",
            "lease.discovery was downgraded to 2.",
            "state.format was downgraded to 1.",
            "table.layout was downgraded to 2.",
        )
        assert fleet.describe()[2] == line(STATE_FORMAT, 0, 2, 1, 3)

    def test_downgrade_to_a_newer_release_fails_for_all(self, fleet: Fleet) -> None:
        assert fleet.run("upgrade", "--release-version", "0.2").exit_code == 0
        result = fleet.run("downgrade", "--release-version", "0.3")
        reason = (
            f"{ALL_FAILED}Invalid update version 2 for feature lease.assignment. Can't downgrade to a newer version."
        )
        assert_failed(
            result,
            [
                f"Could not downgrade lease.assignment to 2. {reason}",
                f"Could not downgrade lease.discovery to 2. {reason}",
                f"Could not downgrade state.format to 1. {reason}",
                f"Could not downgrade table.layout to 2. {reason}",
            ],
            "4 out of 4 operation(s) failed.",
        )

    def test_invalid_release_version(self, fleet: Fleet) -> None:
        for operation in ("upgrade", "downgrade"):
            assert_usage_error(
                fleet.run(operation, "--release-version", "9.9"),
                "Unknown release version 9.9. Supported release versions are 0.1, 0.2, 0.3, 0.4",
            )
        assert fleet.epoch() is None

    def test_release_version_with_features(self, fleet: Fleet) -> None:
        assert_usage_error(
            fleet.run("upgrade", "--release-version", "0.3", "--feature", "lease.discovery=2"),
            "Can not specify `release-version` with other feature flags.",
        )


# ============================================================================================ arguments


class TestArguments:
    def test_a_feature_specified_more_than_once(self, fleet: Fleet) -> None:
        assert_usage_error(
            fleet.run("upgrade", "--feature", "lease.discovery=2", "--feature", "lease.discovery=1"),
            "Feature lease.discovery was specified more than once.",
        )
        assert_usage_error(
            fleet.run("disable", "--feature", "table.layout", "--feature", "table.layout"),
            "Feature table.layout was specified more than once.",
        )

    @pytest.mark.parametrize(
        ("spec", "message"),
        [
            ("lease.discovery", "Can't parse feature=level string lease.discovery: equals sign not found."),
            ("lease.discovery=x", "Can't parse feature=level string lease.discovery=x: unable to parse x as a short."),
            (
                "lease.discovery=40000",
                "Can't parse feature=level string lease.discovery=40000: unable to parse 40000 as a short.",
            ),
        ],
    )
    def test_unparsable_feature_level(self, fleet: Fleet, spec: str, message: str) -> None:
        assert_usage_error(fleet.run("upgrade", "--feature", spec), message)
        assert_usage_error(fleet.run("downgrade", "--feature", spec), message)

    def test_nothing_to_do(self, fleet: Fleet) -> None:
        for operation in ("upgrade", "downgrade", "disable"):
            assert_usage_error(fleet.run(operation), f"You must specify at least one feature to {operation}")


# ============================================================================================ live workers


class TestLiveWorkers:
    def test_a_worker_pinned_to_an_older_release_blocks_the_upgrade(self, fleet: Fleet) -> None:
        pinned = worker_supported_ranges(assignment="lease-count-2x", follows_migration=True, release="0.2")
        fleet.advertise("worker-b", pinned, "0.2", time.time())
        fleet.advertise(
            "worker-a", worker_supported_ranges(assignment="lease-count-2x", follows_migration=True), "0.3", time.time()
        )
        reason = (
            f"{ALL_FAILED}Invalid update version 2 for feature lease.assignment. Worker worker-b only supports "
            "versions 0-1"
        )
        assert_failed(
            fleet.run("upgrade", "--feature", "lease.assignment=2", "--feature", "lease.discovery=2"),
            [f"Could not upgrade lease.assignment to 2. {reason}", f"Could not upgrade lease.discovery to 2. {reason}"],
            "2 out of 2 operation(s) failed.",
        )
        assert fleet.epoch() is None
        # what the pinned worker does support goes through
        assert_ok(
            fleet.run("upgrade", "--release-version", "0.2"),
            *[
                "lease.assignment was upgraded to 1.",
                "lease.discovery was upgraded to 2.",
                "table.layout was upgraded to 2.",
            ],
        )

    def test_a_stale_advertisement_does_not_block(self, fleet: Fleet) -> None:
        pinned = worker_supported_ranges(assignment="lease-count-2x", follows_migration=True, release="0.2")
        fleet.advertise("worker-gone", pinned, "0.2", time.time() - 3600)
        assert fleet.describe() == FRESH
        assert json.loads(fleet.run("describe", "--json").stdout)["workers"] == []
        assert_ok(
            fleet.run("upgrade", "--feature", "lease.assignment=2", "--feature", "lease.discovery=2"),
            "lease.assignment was upgraded to 2.",
            "lease.discovery was upgraded to 2.",
        )

    def test_unsafe_downgrade_warns_about_workers_that_will_stop(self, fleet: Fleet) -> None:
        assert fleet.run("upgrade", "--release-version", "0.3").exit_code == 0
        final = worker_supported_ranges(assignment="utilization-3x", follows_migration=False)
        fleet.advertise("worker-3x", final, "0.3", time.time())
        safe = fleet.run("downgrade", "--feature", "lease.assignment=1")
        assert safe.exit_code == 1
        assert "Worker worker-3x only supports versions 2-2" in safe.stdout
        unsafe = fleet.run("downgrade", "--feature", "lease.assignment=1", "--unsafe")
        assert unsafe.exit_code == 0
        assert unsafe.stdout.splitlines() == ["lease.assignment was downgraded to 1."]
        assert unsafe.stderr.splitlines() == [
            "Warning: Worker worker-3x only supports versions 2-2 of lease.assignment: it will stop processing "
            "(cleanly) when it sees level 1; restart it on a release that supports it."
        ]


# ========================================================================================= offline lookups


class TestVersionMapping:
    def test_default_is_this_release(self) -> None:
        result = invoke("features", "version-mapping")
        assert_ok(result, "lease.assignment=2", "lease.discovery=2", "table.layout=2", "state.format=2")

    def test_an_older_release(self) -> None:
        assert_ok(
            invoke("features", "version-mapping", "--release-version", "0.1"),
            "lease.assignment=1",
            "lease.discovery=1",
            "table.layout=1",
            "state.format=0",
        )
        assert_ok(
            invoke("features", "version-mapping", "--release-version", "0.2"),
            "lease.assignment=1",
            "lease.discovery=2",
            "table.layout=2",
            "state.format=0",
        )
        assert_ok(
            invoke("features", "version-mapping", "--release-version", "0.3"),
            "lease.assignment=2",
            "lease.discovery=2",
            "table.layout=2",
            "state.format=1",
        )

    def test_unknown_release(self) -> None:
        assert_usage_error(
            invoke("features", "version-mapping", "--release-version", "2.0"),
            "Unknown release version '2.0'. Supported versions are: 0.1 to 0.4",
        )


class TestFeatureDependencies:
    def test_with_dependencies(self) -> None:
        assert_ok(
            invoke("features", "feature-dependencies", "--feature", "lease.assignment=2"),
            "lease.assignment=2 requires:",
            "    lease.discovery=2",
        )

    def test_without_dependencies(self) -> None:
        assert_ok(
            invoke(
                "features",
                "feature-dependencies",
                "--feature",
                "lease.assignment=1",
                "--feature",
                "table.layout=2",
                "--feature",
                "lease.discovery=0",
            ),
            "lease.assignment=1 has no dependencies.",
            "table.layout=2 has no dependencies.",
            "lease.discovery=0 has no dependencies.",
        )

    def test_unknown_feature(self) -> None:
        assert_usage_error(invoke("features", "feature-dependencies", "--feature", "x=1"), "Unknown feature: x")

    def test_unknown_level(self) -> None:
        assert_usage_error(
            invoke("features", "feature-dependencies", "--feature", "lease.assignment=1000"),
            "No feature:lease.assignment with feature level 1000",
        )

    def test_bad_number(self) -> None:
        assert_usage_error(
            invoke("features", "feature-dependencies", "--feature", "lease.assignment=two"),
            "Can't parse feature=level string lease.assignment=two: unable to parse two as a short.",
        )

    def test_nothing_asked(self) -> None:
        assert_usage_error(
            invoke("features", "feature-dependencies"), "You must specify at least one feature with --feature"
        )


# ============================================================================================== admin API


class TestAdminApi:
    def test_update_and_describe(self, fleet: Fleet) -> None:
        result = admin.update(
            fleet.target, fleet.backend, "upgrade", {LEASE_ASSIGNMENT: 2, LEASE_DISCOVERY: 2}, modified_by="ops-test"
        )
        assert result.ok
        assert result.exit_status == 0
        assert result.trailer is None
        assert (result.epoch_before, result.epoch_after) == (-1, 1)
        assert result.lines() == ["lease.assignment was upgraded to 2.", "lease.discovery was upgraded to 2."]

        description = admin.describe(fleet.target, fleet.backend)
        assert description.ok
        assert description.epoch == 1
        assert description.client_version == ClientVersion.V3X_WITH_ROLLBACK.value
        assert description.lines() == [
            line(LEASE_ASSIGNMENT, 0, 2, 2, 1),
            line(LEASE_DISCOVERY, 0, 2, 2, 1),
            line(STATE_FORMAT, 0, 2, 0, 1),
            line(TABLE_LAYOUT, 0, 2, 2, 1),
        ]
        assert [(change.epoch, change.modified_by, dict(change.changes)) for change in description.history] == [
            (1, "ops-test", {LEASE_ASSIGNMENT: (0, 2), LEASE_DISCOVERY: (0, 2)})
        ]

    def test_a_failed_update_is_a_result(self, fleet: Fleet) -> None:
        result = admin.update(fleet.target, fleet.backend, "upgrade", {LEASE_ASSIGNMENT: 2}, dry_run=True)
        assert not result.ok
        assert result.exit_status == 1
        assert result.failed == 1
        assert result.trailer == "1 out of 1 operation(s) failed."
        assert result.error is not None
        assert DEPENDS in result.error

    def test_a_stale_read_loses_the_race(self, fleet: Fleet) -> None:
        store = fleet.features()
        before = store.read()
        assert store.apply(before, {LEASE_DISCOVERY: 2}, "writer-1") is not None
        assert store.apply(before, {LEASE_DISCOVERY: 1}, "writer-2") is None
        assert store.read().levels[LEASE_DISCOVERY] == 2


class TestImpliedByMigrationItem:
    """lease.assignment and lease.discovery are one Migration3.0 item: creating it finalizes both."""

    def test_the_implied_level_is_reported_and_recorded(self, fleet: Fleet) -> None:
        result = fleet.run("upgrade", "--feature", "lease.discovery=2")
        assert result.exit_code == 0
        assert result.stdout.splitlines() == ["lease.discovery was upgraded to 2."]
        assert result.stderr == IMPLIED_ASSIGNMENT + "\n"
        history = json.loads(fleet.run("describe", "--json").stdout)["history"]
        assert history[0]["changes"] == {
            LEASE_ASSIGNMENT: {"from": 0, "to": 1},
            LEASE_DISCOVERY: {"from": 0, "to": 2},
        }

    def test_the_implied_level_is_validated_against_live_workers(self, fleet: Fleet) -> None:
        only_3x = worker_supported_ranges(assignment="utilization-3x", follows_migration=False)
        fleet.advertise("pure-3x", only_3x, "0.3", time.time())
        result = fleet.run("upgrade", "--feature", "lease.discovery=2")
        assert result.exit_code == 1
        assert "Invalid update version 1 for feature lease.assignment. Worker pure-3x only supports versions 2-2" in (
            result.stdout
        )
        assert fleet.client_version() is None

    def test_a_dependency_is_not_satisfied_by_an_implied_level(self, fleet: Fleet) -> None:
        result = fleet.run("upgrade", "--feature", "lease.assignment=2")
        assert result.exit_code == 1
        assert "because it depends on lease.discovery level 2" in result.stdout


def test_table_layout_cannot_be_left_unset_by_a_first_write(fleet: Fleet) -> None:
    result = fleet.run("disable", "--feature", "table.layout")
    assert result.exit_code == 1
    assert "finalize table.layout=1 (legacy tables) or table.layout=2 (single table) instead" in result.stdout
    assert fleet.features().read().record is None
