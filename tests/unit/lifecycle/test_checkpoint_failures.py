"""The pure rule for failed checkpoints (issue 13): exponential back-off, capped; permanent failures give up
after the bound, transient ones never do."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shardwise.errors import ConfigurationError
from shardwise.lifecycle.checkpoint_failures import after_checkpoint_failure
from shardwise.lifecycle.consumer import ConsumerConfig

FAILURES = st.integers(min_value=1, max_value=10_000)
BACKOFF = st.integers(min_value=1, max_value=60_000)


@given(
    failures=FAILURES,
    backoff=BACKOFF,
    extra=st.integers(0, 600_000),
    bound=st.integers(1, 100),
    transient=st.booleans(),
)
def test_the_delay_doubles_from_the_backoff_and_stays_within_the_cap(
    failures: int, backoff: int, extra: int, bound: int, transient: bool
) -> None:
    cap = backoff + extra
    retry = after_checkpoint_failure(
        failures, transient=transient, backoff_ms=backoff, backoff_max_ms=cap, max_failures=bound
    )
    assert backoff <= retry.delay_ms <= cap
    following = after_checkpoint_failure(
        failures + 1, transient=transient, backoff_ms=backoff, backoff_max_ms=cap, max_failures=bound
    )
    assert following.delay_ms == min(cap, 2 * retry.delay_ms)


@given(failures=FAILURES, bound=st.integers(1, 100))
def test_only_permanent_failures_give_up_and_only_at_the_bound(failures: int, bound: int) -> None:
    def decide(transient: bool) -> bool:
        return after_checkpoint_failure(
            failures, transient=transient, backoff_ms=500, backoff_max_ms=10_000, max_failures=bound
        ).give_up

    assert decide(transient=True) is False
    assert decide(transient=False) is (failures >= bound)


def test_the_defaults() -> None:
    config = ConsumerConfig()
    delays = [
        after_checkpoint_failure(
            n,
            transient=False,
            backoff_ms=config.task_backoff_time_ms,
            backoff_max_ms=config.checkpoint_backoff_max_ms,
            max_failures=config.max_checkpoint_failures,
        )
        for n in range(1, 7)
    ]
    assert [d.delay_ms for d in delays] == [500, 1_000, 2_000, 4_000, 8_000, 10_000]
    assert [d.give_up for d in delays] == [False] * 5 + [True]


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"checkpoint_backoff_max_ms": 100}, "checkpoint_backoff_max_ms"),
        ({"max_checkpoint_failures": 0}, "max_checkpoint_failures"),
    ],
)
def test_bad_settings_are_configuration_errors(changes: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigurationError, match=key):
        ConsumerConfig(**changes)
