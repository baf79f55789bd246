"""``shardwise migrate rollback | rollforward | status`` and the admin API behind it.

Every precondition and message of KclMigrationTool.py (kcl-protocol.md §1) is checked word for word, from
every client version, in both DynamoDB layouts (on moto) and on SQLite; plus what shardwise does better:
the stricter conditional write (a concurrent writer always makes exactly one of two racers win), the wait
for workers to leave KCL 3.x mode, the verified clean-up, dry runs, exit statuses and JSON.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

import boto3
import pytest
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError
from click.testing import CliRunner, Result

from shardwise.admin import migrate as admin
from shardwise.admin.migrate import MigrationResult, MigrationTarget
from shardwise.backends import open_coordinator_tables
from shardwise.backends.aws.items import DynamoDBItemTable
from shardwise.backends.aws.leases import OWNER_INDEX_NAME, DynamoDBLeaseStore, DynamoDBLeaseStoreConfig
from shardwise.backends.sqlite.items import SQLiteItemTable
from shardwise.backends.sqlite.leases import SQLiteLeaseStore
from shardwise.checkpoint.sequence import TRIM_HORIZON
from shardwise.cli.main import cli
from shardwise.config import BackendConfig
from shardwise.leases.model import Lease
from shardwise.leases.store import LeaseStore
from shardwise.tables.items import ItemTable, Layout

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient

REGION = "us-east-1"
MIGRATION_KEY = "Migration3.0"
NOW = 1_800_000_000.0  # epoch seconds of the fake clock
OLD_MTS = 1_700_000_000_000

V2X = "CLIENT_VERSION_2X"
UPG = "CLIENT_VERSION_UPGRADE_FROM_2X"
V3XWR = "CLIENT_VERSION_3X_WITH_ROLLBACK"
V3X = "CLIENT_VERSION_3X"

# -- KclMigrationTool.py's lines, as kcl-protocol.md §1 quotes them ------------------------------------------

ALREADY_2X = (
    "Your KCL application already runs in a mode compatible with KCL 2.x. You can deploy the code with the "
    "previous KCL version if you still experience an issue."
)
REFUSED_3X = "Cannot roll back the KCL application. It is not in a state that supports rollback."
NOT_IN_PROGRESS = (
    "Migration to KCL 3.0 not in progress or application_name / coordinator_state_table_name is incorrect. "
    "Please double check and run again with correct arguments."
)
ROLLBACK_CONDITION_FAILED = (
    "Unable to rollback, as application is not in a state that allows rollback.Ensure that the given "
    "application_name or coordinator_state_table_name is correct and you have followed all prior migration steps."
)
DONE_FROM_UPG = [
    "\nRollback completed. Your application was running 2x compatible functionality.",
    "Please rollback to your previous application binaries by deploying the code with your previous KCL version.",
]
DONE_FROM_3XWR = [
    "\nRollback completed. Your KCL Application was running 3x functionality and will rollback to 2x compatible "
    "functionality.",
    "If you don't see mitigation after a short period of time, please rollback to your previous application "
    "binaries by deploying the code with your previous KCL version.",
]
ALREADY_DONE = [
    "\nApplication was already rolled back. Any KCLv3 resources that could be deleted were cleaned up to avoid "
    "charges until the application can be rolled forward with migration."
]
FINAL = {UPG: DONE_FROM_UPG, V3XWR: DONE_FROM_3XWR, V2X: ALREADY_DONE}

RF_NOT_ROLLED_BACK = "Cannot roll-forward application. It is not in a rolled back state."
RF_ALREADY_MIGRATED = "Cannot roll-forward the KCL application. Application has already migrated."
RF_NOT_IN_PROGRESS = (
    "Cannot roll-forward because migration to KCL 3.0 is not in progress or application_name / "
    "coordinator_state_table_name is incorrect. Please double check and run again with correct arguments."
)
RF_INITIATED = (
    "Roll-forward has been initiated. KCL application will monitor for 3.0 readiness and automatically switch to "
    "3.0 functionality when readiness criteria have been met."
)
RF_CONDITION_FAILED = (
    "Unable to roll-forward because application is not in rolled back state. Ensure that the given "
    "application_name or coordinator_state_table_name is correct and you have followed all prior migration steps."
)
READ_RETRY = "Please resolve the issue and run the KclMigrationTool again."


# Templates: fill in with str.format (``{operation}`` is "Rollback" or "Roll-forward").
LEASE_TABLE_NOT_FOUND = (
    "{operation} failed. Could not find a KCL Application DDB lease table with name {table}. Please pass in "
    "the correct application_name and/or lease_table_name that matches your KCL application configuration."
)
COORDINATOR_TABLE_NOT_FOUND = (
    "{operation} failed. Could not find a coordinator state table {table}. Please pass in the correct "
    "application_name or coordinator_state_table_name that matches your KCL application configuration."
)
GSI_DELETING = "Deleting GSI 'LeaseOwnerToLeaseKeyIndex' from table '{table}'..."
GSI_ABSENT = (
    "GSI LeaseOwnerToLeaseKeyIndex is not present on lease table {table}. It may already be successfully "
    "deleted. Or if lease table name is incorrect, please re-run the KclMigrationTool with correct "
    "application_name or lease_table_name."
)
METRICS_TABLE_DELETING = "Deleting worker metrics table {table}..."
METRICS_TABLE_ABSENT = (
    "Worker metrics table {table} does not exist. It may already be successfully deleted. Please check that "
    "the application_name or worker_metrics_table_name is correct. If not, correct this and rerun the "
    "migration script."
)


def missing_table(not_found: str, operation: str, table: str) -> list[str]:
    """The tool's lines for a missing table: that it does not exist, then ``not_found`` filled in."""
    return [f"Table '{table}' does not exist.", not_found.format(operation=operation, table=table)]


# -- applications under test ---------------------------------------------------------------------------------


class FakeTime:
    """``clock`` and ``sleep`` for the admin API: sleeping advances the clock and runs the callbacks."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now
        self.slept: list[float] = []
        self.on_sleep: list[Callable[[], None]] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        for callback in self.on_sleep:
            callback()


class App(Protocol):
    """An application whose tables a test sets up; implemented for SQLite and both DynamoDB layouts."""

    name: str

    @property
    def kind(self) -> str: ...
    @property
    def backend(self) -> BackendConfig: ...
    @property
    def target(self) -> MigrationTarget: ...
    @property
    def state_table(self) -> str: ...
    @property
    def item_table_class(self) -> type[Any]: ...
    @property
    def cleanup_lines(self) -> list[str]: ...
    def cli_args(self) -> list[str]: ...
    def put_state(self, attributes: Mapping[str, Any] | None) -> None: ...
    def state(self) -> dict[str, Any] | None: ...
    def report(self, worker: str, lut: float, cv: str | None = None) -> None: ...
    def own(self, lease_key: str, owner: str | None) -> None: ...
    def coordinator(self) -> ItemTable: ...


def state_attributes(
    cv: str | None, *, mb: str | None = "KCL", mts: int | None = OLD_MTS, **more: Any
) -> dict[str, Any]:
    attributes: dict[str, Any] = dict(more)
    if cv is not None:
        attributes["cv"] = cv
    if mb is not None:
        attributes["mb"] = mb
    if mts is not None:
        attributes["mts"] = mts
    attributes.setdefault("h", [{"cv": "CLIENT_VERSION_INIT", "mb": "KCL", "mts": OLD_MTS - 1}])
    return attributes


def metrics_attributes(lut: float, cv: str | None) -> dict[str, Any]:
    attributes: dict[str, Any] = {"lut": int(lut), "sts": {"C": [12]}, "opr": {"C": [100]}}
    if cv is not None:
        attributes["cv"] = cv
    return attributes


@dataclass
class LocalApp:
    db: Path
    name: str

    def __post_init__(self) -> None:
        self.store = SQLiteLeaseStore(self.db, self.name)
        self.store.create_table_if_not_exists()
        self.tables = open_coordinator_tables(self.store, self.name)

    kind = "sqlite"

    @property
    def backend(self) -> BackendConfig:
        return BackendConfig(backend="local", db=str(self.db))

    @property
    def target(self) -> MigrationTarget:
        return MigrationTarget(application_name=self.name)

    @property
    def state_table(self) -> str:
        return self.name

    @property
    def item_table_class(self) -> type[Any]:
        return SQLiteItemTable

    @property
    def cleanup_lines(self) -> list[str]:
        return []

    def cli_args(self) -> list[str]:
        return ["--db", str(self.db)]

    def coordinator(self) -> ItemTable:
        return self.tables.coordinator

    def put_state(self, attributes: Mapping[str, Any] | None) -> None:
        self.tables.coordinator.delete(MIGRATION_KEY)
        if attributes is not None:
            self.tables.coordinator.upsert(MIGRATION_KEY, attributes)

    def state(self) -> dict[str, Any] | None:
        record = self.tables.coordinator.get(MIGRATION_KEY)
        return None if record is None else dict(record.attributes)

    def report(self, worker: str, lut: float, cv: str | None = None) -> None:
        self.tables.worker_metrics.upsert(worker, metrics_attributes(lut, cv))

    def own(self, lease_key: str, owner: str | None) -> None:
        own(self.store, lease_key, owner)


def own(store: LeaseStore, lease_key: str, owner: str | None) -> None:
    lease = store.create_lease_if_not_exists(Lease(lease_key=lease_key, checkpoint=TRIM_HORIZON))
    assert lease is not None
    if owner is not None:
        assert store.take_lease(lease, owner) is not None


_SERIALIZER = TypeSerializer()
_DESERIALIZER = TypeDeserializer()


def plain(value: Any) -> Any:
    """Decimals from boto3's deserializer as ints/floats, recursively."""
    from decimal import Decimal

    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


@dataclass
class AwsApp:
    client: DynamoDBClient
    endpoint: str
    name: str
    layout: Layout

    @property
    def kind(self) -> str:
        return self.layout

    @property
    def lease_table(self) -> str:
        return self.name

    @property
    def coordinator_table(self) -> str:
        return f"{self.name}-CoordinatorState"

    @property
    def metrics_table(self) -> str:
        return f"{self.name}-WorkerMetricStats"

    @property
    def state_table(self) -> str:
        return self.lease_table if self.layout == "single-table" else self.coordinator_table

    @property
    def backend(self) -> BackendConfig:
        return BackendConfig(backend="aws", region=REGION, endpoint_url=self.endpoint)

    @property
    def target(self) -> MigrationTarget:
        return MigrationTarget(application_name=self.name)

    @property
    def item_table_class(self) -> type[Any]:
        return DynamoDBItemTable

    @property
    def cleanup_lines(self) -> list[str]:
        lines = [GSI_DELETING.format(table=self.lease_table)]
        if self.layout == "legacy":
            lines.append(METRICS_TABLE_DELETING.format(table=self.metrics_table))
        return lines

    def cli_args(self) -> list[str]:
        return ["--region", REGION, "--endpoint-url", self.endpoint]

    def lease_store(self) -> DynamoDBLeaseStore:
        return DynamoDBLeaseStore(DynamoDBLeaseStoreConfig(table_name=self.lease_table), client=self.client)

    def coordinator(self) -> ItemTable:
        if self.layout == "single-table":
            return DynamoDBItemTable(self.client, self.lease_table, layout="single-table", namespace="coordinator")
        return DynamoDBItemTable(self.client, self.coordinator_table, layout="legacy", namespace="coordinator")

    def create(self, *, lease: bool = True, gsi: bool = True, coordinator: bool = True, metrics: bool = True) -> None:
        if lease:
            request: dict[str, Any] = {
                "TableName": self.lease_table,
                "AttributeDefinitions": [{"AttributeName": "leaseKey", "AttributeType": "S"}],
                "KeySchema": [{"AttributeName": "leaseKey", "KeyType": "HASH"}],
                "BillingMode": "PAY_PER_REQUEST",
            }
            if gsi:
                request["AttributeDefinitions"].append({"AttributeName": "leaseOwner", "AttributeType": "S"})
                request["GlobalSecondaryIndexes"] = [
                    {
                        "IndexName": OWNER_INDEX_NAME,
                        "KeySchema": [
                            {"AttributeName": "leaseOwner", "KeyType": "HASH"},
                            {"AttributeName": "leaseKey", "KeyType": "RANGE"},
                        ],
                        "Projection": {"ProjectionType": "KEYS_ONLY"},
                    }
                ]
            self.client.create_table(**request)
        if self.layout == "legacy":
            for wanted, table, key in (
                (coordinator, self.coordinator_table, "key"),
                (metrics, self.metrics_table, "wid"),
            ):
                if wanted:
                    self.client.create_table(
                        TableName=table,
                        AttributeDefinitions=[{"AttributeName": key, "AttributeType": "S"}],
                        KeySchema=[{"AttributeName": key, "KeyType": "HASH"}],
                        BillingMode="PAY_PER_REQUEST",
                    )

    def _state_key(self) -> dict[str, Any]:
        if self.layout == "single-table":
            return {"leaseKey": {"S": MIGRATION_KEY}}
        return {"key": {"S": MIGRATION_KEY}}

    def put_state(self, attributes: Mapping[str, Any] | None) -> None:
        self.client.delete_item(TableName=self.state_table, Key=self._state_key())
        if attributes is None:
            return
        item = {name: _SERIALIZER.serialize(value) for name, value in attributes.items()}
        item.update(self._state_key())
        if self.layout == "single-table":
            item["entityType"] = {"S": "CLIENT_VERSION_MIGRATION"}
        self.client.put_item(TableName=self.state_table, Item=cast("Any", item))

    def raw_state(self) -> dict[str, Any] | None:
        item = self.client.get_item(TableName=self.state_table, Key=self._state_key(), ConsistentRead=True).get("Item")
        return None if item is None else dict(item)

    def state(self) -> dict[str, Any] | None:
        item = self.raw_state()
        if item is None:
            return None
        values = {name: plain(_DESERIALIZER.deserialize(value)) for name, value in item.items()}
        for name in ("leaseKey", "key", "entityType"):
            values.pop(name, None)
        return values

    def report(self, worker: str, lut: float, cv: str | None = None) -> None:
        item = {name: _SERIALIZER.serialize(value) for name, value in metrics_attributes(lut, cv).items()}
        if self.layout == "single-table":
            item["leaseKey"] = {"S": worker}
            item["entityType"] = {"S": "WORKER_METRIC_STATS"}
            table = self.lease_table
        else:
            item["wid"] = {"S": worker}
            table = self.metrics_table
        self.client.put_item(TableName=table, Item=cast("Any", item))

    def own(self, lease_key: str, owner: str | None) -> None:
        own(self.lease_store(), lease_key, owner)

    def gsi(self) -> str | None:
        table = self.client.describe_table(TableName=self.lease_table)["Table"]
        for index in table.get("GlobalSecondaryIndexes", []):
            if index.get("IndexName") == OWNER_INDEX_NAME:
                return index.get("IndexStatus", "UNKNOWN")
        return None

    def exists(self, table: str) -> bool:
        try:
            self.client.describe_table(TableName=table)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                return False
            raise
        return True


class Server(Protocol):
    @property
    def endpoint_url(self) -> str: ...


def make_aws(endpoint: str, layout: Layout, **create: bool) -> AwsApp:
    client = boto3.client("dynamodb", endpoint_url=endpoint, region_name=REGION)
    app = AwsApp(client, endpoint, f"migrate-{uuid.uuid4().hex[:10]}", layout)
    app.create(**create)
    return app


AWS_LAYOUTS = [pytest.param(layout, marks=pytest.mark.aws) for layout in ("single-table", "legacy")]


def aws_app_of(request: pytest.FixtureRequest) -> AwsApp:
    """An application on moto's server in the layout the fixture is parametrized with."""
    server = request.getfixturevalue("moto_server")
    return make_aws(server.endpoint_url, cast("Layout", request.param))


@pytest.fixture(params=AWS_LAYOUTS)
def aws_app(request: pytest.FixtureRequest) -> AwsApp:
    return aws_app_of(request)


@pytest.fixture(params=["sqlite", *AWS_LAYOUTS])
def app(request: pytest.FixtureRequest, tmp_path: Path) -> App:
    if request.param == "sqlite":
        return LocalApp(tmp_path / "app.db", "orders")
    return aws_app_of(request)


@pytest.fixture
def endpoint(moto_server: Server) -> str:
    return moto_server.endpoint_url


def do_rollback(app: App, **options: Any) -> MigrationResult:
    options.setdefault("poll_interval_s", 0.01)
    target = options.pop("target", app.target)
    return admin.rollback(target, app.backend, **options)


def do_rollforward(app: App, **options: Any) -> MigrationResult:
    target = options.pop("target", app.target)
    return admin.rollforward(target, app.backend, **options)


def someone_else_writes_first(monkeypatch: pytest.MonkeyPatch, app: App, cv: str) -> None:
    """Lose every race: just before each update of an item, another writer sets its ``cv`` (``mb`` someone-else)."""
    cls = app.item_table_class
    original = cls.update

    def someone_else_first(self: Any, key: str, **kwargs: Any) -> Any:
        original(self, key, set_attributes={"cv": cv, "mb": "someone-else", "mts": OLD_MTS + 5})
        return original(self, key, **kwargs)

    monkeypatch.setattr(cls, "update", someone_else_first)


def own_lines(result: MigrationResult) -> list[str]:
    return [m.text for m in result.messages if m.origin == "shardwise"]


def assert_unchanged(app: App, before: dict[str, Any] | None) -> None:
    assert app.state() == before


# ===================================================================================================== rollback


class TestRollback:
    @pytest.mark.parametrize("previous", [UPG, V3XWR])
    def test_rolls_back_and_cleans_up(self, app: App, previous: str) -> None:
        app.put_state(state_attributes(previous, mb="KCL-worker", mts=OLD_MTS))
        time = FakeTime()
        result = do_rollback(app, clock=time.clock, sleep=time.sleep)
        assert list(result.tool_lines) == [
            f"Rolling back client version in table '{app.state_table}'...",
            *app.cleanup_lines,
            *FINAL[previous],
        ]
        assert result.ok
        assert result.exit_status == 0
        assert result.outcome == "rolled-back"
        assert result.previous_client_version == previous
        assert result.client_version == V2X
        state = app.state()
        assert state is not None
        assert state["cv"] == V2X
        assert state["mb"] == "KclMigrationTool-rollback"
        assert state["mts"] == int(NOW * 1000)
        assert state["h"] == [
            {"cv": previous, "mb": "KCL-worker", "mts": OLD_MTS},
            {"cv": "CLIENT_VERSION_INIT", "mb": "KCL", "mts": OLD_MTS - 1},
        ]
        assert result.history_entry == {"cv": previous, "mb": "KCL-worker", "mts": OLD_MTS}
        assert result.cleanup is not None
        assert result.cleanup.wait == "done"
        if isinstance(app, AwsApp):
            assert app.gsi() is None
            assert f"Verified: GSI {OWNER_INDEX_NAME} is gone from lease table '{app.lease_table}'." in own_lines(
                result
            )
            if app.layout == "legacy":
                assert not app.exists(app.metrics_table)
                assert app.exists(app.coordinator_table)

    def test_already_rolled_back_only_cleans_up(self, app: App) -> None:
        app.put_state(state_attributes(V2X))
        before = app.state()
        result = do_rollback(app)
        assert list(result.tool_lines) == [ALREADY_2X, *app.cleanup_lines, *ALREADY_DONE]
        assert result.ok
        assert result.exit_status == 0
        assert result.outcome == "already-rolled-back"
        assert result.history_entry is None
        assert_unchanged(app, before)

    def test_3x_is_refused(self, app: App) -> None:
        app.put_state(state_attributes(V3X))
        before = app.state()
        result = do_rollback(app)
        assert list(result.tool_lines) == [REFUSED_3X]
        assert not result.ok
        assert result.exit_status == 1
        assert result.outcome == "not-rollbackable"
        assert result.cleanup is None
        assert_unchanged(app, before)

    @pytest.mark.parametrize(
        ("attributes", "note"),
        [
            (None, "There is no 'Migration3.0' item"),
            (state_attributes(None), "has no string attribute cv"),
            (state_attributes("CLIENT_VERSION_9X"), "has cv 'CLIENT_VERSION_9X'"),
            (state_attributes("CLIENT_VERSION_INIT"), "has cv 'CLIENT_VERSION_INIT'"),
        ],
        ids=["no-item", "no-cv", "unknown-string", "init"],
    )
    def test_not_in_progress(self, app: App, attributes: dict[str, Any] | None, note: str) -> None:
        app.put_state(attributes)
        before = app.state()
        result = do_rollback(app)
        assert list(result.tool_lines) == [NOT_IN_PROGRESS]
        assert any(note in line for line in own_lines(result))
        assert not result.ok
        assert result.exit_status == 1
        assert result.outcome == "not-in-progress"
        assert_unchanged(app, before)

    def test_history_is_capped_at_ten_newest_first(self, app: App) -> None:
        old = [{"cv": f"CV{i}", "mb": f"writer{i}", "mts": OLD_MTS - i} for i in range(10)]
        app.put_state(state_attributes(V3XWR, h=old))
        result = do_rollback(app)
        assert result.ok
        state = app.state()
        assert state is not None
        assert state["h"] == [{"cv": V3XWR, "mb": "KCL", "mts": OLD_MTS}, *old[:9]]

    def test_missing_mb_and_mts_are_recorded_as_the_tool_does(self, app: App) -> None:
        app.put_state(state_attributes(UPG, mb=None, mts=None, h=[]))
        time = FakeTime()
        result = do_rollback(app, clock=time.clock, sleep=time.sleep)
        assert result.ok
        state = app.state()
        assert state is not None
        assert state["h"] == [{"cv": UPG, "mb": "Unknown", "mts": int(NOW * 1000)}]

    def test_dry_run_writes_nothing(self, app: App) -> None:
        app.put_state(state_attributes(V3XWR))
        app.report("worker-a", NOW - 10)
        before = app.state()
        time = FakeTime()
        result = do_rollback(app, dry_run=True, clock=time.clock, sleep=time.sleep)
        assert result.ok
        assert result.dry_run
        assert result.outcome == "rolled-back"
        assert list(result.tool_lines) == []  # nothing the tool prints happens
        lines = own_lines(result)
        assert "Dry run: nothing will be changed." in lines
        assert any(line.startswith("Would roll back the client version") and V3XWR in line for line in lines)
        assert any("worker-a" in line and line.startswith("Would wait") for line in lines)
        assert lines[-1] == "Dry run complete: nothing was changed. The rollback would succeed."
        assert time.slept == []
        assert_unchanged(app, before)
        if isinstance(app, AwsApp):
            assert app.gsi() == "ACTIVE"
            assert any(line.startswith(f"Would delete GSI {OWNER_INDEX_NAME}") for line in lines)
            if app.layout == "legacy":
                assert app.exists(app.metrics_table)
                assert any(line.startswith(f"Would delete worker metrics table {app.metrics_table}") for line in lines)

    def test_dry_run_of_a_refused_rollback_fails(self, app: App) -> None:
        app.put_state(state_attributes(V3X))
        result = do_rollback(app, dry_run=True)
        assert list(result.tool_lines) == [REFUSED_3X]
        assert result.exit_status == 1

    def test_waits_until_workers_stop_reporting(self, app: App) -> None:
        app.put_state(state_attributes(V3XWR))
        app.report("worker-a", NOW - 30)  # still active for 30 s (60 s window), then stale: it stopped in 2X
        app.report("worker-b", NOW - 600)  # stale already
        time = FakeTime()
        result = do_rollback(app, clock=time.clock, sleep=time.sleep, poll_interval_s=5)
        assert result.ok, result.text
        assert result.cleanup is not None
        assert result.cleanup.wait == "done"
        assert 30 <= result.cleanup.waited_s <= 36
        assert "Still in KCL 3.x mode (reporting worker metrics): worker-a" in own_lines(result)
        assert list(result.tool_lines) == [
            f"Rolling back client version in table '{app.state_table}'...",
            *app.cleanup_lines,
            *DONE_FROM_3XWR,
        ]

    def test_a_worker_reporting_cv_2x_has_left(self, app: App) -> None:
        app.put_state(state_attributes(UPG))
        time = FakeTime()
        app.report("worker-a", NOW, cv=V3XWR)
        app.report("worker-b", NOW, cv=V2X)  # fresh, but already in 2.x compatible mode

        def worker_a_switches() -> None:
            if len(time.slept) == 2:
                app.report("worker-a", time.now, cv=V2X)

        time.on_sleep.append(worker_a_switches)
        result = do_rollback(app, clock=time.clock, sleep=time.sleep, poll_interval_s=5)
        assert result.ok, result.text
        assert result.cleanup is not None
        assert result.cleanup.waited_s == 10
        assert "Still in KCL 3.x mode (reporting worker metrics): worker-a" in own_lines(result)

    def test_timeout_leaves_resources_and_fails(self, app: App) -> None:
        app.put_state(state_attributes(V3XWR))
        time = FakeTime()
        app.report("worker-a", NOW)
        time.on_sleep.append(lambda: app.report("worker-a", time.now))  # keeps reporting: a 3.x worker
        result = do_rollback(app, clock=time.clock, sleep=time.sleep, poll_interval_s=5, wait_timeout_s=20)
        assert not result.ok
        assert result.exit_status == 1
        assert result.outcome == "cleanup-incomplete"
        assert result.cleanup is not None
        assert result.cleanup.wait == "timed-out"
        assert result.cleanup.workers_in_3x_mode == ("worker-a",)
        assert result.cleanup.owner_index == "skipped"
        assert sum(time.slept) == 20
        # The version was rolled back; nothing was deleted; the tool's final lines still come.
        assert list(result.tool_lines) == [
            f"Rolling back client version in table '{app.state_table}'...",
            *DONE_FROM_3XWR,
        ]
        assert any(line.startswith("Timed out after 20 seconds") for line in own_lines(result))
        state = app.state()
        assert state is not None
        assert state["cv"] == V2X
        if isinstance(app, AwsApp):
            assert app.gsi() == "ACTIVE"
            if app.layout == "legacy":
                assert app.exists(app.metrics_table)
        # Once the worker left, running it again cleans up ("already rolled back").
        time.on_sleep.clear()
        time.now += 120
        again = do_rollback(app, clock=time.clock, sleep=time.sleep)
        assert again.ok
        assert list(again.tool_lines) == [ALREADY_2X, *app.cleanup_lines, *ALREADY_DONE]

    def test_no_wait_cleans_up_at_once_and_says_so(self, app: App) -> None:
        app.put_state(state_attributes(V3XWR))
        time = FakeTime()
        app.report("worker-a", NOW)
        result = do_rollback(app, wait=False, clock=time.clock, sleep=time.sleep)
        assert result.ok
        assert result.cleanup is not None
        assert result.cleanup.wait == "not-waited"
        assert any("(--no-wait)" in line for line in own_lines(result))
        assert time.slept == []
        assert list(result.tool_lines)[1:-2] == app.cleanup_lines

    def test_lost_race_gets_the_tools_message(self, app: App, monkeypatch: pytest.MonkeyPatch) -> None:
        app.put_state(state_attributes(V3XWR))
        someone_else_writes_first(monkeypatch, app, V2X)
        result = do_rollback(app)
        assert list(result.tool_lines) == [
            f"Rolling back client version in table '{app.state_table}'...",
            ROLLBACK_CONDITION_FAILED,
        ]
        assert result.outcome == "conditional-check-failed"
        assert result.exit_status == 1
        assert any("cv is now CLIENT_VERSION_2X, modified by someone-else" in line for line in own_lines(result))
        if isinstance(app, AwsApp):
            assert app.gsi() == "ACTIVE"  # no clean-up after a lost race

    def test_missing_lease_table(self, app: App) -> None:
        result = do_rollback(app, target=MigrationTarget(application_name="absent-app"))
        assert list(result.tool_lines) == missing_table(LEASE_TABLE_NOT_FOUND, "Rollback", "absent-app")
        assert result.outcome == "lease-table-missing"
        assert result.exit_status == 1


def test_missing_database_file_is_a_missing_lease_table(tmp_path: Path) -> None:
    db = tmp_path / "nowhere.db"
    result = admin.rollback(MigrationTarget(application_name="orders"), BackendConfig(backend="local", db=str(db)))
    assert list(result.tool_lines) == missing_table(LEASE_TABLE_NOT_FOUND, "Rollback", "orders")
    assert any(str(db) in line for line in own_lines(result))
    assert not db.exists()  # nothing was created


@pytest.mark.aws
class TestRollbackDynamoDB:
    def test_coordinator_table_and_legacy_tables(self, endpoint: str) -> None:
        app = make_aws(endpoint, "legacy")
        app.put_state(state_attributes(UPG))
        result = do_rollback(app)
        assert result.ok
        assert result.layout == "legacy"
        assert app.gsi() is None
        assert not app.exists(app.metrics_table)
        assert app.exists(app.coordinator_table)  # never deleted
        assert f"Verified: GSI {OWNER_INDEX_NAME} is gone from lease table '{app.lease_table}'." in own_lines(result)
        assert f"Verified: worker metrics table {app.metrics_table} is gone." in own_lines(result)
        assert result.cleanup is not None
        assert (result.cleanup.owner_index, result.cleanup.worker_metrics_table) == ("deleted", "deleted")

    def test_single_table_keeps_worker_metrics_items(self, endpoint: str) -> None:
        app = make_aws(endpoint, "single-table")
        app.put_state(state_attributes(UPG))
        app.report("worker-a", NOW - 3600)
        time = FakeTime()
        result = do_rollback(app, clock=time.clock, sleep=time.sleep)
        assert result.ok
        assert app.gsi() is None
        assert result.cleanup is not None
        assert result.cleanup.worker_metrics_table == "not-applicable"
        item = app.client.get_item(TableName=app.lease_table, Key={"leaseKey": {"S": "worker-a"}})
        assert "Item" in item  # the HEAD tool leaves them in the lease table too

    def test_gsi_and_metrics_table_already_gone(self, endpoint: str) -> None:
        app = make_aws(endpoint, "legacy", gsi=False, metrics=False)
        app.put_state(state_attributes(V2X))
        result = do_rollback(app)
        assert list(result.tool_lines) == [
            ALREADY_2X,
            GSI_ABSENT.format(table=app.lease_table),
            METRICS_TABLE_ABSENT.format(table=app.metrics_table),
            *ALREADY_DONE,
        ]
        assert result.ok
        assert result.cleanup is not None
        assert (result.cleanup.owner_index, result.cleanup.worker_metrics_table) == ("absent", "absent")

    def test_missing_lease_table_in_the_legacy_layout(self, endpoint: str) -> None:
        app = make_aws(endpoint, "legacy", lease=False)
        app.put_state(state_attributes(UPG))
        result = do_rollback(app)
        assert result.layout == "legacy"
        assert list(result.tool_lines) == missing_table(LEASE_TABLE_NOT_FOUND, "Rollback", app.lease_table)
        assert result.exit_status == 1

    def test_missing_coordinator_table_named_explicitly(self, endpoint: str) -> None:
        app = make_aws(endpoint, "legacy")
        target = MigrationTarget(
            lease_table_name=app.lease_table,
            coordinator_state_table_name="no-such-CoordinatorState",
            worker_metrics_table_name=app.metrics_table,
        )
        result = do_rollback(app, target=target)
        assert list(result.tool_lines) == missing_table(
            COORDINATOR_TABLE_NOT_FOUND, "Rollback", "no-such-CoordinatorState"
        )
        assert result.outcome == "coordinator-table-missing"
        assert result.exit_status == 1

    def test_all_three_table_names_without_application_name(self, endpoint: str) -> None:
        app = make_aws(endpoint, "legacy")
        app.put_state(state_attributes(V3XWR))
        target = MigrationTarget(
            lease_table_name=app.lease_table,
            coordinator_state_table_name=app.coordinator_table,
            worker_metrics_table_name=app.metrics_table,
        )
        result = do_rollback(app, target=target)
        assert result.ok
        assert list(result.tool_lines) == [
            f"Rolling back client version in table '{app.coordinator_table}'...",
            *app.cleanup_lines,
            *DONE_FROM_3XWR,
        ]

    def test_lease_table_name_only_uses_the_single_table_layout(self, endpoint: str) -> None:
        app = make_aws(endpoint, "single-table")
        app.put_state(state_attributes(UPG))
        result = do_rollback(app, target=MigrationTarget(lease_table_name=app.lease_table))
        assert result.ok
        assert result.layout == "single-table"

    def test_completed_table_migration_means_single_table(self, endpoint: str) -> None:
        app = make_aws(endpoint, "legacy")  # the legacy tables exist...
        app.client.put_item(
            TableName=app.lease_table,
            Item={
                "leaseKey": {"S": "TableMigration3.5"},
                "entityType": {"S": "TABLE_MIGRATION"},
                "tm": {"S": "TABLE_MIGRATION_STATUS_COMPLETE"},
            },
        )  # ...but KCL 3.5 moved everything into the lease table
        single = AwsApp(app.client, app.endpoint, app.name, "single-table")
        single.put_state(state_attributes(V3XWR))
        result = do_rollback(single)
        assert result.ok
        assert result.layout == "single-table"
        assert result.state_table == app.lease_table
        state = single.state()
        assert state is not None
        assert state["cv"] == V2X
        assert app.exists(app.metrics_table)  # the single-table rollback leaves the legacy tables alone

    @pytest.mark.parametrize(
        ("code", "expected"),
        [
            ("ProvisionedThroughputExceededException", "Throughput exceeded even after retries: slow down"),
            ("AccessDeniedException", "Unexpected client error occurred: AccessDeniedException - slow down"),
        ],
    )
    def test_read_errors(self, endpoint: str, code: str, expected: str) -> None:
        _, result = rollback_failing(endpoint, "single-table", UPG, fails=("get_item", code, "slow down"))
        assert list(result.tool_lines) == ["Rollback could not be performed.", expected, READ_RETRY]
        assert result.outcome == "read-failed"
        assert result.exit_status == 1

    def test_write_error(self, endpoint: str) -> None:
        app, result = rollback_failing(
            endpoint, "single-table", UPG, fails=("update_item", "InternalServerError", "boom")
        )
        assert list(result.tool_lines) == [
            f"Rolling back client version in table '{app.lease_table}'...",
            "An unexpected error occurred while rolling back: An error occurred (InternalServerError) when calling "
            "the UpdateItem operation: boomPlease resolve and run this migration script again.",
        ]
        assert result.outcome == "write-failed"
        assert result.exit_status == 1

    def test_gsi_deletion_error_is_reported_not_swallowed(self, endpoint: str) -> None:
        app, result = rollback_failing(
            endpoint, "single-table", UPG, fails=("update_table", "AccessDeniedException", "no")
        )
        assert list(result.tool_lines) == [
            f"Rolling back client version in table '{app.lease_table}'...",
            GSI_DELETING.format(table=app.lease_table),
            f"An unexpected error occurred while deleting GSI LeaseOwnerToLeaseKeyIndex on lease table "
            f"{app.lease_table}: An error occurred (AccessDeniedException) when calling the UpdateTable operation: "
            "no. Please manually confirm the GSI is removed from the lease table, or resolve the error and rerun "
            "the migration script.",
            *DONE_FROM_UPG,
        ]
        assert result.outcome == "cleanup-incomplete"
        assert result.exit_status == 1
        assert app.gsi() == "ACTIVE"

    def test_gsi_busy_table(self, endpoint: str) -> None:
        time = FakeTime()
        app, result = rollback_failing(
            endpoint,
            "single-table",
            V2X,
            fails=("update_table", "ResourceInUseException", "busy"),
            gsi_timeout_s=10,
            poll_interval_s=5,
            clock=time.clock,
            sleep=time.sleep,
        )
        assert list(result.tool_lines) == [
            ALREADY_2X,
            GSI_DELETING.format(table=app.lease_table),
            f"Unable to delete GSI: '{app.lease_table}' is currently being modified.",
            *ALREADY_DONE,
        ]
        assert time.slept == [5, 5]  # retried until the timeout
        assert result.exit_status == 1

    def test_metrics_table_access_denied(self, endpoint: str) -> None:
        app, result = rollback_failing(endpoint, "legacy", V3XWR, fails=("delete_table", "AccessDeniedException", "no"))
        assert list(result.tool_lines) == [
            f"Rolling back client version in table '{app.coordinator_table}'...",
            *app.cleanup_lines,
            f"No permissions to delete table {app.metrics_table}. Please manually delete it if you want to avoid any "
            "charges until you are ready to rollforward with migration.",
            *DONE_FROM_3XWR,
        ]
        assert app.gsi() is None
        assert app.exists(app.metrics_table)
        assert result.exit_status == 1

    def test_gsi_name_is_kcls(self) -> None:
        assert admin.GSI_NAME == OWNER_INDEX_NAME


def client_error(code: str, message: str, operation: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}}, operation)


def rollback_failing(
    endpoint: str, layout: Layout, cv: str, *, fails: tuple[str, str, str], **options: Any
) -> tuple[AwsApp, MigrationResult]:
    """Roll back a new application whose client version is ``cv``, through a client where one operation fails:
    ``fails`` is (method, error code, error message), e.g. ``("update_table", "AccessDeniedException", "no")``."""
    app = make_aws(endpoint, layout)
    app.put_state(state_attributes(cv))
    method, code, message = fails
    operation = "".join(word.title() for word in method.split("_"))  # update_table -> UpdateTable
    client = FailingClient(app.client, {method: client_error(code, message, operation)})
    return app, do_rollback(app, dynamodb_client=cast("DynamoDBClient", client), **options)


class FailingClient:
    """A DynamoDB client whose listed operations raise the given errors (everything else is real)."""

    def __init__(self, real: DynamoDBClient, failures: Mapping[str, Exception]) -> None:
        self._real = real
        self._failures = dict(failures)

    def __getattr__(self, name: str) -> Any:
        if name in self._failures:
            error = self._failures[name]

            def fail(**_: Any) -> Any:
                raise error

            return fail
        return getattr(self._real, name)


# ================================================================================================== roll-forward


class TestRollforward:
    def test_rolls_forward_from_2x(self, app: App) -> None:
        app.put_state(state_attributes(V2X, mb="KclMigrationTool-rollback", mts=OLD_MTS))
        time = FakeTime()
        result = do_rollforward(app, clock=time.clock)
        assert list(result.tool_lines) == [RF_INITIATED]
        assert result.ok
        assert result.exit_status == 0
        assert result.outcome == "rolled-forward"
        state = app.state()
        assert state is not None
        assert state["cv"] == UPG
        assert state["mb"] == "KclMigrationTool-rollforward"
        assert state["mts"] == int(NOW * 1000)
        assert state["h"][0] == {"cv": V2X, "mb": "KclMigrationTool-rollback", "mts": OLD_MTS}
        assert len(state["h"]) == 2
        if isinstance(app, AwsApp):
            assert any("re-create GSI LeaseOwnerToLeaseKeyIndex" in line for line in own_lines(result))

    @pytest.mark.parametrize(
        ("attributes", "expected", "outcome"),
        [
            (state_attributes(UPG), RF_NOT_ROLLED_BACK, "not-rolled-back"),
            (state_attributes(V3XWR), RF_NOT_ROLLED_BACK, "not-rolled-back"),
            (state_attributes(V3X), RF_ALREADY_MIGRATED, "already-migrated"),
            (None, RF_NOT_IN_PROGRESS, "not-in-progress"),
            (state_attributes(None), RF_NOT_IN_PROGRESS, "not-in-progress"),
            (state_attributes("CLIENT_VERSION_9X"), RF_NOT_IN_PROGRESS, "not-in-progress"),
        ],
        ids=["upgrade", "3x-with-rollback", "3x", "no-item", "no-cv", "unknown-string"],
    )
    def test_refused(self, app: App, attributes: dict[str, Any] | None, expected: str, outcome: str) -> None:
        app.put_state(attributes)
        before = app.state()
        result = do_rollforward(app)
        assert list(result.tool_lines) == [expected]
        assert result.outcome == outcome
        assert result.exit_status == 1
        assert_unchanged(app, before)

    def test_dry_run_writes_nothing(self, app: App) -> None:
        app.put_state(state_attributes(V2X))
        before = app.state()
        result = do_rollforward(app, dry_run=True)
        assert result.ok
        assert list(result.tool_lines) == []
        assert any(line.startswith("Would roll forward the client version") for line in own_lines(result))
        assert_unchanged(app, before)

    def test_lost_race_gets_the_tools_message(self, app: App, monkeypatch: pytest.MonkeyPatch) -> None:
        app.put_state(state_attributes(V2X))
        someone_else_writes_first(monkeypatch, app, UPG)
        result = do_rollforward(app)
        assert list(result.tool_lines) == [RF_CONDITION_FAILED]
        assert result.outcome == "conditional-check-failed"
        assert result.exit_status == 1

    def test_missing_lease_table(self, app: App) -> None:
        result = do_rollforward(app, target=MigrationTarget(application_name="absent-app"))
        assert list(result.tool_lines) == missing_table(LEASE_TABLE_NOT_FOUND, "Roll-forward", "absent-app")
        assert result.exit_status == 1


@pytest.mark.aws
class TestRollforwardLegacy:
    def test_coordinator_state_table_name_alone(self, endpoint: str) -> None:
        app = make_aws(endpoint, "legacy", lease=False)  # the 3.0-3.4 tool never looks at the lease table here
        app.put_state(state_attributes(V2X))
        result = do_rollforward(app, target=MigrationTarget(coordinator_state_table_name=app.coordinator_table))
        assert list(result.tool_lines) == [RF_INITIATED]
        assert result.layout == "legacy"
        assert any(
            "re-create GSI LeaseOwnerToLeaseKeyIndex and the worker metrics table" in line for line in own_lines(result)
        )

    def test_missing_coordinator_table(self, endpoint: str) -> None:
        app = make_aws(endpoint, "legacy", coordinator=False)
        result = do_rollforward(app, target=MigrationTarget(coordinator_state_table_name=app.coordinator_table))
        assert list(result.tool_lines) == missing_table(
            COORDINATOR_TABLE_NOT_FOUND, "Roll-forward", app.coordinator_table
        )
        assert result.outcome == "coordinator-table-missing"
        assert result.exit_status == 1


# ================================================================================================== concurrency


def hold_migration_writes(monkeypatch: pytest.MonkeyPatch, cls: type[Any], barrier: threading.Barrier) -> None:
    """Threads named ``racer-*`` wait at ``barrier`` just before writing the Migration3.0 item."""
    original = cls.update

    def update(self: Any, key: str, **kwargs: Any) -> Any:
        if key == MIGRATION_KEY and threading.current_thread().name.startswith("racer"):
            barrier.wait(timeout=30)
        return original(self, key, **kwargs)

    monkeypatch.setattr(cls, "update", update)


def race(*operations: Callable[[], MigrationResult]) -> list[MigrationResult]:
    results: list[MigrationResult | None] = [None] * len(operations)

    def run(index: int) -> None:
        results[index] = operations[index]()

    threads = [threading.Thread(target=run, args=(i,), name=f"racer-{i}") for i in range(len(operations))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert all(result is not None for result in results)
    return [result for result in results if result is not None]


def start_until_held(target: Callable[[], object], name: str, barrier: threading.Barrier) -> threading.Thread:
    """Start ``target`` in a thread named ``name`` and wait (up to 30 s) until it waits at ``barrier``."""
    thread = threading.Thread(target=target, name=name)
    thread.start()
    for _ in range(3000):
        if barrier.n_waiting == 1:
            break
        threading.Event().wait(0.01)
    return thread


@pytest.fixture
def atomic_app(app: App) -> App:
    """Races need a backend whose conditional writes are atomic under concurrency. DynamoDB's are, but moto's
    server is not: under load both of two racing conditional UpdateItems on one item were seen to succeed. So
    the races run on SQLite (BEGIN IMMEDIATE); the DynamoDB condition expressions themselves are covered by the
    sequential lost-race tests above, which do run on moto."""
    if not isinstance(app, LocalApp):
        pytest.skip("moto's server does not make concurrent conditional writes atomic; see atomic_app")
    return app


class TestConcurrency:
    def test_concurrent_rollbacks_exactly_one_wins(self, atomic_app: App, monkeypatch: pytest.MonkeyPatch) -> None:
        atomic_app.put_state(state_attributes(V3XWR))
        hold_migration_writes(monkeypatch, atomic_app.item_table_class, threading.Barrier(2))
        results = race(lambda: do_rollback(atomic_app, wait=False), lambda: do_rollback(atomic_app, wait=False))
        winners = [r for r in results if r.ok]
        losers = [r for r in results if not r.ok]
        assert len(winners) == 1
        assert len(losers) == 1
        assert ROLLBACK_CONDITION_FAILED in losers[0].tool_lines
        assert losers[0].exit_status == 1
        state = atomic_app.state()
        assert state is not None
        assert state["cv"] == V2X
        assert [entry["cv"] for entry in state["h"]] == [V3XWR, "CLIENT_VERSION_INIT"]  # one transition recorded

    def test_rollback_and_rollforward_exactly_one_wins(self, atomic_app: App, monkeypatch: pytest.MonkeyPatch) -> None:
        """An operator's rollback read 3X_WITH_ROLLBACK; meanwhile the application was rolled back by someone
        else and an operator's roll-forward read 2X. Both pass their preconditions and write at once: the
        roll-forward wins, the rollback fails — also when the roll-forward wrote first, where the tool's
        ``cv IN (UPGRADE_FROM_2X, 3X_WITH_ROLLBACK)`` condition would have let it undo the roll-forward."""
        atomic_app.put_state(state_attributes(V3XWR))
        barrier = threading.Barrier(2)
        hold_migration_writes(monkeypatch, atomic_app.item_table_class, barrier)
        results: dict[str, MigrationResult] = {}

        def rollback() -> None:
            results["rollback"] = do_rollback(atomic_app, wait=False)

        def rollforward() -> None:
            results["rollforward"] = do_rollforward(atomic_app)

        first = start_until_held(rollback, "racer-rollback", barrier)
        assert barrier.n_waiting == 1  # the rollback has read and waits to write
        atomic_app.put_state(state_attributes(V2X, mb="other-operator", mts=OLD_MTS + 1))
        second = threading.Thread(target=rollforward, name="racer-rollforward")
        second.start()
        first.join(timeout=60)
        second.join(timeout=60)
        assert results["rollforward"].ok
        assert results["rollforward"].tool_lines == (RF_INITIATED,)
        assert not results["rollback"].ok
        assert results["rollback"].tool_lines[-1] == ROLLBACK_CONDITION_FAILED
        assert results["rollback"].exit_status == 1
        state = atomic_app.state()
        assert state is not None
        assert state["cv"] == UPG
        assert state["h"][0] == {"cv": V2X, "mb": "other-operator", "mts": OLD_MTS + 1}

    def test_a_to_b_to_a_in_between_is_detected(self, atomic_app: App, monkeypatch: pytest.MonkeyPatch) -> None:
        """The rollback read UPGRADE_FROM_2X; before it writes, the application is rolled back and forward
        again (cv is UPGRADE_FROM_2X once more). Its write must fail: it would push a stale history."""
        atomic_app.put_state(state_attributes(UPG))
        barrier = threading.Barrier(2)
        hold_migration_writes(monkeypatch, atomic_app.item_table_class, barrier)
        result: list[MigrationResult] = []
        racer = start_until_held(lambda: result.append(do_rollback(atomic_app, wait=False)), "racer-0", barrier)
        assert do_rollback(atomic_app, wait=False).ok  # in this (main) thread: not held
        assert do_rollforward(atomic_app).ok
        barrier.wait(timeout=30)
        racer.join(timeout=60)
        assert result[0].outcome == "conditional-check-failed"
        state = atomic_app.state()
        assert state is not None
        assert state["cv"] == UPG
        assert [entry["cv"] for entry in state["h"]] == [V2X, UPG, "CLIENT_VERSION_INIT"]


# ======================================================================================================== status


class TestStatus:
    def test_shows_version_history_index_and_workers(self, app: App) -> None:
        app.put_state(
            state_attributes(
                V3XWR,
                mb="KCL-leader",
                h=[{"cv": UPG, "mb": "KclMigrationTool-rollforward", "mts": OLD_MTS - 5}],
            )
        )
        app.report("reporter", NOW - 5)
        app.report("versioned", NOW - 10, cv=V3XWR)
        app.report("gone", NOW - 3600)
        app.own("shardId-000000000000", "reporter")
        app.own("shardId-000000000001", "old-2x")
        app.own("shardId-000000000002", "old-2x")
        app.own("shardId-000000000003", None)
        report = admin.status(app.target, app.backend, clock=lambda: NOW)
        assert report.ok
        assert report.exit_status == 0
        assert report.client_version == V3XWR
        assert report.modified_by == "KCL-leader"
        assert report.modified_at_ms == OLD_MTS
        assert report.history == ({"cv": UPG, "mb": "KclMigrationTool-rollforward", "mts": OLD_MTS - 5},)
        modes = {w.worker_id: (w.mode, w.reports_metrics, w.leases) for w in report.workers}
        assert modes == {
            "reporter": ("reports metrics (UPGRADE_FROM_2X, 3X_WITH_ROLLBACK or 3X)", True, 1),
            "versioned": (V3XWR, True, 0),
            "old-2x": ("2.x (no metrics)", False, 2),
        }
        assert report.stale_worker_metrics == ("gone",)
        assert report.unassigned_leases == 1
        if isinstance(app, AwsApp):
            assert report.owner_index_status == "ACTIVE"
            assert not report.owner_index_embedded
            assert report.layout == app.layout
        else:
            assert report.owner_index_embedded
        data = report.to_dict()
        assert data["clientVersion"] == V3XWR
        assert data["ownerIndex"]["name"] == OWNER_INDEX_NAME
        json.dumps(data)

    def test_after_rollback_the_gsi_is_absent(self, aws_app: AwsApp) -> None:
        aws_app.put_state(state_attributes(UPG))
        assert do_rollback(aws_app).ok
        report = admin.status(aws_app.target, aws_app.backend)
        assert report.client_version == V2X
        assert report.owner_index_status is None
        assert report.history[0]["cv"] == UPG

    def test_no_item(self, app: App) -> None:
        report = admin.status(app.target, app.backend)
        assert report.ok
        assert not report.migration_item_exists
        assert report.client_version is None

    def test_missing_lease_table(self, app: App) -> None:
        report = admin.status(MigrationTarget(application_name="absent-app"), app.backend)
        assert not report.ok
        assert report.outcome == "lease-table-missing"
        assert report.exit_status == 1


# =========================================================================================================== CLI


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


class TestCli:
    def test_the_tools_spelling(self, app: App) -> None:
        app.put_state(state_attributes(V3XWR))
        result = invoke("migrate", "--mode", "rollback", "--application_name", app.name, *app.cli_args())
        assert result.exit_code == 0, result.output
        assert f"Rolling back client version in table '{app.state_table}'...\n" in result.stdout
        assert "\n\n" + DONE_FROM_3XWR[0].lstrip("\n") + "\n" + DONE_FROM_3XWR[1] + "\n" in result.stdout
        result = invoke("migrate", "--mode", "rollforward", "--application_name", app.name, *app.cli_args())
        assert result.exit_code == 0, result.output
        assert RF_INITIATED in result.stdout

    def test_subcommands_and_dashed_spellings(self, app: App) -> None:
        app.put_state(state_attributes(V2X))
        result = invoke("migrate", "rollforward", "--application-name", app.name, *app.cli_args())
        assert result.exit_code == 0, result.output
        result = invoke("migrate", "--application-name", app.name, *app.cli_args(), "rollback", "--no-wait")
        assert result.exit_code == 0, result.output
        assert "(--no-wait)" in result.stdout
        result = invoke("migrate", "status", "--app", app.name, *app.cli_args())
        assert result.exit_code == 0, result.output
        assert f"Client version: {V2X}" in result.stdout
        assert "KclMigrationTool-rollback" in result.stdout

    def test_refusals_exit_1(self, app: App) -> None:
        app.put_state(state_attributes(V3X))
        result = invoke("migrate", "rollback", "--application_name", app.name, *app.cli_args())
        assert result.exit_code == 1
        assert REFUSED_3X in result.stdout
        result = invoke("migrate", "--mode", "rollforward", "--application_name", app.name, *app.cli_args())
        assert result.exit_code == 1
        assert RF_ALREADY_MIGRATED in result.stdout

    def test_conditional_failure_exits_1(self, app: App, monkeypatch: pytest.MonkeyPatch) -> None:
        app.put_state(state_attributes(UPG))
        someone_else_writes_first(monkeypatch, app, V2X)
        result = invoke("migrate", "--mode", "rollback", "--application_name", app.name, *app.cli_args())
        assert result.exit_code == 1
        assert ROLLBACK_CONDITION_FAILED in result.stdout

    def test_json(self, app: App) -> None:
        app.put_state(state_attributes(UPG))
        result = invoke("migrate", "rollback", "--app", app.name, *app.cli_args(), "--json", "--dry-run")
        assert result.exit_code == 0, result.output
        data = json.loads(result.stdout)
        assert data["mode"] == "rollback"
        assert data["dryRun"] is True
        assert data["ok"] is True
        assert data["previousClientVersion"] == UPG
        assert data["cleanup"]["wait"] == "dry-run"
        assert all(set(m) == {"text", "origin"} for m in data["messages"])
        assert "Dry run: nothing will be changed." in result.stderr  # progress, off stdout
        result = invoke("migrate", "rollforward", "--app", app.name, *app.cli_args(), "--json")
        assert result.exit_code == 1
        data = json.loads(result.stdout)
        assert data["outcome"] == "not-rolled-back"
        assert data["exitStatus"] == 1
        assert [m["text"] for m in data["messages"] if m["origin"] == "tool"] == [RF_NOT_ROLLED_BACK]
        result = invoke("migrate", "status", "--app", app.name, *app.cli_args(), "--json")
        assert result.exit_code == 0
        assert json.loads(result.stdout)["clientVersion"] == UPG

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (
                ["--mode", "rollback"],
                "For rollback mode, either application_name or lease_table_name must be provided.",
            ),
            (
                ["--mode", "rollforward", "--lease_table_name", "orders"],
                "For rollforward mode, application_name must be provided.",
            ),
            (
                ["--mode", "rollforward", "--worker_metrics_table_name", "orders-WorkerMetricStats"],
                "For rollforward mode, either application_name or coordinator_state_table_name must be provided.",
            ),
            (
                ["--mode", "rollback", "--lease_table_name", "orders", "--coordinator_state_table_name", "c-tbl"],
                "For rollback mode, either application_name or all three table names (lease_table_name, "
                "coordinator_state_table_name, and worker_metrics_table_name) must be provided.",
            ),
            (["rollback"], "For rollback mode, either application_name or lease_table_name must be provided."),
            (["status"], "For status, either application_name or lease_table_name must be provided."),
            (["--mode", "rollback", "--app", "x", "--backend", "local", "--region", REGION], "--region"),
            (["--mode", "undo", "--app", "x"], "'undo' is not one of 'rollback', 'rollforward'"),
            (["--mode", "rollback", "--app", "x", "status"], "not both"),
            ([], "missing command"),
            (["--mode", "rollforward", "--app", "x", "--no-wait"], "--no-wait applies to rollback only"),
            (
                ["rollback", "--app", "x", "--coordinator_state_table_name", "x-CoordinatorState", "--db", "x.db"],
                "legacy layout",
            ),
        ],
    )
    def test_usage_errors_exit_2(self, args: list[str], message: str) -> None:
        result = invoke("migrate", *args)
        assert result.exit_code == 2, result.output
        assert message in result.output
        assert "Traceback" not in result.output

    def test_default_backend_is_local_without_region(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        local_app = LocalApp(tmp_path / "shardwise.db", "orders")
        local_app.put_state(state_attributes(V3XWR))
        monkeypatch.chdir(tmp_path)
        result = invoke("migrate", "status", "--app", local_app.name)
        assert result.exit_code == 0, result.output
        assert "embedded (SQLite) backend" in result.stdout
        assert f"Client version: {V3XWR}" in result.stdout

    def test_help(self) -> None:
        result = invoke("migrate", "--help")
        assert result.exit_code == 0
        for word in ("rollback", "rollforward", "status", "--application_name", "--dry-run"):
            assert word in result.output
        assert "migrate" in invoke("--help").output
