from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from service.errors import InvalidCursorError
from service.images.pagination import Cursor


def test_cursor_round_trips() -> None:
    cursor = Cursor(created_at=datetime(2026, 5, 1, 12, 0, 0, 123456, tzinfo=UTC), id=uuid.uuid4())
    assert Cursor.decode(cursor.encode()) == cursor
    assert "=" not in cursor.encode()


@pytest.mark.parametrize("token", ["", "!!!", "e30", "bnVsbA", "W10", "eyJ0IjogMX0"])
def test_foreign_cursors_are_refused(token: str) -> None:
    with pytest.raises(InvalidCursorError):
        Cursor.decode(token)
