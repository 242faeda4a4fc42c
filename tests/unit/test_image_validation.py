"""Pillow-based inspection, without a database."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from service.errors import EmptyFileError, ImageTooLargeError, UnsupportedImageError
from service.images.validation import inspect_image

ALLOWED = ["JPEG", "PNG", "GIF", "WEBP"]


def encode(fmt: str, size: tuple[int, int] = (10, 20), **save: object) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (1, 2, 3)).save(buffer, fmt, **save)
    return buffer.getvalue()


def inspect(data: bytes, **overrides: object) -> object:
    options: dict[str, object] = {
        "allowed_formats": ALLOWED,
        "max_pixels": 10_000,
        "max_frames": 10,
    }
    options.update(overrides)
    return inspect_image(data, **options)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fmt", "mime"),
    [("JPEG", "image/jpeg"), ("PNG", "image/png"), ("GIF", "image/gif"), ("WEBP", "image/webp")],
)
def test_formats_are_identified_from_bytes(fmt: str, mime: str) -> None:
    facts = inspect_image(encode(fmt), allowed_formats=ALLOWED, max_pixels=10_000, max_frames=10)
    assert (facts.content_type, facts.width, facts.height) == (mime, 10, 20)


def test_a_format_outside_the_allow_list_is_unsupported() -> None:
    with pytest.raises(UnsupportedImageError):
        inspect_image(encode("PNG"), allowed_formats=["JPEG"], max_pixels=10_000, max_frames=10)


def test_empty_and_oversized() -> None:
    with pytest.raises(EmptyFileError):
        inspect(b"")
    with pytest.raises(ImageTooLargeError):
        inspect(encode("PNG", (101, 100)))


def test_too_many_frames() -> None:
    buffer = io.BytesIO()
    frames = [Image.new("RGB", (4, 4), (i * 20, 0, 0)) for i in range(12)]
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:])
    with pytest.raises(ImageTooLargeError, match="12 frames"):
        inspect(buffer.getvalue())
