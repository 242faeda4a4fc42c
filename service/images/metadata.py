"""Lossless, container-level removal of metadata and of bytes after an image's end.

Uploads are stored and served as they came, so whatever a camera or an attacker put around
the pixels would be served too: EXIF GPS positions, XMP, IPTC, comments, and HTML or script
appended after the image (polyglots). Re-encoding would remove all of it but recompresses
JPEG (quality loss), is several times slower and can change animation timing, so instead each
format's container is walked and rewritten keeping an allow-list of structures:

* pixels and everything needed to decode them as intended (JPEG tables and scans, PNG
  ``IHDR``/``PLTE``/``IDAT``/``tRNS``, GIF frames and graphic control, WebP ``VP8*``/``ALPH``/
  ``ANIM``/``ANMF``), looping (GIF ``NETSCAPE2.0``, WebP ``ANIM``),
* colour: ICC profiles, PNG ``gAMA``/``cHRM``/``sRGB``/``cICP``, JPEG ``Adobe`` and ``JFIF``,
* EXIF orientation only: a fresh EXIF block holding just tag 0x0112 replaces the original, so
  viewers still rotate the picture and the reported width/height (swapped for 5-8) hold.

Everything else (EXIF with GPS and maker notes, XMP, IPTC/Photoshop, MPF and its trailing
images, comments, text chunks, ``tIME``, unknown chunks) is dropped, as is every byte after
the image's end marker. A structure that cannot be walked is refused rather than passed on.
"""

from __future__ import annotations

import struct
import zlib

from service.errors import UnsupportedImageError

EXIF_ORIENTATION = 0x0112
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Ancillary PNG chunks that only affect how pixels look or animate (APNG); the rest go.
PNG_KEPT_CHUNKS = frozenset(
    {
        b"IHDR", b"PLTE", b"IDAT", b"IEND", b"tRNS", b"cHRM", b"gAMA", b"iCCP", b"sBIT",
        b"sRGB", b"cICP", b"mDCV", b"cLLI", b"bKGD", b"hIST", b"pHYs", b"acTL", b"fcTL",
        b"fdAT",
    }
)  # fmt: skip
PNG_EXIF = b"eXIf"
# GIF application extensions that change how the image plays or looks.
GIF_KEPT_APPLICATIONS = frozenset({b"NETSCAPE2.0", b"ANIMEXTS1.0", b"ICCRGBG1012"})
WEBP_KEPT_CHUNKS = frozenset({b"VP8 ", b"VP8L", b"VP8X", b"ALPH", b"ANIM", b"ANMF", b"ICCP"})
WEBP_FLAG_EXIF = 0x08
WEBP_FLAG_XMP = 0x04


class MalformedContainerError(UnsupportedImageError):
    """The bytes decoded, but their container cannot be walked safely to clean it."""


def orientation_exif(orientation: int) -> bytes:
    """A big-endian TIFF block with one IFD entry: the orientation (SHORT), nothing else."""
    entry = struct.pack(">HHIHH", EXIF_ORIENTATION, 3, 1, orientation, 0)
    return b"MM\x00\x2a\x00\x00\x00\x08" + b"\x00\x01" + entry + b"\x00\x00\x00\x00"


def strip_metadata(
    data: bytes, image_format: str, *, keep_metadata: bool, orientation: int | None
) -> bytes:
    """``data`` rewritten without metadata (unless kept) and without trailing bytes.

    ``orientation`` is the EXIF orientation the decoder saw; values 2-8 survive stripping.
    """
    kept = orientation if orientation in range(2, 9) else None
    if image_format == "JPEG":
        return strip_jpeg(data, keep_metadata=keep_metadata, orientation=kept)
    if image_format == "PNG":
        return strip_png(data, keep_metadata=keep_metadata, orientation=kept)
    if image_format == "GIF":
        return strip_gif(data, keep_metadata=keep_metadata)
    if image_format == "WEBP":
        return strip_webp(data, keep_metadata=keep_metadata, orientation=kept)
    raise MalformedContainerError(f"No metadata stripper for {image_format!r}.")


def _malformed(image_format: str, what: str) -> MalformedContainerError:
    return MalformedContainerError(
        f"The {image_format} container is malformed ({what}) and cannot be stored safely.",
        details={"format": image_format, "reason": what},
    )


def _jpeg_segment_kept(marker: int, payload: bytes) -> bool:
    if marker == 0xE0:
        return payload.startswith(b"JFIF\x00")  # JFXX thumbnails and others go
    if marker == 0xE2:
        return payload.startswith(b"ICC_PROFILE\x00")  # MPF/FlashPix go
    if marker == 0xEE:
        return payload.startswith(b"Adobe")  # colour transform: needed to decode right
    return False  # APP1 (EXIF, XMP), APP13 (IPTC), other APPn, COM


def strip_jpeg(data: bytes, *, keep_metadata: bool, orientation: int | None) -> bytes:
    """Walk JPEG segments to EOI; drop APPn/COM except JFIF, ICC and Adobe; no recompression."""
    if not data.startswith(b"\xff\xd8"):
        raise _malformed("JPEG", "no SOI marker")
    out = bytearray(b"\xff\xd8")
    exif_written = False
    pos, size = 2, len(data)
    while pos < size:
        if data[pos] != 0xFF:
            raise _malformed("JPEG", f"expected a marker at byte {pos}")
        while pos + 1 < size and data[pos + 1] == 0xFF:  # fill bytes
            pos += 1
        if pos + 1 >= size:
            break
        marker = data[pos + 1]
        if marker == 0xD9:  # EOI: the image ends here, whatever follows is dropped
            out += b"\xff\xd9"
            return bytes(out)
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # TEM, RSTn: no length
            out += data[pos : pos + 2]
            pos += 2
            continue
        if pos + 4 > size:
            raise _malformed("JPEG", "truncated segment header")
        (length,) = struct.unpack_from(">H", data, pos + 2)
        end = pos + 2 + length
        if length < 2 or end > size:
            raise _malformed("JPEG", f"segment 0x{marker:02X} overruns the file")
        payload = data[pos + 4 : end]
        if 0xE0 <= marker <= 0xEF or marker == 0xFE:
            if keep_metadata or _jpeg_segment_kept(marker, payload):
                out += data[pos:end]
            elif marker == 0xE1 and orientation and not exif_written and payload[:6] == b"Exif\0\0":
                block = b"Exif\x00\x00" + orientation_exif(orientation)
                out += b"\xff\xe1" + struct.pack(">H", len(block) + 2) + block
                exif_written = True
            pos = end
            continue
        out += data[pos:end]
        pos = end
        if marker == 0xDA:  # SOS: entropy-coded data runs to the next real marker
            scan = pos
            while True:
                scan = data.find(b"\xff", scan)
                if scan < 0 or scan + 1 >= size:
                    raise _malformed("JPEG", "no EOI marker")
                following = data[scan + 1]
                if following == 0x00 or 0xD0 <= following <= 0xD7 or following == 0xFF:
                    scan += 1 if following == 0xFF else 2
                    continue
                break
            out += data[pos:scan]
            pos = scan
    raise _malformed("JPEG", "no EOI marker")


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def strip_png(data: bytes, *, keep_metadata: bool, orientation: int | None) -> bytes:
    """Keep the allow-listed chunks up to IEND; text, eXIf, tIME and unknown chunks go."""
    if not data.startswith(PNG_SIGNATURE):
        raise _malformed("PNG", "no signature")
    out = bytearray(PNG_SIGNATURE)
    pos, size = len(PNG_SIGNATURE), len(data)
    while pos + 12 <= size:
        (length,) = struct.unpack_from(">I", data, pos)
        kind = data[pos + 4 : pos + 8]
        end = pos + 12 + length
        if end > size:
            raise _malformed("PNG", f"chunk {kind!r} overruns the file")
        if keep_metadata or kind in PNG_KEPT_CHUNKS:
            out += data[pos:end]
        if kind == b"IHDR" and orientation and not keep_metadata:
            out += _png_chunk(PNG_EXIF, orientation_exif(orientation))
        if kind == b"IEND":
            return bytes(out)
        pos = end
    raise _malformed("PNG", "no IEND chunk")


def _gif_sub_blocks_end(data: bytes, pos: int) -> int:
    """Index just past the zero-length block that ends a run of GIF data sub-blocks."""
    size = len(data)
    while pos < size:
        length = data[pos]
        pos += 1 + length
        if length == 0:
            return pos
    raise _malformed("GIF", "truncated data sub-blocks")


def strip_gif(data: bytes, *, keep_metadata: bool) -> bytes:
    """Frames, graphic control and looping stay; comments, plain text and other apps go."""
    if len(data) < 13 or data[:6] not in (b"GIF87a", b"GIF89a"):
        raise _malformed("GIF", "no GIF header")
    flags = data[10]
    pos = 13 + (3 * 2 ** ((flags & 0x07) + 1) if flags & 0x80 else 0)
    if pos > len(data):
        raise _malformed("GIF", "truncated colour table")
    out = bytearray(data[:pos])
    size = len(data)
    while pos < size:
        introducer = data[pos]
        if introducer == 0x3B:  # trailer: the image ends here
            break
        if introducer == 0x2C:  # image descriptor, optional local colour table, LZW data
            if pos + 11 > size:
                raise _malformed("GIF", "truncated image descriptor")
            local = data[pos + 9]
            table = 3 * 2 ** ((local & 0x07) + 1) if local & 0x80 else 0
            end = _gif_sub_blocks_end(data, pos + 10 + table + 1)
            out += data[pos:end]
            pos = end
            continue
        if introducer == 0x21:  # extension: label, then sub-blocks
            if pos + 2 > size:
                raise _malformed("GIF", "truncated extension")
            label = data[pos + 1]
            end = _gif_sub_blocks_end(data, pos + 2)
            application = data[pos + 3 : pos + 14] if label == 0xFF else b""
            if keep_metadata or label == 0xF9 or application in GIF_KEPT_APPLICATIONS:
                out += data[pos:end]
            pos = end
            continue
        raise _malformed("GIF", f"unknown block 0x{introducer:02X} at byte {pos}")
    out += b"\x3b"  # Pillow accepts a GIF without trailer; the stored one always has it
    return bytes(out)


def strip_webp(data: bytes, *, keep_metadata: bool, orientation: int | None) -> bytes:
    """Keep the allow-listed RIFF chunks, fix the VP8X flags and RIFF size, drop the tail."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        raise _malformed("WEBP", "no RIFF/WEBP header")
    (riff_size,) = struct.unpack_from("<I", data, 4)
    end_of_riff = 8 + riff_size
    if end_of_riff > len(data) or riff_size < 4:
        raise _malformed("WEBP", "RIFF size overruns the file")
    chunks: list[bytes] = []
    has_vp8x = False
    pos = 12
    while pos + 8 <= end_of_riff:
        kind = data[pos : pos + 4]
        (length,) = struct.unpack_from("<I", data, pos + 4)
        end = pos + 8 + length + (length & 1)
        if pos + 8 + length > end_of_riff:
            raise _malformed("WEBP", f"chunk {kind!r} overruns the RIFF")
        chunk = data[pos : min(end, end_of_riff)]
        if length & 1 and len(chunk) == 8 + length:
            chunk += b"\x00"
        if keep_metadata or kind in WEBP_KEPT_CHUNKS:
            chunks.append(chunk)
            has_vp8x = has_vp8x or kind == b"VP8X"
        pos = end
    if orientation and has_vp8x and not keep_metadata:
        exif = orientation_exif(orientation)
        chunks.append(b"EXIF" + struct.pack("<I", len(exif)) + exif)
    if has_vp8x:
        kinds = {chunk[:4] for chunk in chunks}
        for index, chunk in enumerate(chunks):
            if chunk[:4] == b"VP8X" and len(chunk) >= 9:
                flags = chunk[8] & ~(WEBP_FLAG_EXIF | WEBP_FLAG_XMP)
                flags |= WEBP_FLAG_EXIF if b"EXIF" in kinds else 0
                flags |= WEBP_FLAG_XMP if b"XMP " in kinds else 0
                chunks[index] = chunk[:8] + bytes([flags]) + chunk[9:]
    body = b"WEBP" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body
