"""``shardwise stream``: the local-stream commands, driven in-process with CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from shardwise.backends.sqlite.stream import LocalStreamStore, shard_id_for_index
from shardwise.cli.stream import stream
from shardwise.hashkeys import hash_key_for
from shardwise.retrieval.model import StartingPosition

S = [shard_id_for_index(i) for i in range(8)]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "cli.db"


def run(db: Path, *args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(stream, [*args, "--db", str(db)], input=input)


def ok(db: Path, *args: str, input: str | None = None) -> str:
    result = run(db, *args, input=input)
    assert result.exit_code == 0, result.output
    return result.output


def fails(db: Path, *args: str, message: str, input: str | None = None) -> Result:
    result = run(db, *args, input=input)
    assert result.exit_code != 0, result.output
    assert message in result.output
    return result


def record_count(db: Path, name: str) -> int:
    with LocalStreamStore(db) as store:
        return store.describe_stream(name).record_count


def test_create_put_describe_read(db: Path) -> None:
    assert "created stream orders with 2 shards" in ok(db, "create", "orders", "--shards", "2")
    out = ok(db, "put", "orders", "--partition-key", "pk", "hello", "world")
    lines = [line.split("\t") for line in out.splitlines()]
    assert len(lines) == 2
    shard = S[hash_key_for("pk") >> 127]  # two shards: the top bit of MD5("pk") picks the half
    assert {shard_id for shard_id, _ in lines} == {shard}
    assert int(lines[0][1]) < int(lines[1][1])
    assert len(lines[0][1]) == 56

    assert ok(db, "put", "orders", "-q", input="a\nb\r\nc\n").strip() == "3"
    assert record_count(db, "orders") == 5

    text = ok(db, "describe", "orders")
    assert "2 open of 2 shards, 5 records, retention 24 h" in text
    assert S[0] in text
    assert S[1] in text

    desc = json.loads(ok(db, "describe", "orders", "--json"))
    assert desc["name"] == "orders"
    assert desc["record_count"] == 5
    assert [s["shard_id"] for s in desc["shards"]] == S[:2]
    assert desc["shards"][1]["ending_hash_key"] == str(2**128 - 1)
    assert all(s["open"] for s in desc["shards"])
    assert sum(s["record_count"] for s in desc["shards"]) == 5

    read = ok(db, "read", "orders", shard)
    rows = [line.split("\t") for line in read.splitlines()]
    assert [(r[2], r[3]) for r in rows[:2]] == [("pk", "hello"), ("pk", "world")]
    data = json.loads(ok(db, "read", "orders", shard, "--json"))
    assert [r["data"] for r in data["records"][:2]] == ["hello", "world"]
    assert data["shard_end"] is False
    assert data["child_shards"] == []
    first = data["records"][0]["sequence_number"]
    after = json.loads(ok(db, "read", "orders", shard, "--from", f"AFTER_SEQUENCE_NUMBER:{first}", "--json"))
    assert after["records"][0]["data"] == "world"
    at = json.loads(ok(db, "read", "orders", shard, "--from", f"AT_SEQUENCE_NUMBER:{first}", "--limit", "1", "--json"))
    assert [r["data"] for r in at["records"]] == ["hello"]
    assert json.loads(ok(db, "read", "orders", shard, "--from", "LATEST", "--json"))["records"] == []


def test_stdin_lines_are_records(db: Path) -> None:
    ok(db, "create", "s", "--shards", "1")
    out = ok(db, "put", "s", "--partition-key", "k", input="one\ntwo\n\nfour")
    assert len(out.splitlines()) == 4
    data = json.loads(ok(db, "read", "s", S[0], "--json"))
    assert [r["data"] for r in data["records"]] == ["one", "two", "", "four"]
    assert [r["partition_key"] for r in data["records"]] == ["k"] * 4


def test_default_partition_keys_are_random(db: Path) -> None:
    ok(db, "create", "s", "--shards", "1")
    ok(db, "put", "s", "a", "b", "c")
    data = json.loads(ok(db, "read", "s", S[0], "--json"))
    assert len({r["partition_key"] for r in data["records"]}) == 3


def test_explicit_hash_key(db: Path) -> None:
    ok(db, "create", "s", "--shards", "4")
    out = ok(db, "put", "s", "--explicit-hash-key", str(2**128 - 1), "x")
    assert out.startswith(S[3])


def test_split_merge_and_read_to_the_end(db: Path) -> None:
    ok(db, "create", "s", "--shards", "2")
    ok(db, "put", "s", "--explicit-hash-key", "5", "before")
    out = ok(db, "split", "s", S[0])
    assert S[2] in out
    assert S[3] in out
    assert f"at hash key {2**126}" in out  # the midpoint of [0, 2**127 - 1]
    ok(db, "put", "s", "--explicit-hash-key", "5", "after")

    desc = json.loads(ok(db, "describe", "s", "--json"))
    shards = {s["shard_id"]: s for s in desc["shards"]}
    assert shards[S[0]]["open"] is False
    assert shards[S[0]]["ending_sequence_number"] is not None
    assert shards[S[2]]["parent_shard_id"] == S[0]
    assert shards[S[3]]["starting_hash_key"] == str(2**126)
    assert "closed" in ok(db, "describe", "s")

    text = ok(db, "read", "s", S[0])
    assert "before" in text
    assert "after" not in text
    assert f"end of closed shard {S[0]}; child shards: {S[2]}" in text
    assert S[3] in text
    end = json.loads(ok(db, "read", "s", S[0], "--json"))
    assert end["shard_end"] is True
    assert [c["shard_id"] for c in end["child_shards"]] == [S[2], S[3]]
    assert end["child_shards"][0]["parent_shards"] == [S[0]]
    assert [r["data"] for r in json.loads(ok(db, "read", "s", S[2], "--json"))["records"]] == ["after"]

    out = ok(db, "split", "s", S[1], "--hash-key", str(2**127 + 10))
    assert f"{2**127 + 10}-{2**128 - 1}" in out
    out = ok(db, "merge", "s", S[3], S[4])
    assert f"into {S[6]}" in out
    merged = json.loads(ok(db, "read", "s", S[4], "--json"))
    assert merged["child_shards"][0]["parent_shards"] == [S[3], S[4]]


def test_list_and_delete(db: Path) -> None:
    assert ok(db, "list") == ""
    assert not db.exists(), "listing must not create the database"
    ok(db, "create", "b", "--shards", "1")
    ok(db, "create", "a", "--shards", "1")
    assert ok(db, "list").splitlines() == ["a", "b"]
    assert "deleted stream b" in ok(db, "delete", "b")
    assert ok(db, "list").splitlines() == ["a"]


def test_db_from_environment(db: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(stream, ["create", "envy", "--shards", "1"], env={"SHARDWISE_DB": str(db)})
    assert result.exit_code == 0, result.output
    with LocalStreamStore(db) as store:
        assert store.list_streams() == ["envy"]


# -- bad input -------------------------------------------------------------------------------------------


def test_missing_database_is_not_created(db: Path) -> None:
    fails(db, "put", "s", "x", message="no database at")
    fails(db, "describe", "s", message="stream create")
    assert not db.exists()


def test_unknown_stream(db: Path) -> None:
    ok(db, "create", "s", "--shards", "1")
    for args in (("put", "nope", "x"), ("describe", "nope"), ("read", "nope", S[0]), ("delete", "nope")):
        result = fails(db, *args, message="stream 'nope' does not exist")
        assert "shardwise stream create nope" in result.output
    fails(db, "read", "s", "shardId-000000000042", message="shardId-000000000042")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("create", "s", "--shards", "0"), "--shards"),
        (("create", "s", "--shards", "x"), "--shards"),
        (("create", "s"), "--shards"),
        (("create", "bad name", "--shards", "1"), "invalid stream name"),
        (("create", "s", "--shards", "1", "--retention-hours", "0"), "--retention-hours"),
    ],
)
def test_bad_create_writes_nothing(db: Path, args: tuple[str, ...], message: str) -> None:
    fails(db, *args, message=message)
    assert not db.exists()


def test_existing_stream(db: Path) -> None:
    ok(db, "create", "s", "--shards", "1")
    fails(db, "create", "s", "--shards", "2", message="'s' already exists")


def test_bad_puts_write_nothing(db: Path) -> None:
    ok(db, "create", "s", "--shards", "1")
    fails(db, "put", "s", "--explicit-hash-key", "-3", "x", message="explicit hash key")
    fails(db, "put", "s", "--explicit-hash-key", str(2**128), "x", message="explicit hash key")
    fails(db, "put", "s", "--partition-key", "k" * 257, "x", message="partition key must be 1 to 256")
    fails(db, "put", "s", input="", message="no records to put")
    assert record_count(db, "s") == 0


def test_bad_hash_keys_for_split(db: Path) -> None:
    ok(db, "create", "s", "--shards", "2")
    fails(db, "split", "s", S[0], "--hash-key", "abc", message="not a hash key")
    fails(db, "split", "s", S[0], "--hash-key", str(2**127), message="must be greater than 0 and at most")
    fails(db, "split", "s", S[0], "--hash-key", "0", message="must be greater than 0")
    fails(db, "split", "s", "shardId-000000000009", message="shardId-000000000009")
    desc = json.loads(ok(db, "describe", "s", "--json"))
    assert len(desc["shards"]) == 2, "nothing was split"
    ok(db, "split", "s", S[0])
    fails(db, "split", "s", S[0], message="closed")


def test_merging_non_adjacent_shards(db: Path) -> None:
    ok(db, "create", "s", "--shards", "3")
    fails(db, "merge", "s", S[0], S[2], message="not adjacent")
    fails(db, "merge", "s", S[0], S[0], message="itself")
    desc = json.loads(ok(db, "describe", "s", "--json"))
    assert desc["open_shard_count"] == 3


@pytest.mark.parametrize(
    ("position", "message"),
    [
        ("BOGUS", "is not a position"),
        ("AT_SEQUENCE_NUMBER", "is not a position"),
        ("AT_SEQUENCE_NUMBER:xyz", "not a sequence number"),
        ("AT_TIMESTAMP:yesterday", "AT_TIMESTAMP:yesterday"),
        ("AT_SEQUENCE_NUMBER:1", "does not belong"),
    ],
)
def test_bad_read_positions(db: Path, position: str, message: str) -> None:
    ok(db, "create", "s", "--shards", "1")
    fails(db, "read", "s", S[0], "--from", position, message=message)
    fails(db, "read", "s", S[0], "--limit", "0", message="--limit")


def test_read_at_timestamp_and_limit(db: Path) -> None:
    ok(db, "create", "s", "--shards", "1")
    ok(db, "put", "s", "a", "b", "c")
    data = json.loads(ok(db, "read", "s", S[0], "--from", "AT_TIMESTAMP:2000-01-01T00:00:00Z", "--json"))
    assert [r["data"] for r in data["records"]] == ["a", "b", "c"]
    assert len(ok(db, "read", "s", S[0], "--limit", "2").splitlines()) == 2
    with LocalStreamStore(db) as store:
        it = store.stream("s").get_shard_iterator(S[0], StartingPosition.trim_horizon())
        assert len(store.stream("s").get_records(it).records) == 3
