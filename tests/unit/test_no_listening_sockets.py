"""shardwise opens no listening socket (docs/architecture.md, *Security*): nothing in src binds, listens or
serves. A change that adds a server must bind 127.0.0.1 unless configured, and update this test and the docs."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "shardwise"
#: Calls that open or run a listening socket.
SERVER_CALLS = frozenset({"bind", "listen", "create_server", "start_server", "serve_forever", "make_server"})
#: Modules whose purpose is serving.
SERVER_MODULES = frozenset({"socketserver", "http.server", "wsgiref.simple_server", "xmlrpc.server"})


def findings(source: str, path: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source, path)):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if name in SERVER_CALLS:
                found.append(f"{path}:{node.lineno}: calls {name}()")
        elif isinstance(node, ast.Import):
            found += [f"{path}:{node.lineno}: imports {a.name}" for a in node.names if a.name in SERVER_MODULES]
        elif isinstance(node, ast.ImportFrom) and node.module in SERVER_MODULES:
            found.append(f"{path}:{node.lineno}: imports from {node.module}")
    return found


def test_src_opens_no_listening_socket() -> None:
    files = sorted(SRC.rglob("*.py"))
    assert len(files) > 50
    found = [hit for file in files for hit in findings(file.read_text(), str(file.relative_to(SRC.parent)))]
    assert found == [], "a listening socket must bind 127.0.0.1 unless configured; see docs/architecture.md"


def test_the_scan_sees_servers() -> None:
    server = "import socketserver\nimport socket\ns = socket.socket()\ns.bind(('0.0.0.0', 80))\ns.listen()\n"
    assert len(findings(server, "x.py")) == 3
    assert findings("from http.server import HTTPServer\n", "y.py") == ["y.py:1: imports from http.server"]
