"""The fault proxy: it forwards requests unchanged, and each fault does what it says, counted; the throttling
and 5xx answers are parsed by botocore into the services' error codes and retried (moto behind the proxy)."""

from __future__ import annotations

import http.client
import http.server
import socket
import threading
import time
from collections.abc import Callable, Iterator

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from support.faultproxy import FaultProxy, Faults
from support.standins import Server

Connect = Callable[[int], http.client.HTTPConnection]


class _Echo(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        reply = b"echo:" + body
        self.send_response(200)
        self.send_header("Content-Length", str(len(reply)))
        self.send_header("X-Target", self.path)
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def upstream() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def proxy(upstream: int, connect: Connect) -> Iterator[FaultProxy]:
    with FaultProxy("dynamodb", upstream, seed=1) as running:
        yield running


@pytest.fixture
def connect() -> Iterator[Callable[[int], http.client.HTTPConnection]]:
    """Opens client connections to a port; closes them after the test."""
    opened: list[http.client.HTTPConnection] = []

    def open_one(port: int) -> http.client.HTTPConnection:
        opened.append(http.client.HTTPConnection("127.0.0.1", port, timeout=30))
        return opened[-1]

    yield open_one
    for conn in opened:
        conn.close()


def _post(conn: http.client.HTTPConnection, body: bytes = b"hello") -> http.client.HTTPResponse:
    conn.request("POST", "/path?q=1", body=body, headers={"Content-Type": "application/x-amz-json-1.0"})
    return conn.getresponse()


def test_requests_are_forwarded_unchanged_on_one_kept_alive_connection(proxy: FaultProxy, connect: Connect) -> None:
    conn = connect(proxy.port)
    for n in range(3):
        response = _post(conn, f"body-{n}".encode())
        assert (response.status, response.read(), response.getheader("X-Target")) == (
            200,
            f"echo:body-{n}".encode(),
            "/path?q=1",
        )
    assert proxy.counts == {"forwarded": 3}
    assert proxy.endpoint_url == f"http://127.0.0.1:{proxy.port}"


def test_throttling_and_5xx_answers_carry_the_services_json_error(upstream: int, connect: Connect) -> None:
    with FaultProxy("kinesis", upstream, seed=2) as proxy:
        conn = connect(proxy.port)
        proxy.set(throttle_rate=1.0)
        response = _post(conn)
        assert response.status == 400
        assert b'"__type": "ProvisionedThroughputExceededException"' in response.read()
        proxy.set(Faults(error_rate=1.0))
        statuses = []
        for _ in range(2):
            response = _post(conn)
            statuses.append(response.status)
            response.read()
        assert sorted(statuses) == [500, 503]
        assert proxy.counts == {"throttled": 1, "error_500": 1, "error_503": 1}


def test_a_reset_closes_the_connection_without_an_answer(proxy: FaultProxy, connect: Connect) -> None:
    proxy.set(reset_rate=1.0)
    conn = connect(proxy.port)
    with pytest.raises((ConnectionError, http.client.RemoteDisconnected)):
        _post(conn)
    assert proxy.counts == {"reset": 1}


def test_a_black_hole_holds_requests_unanswered_until_healed_then_drops_them(
    proxy: FaultProxy, connect: Connect
) -> None:
    proxy.set(blackhole=True)
    held = socket.create_connection(("127.0.0.1", proxy.port), timeout=60)
    held.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
    deadline = time.monotonic() + 30
    while proxy.counts["blackholed"] < 1:
        assert time.monotonic() < deadline, "the proxy never saw the request"
        time.sleep(0.01)
    proxy.heal()
    assert held.recv(1024) == b"", "a request held by the black hole was answered"
    held.close()
    conn = connect(proxy.port)
    assert _post(conn).read() == b"echo:hello"
    assert proxy.counts == {"blackholed": 1, "forwarded": 1}


def test_a_delay_holds_each_request_before_forwarding_it(proxy: FaultProxy, connect: Connect) -> None:
    proxy.set(delay_ms=200)
    conn = connect(proxy.port)
    started = time.monotonic()
    assert _post(conn).read() == b"echo:hello"
    assert time.monotonic() - started >= 0.2
    assert proxy.counts == {"delayed": 1, "forwarded": 1}


def test_rates_are_shares_of_requests(proxy: FaultProxy, connect: Connect) -> None:
    proxy.set(throttle_rate=0.25, error_rate=0.25)
    conn = connect(proxy.port)
    for _ in range(400):
        _post(conn).read()
    counts = proxy.counts
    assert sum(counts.values()) == 400
    assert 60 <= counts["throttled"] <= 140
    assert 60 <= counts["error_500"] + counts["error_503"] <= 140


@pytest.mark.parametrize(
    "faults",
    [
        {"throttle_rate": 1.5},
        {"error_rate": -0.1},
        {"reset_rate": 0.6, "throttle_rate": 0.6},
        {"delay_ms": -1},
    ],
)
def test_impossible_faults_are_refused(faults: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must"):
        Faults(**faults)  # type: ignore[arg-type]


# -- what botocore makes of the answers (moto behind the proxy) -----------------------------------------------


@pytest.mark.aws
@pytest.mark.parametrize(
    ("service", "faults", "code"),
    [
        ("dynamodb", Faults(throttle_rate=1.0), "ThrottlingException"),
        ("dynamodb", Faults(error_rate=1.0), "ServiceUnavailable"),
        ("kinesis", Faults(throttle_rate=1.0), "ProvisionedThroughputExceededException"),
        ("kinesis", Faults(error_rate=1.0), "ServiceUnavailable"),
    ],
)
def test_botocore_parses_the_injected_errors_and_retries_them(
    moto_server: Server, service: str, faults: Faults, code: str
) -> None:
    with FaultProxy(service, moto_server.port, seed=3) as proxy:  # type: ignore[arg-type]
        proxy.set(faults)
        config = Config(retries={"mode": "standard", "total_max_attempts": 3}, connect_timeout=5, read_timeout=30)
        client = boto3.client(service, endpoint_url=proxy.endpoint_url, region_name="us-east-1", config=config)  # type: ignore[call-overload]
        call = client.list_tables if service == "dynamodb" else client.list_streams
        with pytest.raises(ClientError) as raised:
            call()
        # Three attempts: botocore retried the answer as a transient error (500 then 503 then 500 for 5xx).
        assert raised.value.response["Error"]["Code"] in (code, "InternalServerError", "InternalFailure")
        assert raised.value.response["ResponseMetadata"]["RetryAttempts"] == 2
        assert sum(proxy.counts.values()) == 3
        proxy.heal()
        call()
        assert proxy.counts["forwarded"] == 1
