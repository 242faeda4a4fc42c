"""Response bodies, named by role."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal, Self

from pydantic import BaseModel, Field

from service.db.models import ImageRecord


class ImagePublic(BaseModel):
    id: uuid.UUID
    filename: str
    content_type: str
    file_size: int
    width: int
    height: int
    sha256: str
    url: str
    created_at: datetime

    @classmethod
    def from_image(cls, image: ImageRecord, **extra: Any) -> Self:
        """The public fields of ``image``, plus ``extra`` for a subclass's own fields."""
        return cls(
            id=image.id,
            filename=image.filename,
            content_type=image.content_type,
            file_size=image.file_size,
            width=image.width,
            height=image.height,
            sha256=image.sha256,
            url=f"/api/v1/images/{image.id}/file",
            created_at=image.created_at,
            **extra,
        )


class ImageCreated(ImagePublic):
    delete_token: str = Field(description="Shown once; send it as X-Delete-Token to delete.")


class ImageList(BaseModel):
    items: list[ImagePublic]
    next_cursor: str | None = Field(
        description="Pass as ?cursor= for the next page; null at the end."
    )


class ErrorDetail(BaseModel):
    code: str
    message: str
    details: dict[str, Any] = Field(default_factory=dict)


class ErrorBody(BaseModel):
    error: ErrorDetail


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    status: Literal["ready"] = "ready"
    writer: Literal["up", "down"]
    nodes: dict[str, Literal["up", "down"]]
