"""The bench's read-unit arithmetic (tests/support/dynamodb_units.py) against DynamoDB's documented rules."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from support.dynamodb_units import (
    ReadUnitsMeter,
    attribute_value_size,
    billed_read_units,
    item_size,
    read_units_for_items,
    read_units_for_page,
    request_kind,
)


@pytest.mark.parametrize(
    ("value", "size"),
    [
        ({"S": "abc"}, 3),
        ({"S": "é"}, 2),  # UTF-8 bytes, not characters
        ({"N": "0"}, 2),
        ({"N": "7"}, 2),
        ({"N": "12"}, 2),
        ({"N": "123"}, 3),
        ({"N": "1000"}, 2),  # trailing zeros trimmed: one significant digit
        ({"N": "0.0012"}, 2),  # leading zeros trimmed: "12"
        ({"N": "-12345.6789"}, 6),  # nine significant digits
        ({"B": b"\x00\x01\x02"}, 3),
        ({"B": "AAEC"}, 3),  # base64 on the wire
        ({"BOOL": True}, 1),
        ({"NULL": True}, 1),
        ({"SS": ["a", "bc"]}, 3),
        ({"NS": ["1", "123"]}, 5),
        ({"L": []}, 3),
        ({"M": {}}, 3),
        ({"L": [{"S": "ab"}, {"N": "1"}]}, 3 + (1 + 2) + (1 + 2)),
        ({"M": {"k": {"S": "ab"}}}, 3 + 1 + 1 + 2),
        ({"M": {"a": {"L": [{"BOOL": False}]}}}, 3 + 1 + 1 + (3 + 1 + 1)),
    ],
)
def test_attribute_value_sizes_follow_dynamodbs_rules(value: dict[str, Any], size: int) -> None:
    assert attribute_value_size(value) == size


def test_item_size_adds_attribute_names() -> None:
    item = {"leaseKey": {"S": "shardId-000000000001"}, "leaseCounter": {"N": "42"}}
    assert item_size(item) == len("leaseKey") + 20 + len("leaseCounter") + 2


def test_an_attribute_value_has_one_known_type() -> None:
    with pytest.raises(ValueError, match="exactly one type"):
        attribute_value_size({"S": "a", "N": "1"})
    with pytest.raises(ValueError, match="unknown"):
        attribute_value_size({"X": "a"})


def _item_of(size: int) -> dict[str, Any]:
    """An item of exactly ``size`` bytes (size >= 2): attribute ``p`` holding a string."""
    return {"p": {"S": "x" * (size - 1)}}


def test_get_item_units() -> None:
    assert read_units_for_items([_item_of(100)], consistent=True) == 1
    assert read_units_for_items([_item_of(100)], consistent=False) == 0.5
    assert read_units_for_items([_item_of(4096)], consistent=True) == 1
    assert read_units_for_items([_item_of(4097)], consistent=True) == 2
    assert read_units_for_items([], consistent=True) == 1  # nothing found: still the minimum
    assert read_units_for_items([], consistent=False) == 0.5


def test_batch_items_round_each_item_but_a_page_rounds_the_sum() -> None:
    items = [_item_of(300)] * 20  # 6,000 bytes
    assert read_units_for_items(items, consistent=True) == 20
    assert read_units_for_page(items, consistent=True) == 2
    assert read_units_for_page(items, consistent=False) == 1
    assert read_units_for_page([], consistent=False) == 0.5


@given(st.lists(st.integers(min_value=2, max_value=20_000), max_size=30), st.booleans())
def test_a_page_never_costs_more_than_reading_its_items_one_by_one(sizes: list[int], consistent: bool) -> None:
    items = [_item_of(size) for size in sizes]
    page = read_units_for_page(items, consistent=consistent)
    assert page <= max(read_units_for_items(items, consistent=consistent), read_units_for_items([], consistent=True))
    unit = 1.0 if consistent else 0.5
    assert page == unit * max(1, -(-sum(sizes) // 4096))


def test_billed_read_units_per_operation() -> None:
    item = _item_of(5000)
    assert billed_read_units("GetItem", {"ConsistentRead": True}, {"Item": item}) == 2
    assert billed_read_units("GetItem", {}, {}) == 0.5
    assert billed_read_units("Scan", {"ConsistentRead": True}, {"Items": [item, item]}) == 3
    assert billed_read_units("Query", {"ConsistentRead": False}, {"Items": [item]}) == 1
    batch = {"RequestItems": {"t": {"ConsistentRead": True}}}
    assert billed_read_units("BatchGetItem", batch, {"Responses": {"t": [item, item]}}) == 4
    assert billed_read_units("TransactGetItems", {}, {"Responses": [{"Item": item}]}) == 4
    assert billed_read_units("UpdateItem", {}, {"Attributes": item}) == 0


def test_request_kinds_say_where_reads_go() -> None:
    assert request_kind("GetItem", {"Key": {"leaseKey": {"S": "Migration3.0"}}}) == "GetItem Migration3.0"
    assert request_kind("GetItem", {"Key": {"leaseKey": {"S": "shardId-000000000003"}}}) == "GetItem lease"
    assert request_kind("Query", {"IndexName": "LeaseOwnerToLeaseKeyIndex"}) == "Query LeaseOwnerToLeaseKeyIndex"
    assert request_kind("Scan", {"FilterExpression": "x"}) == "Scan (filtered)"
    assert request_kind("UpdateItem", {}) == "UpdateItem"


def test_the_meter_counts_requests_and_both_accountings() -> None:
    meter = ReadUnitsMeter()
    page = {"Items": [_item_of(3000), _item_of(3000)], "ConsumedCapacity": {"CapacityUnits": 1.0}}
    meter.observe("Scan", {"ConsistentRead": True}, page)
    meter.observe("Scan", {"ConsistentRead": True}, page)
    meter.observe("UpdateItem", {}, {"ConsumedCapacity": {"CapacityUnits": 1.0}})
    meter.observe("GetItem", {"Key": {"leaseKey": {"S": "Leader"}}}, {"Error": {"Code": "Throttled"}})
    first = meter.snapshot()
    assert first.requests == {"Scan": 2, "UpdateItem": 1}
    assert first.billed_read_units == {"Scan": 4.0}
    assert first.flat_read_units == {"Scan": 2.0}  # writes' units are not read units
    assert first.flat_write_units == {"UpdateItem": 1.0}
    meter.observe("Query", {"IndexName": "i", "FilterExpression": "f"}, {"Items": []})
    meter.observe("Scan", {}, {"Items": []}, where="taker")
    assert meter.snapshot().requests["Scan [taker]"] == 1
    later = meter.snapshot().minus(first)
    assert later.requests == {"Query i": 1, "Scan [taker]": 1}
    assert later.billed_read_units == {"Query i": 0.5, "Scan [taker]": 0.5}
    assert later.filtered == 1
