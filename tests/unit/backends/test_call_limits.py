"""Every backend call is bounded in time (issue 13): timeouts and attempts derived from the failover time,
overridable through the config file or ``--set``, validated, and carried by the clients actually built."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shardwise.backends import open_backend
from shardwise.backends.aws.backend import AwsBackend
from shardwise.backends.aws.dataplane import limits_of
from shardwise.backends.aws.kinesis import KinesisStream
from shardwise.backends.config import BackendConfig, CallLimits, DataClient, RetrievalConfig, derived_call_limits
from shardwise.backends.sqlite.backend import SQLiteBackend
from shardwise.config import build_config, merged, parse_override
from shardwise.errors import ConfigurationError

NAMES = {"application_name": "app", "stream_name": "s"}


def test_the_defaults_follow_kcls_failover_time() -> None:
    derived = derived_call_limits(10_000)
    assert derived.dynamodb == CallLimits(connect_timeout_ms=1_000, read_timeout_ms=2_000, max_attempts=3)
    assert derived.kinesis == CallLimits(connect_timeout_ms=1_000, read_timeout_ms=10_000, max_attempts=3)
    assert derived.sqlite_busy_timeout_ms == 3_333
    # A config built without a worker uses them too.
    assert BackendConfig().dynamodb_limits == derived.dynamodb
    assert BackendConfig().kinesis_limits == derived.kinesis
    assert BackendConfig().busy_timeout_ms == 3_333


@given(st.integers(min_value=78, max_value=3_600_000))
def test_one_dynamodb_attempt_fits_a_renewal_interval_unless_a_floor_applies(failover_ms: int) -> None:
    limits = derived_call_limits(failover_ms)
    renewal_interval_ms = failover_ms // 3 - 25
    one_attempt_ms = limits.dynamodb.connect_timeout_ms + limits.dynamodb.read_timeout_ms
    if failover_ms >= 10_000:
        assert one_attempt_ms <= renewal_interval_ms
        assert limits.kinesis.read_timeout_ms <= failover_ms
        assert limits.sqlite_busy_timeout_ms <= renewal_interval_ms + 25
    assert limits.dynamodb.read_timeout_ms >= 1_000  # the floors
    assert limits.kinesis.read_timeout_ms >= 2_000
    assert limits.sqlite_busy_timeout_ms >= 2_000


def test_build_config_derives_unset_limits_from_the_workers_failover_time() -> None:
    _, backend = build_config({**NAMES, "leases": {"failover_time_ms": 30_000}})
    assert backend.dynamodb_limits == CallLimits(3_000, 6_000, 3)
    assert backend.kinesis_limits == CallLimits(3_000, 30_000, 3)
    assert backend.busy_timeout_ms == 10_000


def test_limits_are_set_from_the_file_and_from_set_overrides() -> None:
    file_values: dict[str, Any] = {**NAMES, "dynamodb_read_timeout_ms": 1_500, "kinesis_max_attempts": 5}
    overrides = dict(parse_override(text) for text in ("dynamodb_connect_timeout_ms=250", "sqlite_busy_timeout_ms=700"))
    _, backend = build_config(merged(file_values, overrides))
    assert backend.dynamodb_limits == CallLimits(250, 1_500, 3)
    assert backend.kinesis_limits == CallLimits(1_000, 10_000, 5)
    assert backend.busy_timeout_ms == 700


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("dynamodb_connect_timeout_ms", 0),
        ("dynamodb_read_timeout_ms", -5),
        ("dynamodb_max_attempts", 0),
        ("kinesis_max_attempts", 21),
        ("kinesis_read_timeout_ms", 600_001),
        ("sqlite_busy_timeout_ms", True),
        ("kinesis_connect_timeout_ms", "fast"),
    ],
)
def test_invalid_limits_are_configuration_errors_naming_the_key(key: str, value: object) -> None:
    with pytest.raises(ConfigurationError, match=key):
        build_config({**NAMES, key: value})


def settings(config: object) -> tuple[object, object, object]:
    """A botocore client config's connect and read timeouts and retry settings (untyped in the stubs)."""
    values = vars(config)
    return values["connect_timeout"], values["read_timeout"], values["retries"]


def test_the_aws_clients_carry_the_limits() -> None:
    config = BackendConfig(
        backend="aws",
        region="us-east-1",
        endpoint_url="http://127.0.0.1:1",
        dynamodb_connect_timeout_ms=250,
        dynamodb_read_timeout_ms=1_500,
        dynamodb_max_attempts=2,
        kinesis_connect_timeout_ms=400,
        kinesis_read_timeout_ms=4_000,
        kinesis_max_attempts=4,
    )
    backend = open_backend(config)
    assert isinstance(backend, AwsBackend)
    assert settings(backend.dynamodb.meta.config) == (0.25, 1.5, {"mode": "standard", "total_max_attempts": 2})
    stream = backend.open_stream("orders")
    assert isinstance(stream, KinesisStream)
    assert settings(stream.client.meta.config) == (0.4, 4.0, {"mode": "standard", "total_max_attempts": 4})
    # The fast data-plane client reads records within the same limits.
    assert stream.data_client == "fast"
    assert limits_of(stream.client.meta.config) == CallLimits(400, 4_000, 4)


@pytest.mark.parametrize("client", ["fast", "boto3"])
def test_the_retrieval_client_reaches_the_streams_the_backend_opens(client: DataClient, tmp_path: Path) -> None:
    config = BackendConfig(
        backend="aws", region="us-east-1", endpoint_url="http://127.0.0.1:1", retrieval=RetrievalConfig(client)
    )
    stream = open_backend(config).open_stream("orders")
    assert isinstance(stream, KinesisStream)
    assert stream.data_client == client
    # The local backend has one way to read records and ignores the key.
    local = BackendConfig(db=str(tmp_path / "app.db"), retrieval=RetrievalConfig(client))
    assert open_backend(local).open_stream("orders") is not None


def test_the_aws_clients_of_a_default_config_are_bounded_too() -> None:
    backend = open_backend(BackendConfig(backend="aws", region="us-east-1", endpoint_url="http://127.0.0.1:1"))
    assert isinstance(backend, AwsBackend)
    # Not botocore's 60 s read timeout.
    assert settings(backend.dynamodb.meta.config) == (1.0, 2.0, {"mode": "standard", "total_max_attempts": 3})


def test_the_sqlite_busy_timeout_is_bounded(tmp_path: Path) -> None:
    backend = open_backend(BackendConfig(db=str(tmp_path / "app.db"), sqlite_busy_timeout_ms=700))
    assert isinstance(backend, SQLiteBackend)
    assert backend.database.busy_timeout_s == 0.7
    derived = open_backend(BackendConfig(db=str(tmp_path / "app.db")))
    assert isinstance(derived, SQLiteBackend)
    assert derived.database.busy_timeout_s == 3.333  # not the 30 s it was


def test_every_client_comes_from_one_boto3_session(monkeypatch: pytest.MonkeyPatch) -> None:
    import boto3

    from shardwise.backends.aws import client as clients

    session = clients.shared_session()
    assert clients.shared_session() is session
    created: list[object] = []
    real = boto3.session.Session

    def counting(*args: Any, **kwargs: Any) -> Any:
        created.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(boto3.session, "Session", counting)
    backend = open_backend(BackendConfig(backend="aws", region="us-east-1", endpoint_url="http://127.0.0.1:1"))
    backend.open_stream("a")
    backend.open_stream("b")
    clients.kinesis_client(region_name="us-east-1", endpoint_url="http://127.0.0.1:1")
    assert created == []  # no session but the shared one
    assert clients.shared_session() is session
