"""The seam's table administration (``Backend.table_admin()``) and its service errors, on both backends: the
embedded one (SQLite) and DynamoDB (the moto server).

``shardwise migrate`` deletes the KCL 3.x resources through this port and prints the service's own error
text; these tests pin what the port promises it: statuses, deletions, the errors raised, and the
:class:`~shardwise.backends.ServiceError` readable behind them.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

import boto3
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from shardwise.backends import Backend, BackendConfig, ServiceError, open_backend, service_error
from shardwise.errors import (
    AccessDeniedError,
    ConfigurationError,
    DependencyError,
    ResourceNotFoundError,
    ShardwiseError,
)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient

REGION = "us-east-1"
OWNER_INDEX = "LeaseOwnerToLeaseKeyIndex"


class Server(Protocol):
    @property
    def endpoint_url(self) -> str: ...


# ===================================================================================================== SQLite


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "admin.db"


def local(db: Path | str) -> Backend:
    return open_backend(BackendConfig(backend="local", db=str(db)))


class TestSQLite:
    def test_capabilities(self, db: Path) -> None:
        capabilities = local(db).capabilities
        assert not capabilities.kcl_3x_resources
        assert not capabilities.legacy_layout
        assert capabilities.layouts == ("single-table",)

    def test_reads_never_create_the_database_file(self, db: Path) -> None:
        admin = local(db).table_admin()
        assert admin.database_file == str(db)
        assert not admin.database_exists()
        assert admin.table_status("orders") is None
        with pytest.raises(ResourceNotFoundError):
            admin.owner_index_status("orders")
        assert not db.exists()

    def test_the_database_file_as_it_was_named(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.chdir(tmp_path)
        assert local("./here.db").table_admin().database_file == "./here.db"

    def test_lease_tables_and_their_owner_index(self, db: Path) -> None:
        backend = local(db)
        backend.open_lease_store("orders").create_table_if_not_exists()
        admin = backend.table_admin()
        assert admin.database_exists()
        assert admin.table_status("orders") == "ACTIVE"
        assert admin.table_status("payments") is None
        assert admin.owner_index_status("orders") == "ACTIVE"  # part of the schema
        with pytest.raises(ResourceNotFoundError):
            admin.owner_index_status("payments")

    def test_deletes_no_kcl_3x_resources(self, db: Path) -> None:
        backend = local(db)
        backend.open_lease_store("orders").create_table_if_not_exists()
        admin = backend.table_admin()
        with pytest.raises(ConfigurationError, match="part of the schema"):
            admin.delete_owner_index("orders")
        with pytest.raises(ConfigurationError, match="does not delete table 'orders'"):
            admin.delete_table("orders")
        assert admin.table_status("orders") == "ACTIVE"
        assert admin.owner_index_status("orders") == "ACTIVE"

    def test_no_legacy_item_tables(self, db: Path) -> None:
        with pytest.raises(ConfigurationError, match="single-table layout"):
            local(db).open_legacy_item_table("orders-CoordinatorState", "coordinator")

    def test_its_errors_carry_no_service_error(self, tmp_path: Path) -> None:
        broken = tmp_path / "broken.db"
        broken.write_bytes(b"not a database at all" * 100)
        with pytest.raises(ShardwiseError) as caught:
            local(broken).table_admin().table_status("orders")
        assert service_error(caught.value) is None


# =================================================================================================== DynamoDB


@pytest.fixture
def endpoint(moto_server: Server) -> str:
    return moto_server.endpoint_url


@pytest.fixture
def client(endpoint: str) -> DynamoDBClient:
    return boto3.client("dynamodb", endpoint_url=endpoint, region_name=REGION)


@pytest.fixture
def aws(endpoint: str) -> Backend:
    return open_backend(BackendConfig(backend="aws", region=REGION, endpoint_url=endpoint))


def lease_table(client: DynamoDBClient, *, owner_index: bool) -> str:
    name = f"admin-{uuid.uuid4().hex[:10]}"
    request: dict[str, Any] = {
        "TableName": name,
        "AttributeDefinitions": [{"AttributeName": "leaseKey", "AttributeType": "S"}],
        "KeySchema": [{"AttributeName": "leaseKey", "KeyType": "HASH"}],
        "BillingMode": "PAY_PER_REQUEST",
    }
    if owner_index:
        request["AttributeDefinitions"].append({"AttributeName": "leaseOwner", "AttributeType": "S"})
        request["GlobalSecondaryIndexes"] = [
            {
                "IndexName": OWNER_INDEX,
                "KeySchema": [
                    {"AttributeName": "leaseOwner", "KeyType": "HASH"},
                    {"AttributeName": "leaseKey", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "KEYS_ONLY"},
            }
        ]
    client.create_table(**request)
    return name


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


def failing(client: DynamoDBClient, method: str, error: Exception) -> Backend:
    fake = cast("DynamoDBClient", FailingClient(client, {method: error}))
    return open_backend(BackendConfig(backend="aws", region=REGION), dynamodb_client=fake)


def client_error(code: str, message: str, operation: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}}, operation)


@pytest.mark.aws
class TestDynamoDB:
    def test_capabilities(self, aws: Backend) -> None:
        capabilities = aws.capabilities
        assert capabilities.kcl_3x_resources
        assert capabilities.legacy_layout
        admin = aws.table_admin()
        assert admin.database_file is None
        assert admin.database_exists()

    def test_table_status(self, aws: Backend, client: DynamoDBClient) -> None:
        name = lease_table(client, owner_index=False)
        admin = aws.table_admin()
        assert admin.table_status(name) == "ACTIVE"
        assert admin.table_status(f"{name}-absent") is None

    def test_owner_index_status_and_deletion(self, aws: Backend, client: DynamoDBClient) -> None:
        name = lease_table(client, owner_index=True)
        admin = aws.table_admin()
        assert admin.owner_index_status(name) == "ACTIVE"
        admin.delete_owner_index(name)
        assert admin.owner_index_status(name) in (None, "DELETING")
        assert admin.table_status(name) is not None  # the table stays

    def test_owner_index_of_a_table_without_one(self, aws: Backend, client: DynamoDBClient) -> None:
        assert aws.table_admin().owner_index_status(lease_table(client, owner_index=False)) is None

    def test_owner_index_of_a_missing_table(self, aws: Backend) -> None:
        admin = aws.table_admin()
        with pytest.raises(ResourceNotFoundError):
            admin.owner_index_status("admin-no-such-table")
        with pytest.raises(ResourceNotFoundError) as caught:
            admin.delete_owner_index("admin-no-such-table")
        fault = service_error(caught.value)
        assert fault is not None
        assert fault.code == "ResourceNotFoundException"
        assert fault.answered

    def test_delete_table(self, aws: Backend, client: DynamoDBClient) -> None:
        name = lease_table(client, owner_index=False)
        admin = aws.table_admin()
        admin.delete_table(name)
        assert admin.table_status(name) in (None, "DELETING")
        with pytest.raises(ResourceNotFoundError) as caught:
            admin.delete_table(f"{name}-absent")
        fault = service_error(caught.value)
        assert fault is not None
        assert fault.code == "ResourceNotFoundException"
        assert fault.text.startswith("An error occurred (ResourceNotFoundException) when calling the DeleteTable")

    def test_a_refusal_keeps_the_services_code_message_and_text(self, client: DynamoDBClient) -> None:
        name = lease_table(client, owner_index=True)
        error = client_error("ResourceInUseException", "busy", "UpdateTable")
        admin = failing(client, "update_table", error).table_admin()
        with pytest.raises(DependencyError) as caught:
            admin.delete_owner_index(name)
        assert caught.value.__cause__ is error
        assert service_error(caught.value) == ServiceError(
            "ResourceInUseException",
            "busy",
            "An error occurred (ResourceInUseException) when calling the UpdateTable operation: busy",
            answered=True,
        )
        assert admin.owner_index_status(name) == "ACTIVE"

    def test_a_check_that_fails(self, client: DynamoDBClient) -> None:
        error = client_error("AccessDeniedException", "no", "DescribeTable")
        admin = failing(client, "describe_table", error).table_admin()
        with pytest.raises(AccessDeniedError) as caught:  # permanent: not a DependencyError to retry
            admin.table_status("anything")
        fault = service_error(caught.value)
        assert fault is not None
        assert (fault.code, fault.message) == ("AccessDeniedException", "no")

    def test_no_answer(self, client: DynamoDBClient) -> None:
        error = EndpointConnectionError(endpoint_url="http://nowhere")
        admin = failing(client, "delete_table", error).table_admin()
        with pytest.raises(DependencyError) as caught:
            admin.delete_table("anything")
        assert service_error(caught.value) == ServiceError("EndpointConnectionError", str(error), str(error), False)

    def test_legacy_item_tables_by_name(self, aws: Backend, client: DynamoDBClient) -> None:
        name = f"admin-{uuid.uuid4().hex[:10]}-CoordinatorState"
        client.create_table(
            TableName=name,
            AttributeDefinitions=[{"AttributeName": "key", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "key", "KeyType": "HASH"}],
            BillingMode="PAY_PER_REQUEST",
        )
        table = aws.open_legacy_item_table(name, "coordinator")
        assert (table.table_name, table.layout, table.namespace) == (name, "legacy", "coordinator")
        table.upsert("Migration3.0", {"cv": "CLIENT_VERSION_2X"})
        item = client.get_item(TableName=name, Key={"key": {"S": "Migration3.0"}})["Item"]
        assert item["cv"] == {"S": "CLIENT_VERSION_2X"}


def test_service_error_of_errors_no_service_raised() -> None:
    assert service_error(ConfigurationError("bad")) is None
    assert service_error(ValueError("bad")) is None


def test_a_client_that_cannot_be_built_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigurationError) as caught:
        open_backend(BackendConfig(backend="aws", endpoint_url="http://127.0.0.1:1"))
    fault = service_error(caught.value)
    assert fault is not None
    assert not fault.answered
    assert fault.code == "NoRegionError"
