"""A worker loop's answer to a failed run (worker/loops.py): back-off with jitter up to the interval, one line
per fault, a traceback only for a bug and at most once a minute, and a permanent error reported with its count
of consecutive occurrences. Runs are driven one at a time with ``run_once`` (no thread, no sleeping)."""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable

import pytest

from shardwise.errors import (
    AccessDeniedError,
    DependencyError,
    InvalidStateError,
    MalformedItemError,
    StreamNotFoundError,
    ThrottlingError,
    UnusableStoreError,
)
from shardwise.worker.loops import Loop, LoopFaults
from support.clocks import FakeClock

INTERVAL_S = 10.0


class Script:
    """A task that raises the scripted errors in turn (``None``: succeeds)."""

    def __init__(self, *outcomes: BaseException | None) -> None:
        self.outcomes = list(outcomes)
        self.runs = 0

    def __call__(self) -> None:
        self.runs += 1
        outcome = self.outcomes.pop(0) if self.outcomes else None
        if outcome is not None:
            raise outcome


def make_loop(
    task: Callable[[], None],
    reports: list[tuple[str, BaseException, int]],
    clock: FakeClock,
    *,
    retry_backoff_s: float = 1.0,
) -> Loop:
    faults = LoopFaults(
        retry_backoff_s=retry_backoff_s,
        on_permanent=lambda source, exc, count: reports.append((source, exc, count)),
        rng=random.Random(3),
        clock_ns=clock,
    )
    return Loop("taker", lambda: INTERVAL_S, task, threading.Event(), faults=faults)


def test_permanent_errors_are_counted_in_a_row_and_reported(caplog: pytest.LogCaptureFixture) -> None:
    missing = StreamNotFoundError("stream 'orders' does not exist; create it")
    damaged = UnusableStoreError("database disk image is malformed")
    reports: list[tuple[str, BaseException, int]] = []
    loop = make_loop(Script(missing, missing, None, damaged, damaged, damaged), reports, FakeClock())
    with caplog.at_level(logging.DEBUG, logger="shardwise.worker.loops"):
        delays = [loop.run_once() for _ in range(6)]
    assert [(source, count) for source, _exc, count in reports] == [
        ("taker loop", 1),
        ("taker loop", 2),
        ("taker loop", 1),  # the success in between reset the count
        ("taker loop", 2),
        ("taker loop", 3),
    ]
    assert reports[-1][1] is damaged
    assert delays[2] == INTERVAL_S
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 5
    assert all(r.exc_info is None for r in caplog.records), "a permanent error is one line, no traceback"
    assert "stream 'orders' does not exist; create it" in errors[0].getMessage()


def test_access_denied_is_permanent() -> None:
    reports: list[tuple[str, BaseException, int]] = []
    loop = make_loop(Script(AccessDeniedError("refused (UnrecognizedClientException)")), reports, FakeClock())
    loop.run_once()
    assert [count for _source, _exc, count in reports] == [1]


def test_transient_errors_back_off_with_jitter_up_to_the_interval_and_are_never_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    reports: list[tuple[str, BaseException, int]] = []
    errors: list[BaseException | None] = [ThrottlingError("slow down")] * 3 + [DependencyError("HTTP 500")] * 5
    loop = make_loop(Script(*errors), reports, FakeClock())
    with caplog.at_level(logging.DEBUG, logger="shardwise.worker.loops"):
        delays = [loop.run_once() for _ in range(len(errors))]
    assert reports == []
    for attempt, delay in enumerate(delays, start=1):
        step = min(INTERVAL_S, 2.0 ** (attempt - 1))
        assert step / 2 <= delay <= step, (attempt, delay)
    assert delays[-1] <= INTERVAL_S
    assert [r.levelno for r in caplog.records] == [logging.WARNING] * len(errors)
    assert all(r.exc_info is None for r in caplog.records)
    assert loop.consecutive_failures == len(errors)
    assert loop.run_once() == INTERVAL_S
    assert loop.consecutive_failures == 0


def test_the_first_retry_never_waits_longer_than_the_interval() -> None:
    loop = make_loop(Script(DependencyError("x")), [], FakeClock(), retry_backoff_s=60.0)
    assert loop.run_once() <= INTERVAL_S


@pytest.mark.parametrize(
    "error",
    [
        MalformedItemError("shardId-1", "leaseCounter is 'x'"),
        InvalidStateError("shardId-1: merge child waits for the lease of its other parent; retry later"),
    ],
    ids=["per item", "not ready"],
)
def test_per_item_and_not_ready_errors_are_one_warning_line_and_not_reported(
    caplog: pytest.LogCaptureFixture, error: Exception
) -> None:
    reports: list[tuple[str, BaseException, int]] = []
    loop = make_loop(Script(*[error] * 8), reports, FakeClock())
    with caplog.at_level(logging.DEBUG, logger="shardwise.worker.loops"):
        for _ in range(8):
            loop.run_once()
    assert reports == []
    assert [r.levelno for r in caplog.records] == [logging.WARNING] * 8
    assert all(r.exc_info is None for r in caplog.records)
    assert "shardId-1" in caplog.records[0].getMessage()


def test_a_bug_gets_a_traceback_at_most_once_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    reports: list[tuple[str, BaseException, int]] = []
    loop = make_loop(Script(*[RuntimeError("bug")] * 4), reports, clock)
    with caplog.at_level(logging.DEBUG, logger="shardwise.worker.loops"):
        loop.run_once()
        clock.advance(30 * 10**9)
        loop.run_once()
        loop.run_once()
        clock.advance(31 * 10**9)
        loop.run_once()
    assert reports == []
    assert [r.exc_info is not None for r in caplog.records] == [True, False, False, True]
    assert "traceback is logged at most once a minute" in caplog.records[1].getMessage()
