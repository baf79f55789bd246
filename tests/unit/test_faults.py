"""The fault classification every retry loop of a worker asks (errors.classify), the back-off with jitter and
the traceback rate limit (retry.py)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shardwise.errors import (
    AccessDeniedError,
    CheckpointError,
    ConfigurationError,
    DependencyError,
    ExpiredIteratorError,
    Fault,
    InvalidArgumentError,
    InvalidCheckpointError,
    InvalidStateError,
    LeaseLostError,
    MalformedItemError,
    ResourceNotFoundError,
    ShardNotFoundError,
    ShardwiseError,
    StreamNotFoundError,
    TableNotFoundError,
    ThrottlingError,
    UnsupportedFeatureVersionError,
    UnusableStoreError,
    classify,
    is_transient,
)
from shardwise.retry import TracebackLimiter, backoff_s
from support.clocks import FakeClock

CLASSIFICATION: list[tuple[BaseException, Fault]] = [
    # transient: retried forever with back-off
    (DependencyError("DynamoDB GetItem failed (InternalServerError) (HTTP 500)"), Fault.TRANSIENT),
    (ThrottlingError("throttled"), Fault.TRANSIENT),
    (TimeoutError("read timed out"), Fault.TRANSIENT),
    (ConnectionResetError("connection reset by peer"), Fault.TRANSIENT),
    # "retry later": retried at start within the bound, and while running as transient
    (ResourceNotFoundError("coordinator table 'app-CoordinatorState' does not exist"), Fault.NOT_READY),
    (InvalidStateError("merge child waits for the lease of its other parent; retry later"), Fault.NOT_READY),
    # the stream or the lease table missing: retried at start within the bound, permanent while running
    (StreamNotFoundError("stream 'orders' does not exist"), Fault.MISSING),
    (TableNotFoundError("lease table 'app' does not exist"), Fault.MISSING),
    # permanent: end the worker
    (ConfigurationError("bad key"), Fault.PERMANENT),
    (AccessDeniedError("UnrecognizedClientException"), Fault.PERMANENT),
    (UnusableStoreError("database disk image is malformed"), Fault.PERMANENT),
    (UnsupportedFeatureVersionError("level 3", "lease.assignment", 3, (1, 2)), Fault.PERMANENT),
    # per item: stay with their lease, shard or item
    (MalformedItemError("shardId-1", "leaseCounter is not a number"), Fault.PER_ITEM),
    (LeaseLostError("lost"), Fault.PER_ITEM),
    (InvalidCheckpointError("behind"), Fault.PER_ITEM),
    (CheckpointError("failed"), Fault.PER_ITEM),
    (ExpiredIteratorError("expired"), Fault.PER_ITEM),
    (InvalidArgumentError("bad sequence number"), Fault.PER_ITEM),
    (ShardNotFoundError("shard shardId-9 does not exist"), Fault.PER_ITEM),
    (ShardwiseError("some other shardwise error"), Fault.PER_ITEM),
    # anything else is a bug (or a record processor's exception)
    (RuntimeError("bug"), Fault.UNEXPECTED),
    (KeyError("x"), Fault.UNEXPECTED),
    (OverflowError("Python int too large to convert to SQLite INTEGER"), Fault.UNEXPECTED),
]


@pytest.mark.parametrize(("exc", "fault"), CLASSIFICATION, ids=lambda v: type(v).__name__)
def test_classification_table(exc: BaseException, fault: Fault) -> None:
    assert classify(exc) is fault
    assert is_transient(exc) is (fault is Fault.TRANSIENT)


def test_only_permanent_and_missing_faults_end_a_worker() -> None:
    assert {fault for fault in Fault if fault.ends_worker} == {Fault.PERMANENT, Fault.MISSING}


def test_initialization_retries_what_may_heal_by_itself() -> None:
    retried = {fault for fault in Fault if fault.retried_at_start}
    assert retried == {Fault.TRANSIENT, Fault.NOT_READY, Fault.MISSING}


def test_a_shard_missing_is_not_a_stream_missing() -> None:
    assert isinstance(ShardNotFoundError("x"), ResourceNotFoundError)
    assert classify(ShardNotFoundError("x")) is Fault.PER_ITEM
    assert classify(StreamNotFoundError("x")).ends_worker
    assert not classify(ResourceNotFoundError("x")).ends_worker


def test_unusable_store_is_an_invalid_state_and_access_denied_is_not_a_dependency_error() -> None:
    assert issubclass(UnusableStoreError, InvalidStateError)
    # Code that retries DependencyError (per lease, per loop) must not swallow a refused credential.
    assert not issubclass(AccessDeniedError, DependencyError)


def test_exception_tree_is_exported_from_the_package() -> None:
    import shardwise

    assert shardwise.AccessDeniedError is AccessDeniedError
    assert shardwise.ShardNotFoundError is ShardNotFoundError
    assert shardwise.UnusableStoreError is UnusableStoreError
    assert shardwise.StreamNotFoundError is StreamNotFoundError
    assert shardwise.TableNotFoundError is TableNotFoundError


# -- back-off ---------------------------------------------------------------------------------------------------


@given(
    attempt=st.integers(min_value=1, max_value=200),
    base_s=st.floats(min_value=0.001, max_value=10),
    cap_s=st.floats(min_value=0.001, max_value=100),
    draw=st.floats(min_value=0, max_value=1, exclude_max=True),
)
def test_backoff_is_between_half_and_all_of_the_capped_exponential_step(
    attempt: int, base_s: float, cap_s: float, draw: float
) -> None:
    step = min(cap_s, base_s * 2.0 ** (attempt - 1))
    delay = backoff_s(attempt, base_s, cap_s, lambda: draw)
    assert step / 2 <= delay <= step
    assert delay <= cap_s


@given(base_s=st.floats(min_value=0.001, max_value=10), cap_s=st.floats(min_value=0.001, max_value=100))
def test_backoff_grows_until_the_cap(base_s: float, cap_s: float) -> None:
    low = [backoff_s(n, base_s, cap_s, lambda: 0.0) for n in range(1, 40)]
    assert low == sorted(low)
    assert low[-1] == pytest.approx(min(cap_s, base_s * 2**38) / 2)


def test_backoff_jitter_spreads_a_fleet() -> None:
    rng = random.Random(7)
    delays = {round(backoff_s(3, 1.0, 60.0, rng), 6) for _ in range(50)}
    assert len(delays) > 40
    assert all(2.0 <= d <= 4.0 for d in delays)


@pytest.mark.parametrize(("attempt", "base", "cap"), [(0, 1.0, 1.0), (1, 0.0, 1.0), (1, 1.0, 0.0)])
def test_backoff_rejects_nonsense(attempt: int, base: float, cap: float) -> None:
    with pytest.raises(ValueError, match="must be"):
        backoff_s(attempt, base, cap, random.Random(1))


def test_traceback_limiter_allows_one_per_period() -> None:
    clock = FakeClock()
    limiter = TracebackLimiter(clock, period_ns=60 * 10**9)
    assert limiter.allow()
    assert not limiter.allow()
    clock.advance(59 * 10**9)
    assert not limiter.allow()
    clock.advance(10**9)
    assert limiter.allow()
    assert not limiter.allow()
