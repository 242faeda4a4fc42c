"""Make a client-supplied filename safe to store and to echo in Content-Disposition.

The name is only a label: the bytes decide the type. So besides path parts and characters
that break headers or shells, two kinds of deception are removed: invisible characters that
reorder or hide text (bidi overrides such as U+202E turn ``gpj.html`` into what reads as
``lmth.jpg``; zero-width ones split words), and the client's extension, replaced by the one
of the detected format so ``evil.html`` served as PNG is stored as ``evil.png``.
"""

from __future__ import annotations

import re
import unicodedata
import uuid
from urllib.parse import quote

MAX_FILENAME_BYTES = 200
EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "GIF": ".gif", "WEBP": ".webp"}
_UNSAFE = re.compile(r'[\x00-\x1f\x7f-\x9f"\\<>|:*?]')
# Bidi embeddings/overrides/isolates and marks, zero-width characters, BOM. Every one is in a
# Unicode "format" category (Cf) too; they are named here because they are the ones attacks use.
INVISIBLE = frozenset(
    "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"
    "\u200b\u200c\u200d\u2060\ufeff"
)
# Control, format, separator-line/paragraph and surrogate categories never belong in a name.
_DROPPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
# What looks like a client's extension: a short alphanumeric suffix after the last dot.
_EXTENSION = re.compile(r"\.[A-Za-z0-9]{1,10}$")


def _visible(name: str) -> str:
    return "".join(
        c for c in name if c not in INVISIBLE and unicodedata.category(c) not in _DROPPED_CATEGORIES
    )


def sanitize_filename(raw: str | None, image_format: str) -> str:
    """Last path component, visible safe characters only, the detected format's extension.

    At most 200 UTF-8 bytes; an empty stem becomes ``image``.
    """
    extension = EXTENSIONS.get(image_format, "")
    name = unicodedata.normalize("NFC", raw or "")
    name = re.split(r"[/\\]", name)[-1]
    name = _UNSAFE.sub("", _visible(name))
    name = " ".join(name.split()).strip(". ")
    stem = _EXTENSION.sub("", name).rstrip(". ") or "image"
    budget = MAX_FILENAME_BYTES - len(extension.encode())
    stem = stem.encode()[:budget].decode(errors="ignore").rstrip(". ") or "image"
    return stem + extension


def download_name(image_id: uuid.UUID | str, image_format: str) -> str:
    """``<uuid>.<ext>``: a download name that carries nothing the client chose.

    Raises ValueError when ``image_id`` is not a UUID.
    """
    return f"{uuid.UUID(str(image_id))}{EXTENSIONS.get(image_format, '')}"


def content_disposition(filename: str) -> str:
    """``inline`` with an ASCII fallback and the exact UTF-8 name (RFC 6266 / RFC 5987)."""
    fallback = filename.encode("ascii", "replace").decode().replace("?", "_")
    return f"inline; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"
