"""ORM models. The schema itself is owned by the Alembic migrations in migrations/."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Protocol

from sqlalchemy import BigInteger, DateTime, ForeignKey, Index, Integer, LargeBinary, String, func
from sqlalchemy.dialects.postgresql import ARRAY, INET, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class ImageRecord(Protocol):
    """What reads return for an image: an ``Image`` the service just wrote, or a Core row
    (the read path selects columns, without the ORM)."""

    @property
    def id(self) -> uuid.UUID: ...
    @property
    def filename(self) -> str: ...
    @property
    def content_type(self) -> str: ...
    @property
    def file_size(self) -> int: ...
    @property
    def width(self) -> int: ...
    @property
    def height(self) -> int: ...
    @property
    def sha256(self) -> str: ...
    @property
    def created_at(self) -> datetime: ...


class Image(Base):
    __tablename__ = "images"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(64))
    file_size: Mapped[int] = mapped_column(BigInteger)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    delete_token_hash: Mapped[str] = mapped_column(String(64))
    upload_ip: Mapped[str | None] = mapped_column(INET)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.clock_timestamp()
    )

    __table_args__ = (
        Index("ix_images_created_at_id", created_at.desc(), id.desc()),
        Index("ix_images_sha256", "sha256"),
    )
    # Fetch created_at with RETURNING at insert, so no extra round trip after commit.
    __mapper_args__ = {"eager_defaults": True}  # noqa: RUF012 - SQLAlchemy's declarative hook


class ImageBlob(Base):
    __tablename__ = "image_blobs"

    image_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("images.id", ondelete="CASCADE"), primary_key=True
    )
    data: Mapped[bytes] = mapped_column(LargeBinary)


class UploadRateLimit(Base):
    """The stamps of one client address's uploads in the last window (service/ratelimit.py),
    shared by every service instance."""

    __tablename__ = "upload_rate_limits"

    client_ip: Mapped[str] = mapped_column(INET, primary_key=True)
    stamps: Mapped[list[datetime]] = mapped_column(ARRAY(DateTime(timezone=True)))
