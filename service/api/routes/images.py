"""Image routes: upload, metadata, file bytes, listing and delete."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response

from service.api.deps import BlobStoreDep, ReadSession, SettingsDep, WriteSession
from service.api.schemas import ErrorBody, ImageCreated, ImageList, ImagePublic
from service.api.upload_stream import read_upload
from service.db.lsn import current_wal_lsn
from service.errors import DeleteTokenRequiredError
from service.images import service as images
from service.images.decoder import ImageDecoder
from service.images.filenames import content_disposition, sanitize_filename
from service.images.pagination import Cursor
from service.ratelimit import client_address, count_upload

LSN_HEADER = "X-Replikit-LSN"
IMMUTABLE = "public, max-age=31536000, immutable"

router = APIRouter(prefix="/api/v1/images", tags=["images"])


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
                    "properties": {"file": {"type": "string", "format": "binary"}},
                }
            }
        },
    }
}


@router.post(
    "/upload",
    status_code=201,
    response_model=ImageCreated,
    responses=errors(400, 413, 415, 429, 503),
    openapi_extra=UPLOAD_BODY,
)
async def upload_image(
    request: Request,
    response: Response,
    session: WriteSession,
    store: BlobStoreDep,
    settings: SettingsDep,
) -> ImageCreated:
    """Upload an image (multipart field ``file``). The type is decided from the bytes."""
    client_ip = client_address(request)
    if client_ip:
        await count_upload(session=session, client_ip=client_ip, limit=settings.upload_rate_limit)
    upload = await read_upload(request, field_name="file", max_bytes=settings.max_upload_bytes)
    # Decoded in a worker process within the decode budget; the stored bytes are the cleaned
    # ones (no metadata, nothing after the image's end), and facts describe those bytes.
    decoder: ImageDecoder = request.app.state.decoder
    facts, stored_bytes = await decoder.process(upload.data)
    created = await images.create_image(
        session=session,
        store=store,
        facts=facts,
        data=stored_bytes,
        filename=sanitize_filename(upload.filename, facts.format),
        upload_ip=client_ip,
    )
    response.headers["Location"] = f"/api/v1/images/{created.image.id}"
    response.headers[LSN_HEADER] = await current_wal_lsn(session)
    return ImageCreated(
        **ImagePublic.from_image(created.image).model_dump(), delete_token=created.delete_token
    )


@router.get("", response_model=ImageList, responses=errors(400, 422, 503))
async def list_images(
    session: ReadSession,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> ImageList:
    """Newest first; follow ``next_cursor`` for older images."""
    page, next_cursor = await images.list_images(
        session=session, limit=limit, cursor=Cursor.decode(cursor) if cursor else None
    )
    return ImageList(
        items=[ImagePublic.from_image(image) for image in page],
        next_cursor=next_cursor.encode() if next_cursor else None,
    )


@router.get("/{image_id}", response_model=ImagePublic, responses=errors(404, 503))
async def get_image(image_id: str, session: ReadSession) -> ImagePublic:
    image = await images.get_image(session=session, image_id=images.parse_image_id(image_id))
    return ImagePublic.from_image(image)


def _etag_matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    candidates = {part.strip().removeprefix("W/") for part in header.split(",")}
    return "*" in candidates or etag in candidates


@router.api_route(
    "/{image_id}/file",
    methods=["GET", "HEAD"],
    response_class=Response,
    responses={
        200: {"content": {"image/*": {}}},
        304: {"description": "Not modified"},
        **errors(404, 503),
    },
)
async def get_image_file(
    image_id: str,
    request: Request,
    session: ReadSession,
    store: BlobStoreDep,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    """The stored bytes; cacheable forever (ids are never reused, content never changes)."""
    image = await images.get_image(session=session, image_id=images.parse_image_id(image_id))
    etag = f'"{image.sha256}"'
    headers = {"ETag": etag, "Cache-Control": IMMUTABLE}
    if _etag_matches(if_none_match, etag):
        return Response(status_code=304, headers=headers)
    headers["Content-Disposition"] = content_disposition(image.filename)
    headers["X-Content-Type-Options"] = "nosniff"
    if request.method == "HEAD":
        headers["Content-Length"] = str(image.file_size)
        return Response(media_type=image.content_type, headers=headers)
    data = await images.read_image_bytes(session=session, store=store, image=image)
    return Response(content=data, media_type=image.content_type, headers=headers)


@router.delete(
    "/{image_id}", status_code=204, response_class=Response, responses=errors(401, 403, 404, 503)
)
async def delete_image(
    image_id: str,
    session: WriteSession,
    store: BlobStoreDep,
    x_delete_token: Annotated[str | None, Header()] = None,
    delete_token: Annotated[str | None, Query()] = None,
) -> Response:
    """Delete metadata and bytes; needs the token the upload returned."""
    token = x_delete_token or delete_token
    parsed_id = images.parse_image_id(image_id)
    if not token:
        raise DeleteTokenRequiredError(
            "Send the delete token from the upload response in the X-Delete-Token header."
        )
    await images.delete_image(session=session, store=store, image_id=parsed_id, token=token)
    return Response(status_code=204, headers={LSN_HEADER: await current_wal_lsn(session)})
