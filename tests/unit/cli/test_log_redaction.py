"""Credentials never reach the CLI's log output (cli/logs.py): the handler's formatter redacts the secret values
of the environment and whatever follows the headers and fields that carry credentials, in messages and
tracebacks alike; -vv keeps the AWS SDK's wire logs at INFO."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator

import pytest

from shardwise.cli.logs import REDACTED, WIRE_LOGGERS, RedactingFormatter, configure_logging, secret_values

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY"  # noqa: S105 - a fake secret to search for
TOKEN = "IQoJb3JpZ2luX2VjEFAKE+TOKEN/with=padding//xyz=="  # noqa: S105 - a fake session token
ENV = {"AWS_ACCESS_KEY_ID": "AKIAFAKEFAKEFAKE", "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_SESSION_TOKEN": TOKEN}


def render(record_msg: str, *args: object, exc: BaseException | None = None) -> str:
    formatter = RedactingFormatter("%(message)s", secrets=secret_values(ENV))
    record = logging.LogRecord("botocore.endpoint", logging.DEBUG, __file__, 1, record_msg, args, None)
    if exc is not None:
        try:
            raise exc
        except type(exc):
            record.exc_info = sys.exc_info()
    return formatter.format(record)


@pytest.mark.parametrize(
    "line",
    [
        # botocore.endpoint's request dump (bytes header values)
        "Sending http request: <AWSPreparedRequest stream_output=False, method=POST, url=http://127.0.0.1:1/, "
        "headers={'X-Amz-Target': b'DynamoDB_20120810.Scan', 'X-Amz-Security-Token': b'"
        + TOKEN
        + "', 'Authorization': b'AWS4-HMAC-SHA256 Credential=AKIAFAKEFAKEFAKE/20261207/us-east-1/dynamodb/"
        "aws4_request, SignedHeaders=host;x-amz-date, Signature=0123abcd'}>",
        # botocore.auth's canonical request
        "CanonicalRequest:\nPOST\n/\n\nhost:127.0.0.1\nx-amz-date:20261207T000000Z\nx-amz-security-token:" + TOKEN,
        # an STS response body
        "Response body: b'<Credentials><SecretAccessKey>" + SECRET + "</SecretAccessKey><SessionToken>" + TOKEN,
        # JSON from a container credential provider
        '{"AccessKeyId": "AKIA", "SecretAccessKey": "' + SECRET + '", "Token": "' + TOKEN + '"}',
        # a secret anywhere, URL-encoded too
        "a processor logged the environment: " + SECRET + " and " + TOKEN.replace("/", "%2F").replace("+", "%2B"),
    ],
)
def test_secrets_are_redacted(line: str) -> None:
    out = render("%s", line)
    assert SECRET not in out
    assert TOKEN not in out
    assert TOKEN.replace("/", "%2F").replace("+", "%2B").replace("=", "%3D") not in out
    assert "Signature=0123abcd" not in out
    assert REDACTED in out


def test_tracebacks_are_redacted() -> None:
    out = render("failed", exc=RuntimeError(f"token was {TOKEN}"))
    assert "Traceback" in out
    assert TOKEN not in out


def test_ordinary_lines_are_untouched() -> None:
    line = "worker w1 took leases shardId-000000000001 (NextShardIterator: AAAA, token bucket full)"
    assert render("%s", line) == line


def test_short_or_missing_variables_redact_nothing() -> None:
    assert secret_values({"AWS_SECRET_ACCESS_KEY": "x", "AWS_SESSION_TOKEN": ""}) == []


@contextlib.contextmanager
def bare_root_logger() -> Iterator[logging.Logger]:
    """The root logger without handlers (as in a fresh ``shardwise`` process), restored afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    wire = {name: logging.getLogger(name).level for name in WIRE_LOGGERS}
    root.handlers = []
    try:
        yield root
    finally:
        root.handlers, root.level = handlers, level
        for name, saved in wire.items():
            logging.getLogger(name).setLevel(saved)


@pytest.mark.parametrize(("verbose", "wire_debug"), [(2, False), (3, True)])
def test_configure_logging_redacts_and_keeps_the_wire_quiet_at_vv(
    monkeypatch: pytest.MonkeyPatch, verbose: int, wire_debug: bool
) -> None:
    monkeypatch.setenv("AWS_SESSION_TOKEN", TOKEN)
    with bare_root_logger() as root:
        configure_logging(verbose)
        (handler,) = root.handlers
        debug = logging.getLogger("shardwise.worker").isEnabledFor(logging.DEBUG)
        wire = logging.getLogger("botocore.endpoint").isEnabledFor(logging.DEBUG)
    assert isinstance(handler.formatter, RedactingFormatter)
    assert debug
    assert wire is wire_debug
    assert TOKEN not in handler.format(logging.LogRecord("x", logging.INFO, __file__, 1, TOKEN, None, None))
