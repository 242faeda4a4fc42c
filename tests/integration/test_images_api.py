"""The image API against the real cluster: upload, fetch, list, delete, caching."""

from __future__ import annotations

import asyncio
import hashlib
import io
import uuid

import pytest
from PIL import Image

from replication.cluster import Cluster
from tests.integration.conftest import connect, wait_until
from tests.integration.service_fixtures import (
    image_bytes,
    service_client,
    service_settings,
    upload,
)

FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "GIF": "image/gif", "WEBP": "image/webp"}
# The stored name keeps the client's stem and takes the detected format's extension.
EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "GIF": ".gif", "WEBP": ".webp"}


@pytest.mark.parametrize("fmt", sorted(FORMATS))
async def test_upload_then_metadata_then_identical_bytes(migrated: Cluster, fmt: str) -> None:
    data = image_bytes(fmt)
    async with service_client(service_settings(migrated)) as client:
        # The client's type and name are ignored: the bytes decide.
        created = await upload(
            client, data, filename=f"../../x/My {fmt}.txt", content_type="text/plain"
        )
        assert created.status_code == 201, created.text
        assert created.headers["Content-Type"] == "application/json"
        body = created.json()
        image_id = body["id"]
        assert created.headers["Location"] == f"/api/v1/images/{image_id}"
        assert created.headers["X-Replikit-LSN"].count("/") == 1
        assert body["content_type"] == FORMATS[fmt]
        assert (body["width"], body["height"], body["file_size"]) == (64, 48, len(data))
        assert body["sha256"] == hashlib.sha256(data).hexdigest()
        assert body["filename"] == f"My {fmt}{EXTENSIONS[fmt]}"
        assert body["url"] == f"/api/v1/images/{image_id}/file"
        assert len(body["delete_token"]) >= 32

        meta = await client.get(f"/api/v1/images/{image_id}")
        assert meta.status_code == 200
        assert "delete_token" not in meta.json()
        assert {k: v for k, v in body.items() if k != "delete_token"} == meta.json()

        file = await client.get(body["url"])
        assert file.status_code == 200
        assert file.content == data
        assert file.headers["Content-Type"] == FORMATS[fmt]
        assert file.headers["ETag"] == f'"{body["sha256"]}"'
        assert file.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        # The download name is the id and the detected format; the client's name is metadata.
        assert file.headers["Content-Disposition"].startswith(
            f'inline; filename="{body["id"]}{EXTENSIONS[fmt]}"'
        )


async def test_exif_rotated_jpeg_reports_displayed_dimensions(migrated: Cluster) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise for display
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48)).save(buffer, "JPEG", exif=exif.tobytes())
    async with service_client(service_settings(migrated)) as client:
        created = await upload(client, buffer.getvalue())
    assert (created.json()["width"], created.json()["height"]) == (48, 64)


async def test_conditional_get_and_head(migrated: Cluster) -> None:
    data = image_bytes("PNG")
    async with service_client(service_settings(migrated)) as client:
        body = (await upload(client, data)).json()
        etag = f'"{body["sha256"]}"'
        not_modified = await client.get(body["url"], headers={"If-None-Match": f'"x", {etag}'})
        assert not_modified.status_code == 304
        assert not_modified.content == b""
        assert not_modified.headers["ETag"] == etag
        other = await client.get(body["url"], headers={"If-None-Match": '"something-else"'})
        assert other.status_code == 200
        head = await client.head(body["url"])
        assert head.status_code == 200
        assert head.content == b""
        assert head.headers["Content-Length"] == str(len(data))
        assert head.headers["ETag"] == etag


@pytest.mark.parametrize(
    "bad_id", ["not-a-uuid", "3f9c2a51-7d4e-4c1b-9a0e-5b8f6c2d1e07", "1' OR '1'='1"]
)
async def test_unknown_or_malformed_id_is_404_image_not_found(
    migrated: Cluster, bad_id: str
) -> None:
    async with service_client(service_settings(migrated)) as client:
        for path in (f"/api/v1/images/{bad_id}", f"/api/v1/images/{bad_id}/file"):
            response = await client.get(path)
            assert response.status_code == 404
            assert response.json()["error"]["code"] == "IMAGE_NOT_FOUND"


async def test_delete_paths(migrated: Cluster) -> None:
    async with service_client(service_settings(migrated)) as client:
        body = (await upload(client, image_bytes("PNG"))).json()
        path = f"/api/v1/images/{body['id']}"
        missing = await client.delete(path)
        assert (missing.status_code, missing.json()["error"]["code"]) == (
            401,
            "DELETE_TOKEN_REQUIRED",
        )
        wrong = await client.delete(path, headers={"X-Delete-Token": "nope"})
        assert (wrong.status_code, wrong.json()["error"]["code"]) == (403, "INVALID_DELETE_TOKEN")
        unknown = await client.delete(
            f"/api/v1/images/{uuid.uuid4()}", headers={"X-Delete-Token": body["delete_token"]}
        )
        assert unknown.status_code == 404
        assert (await client.get(path)).status_code == 200

        deleted = await client.delete(path, headers={"X-Delete-Token": body["delete_token"]})
        assert deleted.status_code == 204
        assert "X-Replikit-LSN" in deleted.headers
        assert (await client.get(path)).status_code == 404
        assert (await client.get(f"{path}/file")).status_code == 404

        # The token is accepted in the header only: in a URL, proxies and browsers log it.
        second = (await upload(client, image_bytes("GIF"))).json()
        second_path = f"/api/v1/images/{second['id']}"
        by_query = await client.delete(second_path, params={"delete_token": second["delete_token"]})
        assert (by_query.status_code, by_query.json()["error"]["code"]) == (
            401,
            "DELETE_TOKEN_REQUIRED",
        )
        assert (await client.get(second_path)).status_code == 200
        by_header = await client.delete(
            second_path, headers={"X-Delete-Token": second["delete_token"]}
        )
        assert by_header.status_code == 204

    primary = await connect(migrated, migrated.state.primary_node)
    try:
        for image_id in (body["id"], second["id"]):
            blobs = await primary.fetchval(
                "SELECT count(*) FROM image_blobs WHERE image_id = $1", uuid.UUID(image_id)
            )
            assert blobs == 0
        stored = await primary.fetchval("SELECT delete_token_hash FROM images LIMIT 1")
        assert stored is None or len(stored) == 64
    finally:
        await primary.close()


async def test_listing_pages_are_stable_while_uploads_happen(migrated: Cluster) -> None:
    async with service_client(service_settings(migrated)) as client:
        for _ in range(12):
            assert (await upload(client, image_bytes("PNG", (8, 8)))).status_code == 201
        first_page = await client.get("/api/v1/images", params={"limit": 100})
        existing = [item["id"] for item in first_page.json()["items"]]

        async def keep_uploading() -> None:
            for _ in range(8):
                await upload(client, image_bytes("PNG", (8, 8)))

        uploader = asyncio.create_task(keep_uploading())
        seen: list[str] = []
        cursor = None
        while True:
            params = {"limit": 5, **({"cursor": cursor} if cursor else {})}
            page = await client.get("/api/v1/images", params=params)
            assert page.status_code == 200
            seen.extend(item["id"] for item in page.json()["items"])
            cursor = page.json()["next_cursor"]
            await asyncio.sleep(0.01)
            if cursor is None:
                break
        await uploader
    assert len(seen) == len(set(seen)), "an image appeared on two pages"
    positions = [seen.index(i) for i in existing if i in seen]
    assert len(positions) == len(existing), "an image that existed was skipped"
    assert positions == sorted(positions), "the newest-first order changed"


async def test_listing_rejects_bad_limits_and_cursors(migrated: Cluster) -> None:
    async with service_client(service_settings(migrated)) as client:
        for limit in ("0", "101", "ten"):
            response = await client.get("/api/v1/images", params={"limit": limit})
            assert response.status_code == 422
            assert response.json()["error"]["code"] == "VALIDATION_ERROR"
        bad_cursor = await client.get("/api/v1/images", params={"cursor": "garbage!"})
        assert (bad_cursor.status_code, bad_cursor.json()["error"]["code"]) == (
            400,
            "INVALID_CURSOR",
        )


async def test_replicas_serve_reads_once_replicated(migrated: Cluster) -> None:
    data = image_bytes("WEBP")
    replica_names = {node.name for node in migrated.state.replicas}
    async with service_client(service_settings(migrated, replicas=True)) as client:
        created = await upload(client, data)
        assert created.headers["X-Replikit-Node"] == migrated.state.primary
        url = created.json()["url"]

        async def served_by_replica() -> bool:
            response = await client.get(url)
            return (
                response.status_code == 200
                and response.content == data
                and response.headers["X-Replikit-Node"] in replica_names
            )

        await wait_until(served_by_replica, within=5, what="a replica serving the new file")


async def test_ready_reports_writer_and_nodes(migrated: Cluster) -> None:
    async with service_client(service_settings(migrated, replicas=True)) as client:
        ready = await client.get("/ready")
        assert ready.status_code == 200
        assert ready.json()["writer"] == "up"
        assert set(ready.json()["nodes"].values()) == {"up"}
        assert (await client.get("/health")).json() == {"status": "ok"}


async def test_ready_stays_green_for_replicas_when_the_writer_is_gone(
    migrated: Cluster, unused_tcp_port: int
) -> None:
    state = migrated.state
    dead_primary = state.app_url(state.primary_node).replace(
        f":{state.primary_node.port}/", f":{unused_tcp_port}/"
    )
    settings = service_settings(migrated, replicas=True, primary_url=dead_primary)
    async with service_client(settings) as client:
        ready = await client.get("/ready")
        assert ready.status_code == 200
        assert ready.json()["writer"] == "down"
        write = await upload(client, image_bytes("PNG"))
        assert write.status_code == 503
        assert write.json()["error"]["code"] == "PRIMARY_UNAVAILABLE"
        assert int(write.headers["Retry-After"]) >= 1
        # Reads keep being served by the replicas.
        listing = await client.get("/api/v1/images")
        assert listing.status_code == 200
    all_dead = service_settings(migrated, primary_url=dead_primary)
    async with service_client(all_dead) as client:
        not_ready = await client.get("/ready")
        assert not_ready.status_code == 503
        assert not_ready.json()["error"]["code"] == "NOT_READY"


async def test_the_owner_role_owns_every_table_and_no_create_all_is_needed(
    migrated: Cluster,
) -> None:
    connection = await connect(migrated, migrated.state.primary_node)
    try:
        tables = {
            r["tablename"]: r["tableowner"]
            for r in await connection.fetch(
                "SELECT tablename, tableowner FROM pg_tables WHERE schemaname = 'public'"
            )
        }
    finally:
        await connection.close()
    assert {"images", "image_blobs", "upload_rate_limits", "alembic_version"} <= tables.keys()
    assert set(tables.values()) == {migrated.state.owner_user}
