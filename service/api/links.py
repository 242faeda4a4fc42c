"""The image operations' ids and the OpenAPI links between them.

A link says where a value in one answer goes in the next request: the id an upload returns is
the ``image_id`` of the get, file and delete operations, and its ``delete_token`` is the
delete's ``X-Delete-Token`` header. Generic clients and fuzzers follow them to reach every
operation with real ids (and a real token) instead of guessing; schemathesis's stateful phase
does (tests/integration/test_api_fuzzing.py). They go into each route's ``responses``, FastAPI's
documented place for extra OpenAPI fields of a response.
"""

from __future__ import annotations

from typing import Any

UPLOAD_IMAGE = "upload_image"
LIST_IMAGES = "list_images"
GET_IMAGE = "get_image"
GET_IMAGE_FILE = "get_image_file"
HEAD_IMAGE_FILE = "head_image_file"
DELETE_IMAGE = "delete_image"

DELETE_TOKEN_HEADER = "X-Delete-Token"  # noqa: S105 (a header name, not a secret)


def _to(operation_id: str, description: str, **parameters: str) -> dict[str, Any]:
    return {"operationId": operation_id, "parameters": parameters, "description": description}


def _image_reads(id_at: str, whose: str) -> dict[str, dict[str, Any]]:
    """Links to the reads of the image whose id is at the JSON pointer ``id_at``."""
    return {
        "GetImage": _to(GET_IMAGE, f"The metadata of {whose}.", image_id=id_at),
        "GetImageFile": _to(GET_IMAGE_FILE, f"The bytes of {whose}.", image_id=id_at),
        "HeadImageFile": _to(HEAD_IMAGE_FILE, f"The file headers of {whose}.", image_id=id_at),
    }


UPLOADED_LINKS: dict[str, dict[str, Any]] = {
    **_image_reads("$response.body#/id", "the uploaded image"),
    "DeleteImage": _to(
        DELETE_IMAGE,
        "Delete the uploaded image with the token its upload returned.",
        image_id="$response.body#/id",
        **{f"header.{DELETE_TOKEN_HEADER}": "$response.body#/delete_token"},
    ),
}

LISTED_LINKS: dict[str, dict[str, Any]] = {
    **_image_reads("$response.body#/items/0/id", "the page's first (newest) image"),
    "NextPage": _to(
        LIST_IMAGES,
        "The next, older page; there is none when next_cursor is null.",
        **{"query.cursor": "$response.body#/next_cursor"},
    ),
}

# From an image's metadata to its file (the metadata itself is where the link starts).
IMAGE_LINKS: dict[str, dict[str, Any]] = {
    name: link
    for name, link in _image_reads("$response.body#/id", "this image").items()
    if name != "GetImage"
}
