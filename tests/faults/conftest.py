"""The fault-injection suite: every test here is marked ``faults`` (``pytest -m faults`` runs the suite alone);
the fleet scenarios are also ``slow`` and ``aws`` (they start their own moto server and kinesalite)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from faults.harness import StandIns
from support import standins


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).resolve().parent
    for item in items:
        if here in item.path.resolve().parents:
            item.add_marker(pytest.mark.faults)


@pytest.fixture
def stand_ins(tmp_path: Path) -> Iterator[StandIns]:
    """A moto server and a kinesalite of the test's own (it may pause or load them)."""
    try:
        servers = StandIns(tmp_path / "standin-logs")
    except standins.StandInUnavailable as exc:
        pytest.fail(f"{exc} (deselect with -m 'not aws')", pytrace=False)
    try:
        yield servers
    finally:
        servers.close()
