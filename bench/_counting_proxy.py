"""A counting HTTP proxy on 127.0.0.1 in front of one stand-in, for ``bench_idle.py``.

    python bench/_counting_proxy.py --port P --upstream http://127.0.0.1:Q

Forwards every POST to the upstream unchanged (one keep-alive upstream connection per client connection) and
counts the requests by operation (the ``X-Amz-Target`` header's last part: ``GetItem``, ``UpdateItem``, …).
``GET /__counts`` answers the counts so far as JSON, ``GET /__details`` the same by operation, table and (for
item reads and writes) the item's key values, so each request can be traced to what it reads or writes. The
worker under test pays nothing for the counting.
"""

from __future__ import annotations

import argparse
import http.client
import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

HOST = "127.0.0.1"
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length"})


def _detail(operation: str, body: bytes) -> str:
    """``operation table [key values]`` of a DynamoDB request (its JSON body)."""
    try:
        request = json.loads(body or b"{}")
    except ValueError:
        return operation
    table = request.get("TableName", "")
    key = request.get("Key") or {}
    values = ",".join(str(next(iter(v.values()), "")) for v in key.values() if isinstance(v, dict))
    return f"{operation} {table} {values}".rstrip()


def make_handler(upstream_host: str, upstream_port: int) -> type[BaseHTTPRequestHandler]:
    counts: Counter[str] = Counter()
    details: Counter[str] = Counter()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        upstream: http.client.HTTPConnection | None = None

        def log_message(self, format: str, *args: Any) -> None:
            return

        def do_GET(self) -> None:
            with lock:
                body = json.dumps(dict(details if self.path.startswith("/__details") else counts)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            operation = (self.headers.get("X-Amz-Target") or "?").rpartition(".")[2]
            detail = _detail(operation, body)
            with lock:
                counts[operation] += 1
                details[detail] += 1
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            for attempt in (1, 2):
                if self.upstream is None:
                    self.upstream = http.client.HTTPConnection(upstream_host, upstream_port, timeout=60)
                try:
                    self.upstream.request("POST", self.path, body=body, headers=headers)
                    response = self.upstream.getresponse()
                    payload = response.read()
                    break
                except (OSError, http.client.HTTPException):
                    self.upstream.close()
                    self.upstream = None
                    if attempt == 2:
                        raise
            self.send_response(response.status)
            for key, value in response.getheaders():
                if key.lower() not in _HOP_BY_HOP:
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    args = parser.parse_args()
    upstream = urlsplit(args.upstream)
    assert upstream.hostname == HOST, "the proxy only forwards to 127.0.0.1"
    server = ThreadingHTTPServer((HOST, args.port), make_handler(upstream.hostname, upstream.port or 80))
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
