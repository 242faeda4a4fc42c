"""Decide what an uploaded file is from its bytes alone, and refuse anything unsafe.

The client's Content-Type and filename extension are ignored: Pillow identifies the data,
restricted to an allow-list of formats so no other decoder (EPS, TIFF, ...) ever runs on
untrusted input. Every frame is fully decoded, because ``verify()`` alone misses truncated
pixel data. Decoding is CPU-bound, so callers run :func:`inspect_image` in a worker thread.
"""

from __future__ import annotations

import hashlib
import io
import struct
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image, ImageSequence, UnidentifiedImageError

from service.errors import EmptyFileError, ImageTooLargeError, UnsupportedImageError

EXIF_ORIENTATION = 0x0112
ROTATED_ORIENTATIONS = {5, 6, 7, 8}
# What Pillow's decoders raise on malformed input.
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, struct.error)


@dataclass(frozen=True)
class ImageFacts:
    format: str
    content_type: str
    width: int
    height: int
    sha256: str
    file_size: int


def inspect_image(
    data: bytes, *, allowed_formats: Sequence[str], max_pixels: int, max_frames: int
) -> ImageFacts:
    """Identify and fully decode ``data``; raise a ServiceError describing what is wrong."""
    if not data:
        raise EmptyFileError("The uploaded file is empty.")
    # Pillow warns above MAX_IMAGE_PIXELS and raises above twice that; promote the warning
    # too, and check our own ceiling explicitly so the limit holds whatever Pillow's is.
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=list(allowed_formats)) as image:
                width, height = image.size
                _check_pixels(width, height, max_pixels)
                frames = getattr(image, "n_frames", 1)
                if frames > max_frames:
                    raise ImageTooLargeError(
                        f"The image has {frames} frames; at most {max_frames} are accepted.",
                        details={"frames": frames, "max_frames": max_frames},
                    )
                for frame in ImageSequence.Iterator(image):
                    frame.load()
                image_format = image.format or ""
                orientation = image.getexif().get(EXIF_ORIENTATION)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageTooLargeError(
            "The image has too many pixels.", details={"max_pixels": max_pixels}
        ) from error
    except UnidentifiedImageError as error:
        raise UnsupportedImageError(
            f"The file is not an image in an accepted format ({', '.join(allowed_formats)}).",
            details={"allowed_formats": list(allowed_formats)},
        ) from error
    except DECODE_ERRORS as error:
        raise UnsupportedImageError(
            "The image data is truncated or corrupt and cannot be decoded.",
            details={"reason": str(error)[:200]},
        ) from error
    if orientation in ROTATED_ORIENTATIONS:
        width, height = height, width
    return ImageFacts(
        format=image_format,
        content_type=Image.MIME.get(image_format, "application/octet-stream"),
        width=width,
        height=height,
        sha256=hashlib.sha256(data).hexdigest(),
        file_size=len(data),
    )


def _check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"The image is {width}x{height} pixels; at most {max_pixels} pixels are accepted.",
            details={"width": width, "height": height, "max_pixels": max_pixels},
        )
