"""Per-response work every route shares: the serving node's name, the consistency token
(after a write, and after a ``monotonic`` read), ``nosniff`` and the request metrics.

A plain ASGI middleware that edits the ``http.response.start`` message as it passes, rather
than ``@app.middleware("http")``: Starlette's BaseHTTPMiddleware runs the route in a task of
its own and copies the response through a stream, which cost about 8 % of a metadata read.
"""

from __future__ import annotations

import time
from http.cookies import SimpleCookie
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.requests import cookie_parser
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.routing.consistency import LSN_COOKIE, LSN_HEADER, newest_token
from service.routing.lsn import format_lsn
from service.routing.metrics import ServiceMetrics
from service.routing.router import Router

NODE_HEADER = "X-Replikit-Node"


def _lsn_cookie(token: str) -> str:
    """The Set-Cookie value Starlette's ``set_cookie`` would write (httponly, lax, path /)."""
    cookie: SimpleCookie = SimpleCookie()
    cookie[LSN_COOKIE] = token
    cookie[LSN_COOKIE]["path"] = "/"
    cookie[LSN_COOKIE]["httponly"] = True
    cookie[LSN_COOKIE]["samesite"] = "lax"
    return cookie.output(header="").strip()


def _request_cookie(scope: Scope, name: str) -> str | None:
    for key, value in scope["headers"]:
        if key == b"cookie":
            return cookie_parser(value.decode("latin-1")).get(name)
    return None


class RoutingHeaders:
    def __init__(self, app: ASGIApp, *, router: Router, metrics: ServiceMetrics) -> None:
        self.app = app
        self.router = router
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableHeaders(scope=message)
                state: dict[str, Any] = scope.get("state") or {}
                routing = state.get("routing")
                if routing is not None and routing.served_by:
                    headers[NODE_HEADER] = routing.served_by
                written = headers.get(LSN_HEADER)
                if written:
                    self.router.note_write_lsn(written)
                    token = newest_token(written, _request_cookie(scope, LSN_COOKIE))
                    if token:
                        headers.append("set-cookie", _lsn_cookie(token))
                elif routing is not None and (seen := routing.read_token) is not None:
                    # A monotonic read: hand back what its snapshot could see (404s too).
                    token = format_lsn(seen)
                    headers[LSN_HEADER] = token
                    if _request_cookie(scope, LSN_COOKIE) != token:
                        headers.append("set-cookie", _lsn_cookie(token))
                if "x-content-type-options" not in headers:
                    headers["X-Content-Type-Options"] = "nosniff"
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            method = scope["method"]
            self.metrics.requests.labels(method, template, str(status)).inc()
            self.metrics.latency.labels(method, template).observe(time.perf_counter() - started)
