"""Logging for the command line (the one place shardwise configures logging), with secrets redacted.

``-v`` shows INFO, ``-vv`` DEBUG for shardwise (the AWS SDK's wire logs stay at INFO), ``-vvv`` DEBUG for
everything, botocore's request and response logs included. At every level the handler's formatter
(:class:`RedactingFormatter`) removes credentials from the final text — message, arguments and traceback alike:

* the values of ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN`` and ``AWS_SECURITY_TOKEN`` (as written and
  URL-encoded), wherever they appear;
* whatever follows the names of the headers and fields that carry them: ``X-Amz-Security-Token``,
  ``Authorization`` (the signature and the access key id), ``X-Amz-Signature``/``X-Amz-Credential`` (pre-signed
  URLs), and ``SecretAccessKey``/``SessionToken`` in STS responses (XML or JSON) — so credentials that come from
  a profile, a role or a container provider are redacted too, without shardwise ever reading them.

The access key id on its own is not a secret (AWS prints it in errors) and is not redacted outside
``Authorization``.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping
from urllib.parse import quote

__all__ = ["REDACTED", "RedactingFormatter", "configure_logging", "secret_values"]

REDACTED = "[REDACTED]"
#: Environment variables whose values are secrets.
SECRET_ENV_VARS = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")
#: Loggers of the AWS SDK whose DEBUG output is the wire (requests, responses, signing): only at -vvv.
WIRE_LOGGERS = ("botocore", "boto3", "urllib3", "s3transfer")
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: A minimum length, so an empty or one-character variable does not redact every occurrence of a letter.
_MIN_SECRET_LENGTH = 8

_PATTERNS = (
    # Header or field name, a separator as botocore prints it (': ', "': b'", '=', ':'), then the value.
    re.compile(
        r"(?i)((?:x-amz-security-token|x-amz-signature|x-amz-credential|authorization)"
        r"""['"]?\s*[:=]\s*b?['"]?)([^'"\s&,}]+(?:[ ,][^'"\n&}]*)?)"""
    ),
    re.compile(r"(?i)(<(?:SecretAccessKey|SessionToken)>)([^<]*)"),
    re.compile(
        r"""(?i)(["']?(?:SecretAccessKey|SessionToken|aws_secret_access_key|aws_session_token|secret_key|"""
        r"""token)["']?\s*[:=]\s*b?["'])([^"']+)"""
    ),
)


def secret_values(environ: Mapping[str, str] | None = None) -> list[str]:
    """The secret values to redact wherever they appear: the credential variables' values, as written and
    URL-encoded, longest first."""
    env = os.environ if environ is None else environ
    values: set[str] = set()
    for name in SECRET_ENV_VARS:
        value = env.get(name, "").strip()
        if len(value) >= _MIN_SECRET_LENGTH:
            values.update({value, quote(value, safe=""), quote(value, safe="/")})
    return sorted(values, key=len, reverse=True)


def redact(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    for pattern in _PATTERNS:
        text = pattern.sub(lambda match: match.group(1) + REDACTED, text)
    return text


class RedactingFormatter(logging.Formatter):
    """A formatter whose output never holds a credential (see the module docstring)."""

    def __init__(self, fmt: str = _FORMAT, *, secrets: Iterable[str] | None = None) -> None:
        super().__init__(fmt)
        self._secrets = tuple(secret_values() if secrets is None else secrets)

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record), self._secrets)


def configure_logging(verbose: int) -> None:
    """Install one stderr handler with the redacting formatter on the root logger (``verbose``: -v count)."""
    handler = logging.StreamHandler()
    handler.setFormatter(RedactingFormatter())
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, handlers=[handler])
    if verbose == 2:
        for name in WIRE_LOGGERS:
            logging.getLogger(name).setLevel(logging.INFO)
