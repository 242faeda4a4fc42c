"""Opaque keyset cursors over (created_at, id), newest first.

A cursor names the last row of a page; the next page holds rows strictly older in that order,
so inserts during paging never shift rows between pages (no duplicates, no gaps).

Its form is fixed so that the API description can state it exactly (:data:`CURSOR_PATTERN`)
and every string of that form is a cursor the server takes: 24 bytes in unpadded base64url
(32 characters, every one of the 64 symbols allowed anywhere), the first 8 the row's time as
signed big-endian microseconds since the Unix epoch in UTC, the last 16 its id. Any 16 bytes
are a UUID, and a time outside Python's calendar (years 1 to 9999) is taken as that calendar's
end: no row is older than year 1 or newer than year 9999, so the page is the same. A client
or fuzzer that sends what the description allows never gets a 400.

A cursor comes back from the client, so it is untrusted input: anything not of that form
(including the JSON cursors of earlier versions) is refused as INVALID_CURSOR (400) and never
sent to the database.
"""

from __future__ import annotations

import base64
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from service.errors import InvalidCursorError

CURSOR_LENGTH = 32
# Empty means "from the newest": the list takes ``?cursor=`` as no cursor.
CURSOR_PATTERN = rf"^(?:[A-Za-z0-9_-]{{{CURSOR_LENGTH}}})?$"
_FORM = re.compile(rf"[A-Za-z0-9_-]{{{CURSOR_LENGTH}}}")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_FIRST = (datetime.min.replace(tzinfo=UTC) - _EPOCH) // _MICROSECOND
_LAST = (datetime.max.replace(tzinfo=UTC) - _EPOCH) // _MICROSECOND


@dataclass(frozen=True)
class Cursor:
    created_at: datetime
    id: uuid.UUID

    def encode(self) -> str:
        micros = (self.created_at - _EPOCH) // _MICROSECOND
        raw = micros.to_bytes(8, "big", signed=True) + self.id.bytes
        return base64.urlsafe_b64encode(raw).decode()

    @classmethod
    def decode(cls, token: str) -> Cursor:
        if not _FORM.fullmatch(token):
            raise InvalidCursorError(
                "The cursor is not one this API returned; start again without it.",
                details={"pattern": CURSOR_PATTERN},
            )
        raw = base64.urlsafe_b64decode(token)  # 32 symbols are exactly 24 bytes
        micros = min(max(int.from_bytes(raw[:8], "big", signed=True), _FIRST), _LAST)
        return cls(created_at=_EPOCH + micros * _MICROSECOND, id=uuid.UUID(bytes=raw[8:]))
