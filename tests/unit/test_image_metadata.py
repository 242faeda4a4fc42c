"""Container-level metadata stripping: what goes, what stays, and that pixels are untouched."""

from __future__ import annotations

import hashlib
import io
import struct
from typing import Any

import pytest
from PIL import Image, ImageCms, ImageSequence, PngImagePlugin

from loadtests.hostile_images import (
    GPS_IFD,
    HTML_TAIL,
    JS_PAYLOAD,
    gif_frame_bomb,
    gif_js_polyglot,
    gps_exif,
    jpeg_with_gps,
    tall_png,
)
from service.errors import ImageTooLargeError
from service.images.metadata import MalformedContainerError, strip_metadata
from service.images.validation import DecodeLimits, clean_image, decode_cost

ALL = ("JPEG", "PNG", "GIF", "WEBP")
LIMITS = DecodeLimits(ALL, max_pixels=40_000_000, max_frames=1000, max_decoded_pixels=200_000_000)
SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
XMP = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><where>home</where></x:xmpmeta>'


def encode(image: Image.Image, fmt: str, **save: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **save)
    return buffer.getvalue()


def noise(size: tuple[int, int] = (64, 48)) -> Image.Image:
    return Image.effect_noise(size, 60).convert("RGB")


def strip(data: bytes, fmt: str, orientation: int | None = None) -> bytes:
    return strip_metadata(data, fmt, keep_metadata=False, orientation=orientation)


def pixels(data: bytes) -> list[bytes]:
    with Image.open(io.BytesIO(data)) as image:
        return [frame.convert("RGBA").tobytes() for frame in ImageSequence.Iterator(image)]


def opened(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


# --- JPEG ---------------------------------------------------------------------------------


def test_jpeg_loses_gps_xmp_and_comment_but_keeps_orientation_icc_and_pixels() -> None:
    original = encode(
        noise(),
        "JPEG",
        exif=gps_exif(orientation=6).tobytes(),
        xmp=XMP,
        comment=b"<script>alert(1)</script>",
        icc_profile=SRGB,
    )
    cleaned = strip(original, "JPEG", orientation=6)
    image = opened(cleaned)
    assert dict(image.getexif()) == {0x0112: 6}
    assert not image.getexif().get_ifd(GPS_IFD)
    assert "xmp" not in image.info
    assert "comment" not in image.info
    assert image.info["icc_profile"] == SRGB
    assert b"ExampleCam" not in cleaned
    assert b"home" not in cleaned
    assert b"script" not in cleaned
    assert pixels(cleaned) == pixels(original)  # segments removed, scans not recompressed


def test_jpeg_bytes_after_eoi_are_dropped_even_when_metadata_is_kept() -> None:
    original = jpeg_with_gps(orientation=None)
    cleaned = strip_metadata(original + HTML_TAIL, "JPEG", keep_metadata=True, orientation=None)
    assert cleaned == original
    assert strip(original + HTML_TAIL, "JPEG").endswith(b"\xff\xd9")


def test_jpeg_without_metadata_is_unchanged() -> None:
    original = encode(noise(), "JPEG")
    assert strip(original, "JPEG") == original


@pytest.mark.parametrize("save", [{"progressive": True}, {"restart_marker_rows": 1}])
def test_progressive_and_restart_marker_jpegs_keep_every_scan(save: dict[str, Any]) -> None:
    original = encode(noise((96, 80)), "JPEG", exif=gps_exif().tobytes(), **save)
    cleaned = strip(original, "JPEG")
    assert pixels(cleaned) == pixels(original)
    assert b"ExampleCam" not in cleaned


def test_jpeg_without_eoi_is_refused() -> None:
    original = encode(noise(), "JPEG")
    with pytest.raises(MalformedContainerError):
        strip(original[:-2], "JPEG")


# --- PNG ----------------------------------------------------------------------------------


def test_png_loses_text_time_and_exif_chunks_but_keeps_icc_and_pixels() -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "tEXt secret")
    info.add_text("Location", "zTXt secret", zip=True)
    info.add_itxt("Author", "iTXt secret")
    info.add(b"tIME", struct.pack(">HBBBBB", 2026, 11, 29, 12, 0, 0))
    original = encode(
        noise(), "PNG", pnginfo=info, exif=gps_exif(orientation=8).tobytes(), icc_profile=SRGB
    )
    cleaned = strip(original + HTML_TAIL, "PNG", orientation=8)
    image = opened(cleaned)
    assert b"secret" not in cleaned
    assert b"tIME" not in cleaned
    assert b"ExampleCam" not in cleaned
    assert dict(image.getexif()) == {0x0112: 8}
    assert image.info["icc_profile"] == SRGB
    assert cleaned.endswith(b"IEND\xaeB`\x82")
    assert pixels(cleaned) == pixels(original)


def test_apng_keeps_every_frame() -> None:
    frames = [Image.new("RGB", (16, 16), (i * 60, 0, 0)) for i in range(4)]
    original = encode(frames[0], "PNG", save_all=True, append_images=frames[1:], duration=40)
    cleaned = strip(original + HTML_TAIL, "PNG")
    assert getattr(opened(cleaned), "n_frames", 1) == 4
    assert pixels(cleaned) == pixels(original)


# --- GIF ----------------------------------------------------------------------------------


def with_xmp_extension(gif: bytes) -> bytes:
    """Insert an XMP application extension after the global colour table (Pillow writes none)."""
    flags = gif[10]
    table_end = 13 + (3 * 2 ** ((flags & 0x07) + 1) if flags & 0x80 else 0)
    extension = b"\x21\xff\x0bXMP DataXMP" + bytes([len(XMP)]) + XMP + b"\x00"
    return gif[:table_end] + extension + gif[table_end:]


def test_animated_gif_keeps_frames_timing_and_loop_but_loses_comment_and_xmp() -> None:
    frames = [Image.new("P", (16, 16), i) for i in range(3)]
    for frame in frames:
        frame.putpalette([(i * 53) % 256 for i in range(768)])
    original = encode(
        frames[0],
        "GIF",
        save_all=True,
        append_images=frames[1:],
        duration=[30, 60, 90],
        loop=0,
        comment=b"gif secret",
    )
    uploaded = with_xmp_extension(original) + JS_PAYLOAD
    cleaned = strip(uploaded, "GIF")
    assert b"secret" not in cleaned
    assert b"XMP" not in cleaned
    assert JS_PAYLOAD not in cleaned
    image = opened(cleaned)
    assert getattr(image, "n_frames", 1) == 3
    assert image.info["loop"] == 0
    durations = [frame.info["duration"] for frame in ImageSequence.Iterator(image)]
    assert durations == [30, 60, 90]
    assert pixels(cleaned) == pixels(original)


def test_gif_js_polyglot_loses_its_script() -> None:
    polyglot = gif_js_polyglot()
    assert polyglot.count(JS_PAYLOAD) == 2
    cleaned = strip(polyglot, "GIF")
    assert b"alert" not in cleaned
    assert cleaned.endswith(b"\x3b")
    assert pixels(cleaned) == pixels(polyglot)


# --- WEBP ---------------------------------------------------------------------------------


def test_webp_loses_exif_and_xmp_keeps_orientation_icc_and_flags_agree() -> None:
    original = encode(
        noise(), "WEBP", exif=gps_exif(orientation=3).tobytes(), xmp=XMP, icc_profile=SRGB
    )
    cleaned = strip(original + HTML_TAIL, "WEBP", orientation=3)
    image = opened(cleaned)
    assert dict(image.getexif()) == {0x0112: 3}
    assert "xmp" not in image.info
    assert b"home" not in cleaned
    assert b"ExampleCam" not in cleaned
    assert image.info["icc_profile"] == SRGB
    (riff_size,) = struct.unpack_from("<I", cleaned, 4)
    assert riff_size + 8 == len(cleaned)
    vp8x_flags = cleaned[cleaned.index(b"VP8X") + 8]
    assert vp8x_flags & 0x08
    assert not vp8x_flags & 0x04
    assert pixels(cleaned) == pixels(original)


def test_animated_webp_keeps_its_frames() -> None:
    frames = [Image.new("RGB", (16, 16), (0, i * 60, 0)) for i in range(3)]
    original = encode(
        frames[0], "WEBP", save_all=True, append_images=frames[1:], exif=gps_exif().tobytes()
    )
    cleaned = strip(original, "WEBP")
    assert getattr(opened(cleaned), "n_frames", 1) == 3
    assert b"ExampleCam" not in cleaned
    assert pixels(cleaned) == pixels(original)


# --- the decode budget and clean_image ------------------------------------------------------


def test_gif_frame_bomb_is_refused_from_its_header() -> None:
    bomb = gif_frame_bomb(100, 6300)
    assert len(bomb) < 3000
    with pytest.raises(ImageTooLargeError) as refused:
        clean_image(bomb, LIMITS)
    assert refused.value.details["decoded_pixels"] == decode_cost(6300, 6300, 100)


def test_a_one_pixel_wide_forty_million_row_png_is_priced_by_its_rows() -> None:
    with pytest.raises(ImageTooLargeError) as refused:
        clean_image(tall_png(1, 40_000_000), LIMITS)
    assert refused.value.details["decoded_pixels"] > 40_000_000 * 2


def test_clean_image_facts_describe_the_stored_bytes() -> None:
    uploaded = jpeg_with_gps(orientation=6) + HTML_TAIL
    facts, stored = clean_image(uploaded, LIMITS)
    assert len(stored) < len(uploaded)
    assert facts.file_size == len(stored)
    assert facts.sha256 == hashlib.sha256(stored).hexdigest()
    assert (facts.width, facts.height) == (48, 64)  # orientation 6 kept, so displayed swapped


def test_keep_metadata_keeps_exif() -> None:
    keep = DecodeLimits(ALL, 40_000_000, 1000, 200_000_000, keep_metadata=True)
    _, stored = clean_image(jpeg_with_gps(orientation=6), keep)
    assert opened(stored).getexif().get_ifd(GPS_IFD)
