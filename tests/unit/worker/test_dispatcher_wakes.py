"""A finished shard-consumer step wakes the dispatcher only when it must look before it planned to (issue 15,
point 2: an idle consumer's read costs the dispatcher one pass, not two)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import pytest

from shardwise.worker.config import WorkerConfig, WorkerStats
from shardwise.worker.dispatcher import Dispatcher

S = 1_000_000_000


@dataclass
class StepDone:
    """What the dispatcher reads of a consumer whose step just finished."""

    next_due_ns: int
    is_complete: bool = False


def _dispatcher() -> Dispatcher:
    unused = cast("Any", None)  # what the wake decision never touches
    return Dispatcher(
        WorkerConfig("app", "stream", worker_id="w1"),
        store=unused,
        source=unused,
        processor_factory=unused,
        renewer=unused,
        throughput=unused,
        stats=WorkerStats(),
        create_child_leases=unused,
        on_shard_end=lambda: None,
        clock_ns=lambda: 100 * S,
    )


@pytest.mark.parametrize(
    ("next_look_ns", "consumer", "wakes"),
    [
        # The dispatcher looks again at 100.05 s: a consumer next due at 101.5 s (an empty read, 1.5 s idle) waits.
        (100 * S + S // 20, StepDone(101 * S + S // 2), False),
        (101 * S + S // 2, StepDone(101 * S + S // 2), False),  # due exactly when the dispatcher looks anyway
        # Due before the planned look (records came back: due at once), or finished: wake it now.
        (100 * S + S // 20, StepDone(0), True),
        (100 * S + S // 20, StepDone(100 * S + S // 40), True),
        (100 * S + S // 20, StepDone(101 * S, is_complete=True), True),
        # 0: the dispatcher is in a pass (which may have planned without this consumer) or shutting down.
        (0, StepDone(101 * S), True),
    ],
)
def test_a_finished_step_wakes_the_dispatcher_only_if_it_must_look_earlier(
    next_look_ns: int, consumer: StepDone, wakes: bool
) -> None:
    dispatcher = _dispatcher()
    dispatcher._next_look_ns = next_look_ns
    dispatcher._step_done(cast("Any", consumer), cast("Any", None))
    assert dispatcher._wake.is_set() is wakes
