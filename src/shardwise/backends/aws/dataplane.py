"""The fast data-plane client for Kinesis: GetRecords and GetShardIterator as SigV4-signed HTTP POSTs on one
pooled, thread-safe urllib3 connection pool (:mod:`shardwise.backends.aws.signed_http`, whose docstring states
the retry, signing and error semantics), answers decoded by :mod:`shardwise.backends.aws.dataplane_codec`.

Why: botocore's generic response parser costs tens of µs per record (``bench/bench_decode.py``), and its request
pipeline (events, serializer, signer) most of an empty GetRecords' CPU; the requests themselves are two fixed
JSON shapes. The control plane (ListShards, DescribeStream, puts, resharding) stays on the boto3 client; this
client is built from it (:meth:`FastDataPlane.for_client`) and so talks to the same endpoint, in the same region,
with the same credentials and the same limits.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from botocore.credentials import Credentials

from shardwise.backends.aws.signed_http import POOL_SIZE, SignedJsonClient, limits_of, proxied
from shardwise.backends.config import CallLimits

if TYPE_CHECKING:
    from mypy_boto3_kinesis.client import KinesisClient

__all__ = ["POOL_SIZE", "FastDataPlane", "limits_of", "proxied"]

_CONTENT_TYPE = "application/x-amz-json-1.1"
_TARGET_PREFIX = "Kinesis_20131202"


class FastDataPlane(SignedJsonClient):
    """Signed JSON POSTs to one Kinesis endpoint; :meth:`call` returns the body of a 2xx answer or raises
    botocore's exception for the failure."""

    def __init__(
        self,
        endpoint_url: str,
        region_name: str,
        credentials: Callable[[], Credentials | None],
        limits: CallLimits,
        *,
        signing_name: str = "kinesis",
        **options: Any,
    ) -> None:
        options.setdefault("target_prefix", _TARGET_PREFIX)
        options.setdefault("content_type", _CONTENT_TYPE)
        super().__init__(endpoint_url, region_name, credentials, limits, signing_name=signing_name, **options)

    @classmethod
    def for_client(cls, client: KinesisClient, *, ca_certs: str | None = None) -> FastDataPlane:
        """The fast client beside a boto3 Kinesis client: its endpoint, region, limits and credentials."""
        return cls(**cls.client_options(client), ca_certs=ca_certs)
