"""The ledger's figures, as pure functions: lost, duplicates, stretches of processing, their longest overlap
across workers, and the time to recover."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from faults.ledger import Delivery, Event, Tenure, duplicates, longest_overlap, lost, recovery_s, tenures


def d(record_id: str, shard: str, worker: str, t: float) -> Delivery:
    return Delivery(record_id, shard, "0", worker, t)


def init(shard: str, worker: str, t: float) -> Event:
    return Event(shard, worker, "initialize", t)


deliveries_strategy = st.lists(
    st.builds(
        d,
        st.sampled_from(["r1", "r2", "r3", "r4"]),
        st.sampled_from(["s1", "s2"]),
        st.sampled_from(["w1", "w2", "w3"]),
        st.floats(0, 100),
    ),
    max_size=30,
)


def test_lost_is_what_was_put_and_never_delivered() -> None:
    assert lost(["a", "b", "c"], [d("a", "s", "w1", 1), d("c", "s", "w2", 2)]) == {"b"}
    assert lost([], [d("a", "s", "w1", 1)]) == set()


@given(deliveries_strategy)
def test_duplicates_are_the_deliveries_beyond_each_records_first(deliveries: list[Delivery]) -> None:
    assert duplicates(deliveries) == len(deliveries) - len({x.record_id for x in deliveries})


def test_a_stretch_runs_from_first_to_last_delivery_and_splits_at_each_initialize() -> None:
    deliveries = [d("r1", "s", "w1", 1), d("r2", "s", "w1", 3), d("r3", "s", "w1", 7), d("r4", "s", "w1", 9)]
    events = [init("s", "w1", 0.5), init("s", "w1", 6), init("other", "w1", 2)]
    assert tenures(deliveries, events) == [Tenure("s", "w1", 1, 3, 2), Tenure("s", "w1", 7, 9, 2)]


def test_a_stretch_without_deliveries_is_left_out() -> None:
    assert tenures([], [init("s", "w1", 1)]) == []


def test_the_longest_overlap_is_between_different_workers_on_one_shard() -> None:
    stretches = [
        Tenure("s1", "w1", 0, 10, 5),
        Tenure("s1", "w2", 6, 20, 5),  # overlaps w1 for 4 s
        Tenure("s1", "w1", 12, 15, 5),  # w1 again, inside w2's stretch: 3 s
        Tenure("s2", "w3", 0, 30, 5),  # another shard: never compared with s1
        Tenure("s2", "w3", 1, 29, 5),  # the same worker: not an overlap
    ]
    overlap = longest_overlap(stretches)
    assert overlap is not None
    assert (overlap.shard_id, overlap.workers, overlap.start, overlap.seconds) == ("s1", ("w1", "w2"), 6, 4)


def test_stretches_that_only_touch_do_not_overlap() -> None:
    assert longest_overlap([Tenure("s", "w1", 0, 5, 1), Tenure("s", "w2", 5, 9, 1)]) is None


@given(
    deliveries_strategy,
    st.lists(
        st.builds(init, st.sampled_from(["s1", "s2"]), st.sampled_from(["w1", "w2"]), st.floats(0, 100)), max_size=6
    ),
)
def test_no_overlap_is_longer_than_either_stretch_and_order_does_not_matter(
    deliveries: list[Delivery], events: list[Event]
) -> None:
    stretches = tenures(deliveries, events)
    assert sum(t.deliveries for t in stretches) == len(deliveries)
    overlap = longest_overlap(stretches)
    if overlap is None:
        return
    on_shard = [t for t in stretches if t.shard_id == overlap.shard_id and t.worker_id in overlap.workers]
    assert overlap.seconds <= max(t.end - t.start for t in on_shard)
    again = longest_overlap(list(reversed(stretches)))
    assert again is not None
    assert again.seconds == overlap.seconds


def test_recovery_waits_for_the_backlog_and_for_every_shard_to_deliver_again() -> None:
    put_at = {"old": ("s1", 1.0), "new-s1": ("s1", 11.0), "new-s2": ("s2", 12.0)}
    deliveries = [d("old", "s1", "w1", 14.0), d("new-s1", "s1", "w1", 14.5), d("new-s2", "s2", "w2", 16.0)]
    assert recovery_s(put_at, deliveries, fault_end=10.0) == 6.0


def test_recovery_is_zero_when_nothing_was_waiting() -> None:
    assert recovery_s({"r": ("s1", 1.0)}, [d("r", "s1", "w1", 2.0)], fault_end=10.0) == 0.0


def test_no_recovery_while_a_record_is_missing_or_a_shard_stays_silent() -> None:
    assert recovery_s({"r": ("s1", 1.0)}, [], fault_end=10.0) is None
    assert recovery_s({"r": ("s1", 11.0)}, [], fault_end=10.0) is None


def test_recovery_counts_the_first_delivery_of_a_record() -> None:
    deliveries = [d("r", "s1", "w1", 12.0), d("r", "s1", "w2", 30.0)]
    assert recovery_s({"r": ("s1", 1.0)}, deliveries, fault_end=10.0) == 2.0
