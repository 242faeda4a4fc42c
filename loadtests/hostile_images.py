"""Hostile uploads built in memory: decode bombs, privacy leaks and polyglots.

Shared by the decode-budget benchmark and the tests, so both exercise the same bytes. The GIF
and PNG bombs are written byte by byte because Pillow would not write them: a huge canvas with
one-pixel frames, and a 1-pixel-wide image tens of millions of rows tall.
"""

from __future__ import annotations

import io
import os
import struct
import zlib

from PIL import Image

GPS_IFD = 0x8825
ORIENTATION = 0x0112
HTML_TAIL = b"<html><body><script>alert(document.domain)</script></body></html>"
JS_PAYLOAD = b"*/=1;alert(document.domain);/*"


def gif_frame_bomb(frames: int = 100, side: int = 6300) -> bytes:
    """A ``side`` x ``side`` canvas with ``frames`` one-pixel frames (about 23 bytes each)."""
    out = bytearray(b"GIF89a" + struct.pack("<HHBBB", side, side, 0x80, 0, 0))
    out += b"\x00\x00\x00\xff\xff\xff"  # 2-colour global table
    out += b"\x21\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"  # loop forever
    for index in range(frames):
        out += b"\x21\xf9\x04\x00\x01\x00\x00\x00"  # graphic control: 10 ms
        out += b"\x2c" + struct.pack("<HHHHB", index % side, 0, 1, 1, 0)
        out += b"\x02\x02\x44\x01\x00"  # LZW, minimum code size 2: one pixel
    out += b"\x3b"
    return bytes(out)


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def tall_png(width: int = 1, height: int = 40_000_000) -> bytes:
    """A greyscale PNG of black rows; 1x40,000,000 compresses to about 77 KB."""
    compressor = zlib.compressobj(9)
    row = b"\x00" * (width + 1)  # filter byte + pixels
    chunk_rows = max(1, 1_000_000 // len(row))
    parts = []
    for start in range(0, height, chunk_rows):
        parts.append(compressor.compress(row * min(chunk_rows, height - start)))
    parts.append(compressor.flush())
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", b"".join(parts))
        + png_chunk(b"IEND", b"")
    )


def gps_exif(orientation: int | None = None) -> Image.Exif:
    """EXIF naming a camera and a GPS position (48°51'29"N 2°17'40"E), and an orientation."""
    exif = Image.Exif()
    exif[0x010F] = "ExampleCam"
    if orientation is not None:
        exif[ORIENTATION] = orientation
    gps = exif.get_ifd(GPS_IFD)
    gps[1], gps[2] = "N", (48.0, 51.0, 29.0)
    gps[3], gps[4] = "E", (2.0, 17.0, 40.0)
    return exif


def jpeg_with_gps(
    size: tuple[int, int] = (64, 48), orientation: int | None = 6, comment: bytes = b""
) -> bytes:
    """A JPEG carrying GPS EXIF, an XMP packet and optionally a COM segment."""
    buffer = io.BytesIO()
    Image.new("RGB", size, (30, 120, 200)).save(
        buffer,
        "JPEG",
        exif=gps_exif(orientation).tobytes(),
        xmp=b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><secret>home address</secret></x:xmpmeta>',
        comment=comment,
    )
    return buffer.getvalue()


def jpeg_with_html_tail() -> bytes:
    """A valid JPEG followed by an HTML document after its EOI marker."""
    return jpeg_with_gps(orientation=None) + HTML_TAIL


def gif_js_polyglot() -> bytes:
    """A GIF that is also JavaScript: ``GIF89a/*`` opens a comment that the payload closes.

    The width bytes are ``/*`` (10799 px), the height 1; the script sits in a GIF comment
    extension and again after the trailer, the two places real polyglots use.
    """
    out = bytearray(b"GIF89a" + b"/*" + struct.pack("<HBBB", 1, 0x80, 0, 0))
    out += b"\x00\x00\x00\xff\xff\xff"
    out += b"\x21\xfe" + bytes([len(JS_PAYLOAD)]) + JS_PAYLOAD + b"\x00"  # comment extension
    out += b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + b"\x02\x02\x44\x01\x00"
    out += b"\x3b" + JS_PAYLOAD
    return bytes(out)


def noise_png(megabytes: float) -> bytes:
    """A PNG of random, incompressible pixels, about ``megabytes`` large: a big file that costs
    little to decode (for slow-reader and large-response tests)."""
    side = int((megabytes * 1024 * 1024 / 3) ** 0.5)
    buffer = io.BytesIO()
    Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(
        buffer, "PNG", compress_level=0
    )
    return buffer.getvalue()
