"""Amazon Kinesis as a :class:`~shardwise.retrieval.source.StreamSource` (polling).

The data plane — GetRecords and GetShardIterator — goes through the fast client
(:mod:`shardwise.backends.aws.dataplane`: signed HTTP on a pooled connection, msgspec decoding) unless the stream
is built with ``data_client="boto3"`` (``retrieval.client = "boto3"``); everything else uses boto3's low-level
client, from which the fast client takes its endpoint, region, credentials and limits.

Two classes share one client and one error boundary:

* :class:`KinesisStream` is the consumer's view: ``list_shards`` (all pages), ``get_shard_iterator`` and
  ``get_records``. It is all a worker needs, so it is all a worker is handed.
* :class:`KinesisAdmin` wraps a ``KinesisStream`` with the producer and control-plane calls that tests,
  benchmarks and the demo CLI need: create / wait until ACTIVE / delete, ``put_record(s)``, ``split_shard``,
  ``merge_shards``. Keeping these off ``KinesisStream`` keeps the port implementation exactly the port.

Every botocore exception is translated at this boundary — both clients raise botocore's exceptions, and both go
through :func:`~shardwise.backends.aws.kinesis_errors.translate_kinesis_error` (code, message, HTTP status) — so
callers only ever see :mod:`shardwise.errors` types, the same for the same answer whichever client read it:

=========================================================================  ===================================
Kinesis error code                                                          shardwise error
=========================================================================  ===================================
``ExpiredIteratorException``                                                :class:`ExpiredIteratorError`
``ProvisionedThroughputExceededException``, ``LimitExceededException``,     :class:`ThrottlingError`
``KMSThrottlingException``, ``ThrottlingException``
``ResourceNotFoundException`` for the stream                                :class:`StreamNotFoundError`
``ResourceNotFoundException`` for one shard of an existing stream           :class:`ShardNotFoundError`
``AccessDeniedException``, ``UnrecognizedClientException``,                 :class:`AccessDeniedError`
``InvalidSignatureException``, ``ExpiredTokenException`` (all of
:data:`~shardwise.backends.aws.errors.ACCESS_DENIED_CODES`); no credentials
``InvalidArgumentException``, ``ValidationException``; client-side          :class:`InvalidArgumentError`
parameter validation
``ResourceInUseException`` (stream not ACTIVE for an admin call)            :class:`InvalidStateError`
no region configured                                                        :class:`ConfigurationError`
any other ``ClientError`` (5xx) or ``BotoCoreError`` (timeouts, connection) :class:`DependencyError`
an answer that is not the documented shape                                  :class:`DependencyError`
=========================================================================  ===================================
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

try:
    from botocore.exceptions import BotoCoreError, ClientError, ParamValidationError
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError("shardwise.backends.aws.kinesis needs boto3: pip install 'shardwise[aws]'") from exc

from shardwise.backends.aws.client import kinesis_client
from shardwise.backends.aws.errors import access_denied
from shardwise.backends.aws.kinesis_errors import THROTTLING_CODES, translate_client_error
from shardwise.backends.config import DataClient, check_data_client
from shardwise.errors import (
    ConfigurationError,
    DependencyError,
    InvalidArgumentError,
    InvalidStateError,
    ResourceNotFoundError,
    ThrottlingError,
)
from shardwise.hashkeys import HashKeyRange, parse_hash_key
from shardwise.retrieval.model import (
    ChildShard,
    GetRecordsResult,
    Record,
    Shard,
    ShardFilter,
    ShardFilterType,
    StartingPosition,
)

if TYPE_CHECKING:
    from mypy_boto3_kinesis import KinesisClient

    from shardwise.backends.aws.dataplane import FastDataPlane

__all__ = ["KinesisAdmin", "KinesisStream", "PutResult"]

logger = logging.getLogger(__name__)


_MAX_GET_RECORDS_LIMIT = 10_000
_MAX_LIST_SHARDS_PAGE = 10_000
_MAX_PUT_RECORDS_BATCH = 500


@dataclass(frozen=True, slots=True)
class PutResult:
    """Where Kinesis stored a put record."""

    shard_id: str
    sequence_number: str


class KinesisStream:
    """One Kinesis data stream, read by polling. Implements :class:`~shardwise.retrieval.source.StreamSource`.

    Identify the stream by name, by ARN, or both (requests then use the ARN, messages the name). Without an
    injected ``client``, one is built from boto3's normal credential/region chain with ``endpoint_url`` and
    ``region_name`` (default: the ARN's region, if an ARN is given) and
    :data:`shardwise.backends.aws.client.KINESIS_CLIENT_CONFIG`.
    ``page_size`` is ListShards' ``MaxResults`` (1 to 10 000). ``data_client`` reads records with the fast client
    (``"fast"``, the default; it follows the boto3 client's endpoint, region, credentials and limits) or with
    boto3's (``"boto3"``); an endpoint reached through a proxy always uses boto3's.
    """

    def __init__(
        self,
        stream_name: str | None = None,
        *,
        stream_arn: str | None = None,
        client: KinesisClient | None = None,
        endpoint_url: str | None = None,
        region_name: str | None = None,
        page_size: int = 1000,
        data_client: DataClient = "fast",
    ) -> None:
        check_data_client(data_client, "data_client")
        if not stream_name and not stream_arn:
            raise ConfigurationError("KinesisStream needs a stream_name or a stream_arn")
        arn_region: str | None = None
        if stream_arn:
            arn_region, arn_name = _parse_stream_arn(stream_arn)
            if stream_name and stream_name != arn_name:
                raise ConfigurationError(
                    f"stream_name {stream_name!r} does not match the stream in stream_arn {stream_arn!r}"
                )
            stream_name = arn_name
        assert stream_name is not None  # one of the two was given, and an ARN always names its stream
        if not 1 <= page_size <= _MAX_LIST_SHARDS_PAGE:
            raise ConfigurationError(f"page_size must be from 1 to {_MAX_LIST_SHARDS_PAGE}, got {page_size}")
        self._stream_name = stream_name
        self._stream_arn = stream_arn or None
        self._page_size = page_size
        if client is None:
            client = self._build_client(endpoint_url, region_name or arn_region)
        self._client = client
        self._data: FastDataPlane | None = _fast_client(client) if data_client == "fast" else None
        logger.info("%r reads records with the %s client", self, self.data_client)

    def _build_client(self, endpoint_url: str | None, region_name: str | None) -> KinesisClient:
        return kinesis_client(
            endpoint_url=endpoint_url, region_name=region_name, for_what=f"stream {self._stream_name!r}"
        )

    def __repr__(self) -> str:
        return f"KinesisStream({self._stream_arn or self._stream_name!r})"

    @property
    def stream_name(self) -> str:
        return self._stream_name

    @property
    def stream_arn(self) -> str | None:
        """The ARN this stream was identified by, if any."""
        return self._stream_arn

    @property
    def client(self) -> KinesisClient:
        """The underlying boto3 client (shared with :class:`KinesisAdmin`)."""
        return self._client

    @property
    def data_client(self) -> DataClient:
        """Which client reads records: ``"fast"`` or ``"boto3"``."""
        return "fast" if self._data is not None else "boto3"

    # -- StreamSource ---------------------------------------------------------------------------------------

    def list_shards(self, shard_filter: ShardFilter | None = None) -> list[Shard]:
        """Every shard, following ``NextToken`` through all pages, in shard-id order.

        The first request names the stream (and carries ``ShardFilter`` and ``MaxResults``); later requests
        carry only ``NextToken`` and ``MaxResults``, as Kinesis requires.
        """
        request: dict[str, Any] = {**self._stream_ids(), "MaxResults": self._page_size}
        if shard_filter is not None:
            request["ShardFilter"] = _shard_filter_request(shard_filter)
        shards: dict[str, Shard] = {}
        seen_tokens: set[str] = set()
        while True:
            with self._boundary("ListShards"):
                response = self._client.list_shards(**request)
            with self._parsing("ListShards"):
                for item in response.get("Shards", []):
                    shard = _shard_from_response(item)
                    shards[shard.shard_id] = shard
            token = response.get("NextToken")
            if not token:
                break
            if token in seen_tokens:
                raise DependencyError(
                    f"Kinesis ListShards on stream {self._stream_name!r} returned a NextToken it had "
                    "already returned; stopping instead of looping"
                )
            seen_tokens.add(token)
            request = {"NextToken": token, "MaxResults": self._page_size}
        return [shards[shard_id] for shard_id in sorted(shards)]

    def get_shard_iterator(self, shard_id: str, position: StartingPosition) -> str:
        request: dict[str, Any] = {
            **self._stream_ids(),
            "ShardId": shard_id,
            "ShardIteratorType": position.type.value,
        }
        if position.sequence_number is not None:
            request["StartingSequenceNumber"] = position.sequence_number
        if self._data is not None:
            iterator = self._fast_shard_iterator(shard_id, request, position.timestamp)
        else:
            if position.timestamp is not None:
                request["Timestamp"] = position.timestamp
            with self._boundary("GetShardIterator", shard_id=shard_id):
                response = self._client.get_shard_iterator(**request)
            iterator = response.get("ShardIterator")
        if not iterator:
            raise DependencyError(
                f"Kinesis GetShardIterator on stream {self._stream_name!r} shard {shard_id!r} "
                f"({position.type.value}) returned no iterator"
            )
        return iterator

    def get_records(self, shard_iterator: str, *, limit: int = _MAX_GET_RECORDS_LIMIT) -> GetRecordsResult:
        if not 1 <= limit <= _MAX_GET_RECORDS_LIMIT:
            raise InvalidArgumentError(f"GetRecords limit must be from 1 to {_MAX_GET_RECORDS_LIMIT}, got {limit}")
        if self._data is not None:
            from shardwise.backends.aws import dataplane_codec as codec  # noqa: PLC0415 - msgspec: fast client only

            with self._boundary("GetRecords"):
                request = codec.encode_request({"ShardIterator": shard_iterator, "Limit": limit})
                body = self._data.call("GetRecords", request, codec.error_parts)
            with self._parsing("GetRecords"):
                return codec.decode_get_records(body)
        with self._boundary("GetRecords"):
            response = self._client.get_records(ShardIterator=shard_iterator, Limit=limit)
        with self._parsing("GetRecords"):
            records = [_record_from_response(item) for item in response.get("Records", [])]
            children = [
                ChildShard(
                    shard_id=child["ShardId"],
                    parent_shards=tuple(child["ParentShards"]),
                    hash_key_range=_hash_key_range(child["HashKeyRange"]),
                )
                for child in response.get("ChildShards", None) or []
            ]
            return GetRecordsResult(
                records=records,
                next_iterator=response.get("NextShardIterator") or None,
                millis_behind_latest=response.get("MillisBehindLatest"),
                child_shards=children,
            )

    def _fast_shard_iterator(self, shard_id: str, request: dict[str, Any], timestamp: datetime | None) -> str | None:
        from shardwise.backends.aws import dataplane_codec as codec  # noqa: PLC0415 - msgspec: fast client only

        assert self._data is not None
        if timestamp is not None:
            request["Timestamp"] = codec.epoch_seconds(timestamp)
        with self._boundary("GetShardIterator", shard_id=shard_id):
            body = self._data.call("GetShardIterator", codec.encode_request(request), codec.error_parts)
        with self._parsing("GetShardIterator"):
            return codec.decode_shard_iterator(body)

    # -- the error boundary ---------------------------------------------------------------------------------

    def _stream_ids(self) -> dict[str, str]:
        return {"StreamARN": self._stream_arn} if self._stream_arn else {"StreamName": self._stream_name}

    @contextlib.contextmanager
    def _boundary(self, operation: str, *, shard_id: str | None = None) -> Iterator[None]:
        """Translate botocore exceptions raised inside the block into shardwise errors."""
        try:
            yield
        except ClientError as exc:
            raise translate_client_error(exc, operation, self._stream_name, shard_id) from exc
        except ParamValidationError as exc:
            raise InvalidArgumentError(f"Kinesis {operation} on stream {self._stream_name!r}: {exc}") from exc
        except BotoCoreError as exc:
            denied = access_denied(f"Kinesis {operation} on stream {self._stream_name!r}", exc)
            if denied is not None:
                raise denied from exc
            raise DependencyError(f"Kinesis {operation} on stream {self._stream_name!r} failed: {exc}") from exc

    @contextlib.contextmanager
    def _parsing(self, operation: str) -> Iterator[None]:
        """A response that does not have the documented shape is a backend fault, not a crash."""
        try:
            yield
        except (KeyError, TypeError, ValueError) as exc:
            raise DependencyError(
                f"Kinesis {operation} on stream {self._stream_name!r} returned an unexpected response: "
                f"{type(exc).__name__}: {exc}"
            ) from exc


class KinesisAdmin:
    """Producer and control-plane calls on the stream of a :class:`KinesisStream` (same client, same error
    translation). Meant for tests, benchmarks and demos; a consumer never needs it."""

    def __init__(self, stream: KinesisStream, *, poll_interval_s: float = 0.05) -> None:
        self._stream = stream
        self._poll_interval_s = poll_interval_s

    @property
    def stream(self) -> KinesisStream:
        return self._stream

    @property
    def _name(self) -> str:
        return self._stream.stream_name

    # -- lifecycle ------------------------------------------------------------------------------------------

    def create(self, shard_count: int, *, wait: bool = True, timeout_s: float = 60.0) -> None:
        """CreateStream (provisioned, ``shard_count`` shards); by default wait until it is ACTIVE."""
        with self._stream._boundary("CreateStream"):
            self._stream.client.create_stream(StreamName=self._name, ShardCount=shard_count)
        if wait:
            self.wait_active(timeout_s=timeout_s)

    def status(self) -> str:
        """The stream status: CREATING, DELETING, ACTIVE or UPDATING."""
        with self._stream._boundary("DescribeStreamSummary"):
            summary = self._stream.client.describe_stream_summary(**self._stream._stream_ids())
        return summary["StreamDescriptionSummary"]["StreamStatus"]

    def wait_active(self, *, timeout_s: float = 60.0) -> None:
        """Poll until the stream is ACTIVE; :class:`InvalidStateError` if it is not within ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                current = self.status()
            except ResourceNotFoundError:
                current = "not visible yet"  # CreateStream is eventually consistent on AWS
            if current == "ACTIVE":
                return
            if time.monotonic() >= deadline:
                raise InvalidStateError(
                    f"stream {self._name!r} is still {current} after {timeout_s:g}s; expected ACTIVE"
                )
            time.sleep(self._poll_interval_s)

    def delete(self, *, enforce_consumer_deletion: bool = False) -> None:
        """DeleteStream. Does not wait for the deletion to finish."""
        request: dict[str, Any] = dict(self._stream._stream_ids())
        if enforce_consumer_deletion:
            request["EnforceConsumerDeletion"] = True
        with self._stream._boundary("DeleteStream"):
            self._stream.client.delete_stream(**request)

    # -- producing ------------------------------------------------------------------------------------------

    def put_record(self, data: bytes, partition_key: str, *, explicit_hash_key: str | None = None) -> PutResult:
        request: dict[str, Any] = {**self._stream._stream_ids(), "Data": data, "PartitionKey": partition_key}
        if explicit_hash_key is not None:
            request["ExplicitHashKey"] = explicit_hash_key
        with self._stream._boundary("PutRecord"):
            response = self._stream.client.put_record(**request)
        return PutResult(response["ShardId"], response["SequenceNumber"])

    def put_records(
        self,
        entries: Sequence[tuple[bytes, str] | tuple[bytes, str, str | None]],
        *,
        max_attempts: int = 5,
        backoff_s: float = 0.1,
    ) -> list[PutResult]:
        """Put ``(data, partition_key[, explicit_hash_key])`` entries with PutRecords, 500 per request, and
        return where each one landed, in input order.

        Entries that Kinesis rejects individually (throttling, internal failure) are resent, up to
        ``max_attempts`` requests per batch, with exponential backoff; if some still fail,
        :class:`ThrottlingError` (all throttled) or :class:`DependencyError` names how many and why.
        Within a partition key, order is preserved only when nothing needs a retry.
        """
        results: list[PutResult | None] = [None] * len(entries)
        for batch_start in range(0, len(entries), _MAX_PUT_RECORDS_BATCH):
            pending = list(range(batch_start, min(batch_start + _MAX_PUT_RECORDS_BATCH, len(entries))))
            attempt = 0
            while pending:
                attempt += 1
                request: dict[str, Any] = {
                    **self._stream._stream_ids(),
                    "Records": [_put_entry(entries[i]) for i in pending],
                }
                with self._stream._boundary("PutRecords"):
                    response = self._stream.client.put_records(**request)
                failed: list[int] = []
                errors: dict[str, int] = {}
                with self._stream._parsing("PutRecords"):
                    for index, outcome in zip(pending, response["Records"], strict=True):
                        if "ErrorCode" in outcome:
                            failed.append(index)
                            errors[outcome["ErrorCode"]] = errors.get(outcome["ErrorCode"], 0) + 1
                        else:
                            results[index] = PutResult(outcome["ShardId"], outcome["SequenceNumber"])
                pending = failed
                if pending and attempt >= max_attempts:
                    message = (
                        f"Kinesis PutRecords on stream {self._name!r}: {len(pending)} record(s) still failed "
                        f"after {attempt} attempts ({errors})"
                    )
                    if set(errors) <= THROTTLING_CODES:
                        raise ThrottlingError(message)
                    raise DependencyError(message)
                if pending:
                    logger.debug("PutRecords: resending %d failed record(s): %s", len(pending), errors)
                    time.sleep(backoff_s * 2 ** (attempt - 1))
        return [result for result in results if result is not None]

    # -- resharding -----------------------------------------------------------------------------------------

    def split_shard(
        self,
        shard_id: str,
        new_starting_hash_key: int | None = None,
        *,
        wait: bool = True,
        timeout_s: float = 60.0,
    ) -> None:
        """SplitShard at ``new_starting_hash_key`` (default: the middle of the shard's range); by default wait
        until the stream is ACTIVE again."""
        if new_starting_hash_key is None:
            shard = next((s for s in self._stream.list_shards() if s.shard_id == shard_id), None)
            if shard is None:
                raise ResourceNotFoundError(f"shard {shard_id!r} not found in stream {self._name!r}")
            if shard.hash_key_range.start == shard.hash_key_range.end:
                raise InvalidArgumentError(f"shard {shard_id!r} covers a single hash key; it cannot be split")
            new_starting_hash_key = (shard.hash_key_range.start + shard.hash_key_range.end + 1) // 2
        with self._stream._boundary("SplitShard", shard_id=shard_id):
            self._stream.client.split_shard(
                **self._stream._stream_ids(),
                ShardToSplit=shard_id,
                NewStartingHashKey=str(new_starting_hash_key),
            )
        if wait:
            self.wait_active(timeout_s=timeout_s)

    def merge_shards(
        self, shard_id: str, adjacent_shard_id: str, *, wait: bool = True, timeout_s: float = 60.0
    ) -> None:
        """MergeShards of two adjacent open shards; by default wait until the stream is ACTIVE again."""
        with self._stream._boundary("MergeShards", shard_id=shard_id):
            self._stream.client.merge_shards(
                **self._stream._stream_ids(), ShardToMerge=shard_id, AdjacentShardToMerge=adjacent_shard_id
            )
        if wait:
            self.wait_active(timeout_s=timeout_s)


# -- helpers -----------------------------------------------------------------------------------------------


def _fast_client(client: KinesisClient) -> FastDataPlane | None:
    """The fast data-plane client beside ``client``; ``None`` (boto3 reads records) when its endpoint goes through
    a proxy, which the fast client does not support."""
    try:
        from shardwise.backends.aws.dataplane import FastDataPlane, proxied  # noqa: PLC0415
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ConfigurationError(
            f"the fast Kinesis client needs msgspec ({exc}): pip install 'shardwise[aws]', or set "
            'retrieval.client = "boto3"'
        ) from exc
    if proxied(client.meta.endpoint_url, client.meta.config):
        logger.info("Kinesis endpoint %s goes through a proxy: records are read with boto3", client.meta.endpoint_url)
        return None
    return FastDataPlane.for_client(client)


def _parse_stream_arn(arn: str) -> tuple[str, str]:
    """``(region, stream name)`` of ``arn:<partition>:kinesis:<region>:<account>:stream/<name>``."""
    parts = arn.split(":", 5)
    if len(parts) != 6 or parts[0] != "arn" or parts[2] != "kinesis" or not parts[5].startswith("stream/"):
        raise ConfigurationError(
            f"{arn!r} is not a Kinesis stream ARN (arn:aws:kinesis:<region>:<account>:stream/<name>)"
        )
    name = parts[5].removeprefix("stream/")
    if not name or "/" in name:
        raise ConfigurationError(f"{arn!r} does not name a stream")
    return parts[3], name


def _shard_filter_request(shard_filter: ShardFilter) -> dict[str, Any]:
    request: dict[str, Any] = {"Type": shard_filter.type.value}
    if shard_filter.type is ShardFilterType.AFTER_SHARD_ID:
        request["ShardId"] = shard_filter.shard_id
    if shard_filter.timestamp is not None:
        request["Timestamp"] = shard_filter.timestamp
    return request


def _hash_key_range(item: Mapping[str, Any]) -> HashKeyRange:
    return HashKeyRange(parse_hash_key(item["StartingHashKey"]), parse_hash_key(item["EndingHashKey"]))


def _shard_from_response(item: Mapping[str, Any]) -> Shard:
    sequence_range = item["SequenceNumberRange"]
    return Shard(
        shard_id=item["ShardId"],
        hash_key_range=_hash_key_range(item["HashKeyRange"]),
        starting_sequence_number=sequence_range["StartingSequenceNumber"],
        ending_sequence_number=sequence_range.get("EndingSequenceNumber") or None,
        parent_shard_id=item.get("ParentShardId") or None,
        adjacent_parent_shard_id=item.get("AdjacentParentShardId") or None,
    )


def _record_from_response(item: Mapping[str, Any]) -> Record:
    arrival = item.get("ApproximateArrivalTimestamp")
    return Record(
        data=item["Data"],
        partition_key=item.get("PartitionKey", ""),
        sequence_number=item["SequenceNumber"],
        approximate_arrival_timestamp=_utc(arrival) if isinstance(arrival, datetime) else _now(),
    )


def _utc(value: datetime) -> datetime:
    """An aware UTC datetime (botocore returns ``tzlocal()`` ones; naive ones are taken as UTC)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _put_entry(entry: tuple[bytes, str] | tuple[bytes, str, str | None]) -> dict[str, Any]:
    request: dict[str, Any] = {"Data": entry[0], "PartitionKey": entry[1]}
    if len(entry) == 3 and entry[2] is not None:
        request["ExplicitHashKey"] = entry[2]
    return request
