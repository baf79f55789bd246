"""moto's standalone server with one request at a time through its backends.

moto's own ``moto_server`` serves each request on its own thread and its DynamoDB backend checks a condition and
then writes without a lock, so two racing conditional writes can both succeed — something DynamoDB never lets
happen, and which the contract suite's race tests (two takers, renew against steal) rightly fail on. Here the
application runs behind one lock (connections are still served by threads, so a slow client holds nothing), which
gives every request DynamoDB's per-item atomicity and more. Usage: ``python moto_serial.py -H 127.0.0.1 -p PORT``.
"""

from __future__ import annotations

import argparse
import threading
from collections.abc import Callable, Iterable
from typing import Any

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import run_simple

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def serialized(app: WsgiApp) -> WsgiApp:
    """``app`` with each request, body included, handled under one lock."""
    lock = threading.Lock()

    def handle(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        with lock:
            body = app(environ, start_response)
            try:
                return [b"".join(body)]
            finally:
                close = getattr(body, "close", None)
                if close is not None:
                    close()

    return handle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, required=True)
    args = parser.parse_args()
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(args.host, args.port, serialized(app), threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
