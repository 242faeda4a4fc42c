from __future__ import annotations

import unicodedata
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.images.filenames import (
    INVISIBLE,
    content_disposition,
    download_name,
    sanitize_filename,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("cat.png", "cat.png"),
        ("../../etc/passwd", "passwd.png"),
        ("C:\\Users\\me\\holiday.jpg", "holiday.png"),
        ("bad\x00name\x1b.gif", "badname.png"),
        ('quote"s<and>pipes|.png', "quotesandpipes.png"),
        ("  spaced   out  .webp", "spaced out.png"),
        ("...", "image.png"),
        ("", "image.png"),
        (None, "image.png"),
        ("evil.html", "evil.png"),
        ("x.svg", "x.png"),
        ("photo.JPEG", "photo.png"),
        ("archive.tar.gz", "archive.tar.png"),
        ("Dr. Who portrait", "Dr. Who portrait.png"),
        (".htaccess", "htaccess.png"),
    ],
)
def test_sanitize_filename(raw: str | None, expected: str) -> None:
    assert sanitize_filename(raw, "PNG") == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # U+202E RIGHT-TO-LEFT OVERRIDE: "invoice\u202egpj.html" displays as "invoicelmth.jpg"
        ("invoice\u202egpj.html", "invoicegpj.jpg"),
        ("a\u2066b\u2067c\u2068d\u2069e\u202a\u202b\u202c\u202d.jpg", "abcde.jpg"),
        ("left\u200eright\u200farabic\u061cmark.jpeg", "leftrightarabicmark.jpg"),
        (
            "zero\u200bwidth\u200cjoin\u200dword\u2060joiner\ufeff.jpg",
            "zerowidthjoinwordjoiner.jpg",
        ),
        ("line\u2028sep\u2029para.jpg", "lineseppara.jpg"),
    ],
)
def test_bidi_and_zero_width_characters_are_removed(raw: str, expected: str) -> None:
    assert sanitize_filename(raw, "JPEG") == expected


def test_the_client_extension_is_replaced_by_the_detected_format() -> None:
    assert sanitize_filename("evil.html", "GIF") == "evil.gif"
    assert sanitize_filename("x.svg", "WEBP") == "x.webp"
    assert sanitize_filename("holiday.png", "JPEG") == "holiday.jpg"


def test_long_names_end_in_the_detected_extension_within_200_bytes() -> None:
    name = sanitize_filename("é" * 300 + ".jpeg", "JPEG")
    assert name.endswith("é.jpg")
    assert len(name.encode()) <= 200


def test_download_name_is_the_id_and_the_detected_extension() -> None:
    image_id = uuid.uuid4()
    assert download_name(image_id, "PNG") == f"{image_id}.png"
    assert download_name(str(image_id).upper(), "JPEG") == f"{image_id}.jpg"
    with pytest.raises(ValueError, match="hexadecimal"):
        download_name("../../etc/passwd", "PNG")


@given(st.text(max_size=400))
def test_any_input_gives_a_safe_name(raw: str) -> None:
    name = sanitize_filename(raw, "GIF")
    assert name.endswith(".gif")
    assert len(name) > len(".gif")
    assert "/" not in name
    assert "\\" not in name
    assert len(name.encode()) <= 200
    assert not any(unicodedata.category(c) in {"Cc", "Cf", "Zl", "Zp"} for c in name)
    assert not set(name) & INVISIBLE
    header = content_disposition(name)
    assert header.startswith('inline; filename="')
    assert header.isascii()
