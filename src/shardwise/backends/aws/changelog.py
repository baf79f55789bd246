"""``DynamoDBChangelog``: the state changelog in DynamoDB table ``<app>-state`` (docs/architecture.md, *State
stores and the changelog*).

Keys: ``shard`` (S, HASH) and ``sk`` (S, RANGE). Items of one shard:

* ``head``: ``commit``, ``lineage``, ``seq``/``sub`` (the position), ``fmt``, ``writer`` and ``chunks`` of the head
  commit, ``snap_commit``/``snap_writer``/``snap_chunks``/``snap_keys`` (the snapshot; ``snap_commit`` 0: none),
  ``log_changes`` (changes appended since the snapshot);
* ``log#<commit:020d>#<writer>#<chunk:06d>``: one chunk of a commit (``data`` in
  :mod:`~shardwise.backends.aws.changelog_frames`' framing, ``chunks`` in the commit, ``prev``: the writer of the
  commit before, ``""`` for commit 1);
* ``snap#<commit:020d>#<writer>#<chunk:06d>``: one chunk of a snapshot (``data``, ``chunks``).

An append writes its chunks with ``BatchWriteItem`` under a writer id of its own, then moves the head on condition
it is still the commit (and writer) it read: that one write is the commit point. Readers follow the writer chain
back from the head, so chunks of unfinished commits and of fenced-off writers are never read.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from shardwise.backends.aws.changelog_frames import decode_chunk, encode_chunks
from shardwise.backends.aws.errors import ConditionFailed, TableErrors
from shardwise.backends.aws.table import TableLifecycle, check_table_name
from shardwise.backends.changelog_rules import (
    check_successor,
    compaction_due,
    describe_head,
    restore_is_full,
    whole_number,
)
from shardwise.checkpoint.sequence import ExtendedSequenceNumber
from shardwise.errors import (
    ChangelogConflictError,
    ChangelogMissingError,
    DependencyError,
    MalformedItemError,
    ShardwiseError,
)
from shardwise.state.port import Change, ChangelogHead, ChangelogStats, CommitMeta, RestorePlan

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef, WriteRequestTypeDef

__all__ = ["CHUNK_BYTES", "DynamoDBChangelog"]

logger = logging.getLogger(__name__)

#: The largest chunk item's ``data`` (DynamoDB's item limit is 400 KB; the rest is keys and attributes).
CHUNK_BYTES = 300_000
_BATCH = 25  # BatchWriteItem's limit
_BATCH_ATTEMPTS = 8
_READ_ATTEMPTS = 3
_HEAD = "head"

Item = Mapping[str, "AttributeValueTypeDef"]


@dataclass(frozen=True, slots=True)
class _Head:
    head: ChangelogHead
    writer: str
    chunks: int
    snap_commit: int
    snap_writer: str
    snap_chunks: int
    snap_keys: int
    log_changes: int


class _BrokenChain(Exception):
    """A chunk the head's chain needs is missing (maybe collected under a reader that read an older head)."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(problem)
        self.key = key
        self.problem = problem


def _sk(kind: str, commit: int, writer: str, chunk: int) -> str:
    return f"{kind}#{commit:020d}#{writer}#{chunk:06d}"


def _s(item: Item, name: str, key: str) -> str:
    value = item.get(name, {}).get("S")
    if not isinstance(value, str):
        raise MalformedItemError(key, f"attribute {name!r} must be a string (S)")
    return value


def _n(item: Item, name: str, key: str, minimum: int = 0) -> int:
    text = item.get(name, {}).get("N")
    try:
        number = int(text) if isinstance(text, str) else None
    except ValueError:
        number = None
    if number is None:
        raise MalformedItemError(key, f"attribute {name!r} must be a whole number (N), got {text!r}")
    return whole_number(key, name, number, minimum)


def _b(item: Item, name: str, key: str) -> bytes:
    value = item.get(name, {}).get("B")
    if not isinstance(value, bytes | bytearray):
        raise MalformedItemError(key, f"attribute {name!r} must be binary (B)")
    return bytes(value)


def _parse_head(shard_id: str, item: Item) -> _Head:
    key = f"{shard_id}/{_HEAD}"
    seq = _s(item, "seq", key)
    sub = _n(item, "sub", key)
    try:
        position = ExtendedSequenceNumber(seq, sub)
    except ValueError as exc:
        raise MalformedItemError(key, f"position {seq!r}/{sub} is not a sequence number: {exc}") from None
    lineage = _s(item, "lineage", key)
    writer = _s(item, "writer", key)
    if not lineage or not writer:
        raise MalformedItemError(key, "lineage and writer must not be empty")
    return _Head(
        head=ChangelogHead(_n(item, "commit", key, 1), position, lineage, _n(item, "fmt", key)),
        writer=writer,
        chunks=_n(item, "chunks", key, 1),
        snap_commit=_n(item, "snap_commit", key),
        snap_writer=_s(item, "snap_writer", key),
        snap_chunks=_n(item, "snap_chunks", key),
        snap_keys=_n(item, "snap_keys", key),
        log_changes=_n(item, "log_changes", key),
    )


def _chunk_key(shard_id: str, sk: str) -> tuple[str, int, str, int]:
    """``(kind, commit, writer, chunk)`` of a ``log#``/``snap#`` sort key; MalformedItemError otherwise."""
    parts = sk.split("#")
    if len(parts) != 4 or parts[0] not in ("log", "snap") or not parts[1].isdigit() or not parts[3].isdigit():
        raise MalformedItemError(f"{shard_id}/{sk}", "sort key is not head, log#… or snap#…")
    return parts[0], int(parts[1]), parts[2], int(parts[3])


class DynamoDBChangelog:
    """The changelog of one application in one DynamoDB table."""

    def __init__(
        self,
        client: DynamoDBClient,
        table_name: str,
        *,
        chunk_bytes: int = CHUNK_BYTES,
        table_creation_timeout_s: float = 600.0,
        table_poll_interval_s: float = 1.0,
    ) -> None:
        self._client = client
        self._table = check_table_name(table_name, "state.changelog_table")
        self._chunk_bytes = chunk_bytes
        self._errors = TableErrors(
            f"state changelog table {table_name!r}",
            "restart the worker to create it (on-demand billing), or check state.changelog_table, the region "
            "and the endpoint",
            missing_error=ChangelogMissingError,
        )
        self._lifecycle = TableLifecycle(
            client,
            self._table,
            self._errors,
            creation_timeout_s=table_creation_timeout_s,
            poll_interval_s=table_poll_interval_s,
        )

    def __repr__(self) -> str:
        return f"DynamoDBChangelog({self._table!r})"

    @property
    def name(self) -> str:
        return self._table

    # -- table -------------------------------------------------------------------------------------------

    def ensure_exists(self) -> None:
        deadline = time.monotonic() + self._lifecycle.creation_timeout_s
        if self._lifecycle.status() is None:
            try:
                self._lifecycle.create(
                    {
                        "TableName": self._table,
                        "AttributeDefinitions": [
                            {"AttributeName": "shard", "AttributeType": "S"},
                            {"AttributeName": "sk", "AttributeType": "S"},
                        ],
                        "KeySchema": [
                            {"AttributeName": "shard", "KeyType": "HASH"},
                            {"AttributeName": "sk", "KeyType": "RANGE"},
                        ],
                        "BillingMode": "PAY_PER_REQUEST",
                    }
                )
            except DependencyError:
                raise  # transient: the caller retries
            except ShardwiseError as exc:
                raise ChangelogMissingError(
                    f"state changelog table {self._table!r} does not exist and could not be created ({exc}); "
                    "create it (key shard S HASH, sk S RANGE, on-demand) or allow dynamodb:CreateTable"
                ) from exc
        self._lifecycle.wait_until_usable(deadline)

    # -- low-level reads and writes ----------------------------------------------------------------------

    def _read_head(self, shard_id: str) -> _Head | None:
        with self._errors.translating("GetItem"):
            response = self._client.get_item(
                TableName=self._table, Key={"shard": {"S": shard_id}, "sk": {"S": _HEAD}}, ConsistentRead=True
            )
        item = response.get("Item")
        return None if item is None else _parse_head(shard_id, item)

    def _query(
        self, shard_id: str, low: str | None = None, high: str = "", *, keys_only: bool = False
    ) -> Iterator[Item]:
        """Items of ``shard_id`` with ``low <= sk <= high`` (all of them when ``low`` is None), in sort-key order
        (consistent reads, paginated)."""
        request: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "#p = :p",
            "ExpressionAttributeNames": {"#p": "shard"},
            "ExpressionAttributeValues": {":p": {"S": shard_id}},
            "ConsistentRead": True,
        }
        if low is not None:
            request["KeyConditionExpression"] = "#p = :p AND #s BETWEEN :lo AND :hi"
            request["ExpressionAttributeValues"].update({":lo": {"S": low}, ":hi": {"S": high}})
        if low is not None or keys_only:
            request["ExpressionAttributeNames"]["#s"] = "sk"
        if keys_only:
            request["ProjectionExpression"] = "#p, #s"
        while True:
            with self._errors.translating("Query"):
                response = self._client.query(**request)
            yield from response.get("Items", [])
            last = response.get("LastEvaluatedKey")
            if not last:
                return
            request["ExclusiveStartKey"] = last

    def _batch(self, requests: list[WriteRequestTypeDef]) -> None:
        """Send ``requests`` with ``BatchWriteItem``, 25 at a time, retrying unprocessed items with back-off."""
        for start in range(0, len(requests), _BATCH):
            pending: list[WriteRequestTypeDef] = requests[start : start + _BATCH]
            for attempt in range(_BATCH_ATTEMPTS):
                with self._errors.translating("BatchWriteItem"):
                    response = self._client.batch_write_item(RequestItems={self._table: pending})
                pending = cast(
                    "list[WriteRequestTypeDef]", list(response.get("UnprocessedItems", {}).get(self._table, []))
                )
                if not pending:
                    break
                time.sleep(min(0.05 * 2**attempt, 1.0))
            else:
                raise DependencyError(
                    f"DynamoDB BatchWriteItem on {self._errors.subject}: {len(pending)} items still unprocessed "
                    f"after {_BATCH_ATTEMPTS} attempts; retrying later"
                )

    def _put_chunks(
        self, shard_id: str, kind: str, commit: int, writer: str, chunks: list[bytes], **extra: str
    ) -> None:
        requests: list[WriteRequestTypeDef] = []
        for index, data in enumerate(chunks):
            item: dict[str, AttributeValueTypeDef] = {
                "shard": {"S": shard_id},
                "sk": {"S": _sk(kind, commit, writer, index)},
                "data": {"B": data},
                "chunks": {"N": str(len(chunks))},
            }
            item.update({name: {"S": value} for name, value in extra.items()})
            requests.append({"PutRequest": {"Item": item}})
        self._batch(requests)

    def write_chunks(
        self, shard_id: str, changes: Sequence[Change], meta: CommitMeta, *, writer: str, prev_writer: str
    ) -> int:
        """The first half of :meth:`append`: the commit's chunks under ``writer``, invisible to readers until
        the head names them (tests use it alone to leave an unfinished commit). Returns the chunk count."""
        chunks = encode_chunks(changes, self._chunk_bytes)
        self._put_chunks(shard_id, "log", meta.commit, writer, chunks, prev=prev_writer, lineage=meta.lineage)
        return len(chunks)

    # -- the Changelog port ------------------------------------------------------------------------------

    def head(self, shard_id: str) -> ChangelogHead | None:
        found = self._read_head(shard_id)
        return None if found is None else found.head

    def append(self, shard_id: str, changes: Sequence[Change], meta: CommitMeta, *, format_level: int) -> None:
        current = self._read_head(shard_id)
        check_successor(self._table, shard_id, current.head if current else None, meta)
        writer = uuid.uuid4().hex[:16]
        count = self.write_chunks(shard_id, changes, meta, writer=writer, prev_writer=current.writer if current else "")
        values: dict[str, AttributeValueTypeDef] = {
            ":c": {"N": str(meta.commit)},
            ":seq": {"S": meta.position.sequence_number},
            ":sub": {"N": str(meta.position.sub_sequence_number)},
            ":fmt": {"N": str(format_level)},
            ":w": {"S": writer},
            ":n": {"N": str(count)},
            ":lin": {"S": meta.lineage},
            ":k": {"N": str(len(changes))},
        }
        names = {"#c": "commit", "#w": "writer", "#lin": "lineage"}
        sets = "#c = :c, seq = :seq, #sub = :sub, fmt = :fmt, #w = :w, chunks = :n, #lin = :lin"
        names["#sub"] = "sub"
        if current is None:
            update = f"SET {sets}, snap_commit = :zero, snap_writer = :empty, snap_chunks = :zero, "
            update += "snap_keys = :zero, log_changes = :k"
            condition = "attribute_not_exists(#c)"
            values.update({":zero": {"N": "0"}, ":empty": {"S": ""}})
        else:
            update = f"SET {sets}, log_changes = log_changes + :k"
            condition = "#c = :prev AND #lin = :lin AND #w = :pw"
            values.update({":prev": {"N": str(current.head.commit)}, ":pw": {"S": current.writer}})
        try:
            with self._errors.translating("UpdateItem", conditional=True):
                self._client.update_item(
                    TableName=self._table,
                    Key={"shard": {"S": shard_id}, "sk": {"S": _HEAD}},
                    UpdateExpression=update,
                    ConditionExpression=condition,
                    ExpressionAttributeNames=names,
                    ExpressionAttributeValues=values,
                )
        except ConditionFailed:
            raise ChangelogConflictError(
                f"changelog {self._table!r} shard {shard_id}: commit {meta.commit} ({meta.lineage}) lost the race "
                f"for the head (read at {describe_head(current.head if current else None)}): another worker "
                "committed, this one no longer owns the shard"
            ) from None

    def plan_restore(self, shard_id: str, *, lineage: str | None, after_commit: int | None) -> RestorePlan | None:
        for attempt in range(_READ_ATTEMPTS):
            current = self._read_head(shard_id)
            if current is None:
                return None
            full = restore_is_full(current.head, lineage, after_commit, current.snap_commit)
            try:
                state = self._read_state(shard_id, current, full=full, after_commit=after_commit or 0)
            except _BrokenChain as broken:
                if attempt + 1 == _READ_ATTEMPTS:
                    raise MalformedItemError(broken.key, broken.problem) from None
                continue  # collected under us: read a fresh head
            return RestorePlan(current.head, full, iter(sorted(state.items())))
        raise AssertionError("unreachable")  # pragma: no cover

    def _read_state(self, shard_id: str, current: _Head, *, full: bool, after_commit: int) -> dict[bytes, bytes | None]:
        """The state at the head (``full``: from the snapshot, no tombstones) or the changes after
        ``after_commit`` (last write per key, tombstones kept)."""
        state: dict[bytes, bytes | None] = {}
        start = after_commit
        if full:
            start = current.snap_commit
            if current.snap_commit:
                prefix = f"snap#{current.snap_commit:020d}#{current.snap_writer}#"
                items = list(self._query(shard_id, prefix, prefix + "~"))
                for data in self._complete(shard_id, items, current.snap_chunks, prefix):
                    state.update(decode_chunk(data[1], data[0]))
        if start < current.head.commit:
            for changes in self._chain(shard_id, current, start):
                state.update(changes)
        if full:
            state = {key: value for key, value in state.items() if value is not None}
        return state

    def _complete(self, shard_id: str, items: list[Item], expected: int, what: str) -> list[tuple[str, bytes]]:
        """``(key, data)`` of chunks 0…expected-1 of one commit or snapshot, all present, else _BrokenChain."""
        by_index: dict[int, tuple[str, bytes]] = {}
        for item in items:
            sk = _s(item, "sk", f"{shard_id}/?")
            key = f"{shard_id}/{sk}"
            by_index[_chunk_key(shard_id, sk)[3]] = (key, _b(item, "data", key))
        if expected < 1 or sorted(by_index) != list(range(expected)):
            raise _BrokenChain(f"{shard_id}/{what}", f"has chunks {sorted(by_index)}, the head needs {expected}")
        return [by_index[index] for index in range(expected)]

    def _chain(self, shard_id: str, current: _Head, after: int) -> list[list[Change]]:
        """The changes of commits ``after+1 … head`` in commit order, following the writer chain from the head."""
        low, high = f"log#{after + 1:020d}#", f"log#{current.head.commit:020d}#~"
        groups: dict[tuple[int, str], list[Item]] = {}
        for item in self._query(shard_id, low, high):
            sk = _s(item, "sk", f"{shard_id}/?")
            _, commit, writer, _ = _chunk_key(shard_id, sk)
            groups.setdefault((commit, writer), []).append(item)
        commits: list[list[Change]] = []
        writer, expected = current.writer, current.chunks
        for commit in range(current.head.commit, after, -1):
            what = f"log#{commit:020d}#{writer}"
            chunks = self._complete(shard_id, groups.get((commit, writer), []), expected, what)
            first = groups[(commit, writer)][0]
            changes: list[Change] = []
            for key, data in chunks:
                changes.extend(decode_chunk(data, key))
            commits.append(changes)
            writer = _s(first, "prev", f"{shard_id}/{what}")
            previous = groups.get((commit - 1, writer))
            expected = _n(previous[0], "chunks", f"{shard_id}/{what}", 1) if previous else 0
        commits.reverse()
        return commits

    def needs_compaction(self, shard_id: str) -> bool:
        current = self._read_head(shard_id)
        return current is not None and compaction_due(current.log_changes, current.snap_keys)

    def compact(self, shard_id: str, state: Iterator[Change], meta: CommitMeta) -> None:
        current = self._read_head(shard_id)
        if current is None or (current.head.commit, current.head.lineage) != (meta.commit, meta.lineage):
            raise ChangelogConflictError(
                f"changelog {self._table!r} shard {shard_id}: compaction at commit {meta.commit} ({meta.lineage}) "
                f"found the head at {describe_head(current.head if current else None)}: another worker owns it"
            )
        live = [(key, value) for key, value in state if value is not None]
        writer = uuid.uuid4().hex[:16]
        chunks = encode_chunks(live, self._chunk_bytes)
        self._put_chunks(shard_id, "snap", meta.commit, writer, chunks)
        try:
            with self._errors.translating("UpdateItem", conditional=True):
                self._client.update_item(
                    TableName=self._table,
                    Key={"shard": {"S": shard_id}, "sk": {"S": _HEAD}},
                    UpdateExpression="SET snap_commit = :c, snap_writer = :sw, snap_chunks = :n, snap_keys = :k, "
                    "log_changes = :zero",
                    ConditionExpression="#c = :c AND #lin = :lin AND #w = :w",
                    ExpressionAttributeNames={"#c": "commit", "#lin": "lineage", "#w": "writer"},
                    ExpressionAttributeValues={
                        ":c": {"N": str(meta.commit)},
                        ":sw": {"S": writer},
                        ":n": {"N": str(len(chunks))},
                        ":k": {"N": str(len(live))},
                        ":zero": {"N": "0"},
                        ":lin": {"S": meta.lineage},
                        ":w": {"S": current.writer},
                    },
                )
        except ConditionFailed:
            self._collect(
                shard_id,
                below=0,
                keep_snapshot=None,
                extra=[_sk("snap", meta.commit, writer, i) for i in range(len(chunks))],
            )
            raise ChangelogConflictError(
                f"changelog {self._table!r} shard {shard_id}: the head moved past commit {meta.commit} during "
                "compaction: another worker owns the shard"
            ) from None
        self._collect(shard_id, below=meta.commit, keep_snapshot=(meta.commit, writer))

    def _collect(
        self, shard_id: str, *, below: int, keep_snapshot: tuple[int, str] | None, extra: Sequence[str] = ()
    ) -> None:
        """Best-effort garbage collection: log chunks of commits ≤ ``below``, snapshots other than the kept one,
        and ``extra`` sort keys. A failure is logged, never raised (the next collection retries)."""
        try:
            doomed = list(extra)
            if below:
                doomed += [
                    _s(i, "sk", shard_id) for i in self._query(shard_id, "log#", f"log#{below:020d}#~", keys_only=True)
                ]
            if keep_snapshot is not None:
                kept = f"snap#{keep_snapshot[0]:020d}#{keep_snapshot[1]}#"
                for item in self._query(shard_id, "snap#", "snap#~", keys_only=True):
                    sk = _s(item, "sk", shard_id)
                    if not sk.startswith(kept):
                        doomed.append(sk)
            self._delete_keys(shard_id, doomed)
        except ShardwiseError as exc:
            logger.warning(
                "changelog %r shard %s: garbage collection failed (%s); retried after the next snapshot",
                self._table,
                shard_id,
                exc,
            )

    def _delete_keys(self, shard_id: str, sort_keys: Sequence[str]) -> None:
        self._batch([{"DeleteRequest": {"Key": {"shard": {"S": shard_id}, "sk": {"S": sk}}}} for sk in sort_keys])

    def delete(self, shard_id: str) -> None:
        # The items as they are now, the head first: a new lineage's items written after this read are kept.
        keys = [_s(item, "sk", shard_id) for item in self._query(shard_id, keys_only=True)]
        self._delete_keys(shard_id, [_HEAD] + [sk for sk in keys if sk != _HEAD] if _HEAD in keys else keys)

    def shard_ids(self) -> list[str]:
        request: dict[str, Any] = {
            "TableName": self._table,
            "FilterExpression": "#s = :h",
            "ProjectionExpression": "#p",
            "ExpressionAttributeNames": {"#s": "sk", "#p": "shard"},
            "ExpressionAttributeValues": {":h": {"S": _HEAD}},
            "ConsistentRead": True,
        }
        shards: list[str] = []
        while True:
            with self._errors.translating("Scan"):
                response = self._client.scan(**request)
            shards.extend(_s(item, "shard", "?/head") for item in response.get("Items", []))
            last = response.get("LastEvaluatedKey")
            if not last:
                return sorted(shards)
            request["ExclusiveStartKey"] = last

    def stats(self, shard_id: str) -> ChangelogStats | None:
        plan = self.plan_restore(shard_id, lineage=None, after_commit=None)
        if plan is None:
            return None
        keys = sum(1 for _ in plan.changes)
        items = 0
        size = 0
        for item in self._query(shard_id):
            items += 1
            data = item.get("data", {}).get("B")
            size += len(data) if isinstance(data, bytes | bytearray) else 0
        return ChangelogStats(key_count=keys, items=items, size_bytes=size)
