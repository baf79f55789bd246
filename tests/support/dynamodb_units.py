"""Read units as DynamoDB bills them, computed from the items a request actually read (measurement code for
``bench/bench_generations.py``; moto's ``ReturnConsumedCapacity`` is flat: 1 unit per Scan or Query whatever its
size).

Item size (DynamoDB developer guide, "Item sizes and formats"): the sum, over the item's attributes, of the
attribute name's UTF-8 length plus the value's size —

* ``S``: UTF-8 bytes; ``B``: raw bytes; ``N``: 1 byte per two significant digits (leading and trailing zeros
  trimmed) plus 1 byte; ``BOOL`` and ``NULL``: 1 byte;
* ``SS``/``NS``/``BS``: the sum of their elements' sizes;
* ``L``/``M``: 3 bytes of overhead plus, per element, 1 byte plus the element's size (and, in a map, its key's
  UTF-8 length).

Read units ("Read capacity units"): GetItem and BatchGetItem bill each item ceil(size / 4 KB) units, half for an
eventually consistent read, and a GetItem that finds nothing still the minimum (one such unit); Query and Scan
bill the sum of the sizes of all items read in the page, rounded up to 4 KB (the same minimum when the page is
empty); TransactGetItems bill twice a strongly consistent read. Requests with a ``FilterExpression`` bill the
items read before filtering, which the response does not carry: :class:`ReadUnitsMeter` counts those requests
(``filtered``) so a reader knows where its figure is a lower bound.
"""

from __future__ import annotations

import math
import re
import threading
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

__all__ = [
    "READ_UNIT_BYTES",
    "ReadUnitsMeter",
    "RequestStats",
    "attribute_value_size",
    "item_size",
    "read_units_for_items",
    "read_units_for_page",
    "request_kind",
]

READ_UNIT_BYTES = 4096

_READ_OPERATIONS = frozenset({"GetItem", "BatchGetItem", "Query", "Scan", "TransactGetItems"})


def _number_size(text: str) -> int:
    """1 byte per two significant digits (leading and trailing zeros trimmed) + 1 byte."""
    digits = Decimal(text).normalize().as_tuple().digits
    return math.ceil(len(digits) / 2) + 1


def _binary_size(value: object) -> int:
    if isinstance(value, bytes | bytearray | memoryview):
        return len(value)
    if isinstance(value, str):  # an undecoded wire value: base64 of the bytes
        return len(value) * 3 // 4 - value[-2:].count("=")
    raise TypeError(f"binary value of unexpected type {type(value).__name__}")


def attribute_value_size(value: Mapping[str, Any]) -> int:
    """The size in bytes of one low-level attribute value (``{"S": ...}``, ``{"M": {...}}``, ...)."""
    if len(value) != 1:
        raise ValueError(f"an attribute value has exactly one type, got {sorted(value)}")
    ((kind, inner),) = value.items()
    if kind == "S":
        return len(str(inner).encode())
    if kind == "N":
        return _number_size(str(inner))
    if kind == "B":
        return _binary_size(inner)
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "SS":
        return sum(len(str(element).encode()) for element in inner)
    if kind == "NS":
        return sum(_number_size(str(element)) for element in inner)
    if kind == "BS":
        return sum(_binary_size(element) for element in inner)
    if kind == "L":
        return 3 + sum(1 + attribute_value_size(element) for element in inner)
    if kind == "M":
        return 3 + sum(1 + len(name.encode()) + attribute_value_size(element) for name, element in inner.items())
    raise ValueError(f"unknown attribute value type {kind!r}")


def item_size(item: Mapping[str, Mapping[str, Any]]) -> int:
    """The size in bytes of a low-level item: attribute names' UTF-8 lengths plus their values' sizes."""
    return sum(len(name.encode()) + attribute_value_size(value) for name, value in item.items())


def _units(size: int, *, consistent: bool) -> float:
    blocks = max(1, math.ceil(size / READ_UNIT_BYTES))
    return float(blocks) if consistent else blocks / 2


def read_units_for_items(items: Sequence[Mapping[str, Mapping[str, Any]]], *, consistent: bool) -> float:
    """GetItem / BatchGetItem: each item ceil(size / 4 KB) units (half if eventually consistent); no item at
    all (a GetItem that found nothing) costs the minimum."""
    if not items:
        return _units(0, consistent=consistent)
    return sum(_units(item_size(item), consistent=consistent) for item in items)


def read_units_for_page(items: Sequence[Mapping[str, Mapping[str, Any]]], *, consistent: bool) -> float:
    """Query / Scan: the sizes of all items of the page summed, rounded up to 4 KB (half if eventually
    consistent); an empty page costs the minimum."""
    return _units(sum(item_size(item) for item in items), consistent=consistent)


def request_kind(operation: str, params: Mapping[str, Any]) -> str:
    """A label for a request: the operation, plus the key of a GetItem on a coordinator item (``GetItem
    Migration3.0``) or the index of a Query, so a per-kind count says where reads go."""
    if operation == "GetItem":
        key = params.get("Key", {})
        values = [v.get("S") for v in key.values() if isinstance(v, Mapping)]
        name = values[0] if values and isinstance(values[0], str) else "?"
        # Lease keys (shard ids, possibly stream-qualified) are many: label them as one kind.
        return "GetItem lease" if "shardId-" in name else f"GetItem {name}"
    if operation == "Query":
        return f"Query {params.get('IndexName', 'table')}"
    if operation == "Scan" and "FilterExpression" in params:
        return "Scan (filtered)"
    return operation


def billed_read_units(operation: str, params: Mapping[str, Any], parsed: Mapping[str, Any]) -> float:
    """The read units DynamoDB bills for one read request, from its parameters and its parsed response
    (0 for any other operation)."""
    if operation == "GetItem":
        item = parsed.get("Item")
        return read_units_for_items([item] if item else [], consistent=bool(params.get("ConsistentRead")))
    if operation in ("Query", "Scan"):
        return read_units_for_page(parsed.get("Items", []), consistent=bool(params.get("ConsistentRead")))
    if operation == "BatchGetItem":
        total = 0.0
        for table, items in parsed.get("Responses", {}).items():
            consistent = bool(params.get("RequestItems", {}).get(table, {}).get("ConsistentRead"))
            total += sum(_units(item_size(item), consistent=consistent) for item in items)
        return total
    if operation == "TransactGetItems":
        found = [entry["Item"] for entry in parsed.get("Responses", []) if entry.get("Item")]
        return 2 * sum(_units(item_size(item), consistent=True) for item in found) or 2.0
    return 0.0


@dataclass(frozen=True, slots=True)
class RequestStats:
    """Requests, billed read units and the service's consumed read and write units, per request kind."""

    requests: Mapping[str, int]
    billed_read_units: Mapping[str, float]
    flat_read_units: Mapping[str, float]
    flat_write_units: Mapping[str, float]
    filtered: int

    def minus(self, earlier: RequestStats) -> RequestStats:
        return RequestStats(
            _diff(self.requests, earlier.requests),
            _diff(self.billed_read_units, earlier.billed_read_units),
            _diff(self.flat_read_units, earlier.flat_read_units),
            _diff(self.flat_write_units, earlier.flat_write_units),
            self.filtered - earlier.filtered,
        )


def _diff(later: Mapping[str, Any], earlier: Mapping[str, Any]) -> dict[str, Any]:
    return {key: later[key] - earlier.get(key, 0) for key in later if later[key] - earlier.get(key, 0)}


class ReadUnitsMeter:
    """Counts one DynamoDB client's requests per kind, the read units each is billed (by DynamoDB's rules, and
    as ``ConsumedCapacity`` says) and the write units ``ConsumedCapacity`` reports. :meth:`attach` hooks it on a
    boto3 client's events; :meth:`observe` is the hook's body, callable directly."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: Counter[str] = Counter()
        self._billed: defaultdict[str, float] = defaultdict(float)
        self._flat: defaultdict[str, float] = defaultdict(float)
        self._flat_writes: defaultdict[str, float] = defaultdict(float)
        self._filtered = 0

    def attach(self, client: Any, *, by_thread: bool = False) -> None:
        """Register on ``client`` (a boto3 DynamoDB client): the request parameters are kept in the call's context
        before it is built, and the parsed response is measured after it. ``by_thread`` adds the name of the
        calling thread (a worker's loop: ``taker``, ``assigner``, ...; pool threads without their number) to
        each request kind."""

        def keep_params(params: Mapping[str, Any], context: dict[str, Any], **_: Any) -> None:
            context["units_meter_params"] = dict(params)

        def measure(parsed: Mapping[str, Any], model: Any, context: Mapping[str, Any], **_: Any) -> None:
            where = re.sub(r"[-_]\d+(_\d+)?$", "", threading.current_thread().name) if by_thread else None
            self.observe(model.name, context.get("units_meter_params", {}), parsed, where=where)

        client.meta.events.register("before-parameter-build.dynamodb", keep_params)
        client.meta.events.register("after-call.dynamodb", measure)

    def observe(
        self, operation: str, params: Mapping[str, Any], parsed: Mapping[str, Any], *, where: str | None = None
    ) -> None:
        if "Error" in parsed:
            return
        kind = request_kind(operation, params) + (f" [{where}]" if where else "")
        billed = billed_read_units(operation, params, parsed)
        consumed = parsed.get("ConsumedCapacity")
        units = consumed.get("CapacityUnits") if isinstance(consumed, Mapping) else None
        flat = float(units) if isinstance(units, int | float) else 0.0
        with self._lock:
            self._requests[kind] += 1
            if billed:
                self._billed[kind] += billed
            if flat:
                (self._flat if operation in _READ_OPERATIONS else self._flat_writes)[kind] += flat
            if operation in ("Query", "Scan") and "FilterExpression" in params:
                self._filtered += 1

    def snapshot(self) -> RequestStats:
        with self._lock:
            return RequestStats(
                dict(self._requests), dict(self._billed), dict(self._flat), dict(self._flat_writes), self._filtered
            )
