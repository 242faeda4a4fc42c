"""Hostile and clumsy clients get a structured 4xx, never a 5xx or a reset (issue 12).

Each test is one class of malformed request that once produced a 500 or a connection reset,
sent to a real uvicorn process on the shared cluster: resets only exist on a real socket.
"""

from __future__ import annotations

import http.client
import json
import random
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from replication.cluster import Cluster
from service.api.upload_stream import (
    DRAIN_MAX_BYTES,
    MAX_BOUNDARY_LENGTH,
    MULTIPART_OVERHEAD_BYTES,
)
from tests.cursor_forms import CALENDAR_ENDS, legacy_cursor, position_cursor
from tests.integration.live_service import LiveService, live_service
from tests.integration.service_fixtures import image_bytes

MAX_UPLOAD_BYTES = 8000
UPLOAD = "/api/v1/images/upload"


@pytest.fixture(scope="module")
def service(migrated: Cluster) -> Iterator[LiveService]:
    with live_service(migrated, max_upload_bytes=str(MAX_UPLOAD_BYTES)) as running:
        yield running


def error_body(response: http.client.HTTPResponse) -> dict[str, Any]:
    """The body, checked to have the shape every error response promises."""
    body = json.loads(response.read())
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "details"}, body
    assert isinstance(body["error"]["details"], dict), body
    return dict(body["error"])


def multipart(boundary: str, payload: bytes, *, filename: str = "picture.png") -> bytes:
    return (
        (
            f"--{boundary}\r\n"
            f'Content-Disposition: form-data; name="file"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + payload
        + f"\r\n--{boundary}--\r\n".encode()
    )


def connect(service: LiveService, timeout: float = 30) -> http.client.HTTPConnection:
    return http.client.HTTPConnection(service.host, service.port, timeout=timeout)


def cursor(timestamp: str) -> str:
    """A cursor of the earlier JSON form, which carried a UTC offset."""
    return legacy_cursor({"t": timestamp, "id": str(uuid.uuid4())})


def upload_with_boundary(
    service: LiveService, boundary: str, content: bytes
) -> tuple[int, dict[str, Any]]:
    """POST ``content`` as the file part, framed by ``boundary``: the status and error body."""
    connection = connect(service)
    try:
        connection.request(
            "POST",
            UPLOAD,
            body=multipart(boundary, content),
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
        response = connection.getresponse()
        return response.status, error_body(response)
    finally:
        connection.close()


def test_overlong_multipart_boundary_is_an_invalid_upload(service: LiveService) -> None:
    status, error = upload_with_boundary(service, "b" * (MAX_BOUNDARY_LENGTH + 1), b"\x89PNG")
    assert status == 400, service.log_text()[-2000:]
    assert error["code"] == "INVALID_UPLOAD"
    assert error["details"] == {"max_boundary_length": MAX_BOUNDARY_LENGTH}


def test_longest_accepted_boundary_still_reaches_image_validation(service: LiveService) -> None:
    """The limit refuses only what the parser cannot take: at the limit, the body is parsed."""
    status, error = upload_with_boundary(service, "b" * MAX_BOUNDARY_LENGTH, b"not an image")
    assert status == 415, service.log_text()[-2000:]
    assert error["code"] == "UNSUPPORTED_IMAGE"


@pytest.mark.parametrize(
    "timestamp",
    ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"],
    ids=["before-year-1-in-utc", "after-year-9999-in-utc"],
)
def test_list_cursor_outside_the_calendar_in_utc_is_an_invalid_cursor(
    service: LiveService, timestamp: str
) -> None:
    connection = connect(service)
    try:
        connection.request("GET", f"/api/v1/images?cursor={cursor(timestamp)}")
        response = connection.getresponse()
        assert response.status == 400, service.log_text()[-2000:]
        assert error_body(response)["code"] == "INVALID_CURSOR"
    finally:
        connection.close()


def test_list_cursor_at_the_ends_of_the_calendar_is_answered(service: LiveService) -> None:
    """Year 1 and year 9999 in UTC are valid PostgreSQL timestamps: a page, not an error. So is
    any position of the declared form beyond them, down to the ends of the 64-bit range."""
    first, last = CALENDAR_ENDS
    for micros in (first, last, first - 1, last + 1, -(2**63), 2**63 - 1):
        connection = connect(service)
        try:
            token = position_cursor(micros, uuid.uuid4())
            connection.request("GET", f"/api/v1/images?cursor={token}")
            response = connection.getresponse()
            assert response.status == 200, response.read()
            assert "items" in json.loads(response.read())
        finally:
            connection.close()


# Several times the socket buffers of a loopback connection (a few MB), so a server that
# stops reading leaves the client blocked in send() when it closes: the reset this prevents.
OVERSIZE_BODY_BYTES = 24 * 1024 * 1024
assert OVERSIZE_BODY_BYTES < DRAIN_MAX_BYTES


def send_whole_body_then_read(
    service: LiveService, body: bytes, headers: dict[str, str]
) -> tuple[int, str | None, dict[str, Any]]:
    """What http.client does: write every byte, only then read the response."""
    connection = connect(service)
    try:
        connection.request("POST", UPLOAD, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.getheader("Connection"), error_body(response)
    finally:
        connection.close()


def test_oversize_body_sent_before_reading_gets_the_413_not_a_reset(service: LiveService) -> None:
    """``Connection: close`` (as urllib sends) makes uvicorn close right after the response;
    without draining, the unread body turned the close into a reset."""
    boundary = "oversize-boundary"
    status, _, error = send_whole_body_then_read(
        service,
        multipart(boundary, b"x" * OVERSIZE_BODY_BYTES),
        {"Content-Type": f"multipart/form-data; boundary={boundary}", "Connection": "close"},
    )
    assert (status, error["code"]) == (413, "FILE_TOO_LARGE")
    assert error["details"] == {"max_bytes": MAX_UPLOAD_BYTES}


def test_oversize_chunked_body_is_drained_and_the_connection_kept(service: LiveService) -> None:
    """No Content-Length: the limit is found mid-stream; after the drain the same connection
    serves the next request."""
    boundary = "chunked-boundary"
    body = multipart(boundary, b"y" * OVERSIZE_BODY_BYTES)
    chunks = (body[i : i + 1024 * 1024] for i in range(0, len(body), 1024 * 1024))
    connection = connect(service)
    try:
        connection.request(
            "POST",
            UPLOAD,
            body=chunks,
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
            encode_chunked=True,
        )
        response = connection.getresponse()
        assert response.status == 413
        assert response.getheader("Connection") is None
        assert error_body(response)["code"] == "FILE_TOO_LARGE"
        connection.request("GET", "/health")
        assert connection.getresponse().status == 200
    finally:
        connection.close()


def test_malformed_body_is_drained_before_the_400(service: LiveService) -> None:
    """Any refusal mid-body, not only 413, reads the rest before answering. Chunked, so no
    Content-Length announces the size and the parser fails on the first chunk."""
    boundary = "broken-boundary"
    body = b"garbage before any boundary\r\n" + b"z" * OVERSIZE_BODY_BYTES
    connection = connect(service)
    try:
        connection.request(
            "POST",
            UPLOAD,
            body=(body[i : i + 1024 * 1024] for i in range(0, len(body), 1024 * 1024)),
            headers={
                "Content-Type": f"multipart/form-data; boundary={boundary}",
                "Connection": "close",
            },
            encode_chunked=True,
        )
        response = connection.getresponse()
        assert response.status == 400
        error = error_body(response)
    finally:
        connection.close()
    assert error["code"] == "INVALID_UPLOAD"
    assert "malformed" in error["message"]


def test_absurd_content_length_is_refused_at_once_with_connection_close(
    service: LiveService,
) -> None:
    """A declared 1 GB is refused before a byte of it is read, and the connection is closed."""
    declared = 1024**3
    connection = connect(service, timeout=5)
    try:
        connection.putrequest("POST", UPLOAD)
        connection.putheader("Content-Type", "multipart/form-data; boundary=abc")
        connection.putheader("Content-Length", str(declared))
        connection.endheaders()
        started = time.monotonic()
        response = connection.getresponse()
        assert time.monotonic() - started < 2
        assert response.status == 413
        assert response.getheader("Connection") == "close"
        assert error_body(response)["code"] == "FILE_TOO_LARGE"
    finally:
        connection.close()


def test_expect_continue_with_an_oversize_length_is_refused_before_the_body(
    service: LiveService,
) -> None:
    """No "100 Continue" invitation for a body that will be refused: a 413 at once, and the
    connection closed, since the body the client still holds would otherwise frame nothing."""
    with socket.create_connection((service.host, service.port), timeout=5) as raw:
        raw.sendall(
            f"POST {UPLOAD} HTTP/1.1\r\nHost: test\r\n"
            "Content-Type: multipart/form-data; boundary=abc\r\n"
            f"Content-Length: {MAX_UPLOAD_BYTES * 20}\r\nExpect: 100-continue\r\n\r\n".encode()
        )
        received = b""
        while chunk := raw.recv(65536):  # the server closes: recv returns b"", no timeout
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 "), received[:300]
    assert b"100 Continue" not in received
    assert b"connection: close" in head.lower()
    assert json.loads(body)["error"]["code"] == "FILE_TOO_LARGE"


def test_chunked_body_of_empty_parts_is_held_to_the_body_limit(service: LiveService) -> None:
    """Without a Content-Length, parts with headers and no data count against no field limit;
    the body as a whole still may not exceed the upload limit plus the multipart overhead."""
    boundary = "parts-boundary"
    empty_part = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="other"\r\n'
        f"X-Padding: {'p' * 200}\r\n\r\n\r\n"
    ).encode()
    file_part = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n'
    ).encode() + image_bytes("PNG", (2, 2))
    body = empty_part * 4000 + file_part + f"\r\n--{boundary}--\r\n".encode()
    assert len(body) > (MAX_UPLOAD_BYTES + MULTIPART_OVERHEAD_BYTES) * 10
    connection = connect(service)
    try:
        connection.request(
            "POST",
            UPLOAD,
            body=(body[i : i + 65536] for i in range(0, len(body), 65536)),
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
            encode_chunked=True,
        )
        response = connection.getresponse()
        assert response.status == 413, response.read()[:300]
        assert error_body(response)["code"] == "FILE_TOO_LARGE"
    finally:
        connection.close()


def test_rate_limited_upload_sent_before_reading_gets_the_429_not_a_reset(
    migrated: Cluster,
) -> None:
    # A loopback address of its own, so the counter row is this test's alone.
    source = f"127.{random.randrange(1, 255)}.{random.randrange(1, 255)}.{random.randrange(2, 255)}"
    boundary = "limited-boundary"
    small = multipart(boundary, b"not an image")
    large = multipart(boundary, b"x" * OVERSIZE_BODY_BYTES)
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}", "Connection": "close"}
    with live_service(
        migrated, upload_rate_limit="1", max_upload_bytes=str(OVERSIZE_BODY_BYTES * 2)
    ) as limited:
        statuses = []
        for body in (small, large):
            connection = http.client.HTTPConnection(
                limited.host, limited.port, timeout=30, source_address=(source, 0)
            )
            try:
                connection.request("POST", UPLOAD, body=body, headers=headers)
                response = connection.getresponse()
                statuses.append(response.status)
                response.read()
            finally:
                connection.close()
    assert statuses == [415, 429]
