"""The pure local expiry rule (issue 13): properties, and the margin's validation in the leases config."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shardwise.assignment.taker import TakerConfig
from shardwise.errors import ConfigurationError
from shardwise.leases.model import default_expiry_margin_ms, expired_locally

NS = st.integers(min_value=0, max_value=2**62)


@given(last=NS, age=st.integers(min_value=0, max_value=2**40), expiry=st.integers(min_value=0, max_value=2**40))
def test_expired_exactly_when_older_than_the_local_expiry(last: int, age: int, expiry: int) -> None:
    assert expired_locally(last, last + age, expiry) is (age > expiry)


@given(last=NS, expiry=st.integers(min_value=0, max_value=2**40), a=st.integers(0, 2**40), b=st.integers(0, 2**40))
def test_once_expired_a_lease_stays_expired_as_time_goes_on(last: int, expiry: int, a: int, b: int) -> None:
    early, late = sorted((a, b))
    if expired_locally(last, last + early, expiry):
        assert expired_locally(last, last + late, expiry)


@given(failover=st.integers(min_value=78, max_value=10**9))
def test_the_default_local_expiry_leaves_two_renewal_intervals_and_ends_before_the_failover_time(failover: int) -> None:
    config = TakerConfig(failover_time_ms=failover)
    assert config.local_expiry_ms == failover - default_expiry_margin_ms(failover)
    assert config.local_expiry_ms <= failover
    assert config.local_expiry_ms > config.renewal_interval_ms
    if failover >= 1_000:
        assert config.local_expiry_ms >= 2 * (failover // 3)


def test_a_margin_that_would_expire_leases_between_renewals_is_rejected() -> None:
    assert TakerConfig(local_expiry_margin_ms=0).local_expiry_ms == 10_000
    assert TakerConfig(local_expiry_margin_ms=2_500).local_expiry_ms == 7_500
    with pytest.raises(ConfigurationError, match="renewal interval"):
        TakerConfig(local_expiry_margin_ms=7_000)
    with pytest.raises(ConfigurationError, match="local_expiry_margin_ms"):
        TakerConfig(local_expiry_margin_ms=-1)
