"""Hostile clients against the real service on the shared cluster: slowloris, trickled bodies,
oversized headers, too many connections, slow readers of large files, a full connection pool,
too many requests in flight, forwarded-address tricks, and the operational endpoints.

The server tests run `replikit serve` as a user would (uvicorn with replikit's connection
limits), with short limits so each attack is decided in seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from loadtests.hostile_images import noise_png
from replication.cluster import Cluster
from replication.serving.process import ServiceRecord, start_service, stop_service
from replication.serving.urls import service_urls
from tests.integration.clusters import free_base_port, reachable_temp_dir
from tests.integration.conftest import connect
from tests.integration.service_fixtures import (
    image_bytes,
    service_client,
    service_settings,
    upload,
)

HEADER_TIMEOUT = 1.0
BODY_IDLE_TIMEOUT = 1.0
SEND_TIMEOUT = 3.0
MAX_CONNECTIONS = 60
OPS_TOKEN = "t-" + uuid.uuid4().hex


@dataclass
class LiveService:
    record: ServiceRecord

    @property
    def url(self) -> str:
        return self.record.url

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=10)


def start(migrated: Cluster, name: str, **env: str) -> tuple[Path, ServiceRecord]:
    scratch = reachable_temp_dir(f"replikit-{name}-")
    port = free_base_port(2)
    record = start_service(
        scratch,
        host="127.0.0.1",
        port=port,
        ops_port=port + 1,
        workers=1,
        env={**service_urls(migrated.state), "REPLIKIT_UPLOAD_RATE_LIMIT": "0", **env},
    )
    return scratch, record


@pytest.fixture(scope="module")
def live(migrated: Cluster) -> Iterator[LiveService]:
    scratch, record = start(
        migrated,
        "hostile",
        REPLIKIT_HEADER_TIMEOUT=str(HEADER_TIMEOUT),
        REPLIKIT_BODY_IDLE_TIMEOUT=str(BODY_IDLE_TIMEOUT),
        REPLIKIT_SEND_TIMEOUT=str(SEND_TIMEOUT),
        REPLIKIT_MAX_CONNECTIONS=str(MAX_CONNECTIONS),
        REPLIKIT_MAX_HEADER_BYTES="8192",
        # A small pool, so slow readers would starve it at once if they held connections.
        REPLIKIT_DB_POOL_SIZE="2",
        REPLIKIT_DB_MAX_OVERFLOW="0",
        REPLIKIT_OPS_TOKEN=OPS_TOKEN,
        REPLIKIT_FORWARDED_ALLOW_IPS="127.0.0.1",
    )
    try:
        yield LiveService(record)
    finally:
        stop_service(scratch)


def raw_socket(service: LiveService, *, rcvbuf: int | None = None) -> socket.socket:
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(10)
    sock.connect((service.record.host, service.record.port))
    return sock


def read_until_closed(sock: socket.socket, limit: float = 10) -> bytes:
    """Everything the server sends until it closes (or resets) the connection."""
    sock.settimeout(limit)
    received = bytearray()
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            received += chunk
    return bytes(received)


def healthy_quickly(service: LiveService) -> float:
    started = time.monotonic()
    with service.client() as client:
        assert client.get("/health").status_code == 200
        assert client.get("/api/v1/images?limit=1").status_code == 200
    return time.monotonic() - started


def test_trickled_headers_are_cut_off_while_others_are_served(live: LiveService) -> None:
    sockets = [raw_socket(live) for _ in range(30)]
    try:
        for sock in sockets:
            sock.sendall(b"GET /api/v1/images HTTP/1.1\r\nHost: x\r\n")
        assert healthy_quickly(live) < 2
        started = time.monotonic()
        answers = [read_until_closed(sock) for sock in sockets]
        assert time.monotonic() - started < HEADER_TIMEOUT + 5
        for answer in answers:
            assert answer.startswith(b"HTTP/1.1 408"), answer[:80]
            assert b'"REQUEST_TIMEOUT"' in answer
    finally:
        for sock in sockets:
            sock.close()


def test_a_silent_connection_is_closed_after_the_header_timeout(live: LiveService) -> None:
    with raw_socket(live) as sock:
        started = time.monotonic()
        read_until_closed(sock)
        assert time.monotonic() - started < HEADER_TIMEOUT + 5


def test_oversized_headers_get_431(live: LiveService) -> None:
    with raw_socket(live) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 20_000)
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 431"), answer[:80]


def test_a_stalled_body_gets_408_and_holds_nothing(live: LiveService) -> None:
    with raw_socket(live) as sock:
        sock.sendall(
            b"POST /api/v1/images/upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n"
            b"Content-Type: multipart/form-data; boundary=b\r\n\r\n--b\r\n"
        )
        started = time.monotonic()
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:80]
    assert time.monotonic() - started < BODY_IDLE_TIMEOUT + 5


def test_at_the_cap_a_new_connection_replaces_the_longest_waiting_one(
    live: LiveService,
) -> None:
    held = [raw_socket(live) for _ in range(MAX_CONNECTIONS)]
    try:
        time.sleep(0.1)
        with raw_socket(live) as newcomer:
            newcomer.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert read_until_closed(newcomer).startswith(b"HTTP/1.1 200")
        assert read_until_closed(held[0]).startswith(b"HTTP/1.1 408")
    finally:
        for sock in held:
            sock.close()


def test_when_every_connection_is_busy_a_new_one_gets_a_json_503(live: LiveService) -> None:
    busy = []
    try:
        for _ in range(MAX_CONNECTIONS):
            sock = raw_socket(live)
            sock.sendall(
                b"POST /api/v1/images/upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n"
                b"Content-Type: multipart/form-data; boundary=b\r\n\r\n--b\r\n"
            )
            busy.append(sock)
        with raw_socket(live) as extra:
            answer = read_until_closed(extra)
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503"), answer[:80]
        assert b"retry-after: 1" in head
        assert json.loads(body)["error"]["code"] == "TOO_MANY_CONNECTIONS"
    finally:
        for sock in busy:
            sock.close()
    time.sleep(0.2)  # let the server see the closes
    assert healthy_quickly(live) < 2


def test_slow_readers_of_large_files_hold_no_database_connection(live: LiveService) -> None:
    with live.client() as client:
        created = client.post(
            "/api/v1/images/upload", files={"file": ("big.png", noise_png(8), "image/png")}
        )
        assert created.status_code == 201, created.text
        path = f"/api/v1/images/{created.json()['id']}/file"
    # Ten readers (five times the pool) ask for 8 MB on the primary and then read nothing.
    readers = [raw_socket(live, rcvbuf=4096) for _ in range(10)]
    try:
        for sock in readers:
            sock.sendall(
                f"GET {path} HTTP/1.1\r\nHost: x\r\nX-Replikit-Consistency: strong\r\n\r\n".encode()
            )
        asked = time.monotonic()
        time.sleep(1)
        with live.client() as client:
            for attempt in range(3):
                strong = client.get(path, headers={"X-Replikit-Consistency": "strong"})
                assert strong.status_code == 200, (attempt, strong.text[:200])
                uploaded = client.post(
                    "/api/v1/images/upload",
                    files={"file": (f"{attempt}.png", image_bytes("PNG"), "image/png")},
                )
                assert uploaded.status_code == 201, uploaded.text
        # A reader that never reads is dropped after the send timeout: it gets a part only.
        time.sleep(max(0.0, asked + SEND_TIMEOUT + 1.5 - time.monotonic()))
        partial = read_until_closed(readers[0])
        assert partial.startswith(b"HTTP/1.1 200")
        assert len(partial) < 8 * 1024 * 1024
    finally:
        for sock in readers:
            sock.close()


def test_operational_endpoints_answer_only_on_the_operations_listener_or_with_the_token(
    live: LiveService,
) -> None:
    with live.client() as client:
        for path in ("/cluster", "/metrics", "/%63luster"):
            hidden = client.get(path)
            assert hidden.status_code == 404, path
            assert hidden.json()["error"]["code"] == "NOT_FOUND"
        wrong = client.get("/cluster", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 404
        token = client.get("/cluster", headers={"Authorization": f"Bearer {OPS_TOKEN}"})
        assert token.status_code == 200
        assert "/cluster" not in client.get("/openapi.json").json()["paths"]
    ops = httpx.get(f"{live.record.ops_url}/cluster", timeout=10)
    assert ops.status_code == 200
    assert ops.json()["nodes"]
    assert "replikit_http_requests_total" in httpx.get(f"{live.record.ops_url}/metrics").text


async def stored_upload_ip(migrated: Cluster, image_id: str) -> str:
    primary = await connect(migrated, migrated.state.primary_node)
    try:
        return str(
            await primary.fetchval(
                "SELECT host(upload_ip) FROM images WHERE id = $1", uuid.UUID(image_id)
            )
        )
    finally:
        await primary.close()


def test_forwarded_address_counts_hops_from_the_right(live: LiveService, migrated: Cluster) -> None:
    with live.client() as client:
        # The client forged the first entry; the trusted proxy (us) appended the real one.
        created = client.post(
            "/api/v1/images/upload",
            files={"file": ("f.png", image_bytes("PNG"), "image/png")},
            headers={"X-Forwarded-For": "6.6.6.6, 203.0.113.7"},
        )
        assert created.status_code == 201, created.text
        assert asyncio.run(stored_upload_ip(migrated, created.json()["id"])) == "203.0.113.7"
        garbage = client.post(
            "/api/v1/images/upload",
            files={"file": ("g.png", image_bytes("PNG"), "image/png")},
            headers={"X-Forwarded-For": "not-an-address"},
        )
        assert garbage.status_code == 400
        assert garbage.json()["error"]["code"] == "INVALID_CLIENT_ADDRESS"


def test_forwarded_address_from_an_untrusted_peer_is_ignored(migrated: Cluster) -> None:
    scratch, record = start(migrated, "untrusted", REPLIKIT_FORWARDED_ALLOW_IPS="192.0.2.1")
    try:
        created = httpx.post(
            f"{record.url}/api/v1/images/upload",
            files={"file": ("f.png", image_bytes("PNG"), "image/png")},
            headers={"X-Forwarded-For": "203.0.113.9"},
            timeout=10,
        )
        assert created.status_code == 201, created.text
        assert asyncio.run(stored_upload_ip(migrated, created.json()["id"])) == "127.0.0.1"
    finally:
        stop_service(scratch)


# in-process apps on the real cluster: pool, in-flight bound, ids, docs ---------------------


async def test_a_full_pool_is_a_503_for_writes_and_another_node_for_reads(
    migrated: Cluster,
) -> None:
    settings = service_settings(
        migrated, replicas=True, db_pool_size=1, db_max_overflow=0, db_pool_timeout=0.3
    )
    async with service_client(settings) as client:
        created = await upload(client, image_bytes("PNG"))
        assert created.status_code == 201
        router = client._transport.app.state.router  # type: ignore[attr-defined]
        primary = router.nodes[0]
        # The primary's only pooled connections, held: the write pool's and the read pool's.
        async with primary.engine.connect(), primary.driver_pool.acquire():
            busy = await upload(client, image_bytes("PNG"))
            assert busy.status_code == 503, busy.text
            assert busy.json()["error"]["code"] == "DATABASE_BUSY"
            assert busy.headers["Retry-After"] == "1"
            strong = await client.get(
                f"/api/v1/images/{created.json()['id']}",
                headers={"X-Replikit-Consistency": "strong"},
            )
            assert strong.status_code == 503
            assert strong.json()["error"]["code"] == "DATABASE_BUSY"
            replica = router.nodes[1]
            async with replica.driver_pool.acquire():  # and the first replica's
                for _ in range(4):
                    read = await client.get("/api/v1/images?limit=1")
                    assert read.status_code == 200, read.text
                    assert read.headers["X-Replikit-Node"] != primary.name
        metrics = (await client.get("/metrics")).text
        assert 'replikit_read_fallbacks_total{reason="pool_exhausted"}' in metrics
        assert 'replikit_unavailable_total{reason="pool_exhausted"}' in metrics


async def test_requests_past_the_in_flight_bound_get_503_and_health_still_answers(
    migrated: Cluster,
) -> None:
    settings = service_settings(
        migrated, replicas=True, max_in_flight=2, ryw_wait=1.5, read_consistency="read_your_writes"
    )
    far_future = {"X-Replikit-LSN": "FFFF/FFFFFFFF"}  # no replica has it: each read waits
    async with service_client(settings) as client:
        slow = [
            asyncio.create_task(client.get("/api/v1/images?limit=1", headers=far_future))
            for _ in range(2)
        ]
        await asyncio.sleep(0.5)
        refused = await client.get("/api/v1/images?limit=1")
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "SERVER_BUSY"
        assert refused.headers["Retry-After"] == "1"
        assert (await client.get("/health")).status_code == 200
        assert [(await task).status_code for task in slow] == [200, 200]
        assert (await client.get("/api/v1/images?limit=1")).status_code == 200


async def test_other_spellings_of_an_id_redirect_to_the_canonical_url(migrated: Cluster) -> None:
    async with service_client(service_settings(migrated)) as client:
        image_id = (await upload(client, image_bytes("PNG"))).json()["id"]
        spellings = [
            image_id.upper(),
            "{" + image_id + "}",
            f"urn:uuid:{image_id}",
            image_id.replace("-", ""),
        ]
        for spelling in spellings:
            for suffix in ("", "/file"):
                moved = await client.get(f"/api/v1/images/{spelling}{suffix}")
                assert moved.status_code == 308, spelling
                assert moved.headers["Location"] == f"/api/v1/images/{image_id}{suffix}"
                assert moved.json()["error"]["code"] == "NON_CANONICAL_ID"
        assert (await client.get(f"/api/v1/images/{image_id}")).status_code == 200


async def test_errors_echo_a_bounded_prefix_of_the_input(migrated: Cluster) -> None:
    async with service_client(service_settings(migrated)) as client:
        long_id = "x" * 10_000
        missing = await client.get(f"/api/v1/images/{long_id}")
        assert missing.status_code == 404
        assert len(missing.content) < 400
        bad_mode = await client.get(
            "/api/v1/images", headers={"X-Replikit-Consistency": "y" * 10_000}
        )
        assert bad_mode.status_code == 400
        assert len(bad_mode.content) < 600


async def test_files_are_served_inert(migrated: Cluster) -> None:
    async with service_client(service_settings(migrated)) as client:
        image_id = (await upload(client, image_bytes("PNG"))).json()["id"]
        served = await client.get(f"/api/v1/images/{image_id}/file")
        assert served.headers["Content-Security-Policy"] == "default-src 'none'; sandbox"
        assert served.headers["X-Content-Type-Options"] == "nosniff"


async def test_docs_can_be_turned_off(migrated: Cluster) -> None:
    async with service_client(service_settings(migrated, docs_enabled=False)) as client:
        for path in ("/docs", "/redoc", "/openapi.json"):
            assert (await client.get(path)).status_code == 404, path
