from __future__ import annotations

import base64
import json
import re
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from service.errors import InvalidCursorError
from service.images.pagination import CURSOR_LENGTH, CURSOR_PATTERN, Cursor
from tests.cursor_forms import CALENDAR_ENDS, legacy_cursor, micros_of, position_cursor


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
    """In range as written, out of range in UTC: the driver used to overflow on it (a 500).
    Cursors no longer carry an offset; this earlier JSON form is refused outright."""
    payload = json.dumps({"t": timestamp, "id": str(uuid.uuid4())}).encode()
    with pytest.raises(InvalidCursorError):
        Cursor.decode(base64.urlsafe_b64encode(payload).decode().rstrip("="))


def test_cursor_timestamps_are_normalized_to_utc() -> None:
    written = datetime(2026, 5, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    decoded = Cursor.decode(Cursor(created_at=written, id=uuid.uuid4()).encode())
    assert decoded.created_at == datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    assert decoded.created_at.utcoffset() == timedelta(0)


# --- the declared form: exactly what is taken ------------------------------------------------


@settings(max_examples=300, deadline=None, database=None)
@given(token=st.from_regex(CURSOR_PATTERN, fullmatch=True).filter(bool))
def test_every_cursor_of_the_declared_form_is_taken(token: str) -> None:
    """What the OpenAPI description allows, the server takes: never INVALID_CURSOR."""
    decoded = Cursor.decode(token)
    assert decoded.created_at.tzinfo is UTC
    assert len(token) <= CURSOR_LENGTH


@settings(max_examples=300, deadline=None, database=None)
@given(token=st.text(max_size=CURSOR_LENGTH + 8))
def test_a_cursor_not_of_the_declared_form_is_refused(token: str) -> None:
    # Empty is "no cursor" to the list, which never decodes it.
    assume(token == "" or not re.fullmatch(CURSOR_PATTERN, token))
    with pytest.raises(InvalidCursorError):
        Cursor.decode(token)


@settings(max_examples=200, deadline=None, database=None)
@given(
    moment=st.datetimes(timezones=st.just(UTC)),
    image_id=st.uuids(),
)
def test_a_cursor_is_the_documented_layout(moment: datetime, image_id: uuid.UUID) -> None:
    token = position_cursor(micros_of(moment), image_id)
    assert Cursor(created_at=moment, id=image_id).encode() == token
    assert re.fullmatch(CURSOR_PATTERN, token)
    assert Cursor.decode(token) == Cursor(created_at=moment, id=image_id)


@pytest.mark.parametrize(
    ("micros", "expected"),
    [
        (2**63 - 1, datetime.max.replace(tzinfo=UTC)),
        (-(2**63), datetime.min.replace(tzinfo=UTC)),
        # One microsecond past each end of Python's calendar.
        (CALENDAR_ENDS[1] + 1, datetime.max.replace(tzinfo=UTC)),
        (CALENDAR_ENDS[0] - 1, datetime.min.replace(tzinfo=UTC)),
    ],
)
def test_a_position_outside_the_calendar_is_taken_as_its_end(
    micros: int, expected: datetime
) -> None:
    """No row is newer than 9999 or older than year 1: the page is the same as at the end."""
    image_id = uuid.uuid4()
    assert Cursor.decode(position_cursor(micros, image_id)) == Cursor(
        created_at=expected, id=image_id
    )


def test_a_cursor_of_an_earlier_version_is_refused_with_how_to_recover() -> None:
    payload = {"t": "2026-05-01T12:00:00+00:00", "id": str(uuid.uuid4())}
    with pytest.raises(InvalidCursorError, match="start again without it") as refused:
        Cursor.decode(legacy_cursor(payload))
    assert refused.value.details == {"pattern": CURSOR_PATTERN}
