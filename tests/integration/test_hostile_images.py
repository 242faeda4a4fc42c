"""Hostile uploads against the real service on the real cluster (issue 12, image pipeline):
decode bombs are refused or cut off by their budget without stalling the service, and what is
stored carries no metadata, no trailing payload and no deceptive name."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image, ImageSequence

from loadtests.hostile_images import (
    GPS_IFD,
    HTML_TAIL,
    JS_PAYLOAD,
    gif_frame_bomb,
    gif_js_polyglot,
    jpeg_with_gps,
    jpeg_with_html_tail,
    tall_png,
)
from replication.cluster import Cluster
from replication.serving.process import start_service, stop_service
from tests.integration.clusters import free_base_port, reachable_temp_dir
from tests.integration.conftest import wait_until
from tests.integration.service_fixtures import (
    image_bytes,
    service_client,
    service_settings,
    upload,
)
from tests.integration.test_images_bad_input import row_counts

# Budgets that let a frame bomb through the header check, so only the time budget stops it.
NO_PIXEL_BUDGET: dict[str, Any] = {"max_decoded_pixels": 10**13}


async def served(client: httpx.AsyncClient, created: httpx.Response) -> httpx.Response:
    assert created.status_code == 201, created.text
    response = await client.get(created.json()["url"])
    assert response.status_code == 200
    return response


def assert_served_bytes_are_what_was_hashed(body: dict[str, Any], file: httpx.Response) -> None:
    digest = hashlib.sha256(file.content).hexdigest()
    assert body["sha256"] == digest
    assert file.headers["ETag"] == f'"{digest}"'
    assert body["file_size"] == len(file.content)


# --- decode budget -------------------------------------------------------------------------


async def test_gif_frame_bomb_is_refused_from_its_header_quickly(migrated: Cluster) -> None:
    bomb = gif_frame_bomb(frames=100, side=6300)
    assert 2000 < len(bomb) < 3000
    before = await row_counts(migrated)
    async with service_client(service_settings(migrated)) as client:
        started = time.monotonic()
        refused = await upload(client, bomb, filename="bomb.gif", content_type="image/gif")
        elapsed = time.monotonic() - started
    assert refused.status_code == 413, refused.text
    error = refused.json()["error"]
    assert error["code"] == "IMAGE_TOO_LARGE"
    assert error["details"]["frames"] == 100
    assert error["details"]["decoded_pixels"] > error["details"]["max_decoded_pixels"]
    assert elapsed < 10, f"refusal took {elapsed:.1f} s (a full decode takes 15-70 s)"
    assert await row_counts(migrated) == before


async def test_one_pixel_wide_forty_million_row_png_is_refused_within_its_budget(
    migrated: Cluster,
) -> None:
    tall = tall_png(1, 40_000_000)
    assert len(tall) < 100_000
    async with service_client(service_settings(migrated)) as client:
        refused = await upload(client, tall)
        assert refused.status_code == 413, refused.text
        assert refused.json()["error"]["details"]["height"] == 40_000_000
        # A tall image within the row budget is still accepted.
        accepted = await upload(client, tall_png(1, 100_000))
        assert accepted.status_code == 201, accepted.text
        assert (accepted.json()["width"], accepted.json()["height"]) == (1, 100_000)


async def test_decode_over_the_wall_clock_budget_is_a_clean_422_and_the_next_upload_works(
    migrated: Cluster,
) -> None:
    settings = service_settings(migrated, decode_timeout=0.5, decode_workers=1, **NO_PIXEL_BUDGET)
    before = await row_counts(migrated)
    async with service_client(settings) as client:
        overrun = await upload(client, gif_frame_bomb(frames=60, side=6300))
        assert overrun.status_code == 422, overrun.text
        error = overrun.json()["error"]
        assert error["code"] == "DECODE_BUDGET_EXCEEDED"
        assert error["details"]["reason"] == "time"
        assert await row_counts(migrated) == before
        after = await upload(client, image_bytes("PNG"))
        assert after.status_code == 201, after.text


def forkserver_workers() -> list[int]:
    """Pids of the decode workers: children of this process's multiprocessing fork server."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    servers = [
        pid
        for pid in children.get(os.getpid(), [])
        if b"forkserver" in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]
    return [worker for server in servers for worker in children.get(server, [])]


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def test_a_worker_killed_mid_decode_is_a_clean_422_and_is_replaced(
    migrated: Cluster,
) -> None:
    settings = service_settings(migrated, decode_timeout=60, decode_workers=1, **NO_PIXEL_BUDGET)
    async with service_client(settings) as client:
        assert (await upload(client, image_bytes("PNG"))).status_code == 201  # worker started
        (worker,) = forkserver_workers()
        busy_from = cpu_seconds(worker)
        bomb = asyncio.create_task(upload(client, gif_frame_bomb(frames=300, side=6300)))

        async def decoding() -> bool:
            return cpu_seconds(worker) > busy_from + 0.3

        await wait_until(decoding, within=20, what="the worker decoding the bomb")
        os.kill(worker, signal.SIGKILL)  # as the kernel would on RLIMIT_CPU or a crash
        killed = await asyncio.wait_for(bomb, 30)
        assert killed.status_code == 422, killed.text
        assert killed.json()["error"]["details"]["reason"] == "worker_died"
        after = await upload(client, image_bytes("GIF"))
        assert after.status_code == 201, after.text
        assert forkserver_workers() != [worker]


async def test_a_worker_killed_while_idle_is_replaced_without_failing_the_next_upload(
    migrated: Cluster,
) -> None:
    settings = service_settings(migrated, decode_workers=1)
    async with service_client(settings) as client:
        assert (await upload(client, image_bytes("PNG"))).status_code == 201
        (worker,) = forkserver_workers()
        os.kill(worker, signal.SIGKILL)  # e.g. the kernel's OOM killer

        async def gone() -> bool:
            return worker not in forkserver_workers()

        await wait_until(gone, within=10, what="the killed worker's exit")
        after = await upload(client, image_bytes("WEBP"))
        assert after.status_code == 201, after.text
        (replacement,) = forkserver_workers()
        assert replacement != worker


async def test_a_decode_over_the_memory_limit_is_a_clean_422(migrated: Cluster) -> None:
    big = io.BytesIO()
    Image.new("RGBA", (6000, 6000), (1, 2, 3, 4)).save(big, "PNG")  # 137 MiB decoded
    settings = service_settings(migrated, decode_worker_memory_mib=160, decode_workers=1)
    async with service_client(settings) as client:
        refused = await upload(client, big.getvalue())
        assert refused.status_code == 422, refused.text
        assert refused.json()["error"]["code"] == "DECODE_BUDGET_EXCEEDED"
        after = await upload(client, image_bytes("JPEG"))
        assert after.status_code == 201, after.text


@pytest.fixture
def bomb_tolerant_server(migrated: Cluster) -> Iterator[str]:
    """A real ``uvicorn`` process (its own event loop) whose pixel budget lets bombs decode."""
    data_dir = reachable_temp_dir("replikit-hostile-")
    state = migrated.state
    env = {
        "REPLIKIT_PRIMARY_URL": state.app_url(state.primary_node),
        "REPLIKIT_REPLICA_URLS": "",
        "REPLIKIT_UPLOAD_RATE_LIMIT": "0",
        "REPLIKIT_MAX_DECODED_PIXELS": str(NO_PIXEL_BUDGET["max_decoded_pixels"]),
        "REPLIKIT_DECODE_TIMEOUT": "3",
        "REPLIKIT_DECODE_WORKERS": "2",
        "REPLIKIT_DECODE_QUEUE_TIMEOUT": "30",
    }
    record = start_service(data_dir, host="127.0.0.1", port=free_base_port(1), workers=1, env=env)
    try:
        yield record.url
    finally:
        stop_service(data_dir)


async def test_health_answers_while_four_bombs_decode(bomb_tolerant_server: str) -> None:
    bomb = gif_frame_bomb(frames=300, side=6300)
    async with httpx.AsyncClient(base_url=bomb_tolerant_server, timeout=60) as client:
        uploads = [
            asyncio.create_task(upload(client, bomb, filename=f"bomb{i}.gif")) for i in range(4)
        ]
        latencies = []
        while not all(task.done() for task in uploads):
            started = time.monotonic()
            health = await client.get("/health")
            latencies.append(time.monotonic() - started)
            assert health.status_code == 200
            await asyncio.sleep(0.1)
        responses = await asyncio.gather(*uploads)
    # Two decode at a time for 3 s each, the other two wait for them: about 6 s in all.
    assert len(latencies) > 20
    assert max(latencies) < 1.0, f"/health took {max(latencies):.2f} s while bombs decoded"
    for response in responses:
        assert response.status_code == 422, response.text
        assert response.json()["error"]["code"] == "DECODE_BUDGET_EXCEEDED"


# --- privacy ---------------------------------------------------------------------------------


async def test_exif_gps_is_stripped_and_orientation_kept_consistently(migrated: Cluster) -> None:
    uploaded = jpeg_with_gps(size=(64, 48), orientation=6, comment=b"shot at home")
    async with service_client(service_settings(migrated)) as client:
        created = await upload(client, uploaded, filename="IMG_0001.JPG")
        file = await served(client, created)
    body = created.json()
    assert (body["width"], body["height"]) == (48, 64)  # displayed size: orientation 6 rotates
    assert body["file_size"] < len(uploaded)
    assert_served_bytes_are_what_was_hashed(body, file)
    with Image.open(io.BytesIO(file.content)) as image:
        exif = image.getexif()
        assert dict(exif) == {0x0112: 6}
        assert not exif.get_ifd(GPS_IFD)
        assert "xmp" not in image.info
        assert "comment" not in image.info
        assert image.size == (64, 48)  # stored pixels unrotated; the tag rotates them
    assert b"ExampleCam" not in file.content
    assert b"home" not in file.content


@pytest.mark.parametrize(
    ("name", "payload", "end"),
    [
        ("jpeg-html-tail", jpeg_with_html_tail(), b"\xff\xd9"),
        ("gif-js-polyglot", gif_js_polyglot(), b"\x3b"),
    ],
)
async def test_polyglots_are_stored_without_their_payload(
    migrated: Cluster, name: str, payload: bytes, end: bytes
) -> None:
    async with service_client(service_settings(migrated)) as client:
        created = await upload(client, payload, filename=f"{name}.html", content_type="text/html")
        file = await served(client, created)
    assert_served_bytes_are_what_was_hashed(created.json(), file)
    assert file.content.endswith(end)
    assert HTML_TAIL not in file.content
    assert JS_PAYLOAD not in file.content
    assert b"alert" not in file.content
    assert not created.json()["filename"].endswith(".html")


async def test_keep_metadata_setting_keeps_exif_but_not_a_trailing_payload(
    migrated: Cluster,
) -> None:
    uploaded = jpeg_with_gps(orientation=6)
    settings = service_settings(migrated, keep_image_metadata=True)
    async with service_client(settings) as client:
        created = await upload(client, uploaded + HTML_TAIL)
        file = await served(client, created)
    assert file.content == uploaded
    assert_served_bytes_are_what_was_hashed(created.json(), file)
    with Image.open(io.BytesIO(file.content)) as image:
        assert image.getexif().get_ifd(GPS_IFD)


async def test_animated_gif_and_webp_keep_their_animation(migrated: Cluster) -> None:
    frames = [Image.new("RGB", (16, 16), (i * 60, 20, 20)) for i in range(4)]
    async with service_client(service_settings(migrated)) as client:
        for fmt in ("GIF", "WEBP"):
            buffer = io.BytesIO()
            frames[0].save(buffer, fmt, save_all=True, append_images=frames[1:], duration=70)
            file = await served(client, await upload(client, buffer.getvalue()))
            with Image.open(io.BytesIO(file.content)) as image:
                durations = []
                for frame in ImageSequence.Iterator(image):
                    frame.load()  # WebP sets a frame's duration when it is decoded
                    durations.append(frame.info["duration"])
            assert durations == [70] * 4, fmt


async def test_stored_filename_has_no_bidi_or_zero_width_and_the_detected_extension(
    migrated: Cluster,
) -> None:
    async with service_client(service_settings(migrated)) as client:
        created = await upload(
            client, image_bytes("PNG"), filename="invoice\u202egnp.html\u200b", content_type="x"
        )
        file = await served(client, created)
    assert created.json()["filename"] == "invoicegnp.png"
    assert f'filename="{created.json()["id"]}.png"' in file.headers["Content-Disposition"]
