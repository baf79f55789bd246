"""Fixtures of the subprocess-worker scenarios: the backend each one runs on (``local``: SQLite leases + local
stream; ``aws``: DynamoDB on moto, Kinesis on kinesis-local), the producers' period on it, and fresh streams
with a fleet each, cleaned up after the test.

A test module may define its own ``backend`` (it then takes precedence), or ``aws_tick_s`` to change the aws
variant's producer period.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from support.fleet import Backend
from support.scenario import FreshStreams


@pytest.fixture(params=["local", pytest.param("aws", marks=pytest.mark.aws)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """Each scenario twice: on the local backend, and (marked ``aws``) on the stand-ins of the session."""
    if request.param == "local":
        return Backend.local(tmp_path / "shardwise.db")
    dynamodb = request.getfixturevalue("moto_server")
    kinesis = request.getfixturevalue("kinesis_local")
    return Backend.aws(kinesis_endpoint_url=kinesis.endpoint_url, dynamodb_endpoint_url=dynamodb.endpoint_url)


@pytest.fixture
def aws_tick_s() -> float:
    """The producers' period on the aws backend."""
    return 0.25


@pytest.fixture
def tick_s(backend: Backend, aws_tick_s: float) -> float:
    """The producers' period: kinesis-local slows down as its streams grow, so the aws variant writes less."""
    return 0.1 if backend.kind == "local" else aws_tick_s


@pytest.fixture
def fresh_streams(backend: Backend, tmp_path: Path) -> Iterator[FreshStreams]:
    """Fresh streams with a fleet each; after the test, no worker left running and (on aws) no stream left."""
    streams = FreshStreams(backend, tmp_path)
    try:
        yield streams
    finally:
        streams.close()
