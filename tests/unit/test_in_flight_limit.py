"""The concurrency-limit middleware with a fake ASGI app: bounded queue, honest refusals."""

from __future__ import annotations

import asyncio
import json
from collections.abc import MutableMapping
from typing import Any

from service.api.limits import InFlightLimit
from service.routing.metrics import ServiceMetrics
from service.settings import Settings

URL = "postgresql+asyncpg://app:pw@127.0.0.1:7000/replikit"


class HeldApp:
    """Answers 200 once ``release`` is set."""

    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


async def call(
    limit: InFlightLimit, path: str = "/api/v1/images", method: str = "GET"
) -> dict[str, Any]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    scope = {"type": "http", "path": path, "method": method, "headers": []}
    await limit(scope, receive, send)
    start, body = sent[0], b"".join(m.get("body", b"") for m in sent[1:])
    return {"status": start["status"], "headers": dict(start["headers"]), "body": body}


async def started(
    limit: InFlightLimit, path: str = "/api/v1/images", method: str = "GET"
) -> asyncio.Task[Any]:
    """A request in its own task, given a moment to reach the limit (and maybe the app)."""
    task = asyncio.create_task(call(limit, path, method))
    await asyncio.sleep(0.01)
    return task


def make(app: HeldApp, **overrides: Any) -> InFlightLimit:
    """The middleware with an adaptive limit (turned on: it is off by default) that stays at
    ``limit`` for a few requests."""
    limit = overrides.pop("limit", 2)
    options = {
        "adaptive_concurrency": True,
        "concurrency_min_limit": limit,
        "concurrency_initial_limit": limit,
        **overrides,
    }
    settings = Settings(_env_file=None, primary_url=URL, **options)
    return InFlightLimit(app, settings=settings, metrics=ServiceMetrics())


async def test_past_the_limit_a_read_waits_briefly_then_gets_503_with_retry_after() -> None:
    app = HeldApp()
    limit = make(app, max_in_flight=10, queue_timeout=0.05)
    held = [asyncio.create_task(call(limit)) for _ in range(2)]
    await asyncio.sleep(0.01)
    refused = await call(limit)
    assert refused["status"] == 503
    assert refused["headers"][b"retry-after"] == b"1"
    error = json.loads(refused["body"])["error"]
    assert error["code"] == "SERVER_BUSY"
    assert error["details"]["reason"] == "queue_timeout"
    app.release.set()
    assert [r["status"] for r in await asyncio.gather(*held)] == [200, 200]
    assert (limit.in_flight, limit.reserved, len(limit.waiting)) == (0, 0, 0)


async def test_a_waiter_gets_the_slot_a_finished_request_frees() -> None:
    app = HeldApp()
    limit = make(app, limit=1, max_in_flight=10, queue_timeout=1.0)
    first = await started(limit)
    second = await started(limit)
    assert len(limit.waiting) == 1
    app.release.set()
    assert [(await first)["status"], (await second)["status"]] == [200, 200]
    assert (limit.in_flight, limit.reserved) == (0, 0)


async def test_the_queue_holds_no_more_than_the_limit() -> None:
    app = HeldApp()
    limit = make(app, limit=1, max_in_flight=10, queue_timeout=5.0)
    running = await started(limit)
    queued = await started(limit)
    refused = await call(limit)
    assert json.loads(refused["body"])["error"]["details"]["reason"] == "limit"
    app.release.set()
    await asyncio.gather(running, queued)


async def test_health_is_exempt_and_the_limit_is_published() -> None:
    app = HeldApp()
    limit = make(app, max_in_flight=1, adaptive_concurrency=False)
    running = await started(limit)
    health = await started(limit, "/health")
    assert not health.done()  # it reached the (held) app instead of being refused
    app.release.set()
    assert (await health)["status"] == 200
    await running
    text = limit.metrics.exposition().decode()
    assert "replikit_concurrency_limit 1.0" in text


async def test_the_static_cap_refuses_every_method_at_once() -> None:
    app = HeldApp()
    limit = make(app, max_in_flight=2, limit=2, queue_timeout=5.0)
    uploads = [await started(limit, method="POST") for _ in range(2)]
    refused = await call(limit)
    assert json.loads(refused["body"])["error"]["details"]["reason"] == "max_in_flight"
    app.release.set()
    await asyncio.gather(*uploads)


async def test_uploads_do_not_count_against_the_adaptive_limit() -> None:
    app = HeldApp()
    limit = make(app, limit=1, max_in_flight=10, queue_timeout=0)
    uploads = [await started(limit, method="POST") for _ in range(3)]
    read = await started(limit)
    assert (limit.in_flight, limit.governed) == (4, 1)
    app.release.set()
    assert [(await task)["status"] for task in [*uploads, read]] == [200] * 4


async def test_a_read_gives_its_slot_back_when_its_answer_starts() -> None:
    release_body = asyncio.Event()

    async def slow_body(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await release_body.wait()  # a client reading a large file slowly
        await send({"type": "http.response.body", "body": b"ok"})

    limit = make(HeldApp(), limit=1, max_in_flight=10, queue_timeout=0)
    limit.app = slow_body
    streaming = await started(limit)
    assert (limit.in_flight, limit.governed) == (1, 0)
    release_body.set()
    assert (await streaming)["status"] == 200
