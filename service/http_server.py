"""uvicorn with connection hygiene: what ``replikit serve`` runs.

uvicorn bounds idle keep-alive connections and nothing else: a client may take forever to
send its request headers (slowloris), pause forever in the middle of a body, or stop reading a
large response, and there is no cap on open connections, so a few thousand trickling sockets
hold the process's file descriptors. :class:`GuardedHttpProtocol` adds, per connection:

* a **header deadline**: the request line and headers must arrive within
  ``REPLIKIT_HEADER_TIMEOUT`` seconds of the connection (or of the first byte of the next
  request on a keep-alive connection), and within ``REPLIKIT_MAX_HEADER_BYTES`` bytes;
* a **body deadline**: no gap between body chunks longer than ``REPLIKIT_BODY_IDLE_TIMEOUT``
  and the whole body within ``REPLIKIT_BODY_TIMEOUT``;
* a **send deadline**: a client that reads nothing of a response for
  ``REPLIKIT_SEND_TIMEOUT`` seconds while the server has bytes waiting is dropped;
* a **connection cap** (``REPLIKIT_MAX_CONNECTIONS`` per worker): past it, a new connection
  replaces the one that has waited longest for its request headers; only when every
  connection is busy with a request does the new one get a JSON 503 and is closed at once.

A request cut off by a deadline gets a 408 (or 431 for oversized headers) when nothing has
been answered yet, then the connection is closed. The protocol subclasses uvicorn's httptools
implementation; the limits travel on the uvicorn ``Config`` so spawned workers get them too.

The server can also listen on a second, *operations* socket (``--ops-port``): the app serves
``/cluster`` and ``/metrics`` there and not on the public port (see service/api/operations.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import resource
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState
from uvicorn.supervisors import Multiprocess

from service.routing.metrics import INSTANCE_ENV, MULTIPROCESS_ENV, new_instance_id
from service.settings import Settings

LIMITS_ATTRIBUTE = "replikit_limits"
FD_HEADROOM = 256  # descriptors beyond the connection cap: database pools, files, pipes
STARTUP_FAILURE = 3  # uvicorn's own exit status when the app does not start


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout: float
    max_header_bytes: int
    body_idle_timeout: float
    body_timeout: float
    send_timeout: float
    max_connections: int

    @classmethod
    def from_settings(cls, settings: Settings) -> ConnectionLimits:
        return cls(
            header_timeout=settings.header_timeout,
            max_header_bytes=settings.max_header_bytes,
            body_idle_timeout=settings.body_idle_timeout,
            body_timeout=settings.body_timeout,
            send_timeout=settings.send_timeout,
            max_connections=settings.max_connections,
        )


def _raw_response(status: int, reason: str, code: str, message: str, retry_after: int = 0) -> bytes:
    """A complete ``Connection: close`` response with the API's error body, written by the
    protocol itself when there is no request (yet) to hand to the app."""
    body = json.dumps({"error": {"code": code, "message": message, "details": {}}}).encode()
    head = [
        f"HTTP/1.1 {status} {reason}",
        "content-type: application/json",
        f"content-length: {len(body)}",
        "connection: close",
    ]
    if retry_after:
        head.append(f"retry-after: {retry_after}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


TOO_MANY_CONNECTIONS = _raw_response(
    503, "Service Unavailable", "TOO_MANY_CONNECTIONS",
    "This server holds as many connections as it accepts; retry shortly.", retry_after=1,
)  # fmt: skip
HEADER_TIMEOUT = _raw_response(
    408, "Request Timeout", "REQUEST_TIMEOUT", "The request headers did not arrive in time."
)
BODY_TIMEOUT = _raw_response(
    408, "Request Timeout", "REQUEST_TIMEOUT", "The request body did not arrive in time."
)
HEADERS_TOO_LARGE = _raw_response(
    431, "Request Header Fields Too Large", "HEADERS_TOO_LARGE", "The headers are too large."
)


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the deadlines and the cap described above."""

    def __init__(
        self,
        config: uvicorn.Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits: ConnectionLimits = getattr(config, LIMITS_ATTRIBUTE)
        self.read_timer: asyncio.TimerHandle | None = None
        self.send_timer: asyncio.TimerHandle | None = None
        self.awaiting_headers = True
        self.waiting_since = 0.0
        self.header_bytes = 0
        self.body_deadline = 0.0

    # timers ---------------------------------------------------------------------------------
    def _arm_read(self, seconds: float, expired: bytes) -> None:
        self._cancel_read()
        self.read_timer = self.loop.call_later(max(seconds, 0.0), self._read_expired, expired)

    def _cancel_read(self) -> None:
        if self.read_timer is not None:
            self.read_timer.cancel()
            self.read_timer = None

    def _read_expired(self, answer: bytes) -> None:
        self.read_timer = None
        self._refuse(answer)

    def _refuse(self, answer: bytes) -> None:
        """Answer (unless a response has begun) and close; the app sees a disconnect."""
        if self.transport.is_closing():
            return
        cycle = None if self.awaiting_headers else self.cycle
        if cycle is None or not cycle.response_started:
            self.transport.write(answer)
        if cycle is not None and not cycle.response_complete:
            # From now on the app's receive() says "disconnected" and its send() is a no-op.
            cycle.disconnected = True
            cycle.message_event.set()
        self.transport.close()

    def _send_expired(self) -> None:
        self.send_timer = None
        if not self.transport.is_closing():
            self.transport.abort()  # drop the unsent bytes: the client is not reading them

    # connection -----------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.waiting_since = self.loop.time()
        if len(self.connections) > self.limits.max_connections:
            victim = self._eviction_candidate()
            if victim is None:
                transport.write(TOO_MANY_CONNECTIONS)
                transport.close()
                return
            victim._refuse(HEADER_TIMEOUT)
        self._arm_read(self.limits.header_timeout, HEADER_TIMEOUT)

    def _eviction_candidate(self) -> GuardedHttpProtocol | None:
        """The connection that has waited longest for request headers (a trickler, or an idle
        keep-alive connection), which a new connection may replace at the cap.

        Without this, a few thousand trickling sockets would keep every new client out for
        as long as they are allowed to trickle; with it, the cap only refuses when every
        connection is busy with a request.
        """
        waiting = [
            connection
            for connection in self.connections
            if isinstance(connection, GuardedHttpProtocol)
            and connection is not self
            and connection.awaiting_headers
            and not connection.transport.is_closing()
        ]
        return min(waiting, key=lambda connection: connection.waiting_since, default=None)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_read()
        if self.send_timer is not None:
            self.send_timer.cancel()
            self.send_timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():
            return
        waiting_before = self.awaiting_headers
        if waiting_before and self.read_timer is None:
            # The first byte of the next request on a keep-alive connection.
            self._arm_read(self.limits.header_timeout, HEADER_TIMEOUT)
        super().data_received(data)
        if self.transport.is_closing():
            return
        if self.awaiting_headers:
            self.header_bytes += len(data)
            if self.header_bytes > self.limits.max_header_bytes:
                self._refuse(HEADERS_TOO_LARGE)
        elif not waiting_before and self.read_timer is not None:
            self._arm_body_timer()  # body bytes arrived: restart the idle clock

    def _arm_body_timer(self) -> None:
        remaining = self.body_deadline - time.monotonic()
        self._arm_read(min(self.limits.body_idle_timeout, remaining), BODY_TIMEOUT)

    # parser callbacks -----------------------------------------------------------------------
    def on_headers_complete(self) -> None:
        self.awaiting_headers = False
        self._cancel_read()
        super().on_headers_complete()
        self.body_deadline = time.monotonic() + self.limits.body_timeout
        self._arm_body_timer()  # cancelled by on_message_complete when there is no body

    def on_message_complete(self) -> None:
        self._cancel_read()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self.awaiting_headers = True
        self.waiting_since = self.loop.time()
        self.header_bytes = 0
        self._cancel_read()  # idle now: uvicorn's keep-alive timeout applies until data comes

    # flow control ---------------------------------------------------------------------------
    def pause_writing(self) -> None:
        super().pause_writing()
        if self.send_timer is None:
            self.send_timer = self.loop.call_later(self.limits.send_timeout, self._send_expired)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self.send_timer is not None:
            self.send_timer.cancel()
            self.send_timer = None


@dataclass(frozen=True)
class Listener:
    host: str
    port: int


def build_config(
    settings: Settings,
    *,
    public: Listener,
    workers: int,
    forwarded_allow_ips: str | None,
) -> uvicorn.Config:
    config = uvicorn.Config(
        "service.app:create_app",
        factory=True,
        host=public.host,
        port=public.port,
        workers=workers,
        http=GuardedHttpProtocol,
        proxy_headers=forwarded_allow_ips is not None,
        forwarded_allow_ips=forwarded_allow_ips,
        timeout_keep_alive=settings.keepalive_timeout,
        access_log=False,
    )
    setattr(config, LIMITS_ATTRIBUTE, ConnectionLimits.from_settings(settings))
    return config


def bind_sockets(config: uvicorn.Config, ops: Listener | None) -> list[socket.socket]:
    """The public socket, and the operations socket when ``ops`` is given.

    The operations socket is bound through a second ``uvicorn.Config``, which must not touch
    logging: constructing a Config configures logging, and one with uvicorn's defaults put the
    access log's handler back, so every request was logged (a formatted line and a write each,
    ~3 % of an upload's samples in the worker) although ``build_config`` turns the log off.
    """
    sockets = [config.bind_socket()]
    if ops is not None:
        ops_config = uvicorn.Config(
            config.app, host=ops.host, port=ops.port, log_config=None, access_log=False
        )
        sockets.append(ops_config.bind_socket())
    return sockets


def _allow_descriptors(wanted: int) -> None:
    """Raise the soft descriptor limit towards the connection cap (never above the hard one),
    so the cap, not EMFILE, decides which connections are refused."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        if target < wanted:
            logging.getLogger("replikit.server").warning(
                "event=descriptor_limit limit=%d max_connections_needs=%d", target, wanted
            )


def default_workers() -> int:
    """One worker per CPU this process may run on: each worker is one event loop, so more
    would only queue behind each other; fewer would leave a core idle under load."""
    return max(1, len(os.sched_getaffinity(0)))


@contextlib.contextmanager
def shared_metrics() -> Iterator[None]:
    """prometheus-client's multiprocess mode for the workers about to start (they inherit the
    environment): a fresh directory for their value files, removed afterwards, and one
    instance id for all of them (service/routing/metrics.py)."""
    directory = tempfile.mkdtemp(prefix="replikit-metrics-")
    saved = {name: os.environ.get(name) for name in (MULTIPROCESS_ENV, INSTANCE_ENV)}
    os.environ[MULTIPROCESS_ENV] = directory
    os.environ[INSTANCE_ENV] = saved[INSTANCE_ENV] or new_instance_id()
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        shutil.rmtree(directory, ignore_errors=True)


def run_server(
    settings: Settings,
    *,
    public: Listener,
    ops: Listener | None,
    workers: int,
    forwarded_allow_ips: str | None,
) -> None:
    """Serve on the public socket (and the operations socket) with ``workers`` processes."""
    config = build_config(
        settings, public=public, workers=workers, forwarded_allow_ips=forwarded_allow_ips
    )
    _allow_descriptors(settings.max_connections + FD_HEADROOM)
    sockets = bind_sockets(config, ops)
    server = uvicorn.Server(config)
    try:
        if workers > 1:
            with shared_metrics():
                Multiprocess(config, sockets=sockets).run()
        else:
            server.run(sockets=sockets)
    except KeyboardInterrupt:
        pass
    if workers == 1 and not server.started:
        raise SystemExit(STARTUP_FAILURE)
