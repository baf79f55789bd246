"""A tiny HTTP server on 127.0.0.1 for the direct AWS clients' tests: it answers each ``X-Amz-Target`` from a
queue of canned answers, records every request, and checks every request's SigV4 signature by signing what it
received again with the same credentials."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

__all__ = ["Canned", "CannedServer", "Received", "serving"]


@dataclass
class Canned:
    status: int
    body: bytes
    delay_s: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Received:
    target: str
    body: dict[str, Any]
    headers: dict[str, str]
    signature_ok: bool
    path: str = "/"


@dataclass
class CannedServer:
    """Answers each target's requests from its queue (the last answer repeats); records every request."""

    endpoint_url: str = ""
    answers: dict[str, list[Canned]] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, target: str, *answers: Canned) -> None:
        with self.lock:
            self.answers[target] = list(answers)

    def next_answer(self, target: str) -> Canned:
        with self.lock:
            queue = self.answers.get(target) or [Canned(500, b'{"__type":"NoCannedAnswer","message":"none"}')]
            return queue.pop(0) if len(queue) > 1 else queue[0]

    def requests(self, target: str) -> list[Received]:
        with self.lock:
            return [r for r in self.received if r.target == target]


def _signature_ok(
    headers: dict[str, str], body: bytes, path: str, *, keys: Credentials, service: str, region: str
) -> bool:
    """Whether ``Authorization`` is the SigV4 signature of what arrived (same keys, at its X-Amz-Date)."""
    lower = {name.lower(): value for name, value in headers.items()}
    authorization = lower.get("authorization", "")
    signed = authorization.split("SignedHeaders=")[-1].split(",")[0].split(";")
    request = AWSRequest(method="POST", url=f"http://{lower['host']}{path}", data=body)
    for name in signed:
        request.headers[name] = lower[name]
    request.context["timestamp"] = lower["x-amz-date"]
    signer = SigV4Auth(keys, service, region)
    expected = signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)
    return authorization.endswith(f"Signature={expected}")


@contextlib.contextmanager
def serving(keys: Credentials, service: str, region: str) -> Iterator[CannedServer]:
    """A :class:`CannedServer` on 127.0.0.1 (its ``endpoint_url`` set) that checks signatures made with ``keys``
    for ``service`` in ``region``."""
    canned = CannedServer()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            headers = dict(self.headers.items())
            target = headers.get("X-Amz-Target", "")
            with canned.lock:
                signature_ok = _signature_ok(headers, raw, self.path, keys=keys, service=service, region=region)
                canned.received.append(Received(target, json.loads(raw), headers, signature_ok, self.path))
            answer = canned.next_answer(target)
            if answer.delay_s:
                time.sleep(answer.delay_s)
            with contextlib.suppress(OSError):  # the client may have given up on a delayed answer
                self.send_response(answer.status)
                self.send_header("Content-Type", "application/x-amz-json-1.1")
                self.send_header("Content-Length", str(len(answer.body)))
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(answer.body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    canned.endpoint_url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield canned
    finally:
        httpd.shutdown()
        httpd.server_close()
