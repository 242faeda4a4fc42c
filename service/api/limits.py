"""A bound on the requests one worker handles at once.

Past ``REPLIKIT_MAX_IN_FLIGHT`` a request is answered at once with a 503 ``SERVER_BUSY`` and
``Retry-After``, before it reads its body or asks for a database connection: queueing more
work than the pools can serve only turns a burst into timeouts for everybody. ``/health``
is exempt so a load balancer can tell "busy" from "dead". Written as a plain ASGI middleware
(no BaseHTTPMiddleware) so the refusal costs next to nothing.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from service.api.errors import error_response
from service.routing.metrics import ServiceMetrics

EXEMPT_PATHS = frozenset({"/health"})


class InFlightLimit:
    def __init__(self, app: ASGIApp, *, limit: int, metrics: ServiceMetrics) -> None:
        self.app = app
        self.limit = limit
        self.metrics = metrics
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.limit <= 0 or scope["path"] in EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.limit:
            self.metrics.unavailable.labels(reason="max_in_flight").inc()
            busy = error_response(
                503,
                "SERVER_BUSY",
                "This instance is handling as many requests as it accepts; retry shortly.",
                {"max_in_flight": self.limit},
                headers={"Retry-After": "1"},
            )
            await busy(scope, receive, send)
            return
        self.in_flight += 1
        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
            self.metrics.in_flight.dec()
