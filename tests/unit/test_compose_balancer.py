"""HAProxy's stats CSV read as the benches and compose tests read it, from a real HTTP server."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from replication.compose.balancer import app_servers, app_servers_up

STATS = (
    "# pxname,svname,status,stot,\n"
    "public,FRONTEND,OPEN,40,\n"
    "app,app1,UP,12,\n"
    "app,app2,DOWN,3,\n"
    "app,app3,UP,0,\n"
    "app,BACKEND,UP,15,\n"
    "stats,BACKEND,UP,1,\n"
)


class _Stats(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        assert self.path == "/haproxy;csv"
        body = STATS.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the test's output is the assertion."""


@pytest.fixture
def admin_port() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Stats)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_only_the_app_servers_are_listed_without_the_backend_row(admin_port: int) -> None:
    rows = app_servers(admin_port)
    assert [(r["svname"], r["status"], r["stot"]) for r in rows] == [
        ("app1", "UP", "12"),
        ("app2", "DOWN", "3"),
        ("app3", "UP", "0"),
    ]


def test_the_instances_up_are_counted(admin_port: int) -> None:
    assert app_servers_up(admin_port) == 2
