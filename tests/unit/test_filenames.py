from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.images.filenames import content_disposition, sanitize_filename


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("cat.png", "cat.png"),
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\me\\holiday.jpg", "holiday.jpg"),
        ("bad\x00name\x1b.gif", "badname.gif"),
        ('quote"s<and>pipes|.png', "quotesandpipes.png"),
        ("  spaced   out  .webp", "spaced out .webp"),
        ("...", "image.png"),
        ("", "image.png"),
        (None, "image.png"),
    ],
)
def test_sanitize_filename(raw: str | None, expected: str) -> None:
    assert sanitize_filename(raw, "PNG") == expected


def test_long_names_keep_their_extension_within_200_bytes() -> None:
    name = sanitize_filename("é" * 300 + ".jpeg", "JPEG")
    assert name.endswith(".jpeg")
    assert len(name.encode()) <= 200


@given(st.text(max_size=400))
def test_any_input_gives_a_safe_name(raw: str) -> None:
    name = sanitize_filename(raw, "GIF")
    assert name
    assert "/" not in name
    assert "\\" not in name
    assert len(name.encode()) <= 200
    assert all(ord(c) >= 0x20 and not 0x7F <= ord(c) <= 0x9F for c in name)
    header = content_disposition(name)
    assert header.startswith('inline; filename="')
    assert header.isascii()
