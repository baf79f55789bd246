"""Session fixtures: the local AWS stand-ins, started on free 127.0.0.1 ports and stopped by PID.

A stand-in that is not installed is an error, not a skip: run ``scripts/setup`` (the README's set-up
command) first, or deselect those tests with ``-m "not aws"``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

sys.path.insert(0, str(Path(__file__).resolve().parent))

from support import standins

# CI (HYPOTHESIS_PROFILE=ci, set by .ci/run) draws the same examples on every run, so that a property's rare
# counterexample shows up in a developer's runs (random seeds, the default profile), not as a red CI at random.
settings.register_profile("ci", derandomize=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

for _key, _value in standins.FAKE_AWS_ENV.items():
    os.environ[_key] = _value
# Never let a developer's real profile or a metadata-service lookup leak into the tests.
os.environ["AWS_CONFIG_FILE"] = os.devnull
os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"


def _start(factory: object, tmp_path_factory: pytest.TempPathFactory) -> standins.Server:
    assert callable(factory)
    try:
        server = factory(tmp_path_factory.mktemp("standin-logs"))
    except standins.StandInUnavailable as exc:
        pytest.fail(f"{exc} (deselect with -m 'not aws')", pytrace=False)
    assert isinstance(server, standins.Server)
    return server


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[standins.Server]:
    server = _start(standins.start_moto, tmp_path_factory)
    with standins.running(server):
        yield server


@pytest.fixture(scope="session")
def kinesis_local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[standins.Server]:
    server = _start(standins.start_kinesis_local, tmp_path_factory)
    with standins.running(server):
        yield server


@pytest.fixture(scope="session")
def kinesalite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[standins.Server]:
    server = _start(standins.start_kinesalite, tmp_path_factory)
    with standins.running(server):
        yield server
