"""Make a client-supplied filename safe to store and to echo in Content-Disposition."""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import quote

MAX_FILENAME_BYTES = 200
EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "GIF": ".gif", "WEBP": ".webp"}
_UNSAFE = re.compile(r'[\x00-\x1f\x7f-\x9f"\\<>|:*?]')


def sanitize_filename(raw: str | None, image_format: str) -> str:
    """Last path component, no control or shell-hostile characters, at most 200 UTF-8 bytes.

    An empty result becomes ``image.<ext>`` with the extension of the detected format.
    """
    name = unicodedata.normalize("NFC", raw or "")
    name = re.split(r"[/\\]", name)[-1]
    name = _UNSAFE.sub("", name)
    name = " ".join(name.split()).strip(". ")
    if not name:
        return "image" + EXTENSIONS.get(image_format, "")
    encoded = name.encode()
    if len(encoded) > MAX_FILENAME_BYTES:
        stem, dot, ext = name.rpartition(".")
        keep_ext = f"{dot}{ext}" if dot and len(ext.encode()) <= 16 else ""
        budget = MAX_FILENAME_BYTES - len(keep_ext.encode())
        base = (stem if keep_ext else name).encode()[:budget].decode(errors="ignore")
        name = base.rstrip(". ") + keep_ext
    return name


def content_disposition(filename: str) -> str:
    """``inline`` with an ASCII fallback and the exact UTF-8 name (RFC 6266 / RFC 5987)."""
    fallback = filename.encode("ascii", "replace").decode().replace("?", "_")
    return f"inline; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"
