"""Read consistency modes and the client's read-your-writes token."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from service.errors import InvalidConsistencyError
from service.routing.lsn import format_lsn, parse_lsn

if TYPE_CHECKING:  # keep the CLI, which imports this for settings, free of FastAPI
    from fastapi import Request

CONSISTENCY_HEADER = "X-Replikit-Consistency"
LSN_HEADER = "X-Replikit-LSN"
LSN_COOKIE = "replikit_lsn"
ECHO_LIMIT = 64  # characters of client input an error message may repeat


class Consistency(StrEnum):
    EVENTUAL = "eventual"
    BOUNDED = "bounded"
    READ_YOUR_WRITES = "read_your_writes"
    MONOTONIC = "monotonic"
    STRONG = "strong"

    @property
    def honours_token(self) -> bool:
        """A read in this mode is never served by a replica behind the client's token."""
        return self in (Consistency.READ_YOUR_WRITES, Consistency.MONOTONIC)

    @property
    def reports_reads(self) -> bool:
        """A read in this mode advances the token to what its snapshot could see, so the
        client's next read is no older (monotonic reads), whichever instance serves it."""
        return self is Consistency.MONOTONIC


@dataclass
class RequestRouting:
    """What the router knows about one request; lives in ``request.state.routing``."""

    consistency: Consistency
    token: int | None
    wrote: bool = False
    served_by: str | None = None
    # The highest WAL position this request's reads could have seen (monotonic mode only):
    # measured in the read's own statement, after its snapshot (service/db/snapshot.py).
    seen: int | None = None

    def saw(self, position: int | None) -> None:
        if position is not None and (self.seen is None or position > self.seen):
            self.seen = position

    @property
    def read_token(self) -> int | None:
        """What a read response hands back: the client's token or what the read could see,
        whichever is higher; None when the read measured nothing."""
        if self.seen is None:
            return None
        return self.seen if self.token is None else max(self.token, self.seen)


def _token(raw: str | None) -> int | None:
    if not raw:
        return None
    try:
        return parse_lsn(raw.strip())
    except ValueError:
        return None  # a garbled token only loses the guarantee it was meant to give


def request_routing(request: Request, default: Consistency) -> RequestRouting:
    existing: RequestRouting | None = getattr(request.state, "routing", None)
    if existing is not None:
        return existing
    raw = request.headers.get(CONSISTENCY_HEADER)
    if raw is None:
        consistency = default
    else:
        try:
            consistency = Consistency(raw.strip().lower())
        except ValueError:
            raise InvalidConsistencyError(
                f"{CONSISTENCY_HEADER} must be one of "
                f"{', '.join(mode.value for mode in Consistency)}, not {raw[:ECHO_LIMIT]!r}.",
                details={"allowed": [mode.value for mode in Consistency]},
            ) from None
    tokens = [
        t
        for t in (_token(request.headers.get(LSN_HEADER)), _token(request.cookies.get(LSN_COOKIE)))
        if t is not None
    ]
    routing = RequestRouting(consistency=consistency, token=max(tokens) if tokens else None)
    request.state.routing = routing
    return routing


def newest_token(*candidates: str | None) -> str | None:
    """The highest valid LSN among ``candidates``, formatted; None if there is none."""
    values = [t for t in (_token(c) for c in candidates) if t is not None]
    return format_lsn(max(values)) if values else None
