"""The MetricsSink port: null, log and in-memory sinks, and the ``timed`` helper."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import pytest

from shardwise.metrics import (
    COUNT,
    MILLISECONDS,
    InMemoryMetricsSink,
    LogMetricsSink,
    MetricDatum,
    MetricsSink,
    NullMetricsSink,
    timed,
)


def fake_clock(*readings_ns: int) -> Callable[[], int]:
    it = iter(readings_ns)
    return lambda: next(it)


def test_all_sinks_satisfy_the_port() -> None:
    sinks: list[MetricsSink] = [NullMetricsSink(), LogMetricsSink(), InMemoryMetricsSink()]
    for sink in sinks:
        assert isinstance(sink, MetricsSink)
        sink.put("RenewAllLeases", "CurrentLeases", 3)
        sink.put("RenewAllLeases", "Time", 1.5, MILLISECONDS, dimensions={"WorkerIdentifier": "w1"})


def test_null_sink_drops_everything() -> None:
    sink = NullMetricsSink()
    sink.put("TakeLeases", "TakenLeases", 2)
    assert repr(sink) == "NullMetricsSink()"


def test_log_sink_writes_one_line_per_datum(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("test.metrics.sink")
    sink = LogMetricsSink(logger=log, level=logging.INFO)
    with caplog.at_level(logging.INFO, logger="test.metrics.sink"):
        sink.put("RenewAllLeases", "CurrentLeases", 3)
        sink.put("LeaseAssignmentManager", "Time", 12.25, MILLISECONDS, dimensions={"b": "2", "a": "1"})
    assert [r.getMessage() for r in caplog.records] == [
        "metric RenewAllLeases CurrentLeases=3 Count",
        "metric LeaseAssignmentManager Time=12.25 Milliseconds a=1 b=2",
    ]
    assert all(r.levelno == logging.INFO and r.name == "test.metrics.sink" for r in caplog.records)


def test_log_sink_respects_its_level(caplog: pytest.LogCaptureFixture) -> None:
    sink = LogMetricsSink(logger=logging.getLogger("test.metrics.quiet"), level=logging.DEBUG)
    with caplog.at_level(logging.INFO, logger="test.metrics.quiet"):
        sink.put("TakeLeases", "TakenLeases", 1)
    assert caplog.records == []
    with caplog.at_level(logging.DEBUG, logger="test.metrics.quiet"):
        sink.put("TakeLeases", "TakenLeases", 1)
    assert [r.getMessage() for r in caplog.records] == ["metric TakeLeases TakenLeases=1 Count"]


def test_log_sink_default_logger() -> None:
    assert "shardwise.metrics" in repr(LogMetricsSink())


def test_in_memory_sink_values_last_total_clear() -> None:
    sink = InMemoryMetricsSink()
    assert sink.values("TakeLeases", "TakenLeases") == []
    assert sink.last("TakeLeases", "TakenLeases") is None
    assert sink.total("TakeLeases", "TakenLeases") == 0.0
    sink.put("TakeLeases", "TakenLeases", 2)
    sink.put("TakeLeases", "TakenLeases", 3)
    sink.put("TakeLeases", "ExpiredLeases", 7)
    sink.put("RenewAllLeases", "LostLeases", 1, dimensions={"WorkerIdentifier": "w1"})
    assert sink.values("TakeLeases", "TakenLeases") == [2.0, 3.0]
    assert sink.last("TakeLeases", "TakenLeases") == 3.0
    assert sink.total("TakeLeases", "TakenLeases") == 5.0
    assert sink.values("RenewAllLeases", "LostLeases", dimensions={"WorkerIdentifier": "w1"}) == [1.0]
    assert sink.values("RenewAllLeases", "LostLeases", dimensions={"WorkerIdentifier": "w2"}) == []
    assert sink.data("TakeLeases", "ExpiredLeases") == [MetricDatum("TakeLeases", "ExpiredLeases", 7.0, COUNT, {})]
    assert len(sink.data()) == 4
    assert len(sink.data(operation="TakeLeases")) == 3
    assert "4 data" in repr(sink)
    sink.clear()
    assert sink.data() == []
    assert sink.total("TakeLeases", "TakenLeases") == 0.0


def test_in_memory_sink_is_bounded_per_metric() -> None:
    sink = InMemoryMetricsSink(max_per_metric=3)
    for value in range(5):
        sink.put("LeaseDiscovery", "Success", value)
    sink.put("LeaseDiscovery", "Time", 9)
    assert sink.values("LeaseDiscovery", "Success") == [2.0, 3.0, 4.0]
    assert sink.values("LeaseDiscovery", "Time") == [9.0]
    with pytest.raises(ValueError, match="max_per_metric"):
        InMemoryMetricsSink(max_per_metric=0)


def test_in_memory_sink_is_thread_safe() -> None:
    sink = InMemoryMetricsSink(max_per_metric=100_000)
    threads_n, per_thread = 8, 2_000
    barrier = threading.Barrier(threads_n)

    def work(index: int) -> None:
        barrier.wait()
        for _ in range(per_thread):
            sink.put("RenewAllLeases", "CurrentLeases", 1)
            sink.put(f"Op{index}", "Success", 1)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sink.total("RenewAllLeases", "CurrentLeases") == threads_n * per_thread
    assert all(sink.total(f"Op{i}", "Success") == per_thread for i in range(threads_n))


def test_timed_records_time_and_success() -> None:
    sink = InMemoryMetricsSink()
    with timed(sink, "LeaseDiscovery", clock_ns=fake_clock(1_000_000, 13_500_000)):
        pass
    assert sink.data() == [
        MetricDatum("LeaseDiscovery", "Time", 12.5, MILLISECONDS, {}),
        MetricDatum("LeaseDiscovery", "Success", 1.0, COUNT, {}),
    ]


def test_timed_records_failure_and_reraises() -> None:
    sink = InMemoryMetricsSink()
    error = RuntimeError("boom")
    with (
        pytest.raises(RuntimeError) as raised,
        timed(sink, "LeaseAssignmentManager", dimensions={"k": "v"}, clock_ns=fake_clock(0, 2_000_000)),
    ):
        raise error
    assert raised.value is error
    assert sink.values("LeaseAssignmentManager", "Success") == [0.0]
    assert sink.values("LeaseAssignmentManager", "Time", dimensions={"k": "v"}) == [2.0]


def test_timed_with_the_real_clock() -> None:
    sink = InMemoryMetricsSink()
    with timed(sink, "Migration"):
        pass
    time_ms = sink.last("Migration", "Time")
    assert time_ms is not None
    assert time_ms >= 0
    assert sink.last("Migration", "Success") == 1.0
