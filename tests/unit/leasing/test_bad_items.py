"""Malformed lease items are reported by every worker at a bounded rate while they stay bad, with the metric;
shard sync warns (not DEBUG) when an unreadable item holds the key of a lease it would create."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shardwise.backends.sqlite.leases import SQLiteLeaseStore
from shardwise.backends.sqlite.stream import LocalStreamStore, shard_id_for_index
from shardwise.checkpoint.sequence import TRIM_HORIZON
from shardwise.config import build_config
from shardwise.errors import ConfigurationError
from shardwise.leases.model import Lease
from shardwise.leases.store import MalformedLease
from shardwise.leasing.bad_items import METRIC_NAME, METRIC_OPERATION, MalformedLeaseReporter, Reported, due_reports
from shardwise.leasing.shard_sync import InitialPosition, ShardSyncer
from shardwise.metrics import InMemoryMetricsSink
from support.clocks import FakeClock

S = 1_000_000_000
INTERVAL_NS = 60 * S


# -- the pure decision -------------------------------------------------------------------------------------------

KEYS = st.sampled_from([f"shardId-{i}" for i in range(4)])
PROBLEMS = st.sampled_from(["counter is 'x'", "checkpoint missing"])
SCANS = st.lists(
    st.tuples(st.integers(0, 3 * INTERVAL_NS), st.dictionaries(KEYS, PROBLEMS, max_size=4)), min_size=1, max_size=12
)


@given(SCANS)
def test_each_bad_item_is_reported_at_most_once_per_interval_and_at_least_once_per_interval(
    scans: list[tuple[int, dict[str, str]]],
) -> None:
    now = 0
    book: dict[str, Reported] = {}
    last_report: dict[str, tuple[int, str]] = {}
    previous: dict[str, str] = {}
    for step, bad in scans:
        now += step
        malformed = [MalformedLease(key, problem) for key, problem in sorted(bad.items())]
        due, book = due_reports(malformed, book, now, INTERVAL_NS)
        due_keys = {item.key for item in due}
        assert due_keys <= set(bad)
        for key, problem in bad.items():
            seen = last_report.get(key)
            if key not in previous or seen is None or seen[1] != problem or now - seen[0] >= INTERVAL_NS:
                assert key in due_keys  # new, changed or not reported for an interval: reported now
            else:
                assert key not in due_keys  # reported less than an interval ago with the same problem
            if key in due_keys:
                last_report[key] = (now, problem)
        assert set(book) == set(bad)  # repaired items leave the book
        previous = bad


def test_an_item_that_goes_bad_again_is_reported_at_once() -> None:
    bad = [MalformedLease("k", "p")]
    due, book = due_reports(bad, {}, 0, INTERVAL_NS)
    assert due == bad
    _, book = due_reports([], book, S, INTERVAL_NS)
    due, _ = due_reports(bad, book, 2 * S, INTERVAL_NS)
    assert due == bad


# -- the shell on a real store ------------------------------------------------------------------------------------

GOOD, BAD = shard_id_for_index(0), shard_id_for_index(1)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteLeaseStore]:
    store = SQLiteLeaseStore(tmp_path / "leases.db", "app")
    store.create_table_if_not_exists()
    for key in (GOOD, BAD):
        assert store.create_lease_if_not_exists(Lease(key, TRIM_HORIZON, lease_owner="w-1", lease_counter=2))
    yield store
    store.close()


def corrupt(store: SQLiteLeaseStore, key: str, column: str, value: object) -> None:
    with sqlite3.connect(store.path) as conn:
        conn.execute(f"UPDATE shardwise_leases SET {column} = ? WHERE lease_key = ?", (value, key))


def warnings_about(caplog: pytest.LogCaptureFixture, key: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "shardwise.leasing.bad_items" and r.levelno == logging.WARNING and repr(key) in r.getMessage()
    ]


def test_the_reporter_warns_repeatedly_while_the_item_stays_bad(
    store: SQLiteLeaseStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    clock = FakeClock()
    metrics = InMemoryMetricsSink()
    reporter = MalformedLeaseReporter(store, metrics, clock, interval_ms=60_000)
    corrupt(store, BAD, "lease_counter", "abc")

    reporter.run()
    messages = warnings_about(caplog, BAD)
    assert len(messages) == 1
    assert "leaseCounter" in messages[0]
    assert f"shardwise leases repair --app app --shard {BAD}" in messages[0]
    assert metrics.last(METRIC_OPERATION, METRIC_NAME) == 1

    clock.advance(59 * S)
    reporter.run()
    assert len(warnings_about(caplog, BAD)) == 1  # not again within the interval
    clock.advance(1 * S)
    reporter.run()
    assert len(warnings_about(caplog, BAD)) == 2  # again once the interval has passed
    assert metrics.values(METRIC_OPERATION, METRIC_NAME) == [1, 1, 1]

    corrupt(store, BAD, "lease_counter", 3)
    clock.advance(120 * S)
    assert reporter.check().malformed == []
    assert len(warnings_about(caplog, BAD)) == 2
    assert metrics.last(METRIC_OPERATION, METRIC_NAME) == 0
    assert warnings_about(caplog, GOOD) == []


def test_every_reporter_reports_not_once_per_process(store: SQLiteLeaseStore, caplog: pytest.LogCaptureFixture) -> None:
    """Two workers (two reporters on two stores of one table) each report; a store's own once-only warning
    does not stand in for them."""
    caplog.set_level(logging.WARNING)
    corrupt(store, BAD, "checkpoint", b"\x00")
    other = SQLiteLeaseStore(store.path, "app")
    clock = FakeClock()
    for reporter_store in (store, other):
        MalformedLeaseReporter(reporter_store, InMemoryMetricsSink(), clock).run()
    assert len(warnings_about(caplog, BAD)) == 2


# -- shard sync -----------------------------------------------------------------------------------------------------


def test_shard_sync_warns_when_an_unreadable_item_holds_the_key(
    tmp_path: Path, store: SQLiteLeaseStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with LocalStreamStore(tmp_path / "streams.db") as streams:
        streams.create_stream("s", 2)
        corrupt(store, BAD, "parent_shard_ids", "{not json")
        ShardSyncer(store, streams.stream("s"), InitialPosition.trim_horizon()).sync()
        corrupt(store, BAD, "parent_shard_ids", None)
        assert ShardSyncer(store, streams.stream("s"), InitialPosition.trim_horizon()).sync() == []
    sync_warnings = [
        r.getMessage()
        for r in caplog.records
        if r.name == "shardwise.leasing.shard_sync" and r.levelno == logging.WARNING
    ]
    assert len(sync_warnings) == 1
    assert repr(BAD) in sync_warnings[0]
    assert "parentShardId" in sync_warnings[0]
    assert f"shardwise leases repair --app app --shard {BAD}" in sync_warnings[0]


# -- configuration --------------------------------------------------------------------------------------------------


def test_the_report_interval_is_a_validated_config_key() -> None:
    names = {"application_name": "app", "stream_name": "s"}
    worker, _ = build_config({**names, "malformed_lease_report_interval_ms": 5_000})
    assert worker.malformed_lease_report_interval_ms == 5_000
    assert build_config(names)[0].malformed_lease_report_interval_ms == 60_000
    with pytest.raises(ConfigurationError, match="malformed_lease_report_interval_ms"):
        build_config({**names, "malformed_lease_report_interval_ms": 0})
