"""KPL aggregation format: round trips, hash-range filtering, pass-through of anything malformed."""

from __future__ import annotations

import hashlib
import logging
from datetime import datetime, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shardwise.hashkeys import MAX_HASH_KEY, HashKeyRange, hash_key_for
from shardwise.retrieval.kpl import MAGIC, aggregate, deaggregate, is_aggregated
from shardwise.retrieval.model import Record

ARRIVAL = datetime(2024, 5, 1, 12, 0, 0, 123000, tzinfo=timezone.utc)
SEQ = "49590338271490256608559692538361571095921575989136588898"

# -- an independent protobuf writer: the decoder is not only tested against its own encoder ------------------


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def tag(field: int, wire_type: int) -> bytes:
    return varint(field << 3 | wire_type)


def ld(field: int, payload: bytes) -> bytes:
    """A length-delimited field."""
    return tag(field, 2) + varint(len(payload)) + payload


def vi(field: int, value: int) -> bytes:
    """A varint field."""
    return tag(field, 0) + varint(value)


def sub_record(pk_index: int, data: bytes, ehk_index: int | None = None, extra: bytes = b"") -> bytes:
    body = vi(1, pk_index) + (vi(2, ehk_index) if ehk_index is not None else b"") + ld(3, data) + extra
    return ld(3, body)


def wrap(body: bytes) -> bytes:
    """Magic + body + a correct MD5: exercises the protobuf decoder, not the digest check."""
    return MAGIC + body + hashlib.md5(body).digest()


def kinesis_record(data: bytes, partition_key: str = "outer-pk", sequence_number: str = SEQ) -> Record:
    return Record(
        data=data,
        partition_key=partition_key,
        sequence_number=sequence_number,
        approximate_arrival_timestamp=ARRIVAL,
    )


def assert_passed_through(record: Record, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="shardwise.retrieval.kpl"):
        result = deaggregate(record)
    assert result == [record]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings, "a malformed aggregate must be reported"
    assert record.sequence_number in warnings[-1].getMessage()


# -- round trips ---------------------------------------------------------------------------------------------

hash_keys = st.integers(min_value=0, max_value=MAX_HASH_KEY).map(str)
entries_strategy = st.lists(
    st.tuples(
        st.binary(max_size=64),
        st.sampled_from(["a", "b", "ünïcødé", "pk-3"]) | st.text(min_size=1, max_size=12),
        st.none() | st.sampled_from(["0", str(MAX_HASH_KEY)]) | hash_keys,
    ),
    max_size=30,
)


@given(entries=entries_strategy)
def test_aggregate_then_deaggregate_round_trips(entries: list[tuple[bytes, str, str | None]]) -> None:
    blob = aggregate(entries)
    assert is_aggregated(blob)
    result = deaggregate(kinesis_record(blob))
    assert [(r.data, r.partition_key, r.explicit_hash_key) for r in result] == entries
    assert [r.sub_sequence_number for r in result] == list(range(len(entries)))
    for r in result:
        assert r.sequence_number == SEQ
        assert r.approximate_arrival_timestamp == ARRIVAL
        assert r.aggregated


@given(entries=entries_strategy, cut=st.integers(min_value=0, max_value=MAX_HASH_KEY))
def test_hash_range_keeps_exactly_the_sub_records_inside_it(
    entries: list[tuple[bytes, str, str | None]], cut: int
) -> None:
    blob = aggregate(entries)
    lower = HashKeyRange(0, cut)
    upper = HashKeyRange(cut + 1, MAX_HASH_KEY) if cut < MAX_HASH_KEY else None
    low = deaggregate(kinesis_record(blob), lower)
    high = deaggregate(kinesis_record(blob), upper) if upper is not None else []

    def effective(entry: tuple[bytes, str, str | None]) -> int:
        return int(entry[2]) if entry[2] is not None else hash_key_for(entry[1])

    assert [r.sub_sequence_number for r in low] == [i for i, e in enumerate(entries) if effective(e) <= cut]
    assert [r.sub_sequence_number for r in high] == [i for i, e in enumerate(entries) if effective(e) > cut]


def test_filtering_uses_explicit_hash_key_before_partition_key() -> None:
    # ``high`` hashes into the upper half; the explicit hash key 5 puts its first record in the lower one.
    high = next(pk for pk in map(str, range(100)) if hash_key_for(pk) > 2**127)
    blob = aggregate([(b"x", high, "5"), (b"y", high, None), (b"z", "b", str(MAX_HASH_KEY))])
    lower = deaggregate(kinesis_record(blob), HashKeyRange(0, 2**127 - 1))
    assert [(r.data, r.sub_sequence_number) for r in lower] == [(b"x", 0)]
    upper = deaggregate(kinesis_record(blob), HashKeyRange(2**127, MAX_HASH_KEY))
    assert [(r.data, r.sub_sequence_number) for r in upper] == [(b"y", 1), (b"z", 2)]


def test_aggregate_deduplicates_key_tables() -> None:
    entries: list[tuple[bytes, str, str | None]] = [
        (bytes([i]), f"pk{i % 2}", "7" if i % 3 else None) for i in range(9)
    ]
    blob = aggregate(entries)
    body = blob[len(MAGIC) : -16]
    # two partition keys and one explicit hash key in the tables, however many records use them
    assert body.count(ld(1, b"pk0")) == 1
    assert body.count(ld(1, b"pk1")) == 1
    assert body.count(ld(2, b"7")) == 1
    assert [(r.data, r.partition_key, r.explicit_hash_key) for r in deaggregate(kinesis_record(blob))] == entries


def test_aggregate_rejects_an_invalid_explicit_hash_key() -> None:
    with pytest.raises(ValueError, match="not a hash key"):
        aggregate([(b"x", "pk", "12abc")])
    with pytest.raises(ValueError, match="not a hash key"):
        aggregate([(b"x", "pk", str(MAX_HASH_KEY + 1))])


def test_empty_aggregate_yields_no_records() -> None:
    assert deaggregate(kinesis_record(aggregate([]))) == []


def test_tables_after_records_are_resolved() -> None:
    body = sub_record(1, b"second-key", ehk_index=0) + ld(1, b"pk0") + ld(2, b"42") + ld(1, b"pk1")
    (result,) = deaggregate(kinesis_record(wrap(body)))
    assert (result.data, result.partition_key, result.explicit_hash_key) == (b"second-key", "pk1", "42")


# -- pass-through --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("data", [b"", b"plain", b"\xf3\x89\x9a", b"\x00" + MAGIC + b"x" * 40])
def test_non_aggregated_data_passes_through_silently(data: bytes, caplog: pytest.LogCaptureFixture) -> None:
    record = kinesis_record(data)
    assert not is_aggregated(data)
    with caplog.at_level(logging.DEBUG, logger="shardwise.retrieval.kpl"):
        assert deaggregate(record, HashKeyRange(0, 0)) == [record]
    assert not caplog.records


def test_is_aggregated_checks_magic_length_and_digest() -> None:
    blob = aggregate([(b"x", "pk", None)])
    assert is_aggregated(blob)
    assert not is_aggregated(blob[:-1] + bytes([blob[-1] ^ 1]))
    assert not is_aggregated(b"\x00" + blob[1:])
    assert not is_aggregated(MAGIC + b"\x00" * 15)
    assert is_aggregated(MAGIC + hashlib.md5(b"").digest())  # an empty, well-formed aggregate


# -- malformed aggregates ------------------------------------------------------------------------------------


def test_wrong_md5_passes_through(caplog: pytest.LogCaptureFixture) -> None:
    blob = aggregate([(b"x", "pk", None)])
    assert_passed_through(kinesis_record(blob[:-1] + bytes([blob[-1] ^ 0xFF])), caplog)


@pytest.mark.parametrize("keep", [4, 10, 19])
def test_too_short_passes_through(keep: int, caplog: pytest.LogCaptureFixture) -> None:
    blob = aggregate([(b"x", "pk", None)])
    assert_passed_through(kinesis_record(blob[:keep]), caplog)


def test_truncated_protobuf_with_recomputed_digest_passes_through(caplog: pytest.LogCaptureFixture) -> None:
    table = ld(1, b"pk")
    body = table + sub_record(0, b"0123456789")
    for cut in [*range(1, len(table)), *range(len(table) + 1, len(body))]:  # every cut inside a field
        caplog.clear()
        assert_passed_through(kinesis_record(wrap(body[:cut])), caplog)


def test_garbage_after_magic_passes_through(caplog: pytest.LogCaptureFixture) -> None:
    assert_passed_through(kinesis_record(MAGIC + b"this is not a protobuf message at all"), caplog)


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (ld(1, b"pk") + b"\x1a" + b"\xff" * 11, "varint longer"),  # record length varint never ends
        (ld(1, b"pk") + b"\x1a" + b"\xff" * 9 + b"\x7f", "64 bits"),  # 10-byte varint above 2**64 - 1
        (ld(1, b"pk") + b"\x1a\x80", "truncated varint"),
        (b"\x00" + ld(1, b"pk"), "field number 0"),
        (ld(1, b"pk") + tag(9, 6), "wire type 6"),
        (ld(1, b"pk") + tag(9, 7), "wire type 7"),
        (ld(1, b"pk") + ld(3, vi(1, 0) + tag(3, 2) + varint(100) + b"short"), "runs past"),
    ],
    ids=[
        "eleven-byte-varint",
        "varint-overflow",
        "truncated-varint",
        "field-zero",
        "wire-6",
        "wire-7",
        "overrun",
    ],
)
def test_bad_wire_format_passes_through(body: bytes, problem: str, caplog: pytest.LogCaptureFixture) -> None:
    assert_passed_through(kinesis_record(wrap(body)), caplog)
    assert problem in caplog.records[-1].getMessage()


@pytest.mark.parametrize(
    "body",
    [
        ld(1, b"pk0") + sub_record(1, b"x"),  # partition key index out of range
        ld(1, b"pk0") + sub_record(0, b"x", ehk_index=0),  # empty explicit hash key table
        ld(1, b"pk0") + ld(2, b"1") + sub_record(0, b"x", ehk_index=1),
        ld(1, b"pk0") + sub_record(2**64 - 1, b"x"),
    ],
    ids=["pk-index", "ehk-empty-table", "ehk-index", "huge-index"],
)
def test_index_out_of_range_passes_through(body: bytes, caplog: pytest.LogCaptureFixture) -> None:
    assert_passed_through(kinesis_record(wrap(body)), caplog)
    assert "outside the table" in caplog.records[-1].getMessage()


@pytest.mark.parametrize(
    "body",
    [
        ld(1, b"pk") + ld(3, ld(3, b"data")),  # no partition_key_index
        ld(1, b"pk") + ld(3, vi(1, 0)),  # no data
        ld(1, b"pk") + sub_record(0, b"x", extra=ld(4, ld(2, b"value only"))),  # tag without key
        ld(1, b"pk") + ld(2, b"12x") + sub_record(0, b"x", ehk_index=0),  # explicit hash key not a number
        ld(1, b"pk") + ld(2, str(MAX_HASH_KEY + 1).encode()) + sub_record(0, b"x", ehk_index=0),
        ld(1, b"pk") + tag(5, 4),  # end-group without a start
        ld(1, b"pk") + tag(5, 3) + vi(1, 1),  # group never closed
        ld(1, b"pk") + tag(5, 3) + tag(6, 4),  # group closed by the wrong field
        ld(1, b"pk") + tag(5, 3) * 100 + tag(5, 4) * 100,  # groups nested too deeply
    ],
    ids=[
        "missing-pk-index",
        "missing-data",
        "tag-without-key",
        "ehk-not-decimal",
        "ehk-too-large",
        "stray-end-group",
        "open-group",
        "mismatched-group",
        "deep-groups",
    ],
)
def test_invalid_messages_pass_through(body: bytes, caplog: pytest.LogCaptureFixture) -> None:
    assert_passed_through(kinesis_record(wrap(body)), caplog)


def test_unknown_fields_of_every_wire_type_are_skipped() -> None:
    unknown = (
        vi(15, 2**63)  # varint
        + tag(16, 1)
        + b"\x01" * 8  # fixed64
        + tag(17, 5)
        + b"\x02" * 4  # fixed32
        + ld(18, b"\x1a\x05hello")  # bytes that look like a record
        + tag(19, 3)
        + vi(1, 99)
        + ld(3, b"in group")
        + tag(20, 3)
        + tag(20, 4)
        + tag(19, 4)  # a group with a nested group
        + tag(1, 5)
        + b"\x03" * 4  # known field numbers with the wrong wire type: treated as unknown fields
        + vi(3, 7)
    )
    tag_message = ld(1, b"key") + ld(2, b"value") + unknown
    body = (
        unknown
        + ld(1, b"pk")
        + unknown
        + ld(2, b"77")
        + sub_record(0, b"first", ehk_index=0, extra=unknown + ld(4, tag_message))
        + unknown
        + sub_record(0, b"second", extra=ld(4, ld(1, b"k")))
    )
    result = deaggregate(kinesis_record(wrap(body)))
    assert [(r.data, r.partition_key, r.explicit_hash_key, r.sub_sequence_number) for r in result] == [
        (b"first", "pk", "77", 0),
        (b"second", "pk", None, 1),
    ]


def test_last_occurrence_of_a_singular_field_wins() -> None:
    body = ld(1, b"pk0") + ld(1, b"pk1") + ld(3, vi(1, 0) + ld(3, b"old") + vi(1, 1) + ld(3, b"new"))
    (result,) = deaggregate(kinesis_record(wrap(body)))
    assert (result.data, result.partition_key) == (b"new", "pk1")


def test_invalid_utf8_in_keys_is_replaced_like_java_protobuf() -> None:
    body = ld(1, b"pk\xff") + sub_record(0, b"x")
    (result,) = deaggregate(kinesis_record(wrap(body)))
    assert result.partition_key == "pk\ufffd"


# -- fuzz: deaggregate never raises; it returns the record or sub-records of it ------------------------------


def _check_never_raises(record: Record) -> None:
    result = deaggregate(record, HashKeyRange(0, MAX_HASH_KEY // 2))
    if result != [record]:
        for sub in result:
            assert sub.aggregated
            assert sub.sequence_number == record.sequence_number


@settings(max_examples=500, deadline=None)
@given(body=st.binary(max_size=200))
def test_fuzz_arbitrary_body_with_valid_digest(body: bytes) -> None:
    _check_never_raises(kinesis_record(wrap(body)))


@settings(max_examples=300, deadline=None)
@given(tail=st.binary(max_size=200))
def test_fuzz_arbitrary_bytes_after_magic(tail: bytes) -> None:
    _check_never_raises(kinesis_record(MAGIC + tail))


@settings(max_examples=500, deadline=None)
@given(
    entries=entries_strategy,
    mutations=st.lists(st.tuples(st.integers(min_value=0), st.integers(min_value=0, max_value=255)), max_size=4),
    cut=st.none() | st.integers(min_value=0),
)
def test_fuzz_mutated_aggregates(
    entries: list[tuple[bytes, str, str | None]], mutations: list[tuple[int, int]], cut: int | None
) -> None:
    body = bytearray(aggregate(entries)[len(MAGIC) : -16])
    for position, value in mutations:
        if body:
            body[position % len(body)] = value
    if cut is not None and body:
        del body[cut % len(body) :]
    _check_never_raises(kinesis_record(wrap(bytes(body))))


@st.composite
def protobuf_like(draw: st.DrawFn, depth: int = 0) -> bytes:
    """Random but plausible wire-format messages: valid tags with values of every wire type, nested."""
    parts: list[bytes] = []
    for _ in range(draw(st.integers(min_value=0, max_value=6))):
        field = draw(st.integers(min_value=1, max_value=5))
        wire_type = draw(st.sampled_from([0, 1, 2, 3, 5]))
        if wire_type == 0:
            parts.append(vi(field, draw(st.integers(min_value=0, max_value=2**64 - 1))))
        elif wire_type == 1:
            parts.append(tag(field, 1) + draw(st.binary(min_size=8, max_size=8)))
        elif wire_type == 5:
            parts.append(tag(field, 5) + draw(st.binary(min_size=4, max_size=4)))
        elif wire_type == 2:
            inner = draw(protobuf_like(depth + 1)) if depth < 3 and draw(st.booleans()) else draw(st.binary(max_size=8))
            parts.append(ld(field, inner))
        else:
            inner = draw(protobuf_like(depth + 1)) if depth < 3 else b""
            parts.append(tag(field, 3) + inner + tag(field, 4))
    return b"".join(parts)


@settings(max_examples=500, deadline=None)
@given(body=protobuf_like())
def test_fuzz_structured_messages(body: bytes) -> None:
    _check_never_raises(kinesis_record(wrap(body)))
