"""Read one file field from a multipart body as it streams in, and stop at the size limit.

Starlette's form parser reads the whole body before a route runs and has no limit for file
parts, so a 10 GB upload would be spooled to disk before we could refuse it. Here the body is
fed chunk by chunk to python-multipart's parser and reading stops as soon as the file part
passes ``max_bytes``, or the whole body ``max_bytes`` plus the multipart overhead (or at once,
when Content-Length already says it is too large).

Refusing mid-body needs care: a client that sends its whole body before reading the response
(Python's ``http.client``, ``urllib``, many scripts) is still writing when the 413 is ready. If
the connection is closed while its bytes sit unread in the socket, the kernel answers with a
reset and the client sees ``ECONNRESET`` instead of our 413. So before answering, the rest of
the body is read and dropped (drained), within a budget of bytes and time; a body that
declares more than the budget is refused at once with ``Connection: close``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from fastapi import Request
from python_multipart.multipart import MultipartParser, parse_options_header

from service.errors import FileTooLargeError, InvalidUploadError, ServiceError

MULTIPART_OVERHEAD_BYTES = 64 * 1024
MAX_OTHER_FIELD_BYTES = 64 * 1024
# python-multipart refuses longer boundaries (RFC 2046 allows 70; real clients send 16-70).
MAX_BOUNDARY_LENGTH = 256
# The drain budget. Drained bytes are dropped chunk by chunk, so draining costs bandwidth and
# one connection's time, never memory. 32 MiB is about three times the default 10 MiB upload
# limit: a client that misjudged the limit by that much still gets its 413 (and can keep the
# connection). Ten seconds releases the connection from a client that trickles. A body that
# declares more than the budget is refused without reading it, with Connection: close; such a
# client may see a reset, which is the price of never reading gigabytes just to say no.
DRAIN_MAX_BYTES = 32 * 1024 * 1024
DRAIN_SECONDS = 10.0


@dataclass
class UploadedFile:
    data: bytes
    filename: str | None


@dataclass
class _PartState:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    header_field: bytearray = field(default_factory=bytearray)
    header_value: bytearray = field(default_factory=bytearray)
    is_file_field: bool = False
    filename: str | None = None
    file_data: bytearray | None = None
    other_bytes: int = 0


def _too_large(max_bytes: int) -> FileTooLargeError:
    return FileTooLargeError(
        f"The file is larger than the limit of {max_bytes} bytes.",
        details={"max_bytes": max_bytes},
    )


def _closing(error: ServiceError) -> ServiceError:
    """``error`` with ``Connection: close``: part of the body stays unread, so the connection
    cannot carry another request."""
    error.headers = {**error.headers, "Connection": "close"}
    return error


def _declared_length(request: Request) -> int | None:
    declared = request.headers.get("content-length", "")
    return int(declared) if declared.isascii() and declared.isdigit() else None


@dataclass
class _BodyProgress:
    finished: bool = False  # the last chunk was read: nothing left to drain


async def _drain(request: Request) -> bool:
    """Read and drop the rest of the body within the drain budget; True if it all came."""
    drained = 0
    try:
        async with asyncio.timeout(DRAIN_SECONDS):
            async for chunk in request.stream():
                drained += len(chunk)
                if drained > DRAIN_MAX_BYTES:
                    return False
    except Exception:  # the timeout, or the client left: either way the connection is done
        return False
    return True


async def read_upload(request: Request, *, field_name: str, max_bytes: int) -> UploadedFile:
    """The first part named ``field_name``.

    Every refusal is a ServiceError (4xx), raised only after the rest of the body is drained,
    or with ``Connection: close`` when it was not, so the client receives it (module docstring).
    """
    progress = _BodyProgress()
    try:
        return await _read_upload(
            request, field_name=field_name, max_bytes=max_bytes, progress=progress
        )
    except ServiceError as error:
        if progress.finished:
            raise
        raise await refuse_after_draining(request, error) from None


async def refuse_after_draining(request: Request, error: ServiceError) -> ServiceError:
    """``error``, to raise once the unread body is drained, or with ``Connection: close`` when
    it could not be (or already says so). Also for refusals that come before the body is read,
    such as the rate limit."""
    if error.headers.get("Connection") == "close" or await _drain(request):
        return error
    return _closing(error)


async def _read_upload(
    request: Request, *, field_name: str, max_bytes: int, progress: _BodyProgress
) -> UploadedFile:
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise InvalidUploadError(
            f"Send the image as multipart/form-data with a field named '{field_name}'."
        )
    if len(boundary) > MAX_BOUNDARY_LENGTH:
        raise InvalidUploadError(
            f"The multipart boundary is {len(boundary)} characters long; "
            f"at most {MAX_BOUNDARY_LENGTH} are accepted.",
            details={"max_boundary_length": MAX_BOUNDARY_LENGTH},
        )
    max_body = max_bytes + MULTIPART_OVERHEAD_BYTES
    declared = _declared_length(request)
    if declared is not None and declared > max_body:
        # A client waiting for "100 Continue" has sent nothing yet: reading would invite the
        # body only to drop it, and not reading leaves the framing unknown. Close instead.
        waiting = request.headers.get("expect", "").lower() == "100-continue"
        if waiting or declared > max_body + DRAIN_MAX_BYTES:
            raise _closing(_too_large(max_bytes))
        raise _too_large(max_bytes)

    state = _PartState()
    found: list[UploadedFile] = []

    def on_part_begin() -> None:
        state.headers.clear()
        state.is_file_field = False

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state.header_field += data[start:end]  # python-multipart caps a header line at 4 KiB

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state.header_value += data[start:end]

    def on_header_end() -> None:
        state.headers[bytes(state.header_field).lower()] = bytes(state.header_value)
        state.header_field.clear()
        state.header_value.clear()

    def on_headers_finished() -> None:
        _, disposition = parse_options_header(state.headers.get(b"content-disposition", b""))
        name = disposition.get(b"name", b"").decode(errors="replace")
        state.is_file_field = name == field_name and not found and state.file_data is None
        if state.is_file_field:
            raw_name = disposition.get(b"filename")
            state.filename = raw_name.decode(errors="replace") if raw_name is not None else None
            state.file_data = bytearray()

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if state.is_file_field and state.file_data is not None:
            state.file_data += data[start:end]
            if len(state.file_data) > max_bytes:
                raise _too_large(max_bytes)
        else:
            state.other_bytes += end - start
            if state.other_bytes > MAX_OTHER_FIELD_BYTES:
                raise InvalidUploadError(
                    f"Fields other than '{field_name}' may hold at most "
                    f"{MAX_OTHER_FIELD_BYTES} bytes."
                )

    def on_part_end() -> None:
        if state.is_file_field and state.file_data is not None:
            found.append(UploadedFile(bytes(state.file_data), state.filename))
            state.is_file_field = False

    try:
        parser = MultipartParser(
            boundary,
            callbacks={
                "on_part_begin": on_part_begin,
                "on_header_field": on_header_field,
                "on_header_value": on_header_value,
                "on_header_end": on_header_end,
                "on_headers_finished": on_headers_finished,
                "on_part_data": on_part_data,
                "on_part_end": on_part_end,
            },
        )
        received = 0
        async for chunk in request.stream():
            parser.write(chunk)  # first: a malformed or oversize part says what is wrong
            received += len(chunk)
            # Chunked bodies declare no length: without this, endless header-only parts would
            # keep the parser busy with nothing counted against any limit.
            if received > max_body:
                raise _too_large(max_bytes)
        progress.finished = True
        parser.finalize()
    except (FileTooLargeError, InvalidUploadError):
        raise
    except Exception as error:  # python-multipart's parse errors
        raise InvalidUploadError(f"The multipart body is malformed: {error}") from error
    if not found:
        raise InvalidUploadError(f"The form has no file field named '{field_name}'.")
    return found[0]
