"""Image routes: upload, metadata, file bytes, listing and delete."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response

from service.api.deps import (
    BlobStoreDep,
    RouterDep,
    SettingsDep,
    WriteSession,
    get_request_routing,
    read_connection,
    read_observer,
)
from service.api.links import (
    DELETE_IMAGE,
    DELETE_TOKEN_HEADER,
    GET_IMAGE,
    GET_IMAGE_FILE,
    HEAD_IMAGE_FILE,
    IMAGE_LINKS,
    LIST_IMAGES,
    LISTED_LINKS,
    UPLOAD_IMAGE,
    UPLOADED_LINKS,
)
from service.api.path_only_route import PathOnlyRoute
from service.api.responses import json_response
from service.api.schemas import ErrorBody, ImageCreated, ImageList, ImagePublic, image_fields
from service.api.upload_stream import read_upload, refuse_after_draining
from service.db.lsn import current_wal_lsn, wal_lsn_on
from service.errors import DeleteTokenRequiredError, NonCanonicalIdError, ServiceError
from service.images import service as images
from service.images.decoder import ImageDecoder
from service.images.filenames import content_disposition, download_name, sanitize_filename
from service.images.pagination import CURSOR_LENGTH, CURSOR_PATTERN, Cursor
from service.images.storage import BlobStore
from service.ratelimit import client_address, count_upload

LSN_HEADER = "X-Replikit-LSN"
IMMUTABLE = "public, max-age=31536000, immutable"
FILE_CSP = "default-src 'none'; sandbox"

router = APIRouter(prefix="/api/v1/images", tags=["images"])
# The hot reads: an id from the path and the request, nothing for FastAPI to solve.
reads = APIRouter(prefix=router.prefix, tags=["images"], route_class=PathOnlyRoute)


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ErrorBody} for status in statuses}


UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            # An empty part is EMPTY_FILE (400).
                            "minLength": 1,
                            "description": "A JPEG, PNG, GIF or WEBP image, told by its bytes "
                            "(the part's Content-Type and filename are not trusted).",
                        }
                    },
                }
            }
        },
    }
}


# Every 503 an upload can get, each with Retry-After.
UPLOAD_UNAVAILABLE = (
    "Retry after Retry-After seconds. error.code: STORAGE_FULL (no disk space left on the "
    "primary or in the blob directory; nothing was stored), PRIMARY_UNAVAILABLE, "
    "DATABASE_UNAVAILABLE, DATABASE_BUSY, DECODER_BUSY or SERVER_BUSY."
)


@router.post(
    "/upload",
    operation_id=UPLOAD_IMAGE,
    status_code=201,
    response_model=ImageCreated,
    responses={
        201: {"links": UPLOADED_LINKS},
        **errors(400, 408, 413, 415, 422, 429),
        503: {"model": ErrorBody, "description": UPLOAD_UNAVAILABLE},
    },
    openapi_extra=UPLOAD_BODY,
)
async def upload_image(
    request: Request,
    db_router: RouterDep,
    store: BlobStoreDep,
    settings: SettingsDep,
) -> Response:
    """Upload an image (multipart field ``file``). The type is decided from the bytes.

    No database connection is held while the body arrives or the image is decoded: the rate
    limit and the insert each take a short session of their own, so slow or hostile uploaders
    cannot exhaust the primary's pool.
    """
    try:
        routing = get_request_routing(request)
        # A known-dead (or just found full) primary is a 503 before the body is read.
        db_router.require_writer_with_room()
        client_ip = client_address(request)
        if client_ip and settings.upload_rate_limit > 0:
            async with db_router.write_connection(routing) as connection:
                await count_upload(
                    connection=connection, client_ip=client_ip, limit=settings.upload_rate_limit
                )
    except ServiceError as refusal:
        # Refused before the body was read: drain it first, or a client that sends its whole
        # body before reading (http.client, urllib) gets a reset instead of this answer.
        raise await refuse_after_draining(request, refusal) from None
    upload = await read_upload(request, field_name="file", max_bytes=settings.max_upload_bytes)
    # Decoded in a worker process within the decode budget; the stored bytes are the cleaned
    # ones (no metadata, nothing after the image's end), and facts describe those bytes.
    decoder: ImageDecoder = request.app.state.decoder
    facts, stored_bytes = await decoder.process(upload.data)
    async with db_router.write_connection(routing) as connection:
        created = await images.create_image(
            connection=connection,
            store=store,
            facts=facts,
            data=stored_bytes,
            filename=sanitize_filename(upload.filename, facts.format),
            upload_ip=client_ip,
        )
        lsn = await wal_lsn_on(connection)
    # Written straight from the row, as the read routes do (service/api/responses.py): the
    # response_model stays in the route for the OpenAPI schema only.
    return json_response(
        {**image_fields(created.image), "delete_token": created.delete_token},
        status_code=201,
        headers={LSN_HEADER: lsn, "Location": f"{router.prefix}/{created.image.id}"},
    )


# The cursor's form is declared, not enforced by FastAPI: Cursor.decode refuses anything else
# as INVALID_CURSOR (400, "start again without it"), the API's error for a cursor it never
# issued, and takes every string of the declared form (service/images/pagination.py).
CURSOR_SCHEMA: dict[str, Any] = {"pattern": CURSOR_PATTERN, "maxLength": CURSOR_LENGTH}


@router.get(
    "",
    operation_id=LIST_IMAGES,
    response_model=ImageList,
    responses={200: {"links": LISTED_LINKS}, **errors(400, 422, 503)},
)
async def list_images(
    request: Request,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[
        str,
        Query(
            description="A next_cursor from the previous page; empty or absent: the newest.",
            json_schema_extra=CURSOR_SCHEMA,
        ),
    ] = "",
) -> Response:
    """Newest first; follow ``next_cursor`` for older images."""
    after = Cursor.decode(cursor) if cursor else None
    async with read_connection(request) as connection:
        page, next_cursor = await images.list_images(
            connection=connection, limit=limit, cursor=after, observer=read_observer(request)
        )
    return json_response(
        {
            "items": [image_fields(image) for image in page],
            "next_cursor": next_cursor.encode() if next_cursor else None,
        }
    )


def image_id_in_path(image_id: str, request: Request) -> uuid.UUID:
    """The path's id; other spellings of a UUID are redirected to the canonical URL."""
    try:
        return images.parse_image_id(image_id)
    except NonCanonicalIdError as error:
        suffix = "/file" if request.url.path.endswith("/file") else ""
        error.headers["Location"] = f"{router.prefix}/{error.canonical}{suffix}"
        raise


async def path_image_id(image_id: str, request: Request) -> uuid.UUID:
    return image_id_in_path(image_id, request)


ImageId = Annotated[uuid.UUID, Depends(path_image_id)]


# The read routes take the id as a plain path parameter (service/api/path_only_route.py), open
# their read connection themselves (``async with``) and write their JSON straight from the row
# (the fields ``ImagePublic`` declares, serialized by pydantic-core as FastAPI would): FastAPI's
# dependency solving and its validation of a returned model cost more CPU than the read's
# own query.
@reads.get(
    "/{image_id}",
    operation_id=GET_IMAGE,
    response_model=ImagePublic,
    responses={200: {"links": IMAGE_LINKS}, **errors(308, 404, 503)},
)
async def get_image(image_id: str, request: Request) -> Response:
    wanted = image_id_in_path(image_id, request)
    async with read_connection(request) as connection:
        image = await images.get_image(
            connection=connection, image_id=wanted, observer=read_observer(request)
        )
    return json_response(image_fields(image))


def _etag_matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    candidates = {part.strip().removeprefix("W/") for part in header.split(",")}
    return "*" in candidates or etag in candidates


FILE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/*": {}}},
    304: {"description": "Not modified"},
    **errors(308, 404, 503),
}


FILE_HEADERS: dict[str, Any] = {
    "parameters": [
        {"name": "If-None-Match", "in": "header", "required": False, "schema": {"type": "string"}}
    ]
}


# One function, two routes: each method gets an operation id of its own in the OpenAPI
# schema (``api_route`` with both methods gave them the same one).
@reads.head(
    "/{image_id}/file",
    operation_id=HEAD_IMAGE_FILE,
    response_class=Response,
    responses=FILE_RESPONSES,
    openapi_extra=FILE_HEADERS,
)
@reads.get(
    "/{image_id}/file",
    operation_id=GET_IMAGE_FILE,
    response_class=Response,
    responses=FILE_RESPONSES,
    openapi_extra=FILE_HEADERS,
)
async def get_image_file(image_id: str, request: Request) -> Response:
    """The stored bytes; cacheable forever (ids are never reused, content never changes).

    Served as inert data: ``nosniff`` and a sandboxing CSP, so a file that a browser would
    misread as HTML or script cannot run in the API's origin.
    """
    wanted = image_id_in_path(image_id, request)
    store: BlobStore = request.app.state.blob_store
    if_none_match = request.headers.get("if-none-match")
    data: bytes | None = None
    async with read_connection(request) as connection:
        if if_none_match or request.method == "HEAD":
            # The bytes may not be needed: the columns first, the bytes only for a 200.
            image = await images.get_image(connection=connection, image_id=wanted)
        else:
            image, data = await images.get_image_with_bytes(
                connection=connection, store=store, image_id=wanted
            )
        etag = f'"{image.sha256}"'
        headers = {"ETag": etag, "Cache-Control": IMMUTABLE}
        if _etag_matches(if_none_match, etag):
            return Response(status_code=304, headers=headers)
        # Named after the id and the detected format, never the client's name (which stays in
        # the metadata): a saved file gets an extension that matches its bytes.
        image_format = image.content_type.removeprefix("image/").upper()
        headers["Content-Disposition"] = content_disposition(download_name(image.id, image_format))
        headers["X-Content-Type-Options"] = "nosniff"
        headers["Content-Security-Policy"] = FILE_CSP
        if request.method == "HEAD":
            headers["Content-Length"] = str(image.file_size)
            return Response(media_type=image.content_type, headers=headers)
        if data is None:
            data = await images.read_image_bytes(connection=connection, store=store, image=image)
    return Response(content=data, media_type=image.content_type, headers=headers)


@router.delete(
    "/{image_id}",
    operation_id=DELETE_IMAGE,
    status_code=204,
    response_class=Response,
    responses=errors(308, 401, 403, 404, 503),
)
async def delete_image(
    image_id: ImageId,
    session: WriteSession,
    store: BlobStoreDep,
    x_delete_token: Annotated[str | None, Header(alias=DELETE_TOKEN_HEADER, max_length=256)] = None,
) -> Response:
    """Delete metadata and bytes; needs the token the upload returned, in ``X-Delete-Token``
    (never in the URL, where proxies and browsers log it)."""
    if not x_delete_token:
        raise DeleteTokenRequiredError(
            "Send the delete token from the upload response in the X-Delete-Token header."
        )
    await images.delete_image(session=session, store=store, image_id=image_id, token=x_delete_token)
    return Response(status_code=204, headers={LSN_HEADER: await current_wal_lsn(session)})
