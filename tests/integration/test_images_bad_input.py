"""Every class of bad upload gets its status and code, and leaves nothing behind:
no new row in either table and no file on disk, for both blob backends."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from replication.cluster import Cluster
from tests.integration.clusters import reachable_temp_dir
from tests.integration.conftest import connect
from tests.integration.service_fixtures import (
    blob_files,
    image_bytes,
    service_client,
    service_settings,
    upload,
)


def tiff() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, "TIFF")
    return buffer.getvalue()


def truncated(fmt: str) -> bytes:
    """A noisy 30x30 image (under the pixel ceiling) cut in half."""
    buffer = io.BytesIO()
    Image.effect_noise((30, 30), 64).convert("RGB").save(buffer, fmt)
    data = buffer.getvalue()
    return data[: len(data) // 2]


def noisy_png(size: int) -> bytes:
    buffer = io.BytesIO()
    Image.effect_noise((size, size), 64).save(buffer, "PNG")
    return buffer.getvalue()


BAD_UPLOADS: dict[str, tuple[bytes, int, str]] = {
    "empty": (b"", 400, "EMPTY_FILE"),
    "text": (b"hello, I am not an image" * 10, 415, "UNSUPPORTED_IMAGE"),
    "tiff-not-allowed": (tiff(), 415, "UNSUPPORTED_IMAGE"),
    "eps-header": (
        b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n",
        415,
        "UNSUPPORTED_IMAGE",
    ),
    "truncated-png": (truncated("PNG"), 415, "UNSUPPORTED_IMAGE"),
    "truncated-jpeg": (truncated("JPEG"), 415, "UNSUPPORTED_IMAGE"),
    "over-byte-limit": (noisy_png(120), 413, "FILE_TOO_LARGE"),
    # 40x40 = 1600 px: above the 1000 px ceiling, below Pillow's own 2x error threshold,
    # so only the promoted DecompressionBombWarning or our explicit check catches it.
    "bomb-warning-range": (image_bytes("PNG", (40, 40)), 413, "IMAGE_TOO_LARGE"),
    "bomb-error-range": (image_bytes("GIF", (100, 100)), 413, "IMAGE_TOO_LARGE"),
}
LIMITS: dict[str, Any] = {"max_upload_bytes": 8000, "max_image_pixels": 1000}


@pytest.fixture(params=["postgres", "filesystem"])
async def backend(
    request: pytest.FixtureRequest, migrated: Cluster
) -> AsyncIterator[tuple[httpx.AsyncClient, Path]]:
    blob_root = reachable_temp_dir("replikit-blobs-")
    settings = service_settings(migrated, blob_backend=request.param, blob_dir=blob_root, **LIMITS)
    async with service_client(settings) as client:
        yield client, blob_root


async def row_counts(cluster: Cluster) -> tuple[int, int]:
    connection = await connect(cluster, cluster.state.primary_node)
    try:
        images = await connection.fetchval("SELECT count(*) FROM images")
        blobs = await connection.fetchval("SELECT count(*) FROM image_blobs")
    finally:
        await connection.close()
    return images, blobs


@pytest.mark.parametrize("case", sorted(BAD_UPLOADS))
async def test_bad_upload_is_refused_and_writes_nothing(
    migrated: Cluster, backend: tuple[httpx.AsyncClient, Path], case: str
) -> None:
    client, blob_root = backend
    data, status, code = BAD_UPLOADS[case]
    before = await row_counts(migrated)
    response = await upload(client, data, filename="evil.png", content_type="image/png")
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"]
    assert await row_counts(migrated) == before
    assert blob_files(blob_root) == []


async def test_valid_upload_after_bad_ones_still_works_on_both_backends(
    migrated: Cluster, backend: tuple[httpx.AsyncClient, Path]
) -> None:
    client, blob_root = backend
    data = image_bytes("PNG", (20, 20))
    created = await upload(client, data)
    assert created.status_code == 201, created.text
    fetched = await client.get(created.json()["url"])
    assert fetched.content == data
    deleted = await client.delete(
        f"/api/v1/images/{created.json()['id']}",
        headers={"X-Delete-Token": created.json()["delete_token"]},
    )
    assert deleted.status_code == 204
    assert blob_files(blob_root) == []


async def test_declared_oversized_body_is_refused_before_reading(migrated: Cluster) -> None:
    settings = service_settings(migrated, **LIMITS)
    async with service_client(settings) as client:
        body = b'--b\r\nContent-Disposition: form-data; name="file"\r\n\r\n' + b"x" * 200_000
        response = await client.post(
            "/api/v1/images/upload",
            content=body,
            headers={"Content-Type": "multipart/form-data; boundary=b"},
        )
    assert (response.status_code, response.json()["error"]["code"]) == (413, "FILE_TOO_LARGE")


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"data": {"other": "x"}}, "INVALID_UPLOAD"),
        ({"content": b"raw bytes", "headers": {"Content-Type": "image/png"}}, "INVALID_UPLOAD"),
        ({"files": {"image": ("a.png", image_bytes("PNG"), "image/png")}}, "INVALID_UPLOAD"),
        (
            {
                "content": b"--b\r\nbroken",
                "headers": {"Content-Type": "multipart/form-data; boundary=b"},
            },
            "INVALID_UPLOAD",
        ),
    ],
)
async def test_malformed_requests_get_invalid_upload(
    migrated: Cluster, kwargs: dict[str, Any], code: str
) -> None:
    before = await row_counts(migrated)
    async with service_client(service_settings(migrated)) as client:
        response = await client.post("/api/v1/images/upload", **kwargs)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == code
    assert await row_counts(migrated) == before


async def test_filesystem_backend_shares_one_file_between_identical_uploads(
    migrated: Cluster,
) -> None:
    blob_root = reachable_temp_dir("replikit-blobs-")
    settings = service_settings(migrated, blob_backend="filesystem", blob_dir=blob_root)
    data = image_bytes("PNG", (12, 12))
    async with service_client(settings) as client:
        first = (await upload(client, data)).json()
        second = (await upload(client, data)).json()
        assert len(blob_files(blob_root)) == 1
        await client.delete(
            f"/api/v1/images/{first['id']}", headers={"X-Delete-Token": first["delete_token"]}
        )
        assert len(blob_files(blob_root)) == 1, "a file still referenced was removed"
        assert (await client.get(second["url"])).content == data
        await client.delete(
            f"/api/v1/images/{second['id']}", headers={"X-Delete-Token": second["delete_token"]}
        )
    assert blob_files(blob_root) == []
