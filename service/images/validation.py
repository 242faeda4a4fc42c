"""Decide what an uploaded file is from its bytes alone, refuse anything unsafe, clean the rest.

The client's Content-Type and filename extension are ignored: Pillow identifies the data,
restricted to an allow-list of formats so no other decoder (EPS, TIFF, ...) ever runs on
untrusted input. Every frame is decoded, because ``verify()`` alone misses truncated pixel
data (JPEG at 1/8 scale, which still reads all of it).

Decoding cost grows with what the header promises, not with the upload's size: a 2 KB GIF can
declare a 6300x6300 canvas and 100 one-pixel frames, and Pillow composites every frame onto
the full canvas. So before decoding, :func:`decode_cost` prices the header (canvas pixels per
frame, plus a per-row cost measured in Pillow's decoders) against ``max_decoded_pixels``. The
functions here are synchronous and CPU-bound; the service runs them in the decode worker
processes of :mod:`service.images.decoder`, never on the event loop.
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
from service.images.metadata import strip_metadata

EXIF_ORIENTATION = 0x0112
ROTATED_ORIENTATIONS = {5, 6, 7, 8}
# 1 is "as stored" and anything outside 1-8 is meaningless: neither survives stripping.
KEPT_ORIENTATIONS = {2, 3, 4, 5, 6, 7, 8}
# Decoding one row costs about as much as 24 pixels of a frame composited onto a GIF canvas,
# the cheapest per-pixel path (Pillow 13: ~110 ns per PNG row, ~4.7 ns per GIF canvas pixel);
# without it a 77 KB 1x40,000,000 PNG passes the pixel checks and costs 3.6 s of CPU. See
# docs/benchmarks.md, "Image decode budget".
ROW_COST_PIXELS = 24
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


@dataclass(frozen=True)
class DecodeLimits:
    """What one upload may cost to decode, and whether its metadata is kept."""

    allowed_formats: tuple[str, ...]
    max_pixels: int
    max_frames: int
    max_decoded_pixels: int | None = None
    keep_metadata: bool = False


@dataclass(frozen=True)
class DecodedImage:
    format: str
    width: int
    height: int
    frames: int
    orientation: int | None


def decode_cost(width: int, height: int, frames: int) -> int:
    """Pixel-equivalents a full decode touches: every frame is composited onto the canvas."""
    return frames * (width * height + ROW_COST_PIXELS * height)


def inspect_image(
    data: bytes,
    *,
    allowed_formats: Sequence[str],
    max_pixels: int,
    max_frames: int,
    max_decoded_pixels: int | None = None,
) -> ImageFacts:
    """Identify and fully decode ``data``; raise a ServiceError describing what is wrong."""
    decoded = decode_image(
        data,
        DecodeLimits(tuple(allowed_formats), max_pixels, max_frames, max_decoded_pixels),
    )
    return _facts(decoded, data)


def clean_image(data: bytes, limits: DecodeLimits) -> tuple[ImageFacts, bytes]:
    """Decode ``data`` within ``limits``, then return the facts of, and, the bytes to store.

    The stored bytes have their metadata stripped (unless ``limits.keep_metadata``) and never
    anything after the image's end; sha256 and size describe them, not the upload.
    """
    decoded = decode_image(data, limits)
    cleaned = strip_metadata(
        data, decoded.format, keep_metadata=limits.keep_metadata, orientation=decoded.orientation
    )
    _check_cleaned(cleaned, decoded, limits)
    return _facts(decoded, cleaned), cleaned


def decode_image(data: bytes, limits: DecodeLimits) -> DecodedImage:
    """Check the header against every limit, then decode every frame."""
    if not data:
        raise EmptyFileError("The uploaded file is empty.")
    allowed = list(limits.allowed_formats)
    # Pillow warns above MAX_IMAGE_PIXELS and raises above twice that; promote the warning
    # too, and check our own ceiling explicitly so the limit holds whatever Pillow's is.
    Image.MAX_IMAGE_PIXELS = limits.max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=allowed) as image:
                width, height = image.size
                _check_pixels(width, height, limits.max_pixels)
                frames = getattr(image, "n_frames", 1)
                if frames > limits.max_frames:
                    raise ImageTooLargeError(
                        f"The image has {frames} frames; at most {limits.max_frames} are accepted.",
                        details={"frames": frames, "max_frames": limits.max_frames},
                    )
                _check_cost(width, height, frames, limits.max_decoded_pixels)
                if image.format == "JPEG":
                    # libjpeg's DCT scaling: every entropy-coded byte is still read (truncated
                    # or corrupt scans still fail), but the inverse DCT and colour conversion
                    # run at 1/8 scale: about 60 % of a full decode's CPU.
                    image.draft(image.mode, (max(1, width // 8), max(1, height // 8)))
                for frame in ImageSequence.Iterator(image):
                    frame.load()
                image_format = image.format or ""
                orientation = _kept_orientation(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageTooLargeError(
            "The image has too many pixels.", details={"max_pixels": limits.max_pixels}
        ) from error
    except UnidentifiedImageError as error:
        raise UnsupportedImageError(
            f"The file is not an image in an accepted format ({', '.join(allowed)}).",
            details={"allowed_formats": allowed},
        ) from error
    except DECODE_ERRORS as error:
        raise UnsupportedImageError(
            "The image data is truncated or corrupt and cannot be decoded.",
            details={"reason": str(error)[:200]},
        ) from error
    return DecodedImage(
        format=image_format,
        width=width,
        height=height,
        frames=frames,
        orientation=orientation,
    )


def _kept_orientation(image: Image.Image) -> int | None:
    orientation = image.getexif().get(EXIF_ORIENTATION)
    return orientation if orientation in KEPT_ORIENTATIONS else None


def _facts(decoded: DecodedImage, stored: bytes) -> ImageFacts:
    width, height = decoded.width, decoded.height
    if decoded.orientation in ROTATED_ORIENTATIONS:
        width, height = height, width
    return ImageFacts(
        format=decoded.format,
        content_type=Image.MIME.get(decoded.format, "application/octet-stream"),
        width=width,
        height=height,
        sha256=hashlib.sha256(stored).hexdigest(),
        file_size=len(stored),
    )


def _check_cleaned(cleaned: bytes, decoded: DecodedImage, limits: DecodeLimits) -> None:
    """The rewritten container must still open as the same image (header only: cheap)."""
    try:
        with Image.open(io.BytesIO(cleaned), formats=[decoded.format]) as image:
            same = (
                image.size == (decoded.width, decoded.height)
                and getattr(image, "n_frames", 1) == decoded.frames
                and _kept_orientation(image) == decoded.orientation
            )
    except (UnidentifiedImageError, *DECODE_ERRORS) as error:
        raise UnsupportedImageError(
            "The image could not be stored without its metadata.",
            details={"reason": str(error)[:200]},
        ) from error
    if not same:
        raise UnsupportedImageError(
            "The image could not be stored without its metadata.",
            details={"reason": "the cleaned image differs from the upload"},
        )


def _check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"The image is {width}x{height} pixels; at most {max_pixels} pixels are accepted.",
            details={"width": width, "height": height, "max_pixels": max_pixels},
        )


def _check_cost(width: int, height: int, frames: int, max_decoded_pixels: int | None) -> None:
    if max_decoded_pixels is None:
        return
    cost = decode_cost(width, height, frames)
    if cost > max_decoded_pixels:
        raise ImageTooLargeError(
            f"Decoding {frames} frame(s) of {width}x{height} would touch {cost} pixels; "
            f"at most {max_decoded_pixels} are accepted.",
            details={
                "width": width,
                "height": height,
                "frames": frames,
                "decoded_pixels": cost,
                "max_decoded_pixels": max_decoded_pixels,
            },
        )
