"""The format levels a worker opens its state stores with (``state.format``): the finalized level, else its own
highest; it reads up to its own highest; a worker pinned before state stores existed cannot run one."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shardwise.errors import ConfigurationError
from shardwise.versions.features import STATE_FORMAT, SupportedRange, worker_supported_ranges
from shardwise.worker.state import state_levels


@given(finalized=st.integers(0, 2), low=st.integers(0, 2), high=st.integers(1, 2))
def test_writes_the_finalized_level_else_its_highest_and_reads_up_to_its_highest(
    finalized: int, low: int, high: int
) -> None:
    write, readable = state_levels(finalized, SupportedRange(min(low, high), high))
    assert readable == high
    assert write == (finalized if finalized else high)


@pytest.mark.parametrize(("release", "expected"), [(None, (2, 2)), ("0.4", (2, 2)), ("0.3", (1, 1))])
def test_the_release_pin_sets_the_levels(release: str | None, expected: tuple[int, int]) -> None:
    ranges = worker_supported_ranges(assignment="lease-count-2x", follows_migration=False, release=release)
    assert state_levels(0, ranges[STATE_FORMAT]) == expected


def test_a_level_1_fleet_makes_a_level_2_worker_write_level_1_and_read_both() -> None:
    ranges = worker_supported_ranges(assignment="lease-count-2x", follows_migration=False)
    assert state_levels(1, ranges[STATE_FORMAT]) == (1, 2)


@pytest.mark.parametrize("release", ["0.1", "0.2"])
def test_a_worker_pinned_before_state_stores_cannot_run_a_stateful_processor(release: str) -> None:
    ranges = worker_supported_ranges(assignment="lease-count-2x", follows_migration=False, release=release)
    with pytest.raises(ConfigurationError, match=r"supports no state.format level .* pin it to 0.3 or later"):
        state_levels(0, ranges[STATE_FORMAT])
