"""The bench's yardstick: a bare Starlette app over raw asyncpg pools, the same queries as the
service's image routes and nothing else (no ORM, no router, no middleware, no decoding).

It answers how fast Python can serve these rows on one uvicorn worker, so the service's
throughput can be read as a fraction of that. Two wirings, chosen by environment variables:

- ``BENCH_WRITE_DSN`` + ``BENCH_READ_DSNS`` (space-separated: multi-host DSNs hold commas):
  one pool per node, reads round-robin over the read pools (configuration **baseline**);
- the same variables holding libpq multi-host DSNs with ``target_session_attrs``
  (``read-write`` for the write pool, ``prefer-standby`` for the read pool): asyncpg picks the
  node when it opens a connection, with no router at all (configuration **multihost**). The
  service cannot take such URLs without changes in service/, so multihost lives here.

Run by uvicorn with one worker::

    BENCH_WRITE_DSN=... BENCH_READ_DSNS=... python -m uvicorn \
        loadtests.benchmarks.bare_app:app --workers 1 --http httptools --loop uvloop
"""

from __future__ import annotations

import hashlib
import io
import itertools
import os
import secrets
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from PIL import Image as PILImage
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

POOL_SIZE = 10  # the service's REPLIKIT_DB_POOL_SIZE default
METADATA = (
    "SELECT id, filename, content_type, file_size, width, height, sha256, created_at "
    "FROM images WHERE id = $1"
)
BLOB = "SELECT data FROM image_blobs WHERE image_id = $1"
INSERT_IMAGE = (
    "INSERT INTO images (id, filename, content_type, file_size, width, height, sha256, "
    "delete_token_hash, upload_ip) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL) "
    "RETURNING created_at"
)
INSERT_BLOB = "INSERT INTO image_blobs (image_id, data) VALUES ($1, $2)"


class Pools:
    """The write pool and the read pools, opened at startup from the environment."""

    def __init__(self) -> None:
        self.writer: Any = None
        self.readers: list[Any] = []
        self._turn = itertools.count()

    async def open(self) -> None:
        write_dsn = os.environ["BENCH_WRITE_DSN"]
        read_dsns = os.environ.get("BENCH_READ_DSNS", "").split()
        self.writer = await asyncpg.create_pool(write_dsn, min_size=1, max_size=POOL_SIZE)
        for dsn in read_dsns or [write_dsn]:
            self.readers.append(await asyncpg.create_pool(dsn, min_size=1, max_size=POOL_SIZE))

    async def close(self) -> None:
        for pool in [self.writer, *self.readers]:
            if pool is not None:
                await pool.close()

    def reader(self) -> Any:
        return self.readers[next(self._turn) % len(self.readers)]


pools = Pools()


def _image_id(request: Request) -> uuid.UUID | None:
    try:
        return uuid.UUID(request.path_params["image_id"])
    except ValueError:
        return None


def _public(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "filename": row["filename"],
        "content_type": row["content_type"],
        "file_size": row["file_size"],
        "width": row["width"],
        "height": row["height"],
        "sha256": row["sha256"],
        "url": f"/api/v1/images/{row['id']}/file",
        "created_at": row["created_at"].isoformat(),
    }


async def metadata(request: Request) -> Response:
    image_id = _image_id(request)
    row = None if image_id is None else await pools.reader().fetchrow(METADATA, image_id)
    if row is None:
        return JSONResponse({"detail": "not found"}, status_code=404)
    return JSONResponse(_public(row))


async def file(request: Request) -> Response:
    """The service's two queries (metadata, then bytes) on one connection, as its read
    session does."""
    image_id = _image_id(request)
    if image_id is None:
        return JSONResponse({"detail": "not found"}, status_code=404)
    async with pools.reader().acquire() as connection:
        row = await connection.fetchrow(METADATA, image_id)
        data = None if row is None else await connection.fetchval(BLOB, image_id)
    if row is None or data is None:
        return JSONResponse({"detail": "not found"}, status_code=404)
    return Response(data, media_type=row["content_type"], headers={"ETag": f'"{row["sha256"]}"'})


async def upload(request: Request) -> Response:
    """Store the multipart field ``file`` as is, in one transaction on the writer. Only the
    image's header is read (its size); the service's decode-and-clean step has no counterpart,
    so the mix's gap to the service includes Pillow's work."""
    async with request.form() as form:
        part = form.get("file")
        if part is None or isinstance(part, str):
            return JSONResponse({"detail": "field 'file' is required"}, status_code=422)
        data = await part.read()
        filename = part.filename or "upload"
        content_type = part.content_type or "application/octet-stream"
    try:
        with PILImage.open(io.BytesIO(data)) as image:
            width, height = image.size
    except (OSError, ValueError):
        return JSONResponse({"detail": "not an image"}, status_code=415)
    image_id = uuid.uuid4()
    token = secrets.token_urlsafe(32)
    async with pools.writer.acquire() as connection, connection.transaction():
        created_at = await connection.fetchval(
            INSERT_IMAGE,
            image_id,
            filename[:255],
            content_type[:64],
            len(data),
            width,
            height,
            hashlib.sha256(data).hexdigest(),
            hashlib.sha256(token.encode()).hexdigest(),
        )
        await connection.execute(INSERT_BLOB, image_id, data)
    return JSONResponse(
        {"id": str(image_id), "created_at": created_at.isoformat(), "delete_token": token},
        status_code=201,
    )


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    await pools.open()
    try:
        yield
    finally:
        await pools.close()


app = Starlette(
    routes=[
        Route("/health", health),
        Route("/api/v1/images/upload", upload, methods=["POST"]),
        Route("/api/v1/images/{image_id}", metadata),
        Route("/api/v1/images/{image_id}/file", file),
    ],
    lifespan=lifespan,
)
