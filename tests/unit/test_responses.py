"""The read routes write their JSON straight from rows (service/api/responses.py): the bytes
must be the ones FastAPI writes for the declared response model."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import httpx
import pytest
from fastapi import FastAPI

from service.api.responses import json_response
from service.api.schemas import ImageCreated, ImageList, ImagePublic, image_fields
from service.images.service import StoredImage


def stored(filename: str, created_at: datetime) -> StoredImage:
    return StoredImage(
        id=uuid.UUID("0b6e6d0e-2f4f-4d59-9a53-5b1f8c2e7a10"),
        filename=filename,
        content_type="image/png",
        file_size=1_234_567,
        width=640,
        height=480,
        sha256="ab" * 32,
        created_at=created_at,
    )


IMAGES = [
    stored("plain.png", datetime(2026, 11, 30, 8, 24, 11, 508794, tzinfo=UTC)),
    stored('naïve "quoted" \\ 画像 <tag>.png', datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)),
    stored("tab\tand\u2028.png", datetime(2026, 6, 1, tzinfo=timezone(timedelta(hours=2)))),
]


def through_fastapi() -> httpx.AsyncClient:
    app = FastAPI()

    @app.get("/one/{index}", response_model=ImagePublic)
    async def one(index: int) -> ImagePublic:
        return ImagePublic.from_image(IMAGES[index])

    @app.get("/created", response_model=ImageCreated)
    async def created() -> ImageCreated:
        return ImageCreated(**image_fields(IMAGES[1]), delete_token="tok-en_1")

    @app.get("/page", response_model=ImageList)
    async def page() -> ImageList:
        items = [ImagePublic.from_image(image) for image in IMAGES]
        return ImageList(items=items, next_cursor="next")

    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


@pytest.mark.parametrize("index", range(len(IMAGES)))
async def test_an_image_is_written_as_fastapi_writes_its_model(index: int) -> None:
    async with through_fastapi() as client:
        expected = await client.get(f"/one/{index}")
    written = json_response(image_fields(IMAGES[index]))
    assert written.body == expected.content
    assert written.media_type == expected.headers["content-type"]


async def test_a_page_is_written_as_fastapi_writes_its_model() -> None:
    async with through_fastapi() as client:
        expected = (await client.get("/page")).content
    written = json_response(
        {"items": [image_fields(image) for image in IMAGES], "next_cursor": "next"}
    )
    assert written.body == expected


async def test_an_upload_answer_is_written_as_fastapi_writes_its_model() -> None:
    async with through_fastapi() as client:
        expected = (await client.get("/created")).content
    written = json_response({**image_fields(IMAGES[1]), "delete_token": "tok-en_1"})
    assert written.body == expected
