"""Image operations, written against a session and a blob store handed in by the caller.

Keyword-only arguments keep call sites readable; nothing here knows about HTTP.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, bindparam, delete, select, true, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from service.db.driver_pools import DriverConnection
from service.db.driver_sql import for_driver
from service.db.models import Image, ImageBlob, ImageRecord
from service.db.snapshot import (
    SNAPSHOT_COLUMN,
    SNAPSHOT_POSITION,
    PositionObserver,
    report_position,
)
from service.errors import ImageNotFoundError, InvalidDeleteTokenError, NonCanonicalIdError
from service.images.pagination import Cursor
from service.images.storage import BlobStore
from service.images.validation import ImageFacts

logger = logging.getLogger("replikit.service")


@dataclass(frozen=True, slots=True)
class StoredImage:
    """An image's public columns (an :class:`ImageRecord`): just inserted, or read. The field
    order is the order the read statements select them in."""

    id: uuid.UUID
    filename: str
    content_type: str
    file_size: int
    width: int
    height: int
    sha256: str
    created_at: datetime


@dataclass(frozen=True)
class CreatedImage:
    image: StoredImage
    delete_token: str


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


ECHO_LIMIT = 64  # characters of a client's id an error repeats


def parse_image_id(raw: str) -> uuid.UUID:
    """A malformed id is simply an id that names no image: 404, never 422 or 500.

    Only the canonical spelling (lowercase, hyphenated) names an image; other spellings that
    parse to the same UUID (uppercase, braces, ``urn:uuid:``, no hyphens) raise
    :class:`NonCanonicalIdError`, which the routes turn into a redirect, so one image has one
    URL and one cache entry.
    """
    try:
        parsed = uuid.UUID(raw)
    except ValueError:
        raise ImageNotFoundError(
            "No image has this id.", details={"id": raw[:ECHO_LIMIT]}
        ) from None
    if str(parsed) != raw:
        raise NonCanonicalIdError(str(parsed))
    return parsed


async def create_image(
    *,
    connection: DriverConnection,
    store: BlobStore,
    facts: ImageFacts,
    data: bytes,
    filename: str,
    upload_ip: str | None,
) -> CreatedImage:
    """Insert metadata and bytes atomically (the store's one statement or its locked pair, on
    the primary's autocommit ``connection``); on failure, nothing stays behind."""
    token = secrets.token_urlsafe(32)
    image_id = uuid.uuid4()
    values = {
        "id": image_id,
        "filename": filename,
        "content_type": facts.content_type,
        "file_size": facts.file_size,
        "width": facts.width,
        "height": facts.height,
        "sha256": facts.sha256,
        "delete_token_hash": hash_token(token),
        "upload_ip": upload_ip,
    }
    try:
        created_at = await store.create(connection=connection, values=values, data=data)
    except BaseException:
        try:
            await store.release(sha256=facts.sha256)
        except Exception as cleanup_error:  # keep the original error; say what may be left
            logger.warning(
                "event=blob_cleanup_failed sha256=%s error=%s",
                facts.sha256,
                type(cleanup_error).__name__,
            )
        raise
    image = StoredImage(
        id=image_id,
        filename=filename,
        content_type=facts.content_type,
        file_size=facts.file_size,
        width=facts.width,
        height=facts.height,
        sha256=facts.sha256,
        created_at=created_at,
    )
    return CreatedImage(image=image, delete_token=token)


# Reads select the public columns with statements written in Core and compiled once for the
# driver (service/db/driver_sql.py), run on plain asyncpg connections: no ORM (its identity
# map cost a third of a read), no statement built per request (as much as executing it), no
# SQLAlchemy execution or result machinery (half of what was left).
_IMAGES = Image.__table__.c
IMAGE_COLUMNS = (
    _IMAGES.id,
    _IMAGES.filename,
    _IMAGES.content_type,
    _IMAGES.file_size,
    _IMAGES.width,
    _IMAGES.height,
    _IMAGES.sha256,
    _IMAGES.created_at,
)
SNAPSHOT = SNAPSHOT_POSITION
GET_IMAGE = for_driver(select(*IMAGE_COLUMNS).where(_IMAGES.id == bindparam("image_id")))
# The same, with the position the read could see (service/db/snapshot.py) as the last column:
# a LEFT JOIN from the position's one row, so a 404 reports it too.
GET_IMAGE_SEEN = for_driver(
    select(*IMAGE_COLUMNS, SNAPSHOT.c[SNAPSHOT_COLUMN]).select_from(
        SNAPSHOT.outerjoin(Image.__table__, _IMAGES.id == bindparam("image_id"))
    )
)
IMAGE_FIELDS = len(IMAGE_COLUMNS)
# A file's columns and bytes in one statement, when the bytes live in the database (the
# default): one round trip for a file, where metadata and then bytes took two.
GET_IMAGE_WITH_BYTES = for_driver(
    select(*IMAGE_COLUMNS, ImageBlob.data)
    .select_from(Image.__table__.outerjoin(ImageBlob, ImageBlob.image_id == _IMAGES.id))
    .where(_IMAGES.id == bindparam("image_id"))
)


def _page(after_cursor: bool) -> Select[Any]:
    query = select(*IMAGE_COLUMNS).order_by(_IMAGES.created_at.desc(), _IMAGES.id.desc())
    if after_cursor:
        query = query.where(
            tuple_(_IMAGES.created_at, _IMAGES.id)
            < tuple_(
                bindparam("cursor_created_at", type_=_IMAGES.created_at.type),
                bindparam("cursor_id", type_=_IMAGES.id.type),
            )
        )
    return query.limit(bindparam("rows"))


def _page_seen(page_query: Select[Any]) -> Select[Any]:
    """The page as a LATERAL join from the position's one row: an empty page reports it too."""
    page = page_query.lateral("page")
    return (
        select(*page.c, SNAPSHOT.c[SNAPSHOT_COLUMN])
        .select_from(SNAPSHOT.outerjoin(page, true()))
        .order_by(page.c.created_at.desc(), page.c.id.desc())
    )


# Indexed by (after a cursor, with the position).
LIST_PAGE = {
    (after, seen): for_driver(_page_seen(_page(after)) if seen else _page(after))
    for after in (False, True)
    for seen in (False, True)
}


async def get_image(
    *,
    connection: DriverConnection,
    image_id: uuid.UUID,
    observer: PositionObserver | None = None,
) -> StoredImage:
    """The image's columns; with ``observer``, in the same statement the position the read's
    snapshot could see (service/db/snapshot.py), reported also when the image is absent."""
    if observer is None:
        row = await connection.fetchrow(GET_IMAGE.sql, image_id)
    else:
        row = await connection.fetchrow(GET_IMAGE_SEEN.sql, image_id)
        report_position(row[IMAGE_FIELDS] if row is not None else None, observer)
    if row is None or row[0] is None:
        raise ImageNotFoundError(f"No image has the id {image_id}.")
    return StoredImage(*row[:IMAGE_FIELDS])


async def list_images(
    *,
    connection: DriverConnection,
    limit: int,
    cursor: Cursor | None,
    observer: PositionObserver | None = None,
) -> tuple[list[StoredImage], Cursor | None]:
    """Newest first, keyset-paginated; with ``observer``, the page also reports the position
    its snapshot could see."""
    parameters: dict[str, Any] = {"rows": limit + 1}
    if cursor is not None:
        parameters.update(cursor_created_at=cursor.created_at, cursor_id=cursor.id)
    query = LIST_PAGE[(cursor is not None, observer is not None)]
    result_rows = await connection.fetch(query.sql, *query.arguments(parameters))
    if observer is not None:
        report_position(result_rows[0][IMAGE_FIELDS] if result_rows else None, observer)
    rows = [StoredImage(*row[:IMAGE_FIELDS]) for row in result_rows if row[0] is not None]
    page_rows = rows[:limit]
    more = len(rows) > limit
    next_cursor = Cursor(created_at=page_rows[-1].created_at, id=page_rows[-1].id) if more else None
    return page_rows, next_cursor


async def read_image_bytes(
    *, connection: DriverConnection, store: BlobStore, image: ImageRecord
) -> bytes:
    return await store.get(connection=connection, image=image)


async def get_image_with_bytes(
    *, connection: DriverConnection, store: BlobStore, image_id: uuid.UUID
) -> tuple[StoredImage, bytes]:
    """An image's columns and its bytes: one statement when the store keeps the bytes in the
    database, else the columns and then the store's read."""
    if not store.bytes_in_database:
        image = await get_image(connection=connection, image_id=image_id)
        return image, await store.get(connection=connection, image=image)
    row = await connection.fetchrow(GET_IMAGE_WITH_BYTES.sql, image_id)
    if row is None:
        raise ImageNotFoundError(f"No image has the id {image_id}.")
    data: bytes | None = row[IMAGE_FIELDS]
    if data is None:
        raise ImageNotFoundError(f"Image {image_id} has no stored bytes.")
    return StoredImage(*row[:IMAGE_FIELDS]), data


async def delete_image(
    *, session: AsyncSession, store: BlobStore, image_id: uuid.UUID, token: str
) -> None:
    """Check the token in constant time, then delete metadata and bytes together."""
    async with session.begin():
        image = await session.get(Image, image_id, with_for_update=True)
        if image is None:
            raise ImageNotFoundError(f"No image has the id {image_id}.")
        if not hmac.compare_digest(hash_token(token), image.delete_token_hash):
            raise InvalidDeleteTokenError("The delete token does not match this image.")
        await session.execute(delete(Image).where(Image.id == image_id))
    await store.release(sha256=image.sha256)
