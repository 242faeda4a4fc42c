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
from typing import cast

from sqlalchemy import bindparam, delete, select, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from service.db.models import Image, ImageRecord
from service.errors import ImageNotFoundError, InvalidDeleteTokenError, NonCanonicalIdError
from service.images.pagination import Cursor
from service.images.storage import BlobStore
from service.images.validation import ImageFacts

logger = logging.getLogger("replikit.service")


@dataclass(frozen=True)
class StoredImage:
    """An image the service has just inserted (an :class:`ImageRecord`)."""

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
    connection: AsyncConnection,
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


# Reads select the public columns with Core on a plain connection (the ORM's identity map and
# instance machinery cost a third of a metadata read's CPU and buy nothing for a read-only
# row), with statements built once: building a SELECT and its cache key per request cost
# about as much as executing it (per read, one process: ~480 us of CPU, ~290 us prebuilt).
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
GET_IMAGE = select(*IMAGE_COLUMNS).where(_IMAGES.id == bindparam("image_id"))
_NEWEST_FIRST = select(*IMAGE_COLUMNS).order_by(_IMAGES.created_at.desc(), _IMAGES.id.desc())
LIST_FIRST_PAGE = _NEWEST_FIRST.limit(bindparam("rows"))
LIST_AFTER_CURSOR = _NEWEST_FIRST.where(
    tuple_(_IMAGES.created_at, _IMAGES.id)
    < tuple_(
        bindparam("cursor_created_at", type_=_IMAGES.created_at.type),
        bindparam("cursor_id", type_=_IMAGES.id.type),
    )
).limit(bindparam("rows"))


async def get_image(*, connection: AsyncConnection, image_id: uuid.UUID) -> ImageRecord:
    row = (await connection.execute(GET_IMAGE, {"image_id": image_id})).one_or_none()
    if row is None:
        raise ImageNotFoundError(f"No image has the id {image_id}.")
    return cast(ImageRecord, row)


async def list_images(
    *, connection: AsyncConnection, limit: int, cursor: Cursor | None
) -> tuple[list[ImageRecord], Cursor | None]:
    if cursor is None:
        result = await connection.execute(LIST_FIRST_PAGE, {"rows": limit + 1})
    else:
        parameters = {
            "rows": limit + 1,
            "cursor_created_at": cursor.created_at,
            "cursor_id": cursor.id,
        }
        result = await connection.execute(LIST_AFTER_CURSOR, parameters)
    rows = [cast(ImageRecord, row) for row in result.all()]
    page = rows[:limit]
    more = len(rows) > limit
    next_cursor = Cursor(created_at=page[-1].created_at, id=page[-1].id) if more else None
    return page, next_cursor


async def read_image_bytes(
    *, connection: AsyncConnection, store: BlobStore, image: ImageRecord
) -> bytes:
    return await store.get(connection=connection, image=image)


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
