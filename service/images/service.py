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
from typing import Any, cast

from sqlalchemy import Select, delete, select, true, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from service.db.models import Image, ImageRecord
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


@dataclass(frozen=True)
class CreatedImage:
    image: Image
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
    session: AsyncSession,
    store: BlobStore,
    facts: ImageFacts,
    data: bytes,
    filename: str,
    upload_ip: str | None,
) -> CreatedImage:
    """Insert metadata and bytes in one transaction; on failure, nothing stays behind."""
    token = secrets.token_urlsafe(32)
    image = Image(
        id=uuid.uuid4(),
        filename=filename,
        content_type=facts.content_type,
        file_size=facts.file_size,
        width=facts.width,
        height=facts.height,
        sha256=facts.sha256,
        delete_token_hash=hash_token(token),
        upload_ip=upload_ip,
    )
    try:
        async with session.begin():
            session.add(image)
            await session.flush()
            await store.put(session=session, image=image, data=data)
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
    return CreatedImage(image=image, delete_token=token)


# Reads select these columns with Core on a plain connection: the ORM's identity map and
# instance machinery cost a third of a metadata read's CPU and buy nothing for a read-only row.
IMAGE_COLUMNS = tuple(Image.__table__.c)


async def get_image(
    *,
    connection: AsyncConnection,
    image_id: uuid.UUID,
    observer: PositionObserver | None = None,
) -> ImageRecord:
    """The image's columns; with ``observer``, in the same statement the position the read's
    snapshot could see (service/db/snapshot.py), reported also when the image is absent."""
    images = Image.__table__
    if observer is None:
        row = (
            await connection.execute(select(*IMAGE_COLUMNS).where(images.c.id == image_id))
        ).one_or_none()
    else:
        snapshot = SNAPSHOT_POSITION
        query = select(snapshot.c[SNAPSHOT_COLUMN], *IMAGE_COLUMNS).select_from(
            snapshot.outerjoin(images, images.c.id == image_id)
        )
        row = (await connection.execute(query)).one()
        report_position(row, observer)
        if row.id is None:
            row = None
    if row is None:
        raise ImageNotFoundError(f"No image has the id {image_id}.")
    return cast(ImageRecord, row)


def _page_query(limit: int, cursor: Cursor | None) -> Select[Any]:
    columns = Image.__table__.c
    query = (
        select(*IMAGE_COLUMNS)
        .order_by(columns.created_at.desc(), columns.id.desc())
        .limit(limit + 1)
    )
    if cursor is not None:
        query = query.where(
            tuple_(columns.created_at, columns.id) < tuple_(cursor.created_at, cursor.id)
        )
    return query


async def list_images(
    *,
    connection: AsyncConnection,
    limit: int,
    cursor: Cursor | None,
    observer: PositionObserver | None = None,
) -> tuple[list[ImageRecord], Cursor | None]:
    """Newest first, keyset-paginated; with ``observer``, the page is a LATERAL join from the
    snapshot position's one row, so an empty page still reports what it could see."""
    if observer is None:
        result = await connection.execute(_page_query(limit, cursor))
        rows = [cast(ImageRecord, row) for row in result.all()]
    else:
        snapshot = SNAPSHOT_POSITION
        page = _page_query(limit, cursor).lateral("page")
        query = (
            select(snapshot.c[SNAPSHOT_COLUMN], *page.c)
            .select_from(snapshot.outerjoin(page, true()))
            .order_by(page.c.created_at.desc(), page.c.id.desc())
        )
        result_rows = (await connection.execute(query)).all()
        report_position(result_rows[0] if result_rows else None, observer)
        rows = [cast(ImageRecord, row) for row in result_rows if row.id is not None]
    page_rows = rows[:limit]
    more = len(rows) > limit
    next_cursor = Cursor(created_at=page_rows[-1].created_at, id=page_rows[-1].id) if more else None
    return page_rows, next_cursor


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
