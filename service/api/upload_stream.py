"""Read one file field from a multipart body as it streams in, and stop at the size limit.

Starlette's form parser reads the whole body before a route runs and has no limit for file
parts, so a 10 GB upload would be spooled to disk before we could refuse it. Here the body is
fed chunk by chunk to python-multipart's parser and reading stops as soon as the file part
passes ``max_bytes`` (or at once, when Content-Length already says it is too large).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fastapi import Request
from python_multipart.multipart import MultipartParser, parse_options_header

from service.errors import FileTooLargeError, InvalidUploadError

MULTIPART_OVERHEAD_BYTES = 64 * 1024
MAX_OTHER_FIELD_BYTES = 64 * 1024


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


async def read_upload(request: Request, *, field_name: str, max_bytes: int) -> UploadedFile:
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise InvalidUploadError(
            f"Send the image as multipart/form-data with a field named '{field_name}'."
        )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes + MULTIPART_OVERHEAD_BYTES:
        raise _too_large(max_bytes)

    state = _PartState()
    found: list[UploadedFile] = []

    def on_part_begin() -> None:
        state.headers.clear()
        state.is_file_field = False

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state.header_field += data[start:end]

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
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except (FileTooLargeError, InvalidUploadError):
        raise
    except Exception as error:  # python-multipart's parse errors
        raise InvalidUploadError(f"The multipart body is malformed: {error}") from error
    if not found:
        raise InvalidUploadError(f"The form has no file field named '{field_name}'.")
    return found[0]
