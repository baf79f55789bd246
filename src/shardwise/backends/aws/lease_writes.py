"""The lease store's conditional writes (``UpdateItem``) on the direct signed client, not through boto3.

Why: an idle worker's DynamoDB traffic is its renewals — one conditional ``UpdateItem`` per held lease every
failover/3 (72 a minute for 4 leases at KCL's defaults) — and botocore spends about 2 ms of CPU on each (its
event hooks, parameter validation, serializer, signer and parser), several times the HTTP exchange itself.
:class:`DirectUpdateItem` sends the same request as SigV4-signed JSON on a pooled connection
(:mod:`shardwise.backends.aws.signed_http`: botocore's standard retry mode, its exceptions) and answers what
boto3's ``update_item`` answers: the attributes with binary values as ``bytes``, ``ConsumedCapacity`` as sent.
A failed condition is botocore's ``ClientError`` with ``ConditionalCheckFailedException``, so the store's error
boundary (:mod:`shardwise.backends.aws.errors`) turns it into the same "lost the race" answer, and every other
failure into the same error, as on the boto3 path.

The encoding is DynamoDB's JSON 1.0 wire format, as botocore writes it: an attribute value is a one-key object,
``B`` and ``BS`` values base64 text, ``M`` and ``L`` nested; the standard library's ``json`` does it (the bodies
are a few hundred bytes).
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from botocore.parsers import ResponseParserError

from shardwise.backends.aws.signed_http import SignedJsonClient, error_parts, proxied
from shardwise.backends.config import DataClient

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient

__all__ = ["DirectUpdateItem", "decode_value", "encode_value", "update_item_function"]

logger = logging.getLogger(__name__)

#: Calls ``UpdateItem`` with boto3's keyword arguments; answers boto3's response dictionary.
UpdateItem = Callable[..., Mapping[str, Any]]


def encode_value(value: Mapping[str, Any]) -> dict[str, Any]:
    """An attribute value (boto3's shape: ``{"S": "x"}``, ``{"B": b"..."}``, …) in DynamoDB's JSON."""
    (kind, inner), *_ = value.items()
    if kind == "B":
        return {"B": base64.b64encode(bytes(inner)).decode("ascii")}
    if kind == "BS":
        return {"BS": [base64.b64encode(bytes(element)).decode("ascii") for element in inner]}
    if kind == "M":
        return {"M": {name: encode_value(element) for name, element in inner.items()}}
    if kind == "L":
        return {"L": [encode_value(element) for element in inner]}
    return {kind: inner}


def decode_value(value: Mapping[str, Any]) -> dict[str, Any]:
    """An attribute value in DynamoDB's JSON as boto3 returns it (binary values as ``bytes``)."""
    (kind, inner), *_ = value.items()
    if kind == "B":
        return {"B": base64.b64decode(inner)}
    if kind == "BS":
        return {"BS": [base64.b64decode(element) for element in inner]}
    if kind == "M":
        return {"M": {name: decode_value(element) for name, element in inner.items()}}
    if kind == "L":
        return {"L": [decode_value(element) for element in inner]}
    return {kind: inner}


def _encode_item(item: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    return {name: encode_value(value) for name, value in item.items()}


class DirectUpdateItem:
    """``UpdateItem`` on :class:`SignedJsonClient` (see the module docstring); call it as boto3's
    ``update_item``."""

    def __init__(self, http: SignedJsonClient) -> None:
        self._http = http

    @classmethod
    def for_client(cls, client: DynamoDBClient) -> DirectUpdateItem | None:
        """The direct client beside a boto3 DynamoDB client (its endpoint, region, limits and credentials); ``None``
        when its endpoint goes through a proxy, which the direct client does not support."""
        if proxied(client.meta.endpoint_url, client.meta.config):
            endpoint = client.meta.endpoint_url
            logger.info("DynamoDB endpoint %s goes through a proxy: leases are written with boto3", endpoint)
            return None
        return cls(SignedJsonClient(**SignedJsonClient.client_options(client)))

    def __repr__(self) -> str:
        return f"DirectUpdateItem({self._http!r})"

    def __call__(self, **params: Any) -> dict[str, Any]:
        request = dict(params)
        request["Key"] = _encode_item(params["Key"])
        if "ExpressionAttributeValues" in params:
            request["ExpressionAttributeValues"] = _encode_item(params["ExpressionAttributeValues"])
        body = json.dumps(request, separators=(",", ":")).encode()
        data = self._http.call("UpdateItem", body, error_parts)
        try:
            answer: Any = json.loads(data) if data else {}
            if not isinstance(answer, dict):
                raise TypeError("not a JSON object")
            if "Attributes" in answer:
                answer["Attributes"] = {name: decode_value(value) for name, value in answer["Attributes"].items()}
        except (ValueError, TypeError, AttributeError) as exc:
            # What botocore raises for an answer it cannot parse.
            raise ResponseParserError(f"UpdateItem answer does not parse ({exc}): {data[:200]!r}") from exc
        return answer


def update_item_function(client: DynamoDBClient, data_client: DataClient) -> UpdateItem:
    """How a lease store beside ``client`` runs ``UpdateItem``: the direct client (``"fast"``, unless the endpoint
    goes through a proxy) or the boto3 client's own method (``"boto3"``)."""
    if data_client == "fast":
        direct = DirectUpdateItem.for_client(client)
        if direct is not None:
            return direct

    def through_boto3(**params: Any) -> Mapping[str, Any]:
        return client.update_item(**params)  # looked up per call: a stubbed or fake client may add it later

    return through_boto3
