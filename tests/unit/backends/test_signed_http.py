"""The direct clients' SigV4 signer is botocore's, byte for byte: the same request signed by
:class:`~shardwise.backends.aws.signed_http.JsonPostSigner` and by botocore's ``SigV4Auth`` (at the same moment,
with the same credentials) carries the same ``Authorization``, ``X-Amz-Date`` and ``X-Amz-Security-Token``."""

from __future__ import annotations

from datetime import datetime, timezone

import botocore.auth
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import ReadOnlyCredentials
from hypothesis import given, settings
from hypothesis import strategies as st

from shardwise.backends.aws.signed_http import JsonPostSigner, error_parts

ENDPOINTS = (
    "http://127.0.0.1:4567",
    "https://kinesis.us-east-1.amazonaws.com",
    "https://dynamodb.eu-west-1.amazonaws.com:443",
    "http://localhost:8000/prefix/path",
    "https://vpce-0123.kinesis.eu-west-1.vpce.amazonaws.com/",
)
SERVICES = (
    ("kinesis", "application/x-amz-json-1.1", "Kinesis_20131202.GetRecords"),
    ("dynamodb", "application/x-amz-json-1.0", "DynamoDB_20120810.UpdateItem"),
)
# 2000-01-01 to 2100-01-01, whole seconds (SigV4 timestamps have no fraction).
moments = st.integers(min_value=946_684_800, max_value=4_102_444_800)
secrets = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/", min_size=1, max_size=40)
tokens = st.one_of(st.none(), st.text(alphabet="abcdefXYZ0123456789+/=", min_size=1, max_size=300))


def both_headers(
    monkeypatch: pytest.MonkeyPatch,
    signer: JsonPostSigner,
    *,
    endpoint: str,
    region: str,
    service: tuple[str, str, str],
    credentials: ReadOnlyCredentials,
    body: bytes,
    now_s: int,
) -> tuple[dict[str, str], dict[str, str]]:
    """The headers ``signer`` writes for one request, and the ones botocore's ``SigV4Auth`` writes for it."""
    signing_name, content_type, target = service
    ours = signer.headers(credentials, target, body, now_s=now_s)
    request = AWSRequest(
        method="POST", url=endpoint, data=body, headers={"Content-Type": content_type, "X-Amz-Target": target}
    )
    moment = datetime.fromtimestamp(now_s, tz=timezone.utc).replace(tzinfo=None)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: moment)
    SigV4Auth(credentials, signing_name, region).add_auth(request)
    return ours, {name: str(value) for name, value in request.headers.items()}


@settings(max_examples=200)
@given(
    endpoint=st.sampled_from(ENDPOINTS),
    region=st.sampled_from(("us-east-1", "eu-west-1", "ap-southeast-2")),
    service=st.sampled_from(SERVICES),
    access_key=st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=16, max_size=20),
    secret=secrets,
    token=tokens,
    body=st.binary(max_size=2000),
    now_s=moments,
)
def test_the_signature_is_botocores(
    *,
    endpoint: str,
    region: str,
    service: tuple[str, str, str],
    access_key: str,
    secret: str,
    token: str | None,
    body: bytes,
    now_s: int,
) -> None:
    credentials = ReadOnlyCredentials(access_key, secret, token)
    signer = JsonPostSigner(endpoint, region, service[0], service[1])
    with pytest.MonkeyPatch.context() as monkeypatch:
        ours, theirs = both_headers(
            monkeypatch,
            signer,
            endpoint=endpoint,
            region=region,
            service=service,
            credentials=credentials,
            body=body,
            now_s=now_s,
        )
    assert ours["Authorization"] == theirs["Authorization"]
    assert ours["X-Amz-Date"] == theirs["X-Amz-Date"]
    assert ours.get("X-Amz-Security-Token") == theirs.get("X-Amz-Security-Token")
    assert ours["Content-Type"] == theirs["Content-Type"]
    assert ours["X-Amz-Target"] == theirs["X-Amz-Target"]


def test_the_kept_signing_key_follows_the_day_and_the_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    """One signer, one request after another across a day boundary and a credential rotation: every signature is
    still botocore's (the kept key is never used for another day or another secret)."""
    endpoint, region, service = ENDPOINTS[1], "us-east-1", SERVICES[0]
    signer = JsonPostSigner(endpoint, region, service[0], service[1])
    midnight = 1_780_000_000 - 1_780_000_000 % 86_400
    steps = [
        (ReadOnlyCredentials("AKIDEXAMPLE", "secret-one", None), midnight - 1),
        (ReadOnlyCredentials("AKIDEXAMPLE", "secret-one", None), midnight - 1),
        (ReadOnlyCredentials("AKIDEXAMPLE", "secret-one", None), midnight),
        (ReadOnlyCredentials("ASIAEXAMPLE", "secret-two", "token-two"), midnight + 5),
        (ReadOnlyCredentials("AKIDEXAMPLE", "secret-one", None), midnight + 6),
    ]
    seen = set()
    for credentials, now_s in steps:
        body = b'{"ShardIterator":"abc","Limit":10000}'
        ours, theirs = both_headers(
            monkeypatch,
            signer,
            endpoint=endpoint,
            region=region,
            service=service,
            credentials=credentials,
            body=body,
            now_s=now_s,
        )
        assert ours["Authorization"] == theirs["Authorization"]
        seen.add(ours["Authorization"])
    assert len(seen) == 4  # the two identical requests sign alike; every other one differs


@pytest.mark.parametrize(
    ("body", "status", "expected"),
    [
        (
            b'{"__type":"com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException","message":"no"}',
            400,
            ("ConditionalCheckFailedException", "no"),
        ),
        (b'{"__type":"ThrottlingException:http://x","Message":"slow"}', 400, ("ThrottlingException", "slow")),
        (b"<html>bad gateway</html>", 502, ("502", "<html>bad gateway</html>")),
        (b"", 503, ("503", "")),
        (b"[1, 2]", 500, ("500", "")),
    ],
)
def test_error_answers_give_botocores_code_and_message(body: bytes, status: int, expected: tuple[str, str]) -> None:
    assert error_parts(body, status) == expected
