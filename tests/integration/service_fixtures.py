"""Service-side fixtures: a migrated database on the shared cluster and in-process apps."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from sqlalchemy import event

from replication.cluster import Cluster
from replication.serving.urls import service_urls
from service import migrate
from service.app import create_app
from service.routing.nodes import Node
from service.settings import Settings


@pytest.fixture(scope="session")
def migrated(cluster: Cluster) -> Cluster:
    """The shared cluster with the schema at head, migrated by the owner role as in production
    (the app role may not create tables)."""
    migrate.upgrade(cluster.state.owner_url(cluster.state.primary_node))
    return cluster


def service_settings(cluster: Cluster, *, replicas: bool = False, **overrides: Any) -> Settings:
    """Settings for the cluster; reads go to the primary unless ``replicas`` (deterministic).
    On a TLS cluster every connection checks the nodes' certificates (verify-full)."""
    state = cluster.state
    values: dict[str, Any] = {
        "primary_url": state.app_url(state.primary_node),
        "replica_urls": [state.app_url(n) for n in state.replicas] if replicas else [],
        "db_ssl_root_cert": service_urls(state).get("REPLIKIT_DB_SSL_ROOT_CERT"),
        "upload_rate_limit": 0,
        # In-process apps have no operations listener; tests read /cluster and /metrics
        # directly (the gate itself is tested against a real server).
        "ops_public": True,
        "_env_file": None,
    }
    values.update(overrides)
    return Settings(**values)


@asynccontextmanager
async def service_client(
    settings: Settings, *, client_ip: str = "127.0.0.1"
) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process app instance, started (monitor running) and stopped around the client."""
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app, client=(client_ip, 40000))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://replikit.test") as client,
    ):
        yield client


def image_bytes(fmt: str, size: tuple[int, int] = (64, 48), **save: Any) -> bytes:
    """A small real image in ``fmt``, made in memory."""
    buffer = io.BytesIO()
    if fmt == "GIF":
        frames = [Image.new("P", size, color) for color in (1, 2, 3)]
        frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=50)
    else:
        mode = "RGB" if fmt in {"JPEG", "WEBP"} else "RGBA"
        Image.new(mode, size, (200, 30, 30)).save(buffer, fmt, **save)
    return buffer.getvalue()


async def upload(
    client: httpx.AsyncClient,
    data: bytes,
    *,
    filename: str = "picture.bin",
    content_type: str = "application/octet-stream",
) -> httpx.Response:
    return await client.post(
        "/api/v1/images/upload", files={"file": (filename, data, content_type)}
    )


def blob_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def count_socket_writes(nodes: list[Node]) -> list[bytes]:
    """Record every write the pooled connections of ``nodes`` make to their sockets: those of
    their asyncpg pools (reads, the upload's statements) and of their SQLAlchemy engines
    (transactions).

    asyncpg sends each round trip's messages (Bind + Execute + Sync of a prepared statement, or
    a Query such as BEGIN) in one write, so the list counts round trips; its first byte says
    which message led. Clear it between the requests you compare.
    """
    sent: list[bytes] = []

    def wrap(connection: Any) -> None:
        transport = connection._transport
        if not getattr(transport, "replikit_counted", False):
            write = transport.write

            def counted(data: bytes) -> None:
                sent.append(bytes(data))
                write(data)

            transport.write = counted
            transport.replikit_counted = True

    for node in nodes:
        for holder in node.driver_pool._holders:  # each calls its setup on every acquire
            setup = holder._setup

            async def counting_setup(proxy: Any, setup: Any = setup) -> None:
                wrap(proxy._con)
                if setup is not None:
                    await setup(proxy)

            holder._setup = counting_setup
        event.listen(
            node.engine.sync_engine,
            "checkout",
            lambda dbapi_connection, *_: wrap(dbapi_connection._connection),
        )
    return sent
