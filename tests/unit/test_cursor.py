from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta

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


@pytest.mark.parametrize(
    "timestamp",
    ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "0001-01-01T05:00:00+05:01"],
)
def test_cursors_whose_utc_time_leaves_the_calendar_are_refused(timestamp: str) -> None:
    """In range as written, out of range in UTC: the driver used to overflow on it (a 500)."""
    payload = json.dumps({"t": timestamp, "id": str(uuid.uuid4())}).encode()
    with pytest.raises(InvalidCursorError):
        Cursor.decode(base64.urlsafe_b64encode(payload).decode().rstrip("="))


def test_cursor_timestamps_are_normalized_to_utc() -> None:
    payload = json.dumps({"t": "2026-05-01T14:00:00+02:00", "id": str(uuid.uuid4())}).encode()
    decoded = Cursor.decode(base64.urlsafe_b64encode(payload).decode())
    assert decoded.created_at == datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    assert decoded.created_at.utcoffset() == timedelta(0)
