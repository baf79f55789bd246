"""``shardwise stream``: create, feed, inspect, reshard and read the local SQLite streams.

Every command takes ``--db PATH`` (default ``shardwise.db`` in the current directory, or ``$SHARDWISE_DB``).
Only ``stream create`` creates the database file; the other commands refuse a missing file instead of
leaving an empty one behind. Library errors are shown as one-line messages with a non-zero exit status.
"""

from __future__ import annotations

import base64
import contextlib
import json
import sys
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import click

from shardwise.backends.sqlite.stream import (
    MAX_GET_RECORDS_LIMIT,
    LocalStreamStore,
    PutEntry,
    PutResult,
    StreamDescription,
    check_stream_name,
)
from shardwise.cli._output import echo_table
from shardwise.errors import ShardwiseError
from shardwise.hashkeys import parse_hash_key
from shardwise.retrieval.model import ChildShard, Record, Shard, StartingPosition

__all__ = ["DEFAULT_DB", "stream"]

DEFAULT_DB = "shardwise.db"
DB_ENVVAR = "SHARDWISE_DB"


if TYPE_CHECKING:
    _IntParam = click.ParamType[int]
    _PositionParam = click.ParamType[StartingPosition]
else:  # click < 8.2 has no generic ParamType
    _IntParam = _PositionParam = click.ParamType


def _db_option(func: Any) -> Any:
    return click.option(
        "--db",
        "db",
        type=click.Path(dir_okay=False, path_type=Path),
        default=DEFAULT_DB,
        envvar=DB_ENVVAR,
        show_default=True,
        show_envvar=True,
        help="SQLite database file holding the local streams.",
    )(func)


@contextlib.contextmanager
def _open_store(db: Path, *, create: bool = False) -> Iterator[LocalStreamStore]:
    """Open the store, translating shardwise errors (also those raised inside the block) for click."""
    if not create and not db.exists():
        raise click.ClickException(
            f"no database at {db}: create a stream first with `shardwise stream create NAME --shards N "
            f"--db {db}`, or point --db (or ${DB_ENVVAR}) at an existing file"
        )
    try:
        with LocalStreamStore(db) as store:
            yield store
    except ShardwiseError as exc:
        raise click.ClickException(str(exc)) from exc


class _HashKey(_IntParam):
    name = "HASH_KEY"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_hash_key(str(value).strip())
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class _Position(_PositionParam):
    """TRIM_HORIZON | LATEST | AT_SEQUENCE_NUMBER:n | AFTER_SEQUENCE_NUMBER:n | AT_TIMESTAMP:iso-time."""

    name = "POSITION"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> StartingPosition:
        if isinstance(value, StartingPosition):
            return value
        text = str(value).strip()
        kind, _, arg = text.partition(":")
        kind = kind.upper()
        try:
            if kind == "TRIM_HORIZON" and not arg:
                return StartingPosition.trim_horizon()
            if kind == "LATEST" and not arg:
                return StartingPosition.latest()
            if kind in ("AT_SEQUENCE_NUMBER", "AFTER_SEQUENCE_NUMBER") and arg:
                if not arg.isascii() or not arg.isdigit():
                    self.fail(f"{arg!r} is not a sequence number (decimal digits)", param, ctx)
                if kind == "AT_SEQUENCE_NUMBER":
                    return StartingPosition.at_sequence(arg)
                return StartingPosition.after_sequence(arg)
            if kind == "AT_TIMESTAMP" and arg:
                stamp = datetime.fromisoformat(arg.replace("Z", "+00:00"))
                if stamp.tzinfo is None:
                    stamp = stamp.replace(tzinfo=timezone.utc)
                return StartingPosition.at_timestamp(stamp)
        except ValueError as exc:
            self.fail(f"{text!r}: {exc}", param, ctx)
        self.fail(
            f"{text!r} is not a position; use TRIM_HORIZON, LATEST, AT_SEQUENCE_NUMBER:<n>, "
            "AFTER_SEQUENCE_NUMBER:<n> or AT_TIMESTAMP:<ISO time>",
            param,
            ctx,
        )


def _check_name(name: str) -> None:
    try:
        check_stream_name(name)
    except ShardwiseError as exc:
        raise click.BadParameter(str(exc), param_hint="NAME") from exc


def _iso(stamp: datetime) -> str:
    return stamp.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _shard_json(shard: Shard, record_count: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "shard_id": shard.shard_id,
        "open": shard.is_open,
        "parent_shard_id": shard.parent_shard_id,
        "adjacent_parent_shard_id": shard.adjacent_parent_shard_id,
        # 128-bit hash keys and 56-digit sequence numbers are strings: JSON numbers lose their precision.
        "starting_hash_key": str(shard.hash_key_range.start),
        "ending_hash_key": str(shard.hash_key_range.end),
        "starting_sequence_number": shard.starting_sequence_number,
        "ending_sequence_number": shard.ending_sequence_number,
    }
    if record_count is not None:
        out["record_count"] = record_count
    return out


def _child_json(child: ChildShard) -> dict[str, Any]:
    return {
        "shard_id": child.shard_id,
        "parent_shards": list(child.parent_shards),
        "starting_hash_key": str(child.hash_key_range.start),
        "ending_hash_key": str(child.hash_key_range.end),
    }


def _record_json(record: Record) -> dict[str, Any]:
    try:
        text: str | None = record.data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    return {
        "sequence_number": record.sequence_number,
        "partition_key": record.partition_key,
        "explicit_hash_key": record.explicit_hash_key,
        "approximate_arrival_timestamp": _iso(record.approximate_arrival_timestamp),
        "data": text,
        "data_base64": base64.b64encode(record.data).decode("ascii"),
    }


def _describe_json(desc: StreamDescription) -> dict[str, Any]:
    return {
        "name": desc.name,
        "retention_hours": desc.retention_hours,
        "created": _iso(desc.created),
        "open_shard_count": desc.open_shard_count,
        "record_count": desc.record_count,
        "shards": [_shard_json(s, desc.record_counts.get(s.shard_id, 0)) for s in desc.shards],
    }


@click.group("stream")
def stream() -> None:
    """Local streams: a durable SQLite stand-in for Amazon Kinesis (no AWS needed).

    Several processes may write and read the same --db file at once.
    """


@stream.command("create")
@click.argument("name")
@click.option("--shards", "shard_count", type=click.IntRange(1, 10_000), required=True, help="Number of shards.")
@click.option(
    "--retention-hours",
    type=click.IntRange(1, 8_760),
    default=24,
    show_default=True,
    help="How long records are kept.",
)
@_db_option
def create_command(name: str, shard_count: int, retention_hours: int, db: Path) -> None:
    """Create a stream.

    Stream NAME gets --shards open shards that split the hash-key space evenly, as Kinesis does.
    """
    _check_name(name)
    with _open_store(db, create=True) as store:
        store.create_stream(name, shard_count, retention_hours=retention_hours)
    click.echo(f"created stream {name} with {shard_count} shards ({retention_hours} h retention) in {db}")


@stream.command("put")
@click.argument("name")
@click.argument("data", nargs=-1)
@click.option("--partition-key", "-k", help="Partition key of every record [default: a random UUID per record].")
@click.option("--explicit-hash-key", help="Route every record to the shard owning this hash key (decimal).")
@click.option("--quiet", "-q", is_flag=True, help="Print only the number of records put.")
@_db_option
def put_command(
    *,
    name: str,
    data: tuple[str, ...],
    partition_key: str | None,
    explicit_hash_key: str | None,
    quiet: bool,
    db: Path,
) -> None:
    """Put records: DATA arguments, or lines of stdin.

    Puts one record into stream NAME per DATA argument, or one per line of standard input.

    All records are written in one transaction: if any is invalid, none is written.
    """
    if data:
        payloads = [item.encode("utf-8", "surrogateescape") for item in data]
    else:
        stdin: BinaryIO = sys.stdin.buffer
        if stdin.isatty():
            click.echo("reading records from standard input, one per line (end with Ctrl-D)", err=True)
        payloads = [line[:-1].removesuffix(b"\r") if line.endswith(b"\n") else line for line in stdin]
    if not payloads:
        raise click.UsageError("no records to put: give DATA arguments or pipe lines on standard input")
    entries: list[PutEntry] = [
        (payload, partition_key if partition_key is not None else str(uuid.uuid4()), explicit_hash_key)
        for payload in payloads
    ]
    with _open_store(db) as store:
        results: list[PutResult] = store.put_records(name, entries)
    if quiet:
        click.echo(str(len(results)))
        return
    for result in results:
        click.echo(f"{result.shard_id}\t{result.sequence_number}")


@stream.command("describe")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@_db_option
def describe_command(name: str, as_json: bool, db: Path) -> None:
    """Show a stream's shards and record counts.

    One row per shard of stream NAME: state, parents, records, hash-key range, sequence-number range.
    """
    with _open_store(db) as store:
        desc = store.describe_stream(name)
    if as_json:
        click.echo(json.dumps(_describe_json(desc), indent=2))
        return
    click.echo(
        f"stream {desc.name}: {desc.open_shard_count} open of {len(desc.shards)} shards, "
        f"{desc.record_count} records, retention {desc.retention_hours} h, created {_iso(desc.created)}"
    )
    rows = [
        [
            s.shard_id,
            "open" if s.is_open else "closed",
            ",".join(s.parent_shard_ids) or "-",
            str(desc.record_counts.get(s.shard_id, 0)),
            f"{s.hash_key_range.start}-{s.hash_key_range.end}",
            s.starting_sequence_number,
            s.ending_sequence_number or "-",
        ]
        for s in desc.shards
    ]
    headers = [
        "SHARD",
        "STATE",
        "PARENTS",
        "RECORDS",
        "HASH KEY RANGE",
        "STARTING SEQUENCE",
        "ENDING SEQUENCE",
    ]
    echo_table(headers, rows)


@stream.command("list")
@_db_option
def list_command(db: Path) -> None:
    """List the streams, one name per line."""
    if not db.exists():
        return  # no database, no streams (and nothing created)
    with _open_store(db) as store:
        for name in store.list_streams():
            click.echo(name)


@stream.command("split")
@click.argument("name")
@click.argument("shard_id")
@click.option(
    "--hash-key",
    type=_HashKey(),
    default=None,
    help="First hash key of the second child [default: the midpoint of the shard's range].",
)
@_db_option
def split_command(name: str, shard_id: str, hash_key: int | None, db: Path) -> None:
    """Split an open shard in two.

    Closes SHARD_ID of stream NAME and opens two children covering its hash-key range.
    """
    with _open_store(db) as store:
        if hash_key is None:
            shards = {s.shard_id: s for s in store.stream(name).list_shards()}
            if shard_id not in shards:
                raise click.ClickException(
                    f"shard {shard_id!r} does not exist in stream {name!r}; see `shardwise stream describe {name}`"
                )
            hash_range = shards[shard_id].hash_key_range
            hash_key = hash_range.start + (hash_range.end - hash_range.start + 1) // 2
        first, second = store.split_shard(name, shard_id, hash_key)
    click.echo(f"split {shard_id} of stream {name} at hash key {hash_key}:")
    for child in (first, second):
        click.echo(f"  {child.shard_id}  {child.hash_key_range.start}-{child.hash_key_range.end}")


@stream.command("merge")
@click.argument("name")
@click.argument("shard_id")
@click.argument("adjacent_shard_id")
@_db_option
def merge_command(name: str, shard_id: str, adjacent_shard_id: str, db: Path) -> None:
    """Merge two adjacent open shards.

    Closes SHARD_ID and ADJACENT_SHARD_ID of stream NAME (their hash-key ranges must touch) and opens one
    child covering both.
    """
    with _open_store(db) as store:
        child = store.merge_shards(name, shard_id, adjacent_shard_id)
    click.echo(
        f"merged {shard_id} and {adjacent_shard_id} of stream {name} into {child.shard_id}  "
        f"{child.hash_key_range.start}-{child.hash_key_range.end}"
    )


@stream.command("read")
@click.argument("name")
@click.argument("shard_id")
@click.option(
    "--from",
    "position",
    type=_Position(),
    default="TRIM_HORIZON",
    show_default=True,
    help="TRIM_HORIZON, LATEST, AT_SEQUENCE_NUMBER:<n>, AFTER_SEQUENCE_NUMBER:<n> or AT_TIMESTAMP:<ISO time>.",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=None,
    help="Read at most this many records [default: read until caught up or the shard's end].",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object with the records.")
@_db_option
def read_command(
    *, name: str, shard_id: str, position: StartingPosition, limit: int | None, as_json: bool, db: Path
) -> None:
    """Print the records of a shard.

    Reads shard SHARD_ID of stream NAME from --from; a closed shard read to its end also shows its child
    shards.
    """
    records: list[Record] = []
    children: list[ChildShard] = []
    shard_end = False
    with _open_store(db) as store:
        source = store.stream(name)
        iterator: str | None = source.get_shard_iterator(shard_id, position)
        while iterator is not None:
            want = MAX_GET_RECORDS_LIMIT if limit is None else min(MAX_GET_RECORDS_LIMIT, limit - len(records))
            result = source.get_records(iterator, limit=want)
            records.extend(result.records)
            if result.next_iterator is None:
                shard_end, children = True, result.child_shards
            if len(result.records) < want or (limit is not None and len(records) >= limit):
                break
            iterator = result.next_iterator
    if as_json:
        out = {
            "stream": name,
            "shard_id": shard_id,
            "records": [_record_json(r) for r in records],
            "shard_end": shard_end,
            "child_shards": [_child_json(c) for c in children],
        }
        click.echo(json.dumps(out, indent=2))
        return
    for record in records:
        text = record.data.decode("utf-8", "backslashreplace")
        click.echo(
            f"{record.sequence_number}\t{_iso(record.approximate_arrival_timestamp)}\t{record.partition_key}\t{text}"
        )
    if not records:
        click.echo(f"no records in {shard_id} from that position", err=True)
    if shard_end:
        listed = ", ".join(
            f"{c.shard_id} (parents {'+'.join(c.parent_shards)}, {c.hash_key_range.start}-{c.hash_key_range.end})"
            for c in children
        )
        click.echo(f"end of closed shard {shard_id}; child shards: {listed or 'none'}")


@stream.command("delete")
@click.argument("name")
@_db_option
def delete_command(name: str, db: Path) -> None:
    """Delete a stream with all its shards and records."""
    with _open_store(db) as store:
        store.delete_stream(name)
    click.echo(f"deleted stream {name} from {db}")
