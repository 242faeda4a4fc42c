"""create_app(): wiring only. Every instance is stateless; all state is in PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response

from service.api.errors import install_error_handlers
from service.api.routes import health, images
from service.db.engines import Database
from service.images.storage import BlobStore, FilesystemBlobStore, PostgresBlobStore
from service.settings import BlobBackend, Settings

NODE_HEADER = "X-Replikit-Node"


def make_blob_store(settings: Settings, database: Database) -> BlobStore:
    if settings.blob_backend is BlobBackend.FILESYSTEM:
        return FilesystemBlobStore(settings.blob_dir, database.primary.sessions)
    return PostgresBlobStore()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()  # filled from the environment
    database = Database.from_settings(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await database.dispose()

    app = FastAPI(
        title="replikit image service",
        version="0.1.0",
        description="Image hosting over a replicated PostgreSQL cluster.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.database = database
    app.state.blob_store = make_blob_store(settings, database)
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(images.router)

    @app.middleware("http")
    async def name_serving_node(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        served_by = getattr(request.state, "served_by", None)
        if served_by:
            response.headers[NODE_HEADER] = served_by
        return response

    return app
