"""Where image bytes live: in PostgreSQL (default) or in a content-addressed directory.

Both backends keep the rule "metadata and bytes are committed together or not at all":

* ``postgres`` writes the bytes as a row of ``image_blobs`` in the upload's own transaction,
  so every piece of state is replicated and any replica can serve a file.
* ``filesystem`` (a shared volume) writes ``<dir>/ab/cd/<sha256>`` by temp file + rename
  while the upload's transaction holds an advisory lock on that digest, and removes a file only
  under the same lock once no row references it. A failed upload or a delete therefore never
  leaves an orphan, and two uploads of the same bytes share one file safely.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import (
    LargeBinary,
    String,
    bindparam,
    exists,
    func,
    insert,
    literal_column,
    select,
)
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.db.driver_pools import DriverConnection
from service.db.driver_sql import for_driver
from service.db.models import Image, ImageBlob, ImageRecord
from service.errors import ImageNotFoundError

# Statements built once, executed with parameters: building an INSERT from values and its
# cache key on every upload cost more CPU than sending it.
GET_BYTES = for_driver(select(ImageBlob.data).where(ImageBlob.image_id == bindparam("image_id")))
# The columns an upload sets, each from the parameter of the same name.
IMAGE_VALUES = {
    column.name: bindparam(column.name, type_=column.type)
    for column in Image.__table__.c
    if column.name != "created_at"  # the database's clock_timestamp()
}
INSERT_IMAGE_ROW = for_driver(insert(Image).values(IMAGE_VALUES).returning(Image.created_at))
_NEW_IMAGE = (
    insert(Image).values(IMAGE_VALUES).returning(Image.id, Image.created_at).cte("new_image")
)
# The row and its bytes in ONE statement (a data-modifying CTE): on an autocommit connection
# that is one round trip and one implicit transaction, so both are committed together or not
# at all, where the ORM path cost BEGIN, two INSERTs and a COMMIT.
INSERT_IMAGE_WITH_BYTES = for_driver(
    select(_NEW_IMAGE.c.created_at).add_cte(
        insert(ImageBlob)
        .from_select(
            [ImageBlob.image_id, ImageBlob.data],
            select(_NEW_IMAGE.c.id, bindparam("data", type_=LargeBinary)),
        )
        .cte("new_blob")
    )
)


class BlobStore(Protocol):
    # True when the bytes are a column of the database (reads can fetch them with the row).
    bytes_in_database: bool

    async def create(
        self, *, connection: DriverConnection, values: dict[str, Any], data: bytes
    ) -> datetime:
        """Insert the image row with ``values`` and store ``data``, atomically, on an
        autocommit connection to the primary; return the row's ``created_at``."""

    async def get(self, *, connection: DriverConnection, image: ImageRecord) -> bytes:
        """The bytes of ``image``, read on the request's read connection."""

    async def release(self, *, sha256: str) -> None:
        """Called after a failed upload or a committed delete of an image with ``sha256``."""


class PostgresBlobStore:
    bytes_in_database = True

    async def create(
        self, *, connection: DriverConnection, values: dict[str, Any], data: bytes
    ) -> datetime:
        statement = INSERT_IMAGE_WITH_BYTES
        created_at: datetime = await connection.fetchval(
            statement.sql, *statement.arguments({**values, "data": data})
        )
        return created_at

    async def get(self, *, connection: DriverConnection, image: ImageRecord) -> bytes:
        data: bytes | None = await connection.fetchval(GET_BYTES.sql, image.id)
        if data is None:
            raise ImageNotFoundError(f"Image {image.id} has no stored bytes.")
        return data

    async def release(self, *, sha256: str) -> None:
        # Rows of image_blobs go with their image (ON DELETE CASCADE, or the rolled-back
        # transaction); nothing outside the database to clean up.
        return None


def digest_key(sha256: Any) -> Any:
    return func.hashtextextended(sha256, literal_column("0"))


# The digest's transaction-level lock, for the filesystem store's upload on a driver
# connection. Transaction-level, not a session lock and unlock in autocommit: behind a
# transaction pooler (PgBouncer) two autocommit statements may run on two server connections,
# and the unlock would miss the lock, which then stays held on a pooled connection.
LOCK_DIGEST = for_driver(
    select(func.pg_advisory_xact_lock(digest_key(bindparam("sha256", type_=String))))
)


async def lock_digest(session: AsyncSession, sha256: str) -> None:
    """Transaction-scoped advisory lock serialising file writes and removals per digest."""
    await session.execute(select(func.pg_advisory_xact_lock(digest_key(sha256))))


class FilesystemBlobStore:
    bytes_in_database = False

    def __init__(
        self, root: Path, writer_sessions: Callable[[], async_sessionmaker[AsyncSession]]
    ) -> None:
        self.root = root
        self.writer_sessions = writer_sessions  # the current primary: locks, reference checks

    def path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256[2:4] / sha256

    async def create(
        self, *, connection: DriverConnection, values: dict[str, Any], data: bytes
    ) -> datetime:
        """Write the file, then commit the row, in one transaction that holds the digest's
        lock, which a concurrent removal's lock on the same key waits for."""
        sha256 = values["sha256"]
        async with connection.transaction():
            await connection.execute(LOCK_DIGEST.sql, sha256)
            await asyncio.to_thread(self._write, self.path(sha256), data)
            statement = INSERT_IMAGE_ROW
            created_at: datetime = await connection.fetchval(
                statement.sql, *statement.arguments(values)
            )
        return created_at

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        if path.exists():
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".upload-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    async def get(self, *, connection: DriverConnection, image: ImageRecord) -> bytes:
        try:
            return await asyncio.to_thread(self.path(image.sha256).read_bytes)
        except FileNotFoundError:
            raise ImageNotFoundError(f"Image {image.id} has no stored bytes.") from None

    async def release(self, *, sha256: str) -> None:
        async with self.writer_sessions()() as session, session.begin():
            await lock_digest(session, sha256)
            referenced = await session.scalar(select(exists().where(Image.sha256 == sha256)))
            if not referenced:
                self.path(sha256).unlink(missing_ok=True)
