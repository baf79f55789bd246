"""A fault-injecting HTTP proxy on 127.0.0.1, between ``shardwise run`` workers and one AWS stand-in.

One :class:`FaultProxy` forwards the HTTP/1.1 requests of one worker to one service (DynamoDB on moto, Kinesis on
kinesalite). Its :class:`Faults` can be changed at any time while it runs (:meth:`FaultProxy.set`,
:meth:`FaultProxy.heal`), and apply to each request as it arrives:

* ``blackhole`` — the request is read and never answered, and never reaches the service; when the proxy is
  healed, every held connection is closed without a response (a partition: what was sent is lost);
* ``delay_ms`` — the request waits that long before it is forwarded;
* ``reset_rate`` — that share of requests get their connection reset (RST) without a response;
* ``throttle_rate`` — that share get the service's throttling answer (HTTP 400 with its JSON error:
  DynamoDB ``ThrottlingException``, Kinesis ``ProvisionedThroughputExceededException``), which botocore parses
  into those error codes and retries as throttles;
* ``error_rate`` — that share get a 500 ``InternalServerError`` (DynamoDB) / ``InternalFailure`` (Kinesis) or a
  503 ``ServiceUnavailable``, alternately.

:attr:`FaultProxy.counts` says how many requests were forwarded and how many got each fault. Only 127.0.0.1 is
ever bound or connected to.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import random
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Literal

__all__ = ["FaultProxy", "Faults", "Service"]

HOST = "127.0.0.1"
Service = Literal["dynamodb", "kinesis"]

_THROTTLE: dict[Service, str] = {
    "dynamodb": "com.amazonaws.dynamodb.v20120810#ThrottlingException",
    "kinesis": "ProvisionedThroughputExceededException",
}
_INTERNAL: dict[Service, str] = {
    "dynamodb": "com.amazonaws.dynamodb.v20120810#InternalServerError",
    "kinesis": "InternalFailure",
}
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "proxy-connection"}
_MAX_HEADER_BYTES = 65_536


@dataclass(frozen=True)
class Faults:
    """What the proxy does to the requests arriving now (rates are shares of requests, 0.0 to 1.0)."""

    blackhole: bool = False
    delay_ms: int = 0
    reset_rate: float = 0.0
    throttle_rate: float = 0.0
    error_rate: float = 0.0

    def __post_init__(self) -> None:
        for name in ("reset_rate", "throttle_rate", "error_rate"):
            rate = getattr(self, name)
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} must be between 0.0 and 1.0, got {rate}")
        if self.reset_rate + self.throttle_rate + self.error_rate > 1.0:
            raise ValueError("reset_rate + throttle_rate + error_rate must not exceed 1.0")
        if self.delay_ms < 0:
            raise ValueError(f"delay_ms must be >= 0, got {self.delay_ms}")


class _ClientGone(Exception):
    """The client closed its connection."""


class FaultProxy:
    """Forwards HTTP/1.1 requests from 127.0.0.1:``port`` to the service at ``upstream_port``, injecting
    :class:`Faults`. Use as a context manager, or :meth:`start` / :meth:`stop`."""

    def __init__(self, service: Service, upstream_port: int, *, seed: int | None = None, name: str = "") -> None:
        self.service: Service = service
        self.upstream_port = upstream_port
        self.name = name or f"{service}-proxy"
        self._faults = Faults()
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._healed = threading.Condition(self._lock)
        self._generation = 0  # bumped by every heal: held requests of an older generation are dropped
        self._counts: Counter[str] = Counter()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((HOST, 0))
        self.port: int = self._listener.getsockname()[1]
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._acceptor = threading.Thread(target=self._accept_loop, name=f"{self.name}-accept", daemon=True)

    @property
    def endpoint_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    # -- control -------------------------------------------------------------------------------------------

    @property
    def faults(self) -> Faults:
        with self._lock:
            return self._faults

    def set(self, faults: Faults | None = None, **changes: object) -> Faults:
        """Replace the faults (``faults``), or change some of them (``delay_ms=200``); returns the new ones.
        Turning ``blackhole`` off drops the requests it held, like :meth:`heal`."""
        with self._lock:
            new = faults if faults is not None else replace(self._faults, **changes)  # type: ignore[arg-type]
            if self._faults.blackhole and not new.blackhole:
                self._generation += 1
                self._healed.notify_all()
            self._faults = new
            return new

    def heal(self) -> None:
        """No faults from now on; requests held by a black hole get their connection closed, unanswered."""
        self.set(Faults())

    @property
    def counts(self) -> Counter[str]:
        """Requests so far: ``forwarded``, and per fault ``blackholed``, ``delayed``, ``reset``, ``throttled``,
        ``error_500``, ``error_503``."""
        with self._lock:
            return Counter(self._counts)

    # -- lifecycle -----------------------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        self._listener.listen(128)
        self._acceptor.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            self._generation += 1
            self._healed.notify_all()
            connections = list(self._connections)
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._acceptor.is_alive():
            self._acceptor.join(5)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # -- serving -------------------------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self._connections.add(conn)
            threading.Thread(target=self._serve, args=(conn,), name=f"{self.name}-conn", daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        upstream: http.client.HTTPConnection | None = None
        reader = conn.makefile("rb")
        try:
            while not self._stopping.is_set():
                try:
                    request = _read_request(reader)
                except _ClientGone:
                    return
                action = self._decide()
                if action == "blackhole":
                    self._hold()
                    return  # closing the connection unanswered
                if action == "reset":
                    _reset(conn)
                    return
                if action in ("throttle", "error_500", "error_503"):
                    conn.sendall(self._error_response(action))
                    continue
                if action == "delay":
                    time.sleep(self.faults.delay_ms / 1000)
                if upstream is None:
                    upstream = http.client.HTTPConnection(HOST, self.upstream_port, timeout=300)
                conn.sendall(_forward(upstream, request))
        except (OSError, http.client.HTTPException):
            return  # the service or the client went away: the client sees its connection closed
        finally:
            if upstream is not None:
                upstream.close()
            with self._lock:
                self._connections.discard(conn)
            reader.close()
            with contextlib.suppress(OSError):
                conn.close()

    def _decide(self) -> str:
        with self._lock:
            faults = self._faults
            if faults.blackhole:
                self._counts["blackholed"] += 1
                return "blackhole"
            draw = self._random.random()
            action = "forward"
            if draw < faults.reset_rate:
                action = "reset"
            elif draw < faults.reset_rate + faults.throttle_rate:
                action = "throttle"
            elif draw < faults.reset_rate + faults.throttle_rate + faults.error_rate:
                action = "error_500" if self._counts["error_500"] <= self._counts["error_503"] else "error_503"
            elif faults.delay_ms:
                action = "delay"
            self._counts[_COUNT_NAMES[action]] += 1
            if action == "delay":
                self._counts["forwarded"] += 1
            return action

    def _hold(self) -> None:
        with self._lock:
            generation = self._generation
            while self._generation == generation and not self._stopping.is_set():
                self._healed.wait(1.0)

    def _error_response(self, action: str) -> bytes:
        if action == "throttle":
            status, reason, code = 400, "Bad Request", _THROTTLE[self.service]
            message = "Rate exceeded (injected by the fault proxy)"
        elif action == "error_500":
            status, reason, code = 500, "Internal Server Error", _INTERNAL[self.service]
            message = "Internal error (injected by the fault proxy)"
        else:
            status, reason, code = 503, "Service Unavailable", "ServiceUnavailable"
            message = "Service unavailable (injected by the fault proxy)"
        body = json.dumps({"__type": code, "message": message}).encode()
        head = (
            f"HTTP/1.1 {status} {reason}\r\n"
            "Content-Type: application/x-amz-json-1.0\r\n"
            f"x-amzn-ErrorType: {code.rsplit('#', 1)[-1]}\r\n"
            f"x-amzn-RequestId: fault-proxy-{self._random.getrandbits(32):08x}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        return head.encode() + body


_COUNT_NAMES = {
    "forward": "forwarded",
    "delay": "delayed",
    "reset": "reset",
    "throttle": "throttled",
    "error_500": "error_500",
    "error_503": "error_503",
}


@dataclass(frozen=True)
class _Request:
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes


def _read_request(reader: object) -> _Request:
    readline = reader.readline  # type: ignore[attr-defined]
    read = reader.read  # type: ignore[attr-defined]
    line: bytes = readline(_MAX_HEADER_BYTES)
    while line in (b"\r\n", b"\n"):  # tolerate stray blank lines between requests
        line = readline(_MAX_HEADER_BYTES)
    if not line:
        raise _ClientGone
    method, target, _version = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
    headers: list[tuple[str, str]] = []
    for raw in _header_lines(readline):
        name, _, value = raw.partition(":")
        headers.append((name.strip(), value.strip()))
    length = next((int(v) for n, v in headers if n.lower() == "content-length"), 0)
    if any(n.lower() == "transfer-encoding" for n, _ in headers):
        raise _ClientGone  # botocore always sends Content-Length to these services; anything else is not ours
    body: bytes = read(length) if length else b""
    if len(body) < length:
        raise _ClientGone
    return _Request(method, target, headers, body)


def _header_lines(readline: object) -> Iterator[str]:
    assert callable(readline)
    while True:
        raw = readline(_MAX_HEADER_BYTES)
        if not raw:
            raise _ClientGone
        if raw in (b"\r\n", b"\n"):
            return
        yield raw.decode("latin-1").rstrip("\r\n")


def _forward(upstream: http.client.HTTPConnection, request: _Request) -> bytes:
    """Send the request upstream and return the response to pass on, re-framed with Content-Length (the
    connection to the service is reopened by the next request if the service closed it)."""
    upstream.putrequest(request.method, request.target, skip_host=True, skip_accept_encoding=True)
    for name, value in request.headers:
        if name.lower() not in _HOP_BY_HOP:
            upstream.putheader(name, value)
    upstream.putheader("Content-Length", str(len(request.body)))
    upstream.endheaders(request.body)
    response = upstream.getresponse()
    body = response.read()
    if response.will_close:
        upstream.close()
    lines = [f"HTTP/1.1 {response.status} {response.reason}"]
    lines += [f"{name}: {value}" for name, value in response.getheaders() if name.lower() not in _HOP_BY_HOP]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _reset(conn: socket.socket) -> None:
    """Close with an RST (SO_LINGER 0) rather than a FIN."""
    with contextlib.suppress(OSError):
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
