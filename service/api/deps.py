"""FastAPI dependencies, as ``Annotated`` aliases the routes declare.

``WriteSession`` is a session on the current primary; ``read_connection`` gives the asyncpg
connection (autocommit) on whichever node the router picks for this request's consistency.
Routes never pick nodes themselves. A route that must read the request body first (upload) opens its
write sessions itself with ``Router.write_session``, so a slow uploader holds no connection
while it trickles.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from service.db.driver_pools import DriverConnection
from service.images.storage import BlobStore
from service.routing.consistency import RequestRouting, request_routing
from service.routing.metrics import ServiceMetrics
from service.routing.router import Router
from service.settings import Settings


# async def on purpose: FastAPI runs a plain ``def`` dependency in a worker thread, and the
# hand-off to and from the thread pool cost more than everything else these do together.
async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_router(request: Request) -> Router:
    router: Router = request.app.state.router
    return router


async def get_metrics(request: Request) -> ServiceMetrics:
    metrics: ServiceMetrics = request.app.state.metrics
    return metrics


async def get_blob_store(request: Request) -> BlobStore:
    store: BlobStore = request.app.state.blob_store
    return store


def get_request_routing(request: Request) -> RequestRouting:
    """The request's consistency and token (parsed once, kept on ``request.state``)."""
    settings: Settings = request.app.state.settings
    return request_routing(request, settings.read_consistency)


def read_observer(request: Request) -> RequestRouting | None:
    """The request's routing state when its reads must report the position they could see
    (``monotonic``), for the response's token; None otherwise (no extra column)."""
    routing = get_request_routing(request)
    return routing if routing.consistency.reports_reads else None


async def write_session(request: Request) -> AsyncIterator[AsyncSession]:
    router: Router = request.app.state.router
    async with router.write_session(get_request_routing(request)) as session:
        yield session


def read_connection(request: Request) -> AbstractAsyncContextManager[DriverConnection]:
    """The connection for this request's reads, for the route to open with ``async with``:
    as a dependency it cost FastAPI's solving and an exit stack per request, more CPU than the
    read it served."""
    router: Router = request.app.state.router
    return router.read_connection(get_request_routing(request))


SettingsDep = Annotated[Settings, Depends(get_settings)]
RouterDep = Annotated[Router, Depends(get_router)]
MetricsDep = Annotated[ServiceMetrics, Depends(get_metrics)]
BlobStoreDep = Annotated[BlobStore, Depends(get_blob_store)]
# scope="function": the session (and its pooled connection) is closed when the route returns,
# before the response is sent, so a client that reads slowly holds no database connection.
WriteSession = Annotated[AsyncSession, Depends(write_session, scope="function")]
