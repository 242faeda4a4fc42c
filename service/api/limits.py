"""A bound on the requests one worker handles at once: shed early and honestly.

Two bounds, both answered with a 503 ``SERVER_BUSY``, ``Retry-After`` and a JSON error before
the request reads its body or asks for a database connection (queueing more work than the
worker can serve only turns a burst into timeouts for everybody, and a timeout looks like a
failed node to whoever meets it: service/routing/failures.py):

* the static cap ``REPLIKIT_MAX_IN_FLIGHT`` on every request, refused at once past it;
* under it, the adaptive limit (service/api/adaptive_limit.py, on by default; it shrinks
  only while the event loop runs late, service/routing/loop_lag.py) on reads (GET, HEAD)
  until their response starts: that is the part of a request this worker's CPU and the
  database serve. An upload's body and a slow client reading a large file take time the
  worker does not spend, so they neither count against the limit nor teach it their latency.
  A read past the limit waits at most ``REPLIKIT_QUEUE_TIMEOUT`` for a slot (at most as many
  wait as the limit admits), oldest first.

``/health`` and the operational endpoints are exempt, so a load balancer can tell "busy" from
"dead" and a scrape still sees what is shed. Written as a plain ASGI middleware (no
BaseHTTPMiddleware) so the refusal costs next to nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.adaptive_limit import GradientLimit
from service.api.errors import error_response
from service.routing.loop_lag import LoopLag
from service.routing.metrics import ServiceMetrics
from service.settings import Settings

EXEMPT_PATHS = frozenset({"/health", "/metrics", "/cluster"})
GOVERNED_METHODS = frozenset({"GET", "HEAD"})
MAX_CACHED_REFUSALS = 256


def limit_for(settings: Settings, loop_lag: LoopLag | None) -> GradientLimit | None:
    """The adaptive limit the settings ask for, or None for the static cap alone."""
    cap = settings.max_in_flight
    if not settings.adaptive_concurrency or cap <= 0:
        return None
    limit = GradientLimit(
        min_limit=min(settings.concurrency_min_limit, cap),
        max_limit=cap,
        initial_limit=settings.concurrency_initial_limit,
        tolerance=settings.concurrency_tolerance,
        recalibrate=settings.concurrency_recalibrate,
    )
    if loop_lag is not None:
        limit.clock = loop_lag.clock
        limit.saturated_since = loop_lag.busy_since
    return limit


class InFlightLimit:
    def __init__(
        self,
        app: ASGIApp,
        *,
        settings: Settings,
        metrics: ServiceMetrics,
        loop_lag: LoopLag | None = None,
    ) -> None:
        self.app = app
        self.cap = settings.max_in_flight
        self.queue_timeout = settings.queue_timeout
        self.adaptive = limit_for(settings, loop_lag)
        self.metrics = metrics
        self.in_flight = 0
        self.governed = 0  # reads admitted under the adaptive limit whose answer has not started
        self.reserved = 0  # slots handed to waiters that have not run yet
        self.waiting: deque[asyncio.Future[None]] = deque()
        self._refusals: dict[tuple[str, int], ASGIApp] = {}
        self._published = -1
        self._publish()

    @property
    def limit(self) -> int:
        return self.adaptive.current if self.adaptive is not None else self.cap

    def _publish(self) -> None:
        if self.limit != self._published:
            self._published = self.limit
            self.metrics.concurrency_limit.set(self.limit)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.cap <= 0 or scope["path"] in EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.cap:
            await self._shed("max_in_flight")(scope, receive, send)
            return
        if self.adaptive is None or scope["method"] not in GOVERNED_METHODS:
            self.in_flight += 1
            self.metrics.in_flight.inc()
            try:
                await self.app(scope, receive, send)
            finally:
                self.in_flight -= 1
                self.metrics.in_flight.dec()
            return
        await self._governed(self.adaptive, scope, receive, send)

    async def _governed(
        self, adaptive: GradientLimit, scope: Scope, receive: Receive, send: Send
    ) -> None:
        """A read under the adaptive limit: its slot is given back when its answer starts."""
        if self.governed + self.reserved >= self.limit or self.waiting:
            reason = await self._wait_for_slot()
            if reason is not None:
                await self._shed(reason)(scope, receive, send)
                return
        started = adaptive.clock()
        holding = True
        self.governed += 1
        self.in_flight += 1
        self.metrics.in_flight.inc()

        def give_back() -> None:
            nonlocal holding
            if holding:
                holding = False
                if adaptive.sample(started, self.governed):
                    self._publish()
                self.governed -= 1
                self._wake()

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                give_back()
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            give_back()
            self.in_flight -= 1
            self.metrics.in_flight.dec()

    async def _wait_for_slot(self) -> str | None:
        """None once a slot is handed over, else why the request is shed."""
        if self.queue_timeout <= 0 or len(self.waiting) >= self.limit:
            return "limit"
        slot: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiting.append(slot)
        handed = False
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(slot), self.queue_timeout)
            handed = slot.done()
        finally:
            if not slot.done():
                self.waiting.remove(slot)
                slot.cancel()
            elif not handed:  # given a slot, then cancelled: hand it on
                self.reserved -= 1
                self._wake()
        if handed:
            self.reserved -= 1
            return None
        return "queue_timeout"

    def _wake(self) -> None:
        """Hand free slots to the oldest waiters; a handed slot stays reserved until its
        request runs, so a newcomer cannot take it meanwhile."""
        while self.waiting and self.governed + self.reserved < self.limit:
            self.waiting.popleft().set_result(None)
            self.reserved += 1

    def _shed(self, reason: str) -> ASGIApp:
        """The refusal, built once per (reason, limit): under overload most answers are
        refusals, and every microsecond one costs is taken from the requests being served."""
        cause = "max_in_flight" if reason == "max_in_flight" else "concurrency_limit"
        self.metrics.unavailable.labels(reason=cause).inc()
        self.metrics.shed.labels(reason=reason).inc()
        key = (reason, self.limit)
        refusal = self._refusals.get(key)
        if refusal is None:
            if len(self._refusals) > MAX_CACHED_REFUSALS:
                self._refusals.clear()
            refusal = self._refusals[key] = error_response(
                503,
                "SERVER_BUSY",
                "This instance is handling as many requests as it can serve well; retry shortly.",
                {"limit": self.limit, "max_in_flight": self.cap, "reason": reason},
                headers={"Retry-After": "1"},
            )
        return refusal
