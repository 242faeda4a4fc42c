"""The WAL position a read could have seen, measured inside the read's own statement.

Monotonic reads need, after every read, a token at or past everything that read could see, so
the client's next read goes only to a node that has replayed at least as much. That needs an
*upper* bound of the read's snapshot. The router's last probe of the node is a *lower* bound
(the node has replayed at least that much, and maybe far more since): a read that saw a row
committed after the probe would hand back a token below that row's commit, and the next read,
on a node that replayed past the probe but not past the row, would answer 404 for a row the
client has just seen.

So the read statement measures it itself, in one extra column, at no extra round trip:

* on a replica ``pg_last_wal_replay_lsn()``: the end of the last WAL record replayed. A
  statement's snapshot is taken before the executor runs (at Bind, for the extended protocol
  the service uses) and volatile functions are evaluated while it runs, so the position is read
  after the snapshot. A replica can only show a commit after replaying its record, and replay
  only moves forward, so every commit the snapshot shows ends at or before the position.
* on the primary ``pg_current_wal_insert_lsn()``: a commit becomes visible only after its
  record was inserted (with ``synchronous_commit = off`` even before it is flushed, which is
  why this is the *insert* position and not ``pg_current_wal_lsn()``, the write position).

The position is a ``LEFT JOIN`` from a one-row subquery, so a read that finds nothing (a 404,
an empty page) still reports it: having seen an image absent matters as much as having seen it
present (a deleted image must not come back).

Residual race: the startup process applies a record and only then publishes its end as the
replay position (a few instructions later, under a spinlock). A snapshot taken in that window,
whose statement also reads the position in that window, sees a commit the position does not yet
cover. The window is a handful of instructions against the microseconds between Bind and the
evaluation of the column; the experiment (``replikit experiment consistency``) has not caught
it. A position can also go backwards on a replica restarted from an older restart point, which
the router notices as a role change (down, then replica) only when a probe falls in between.
"""

from __future__ import annotations

from typing import Protocol

from sqlalchemy import Text, case, cast, func, select
from sqlalchemy.sql import Subquery

from service.routing.lsn import parse_lsn

SNAPSHOT_COLUMN = "snapshot_lsn"


class PositionObserver(Protocol):
    """Whoever wants to know what a read could see (the request's routing state)."""

    def saw(self, position: int | None) -> None: ...


def _snapshot_position() -> Subquery:
    position = case(
        (func.pg_is_in_recovery(), func.pg_last_wal_replay_lsn()),
        else_=func.pg_current_wal_insert_lsn(),
    )
    return select(cast(position, Text).label(SNAPSHOT_COLUMN)).subquery("snapshot")


# A one-row FROM item whose column ``snapshot_lsn`` is the node's position as text. Built once:
# Core constructs are immutable, and reads join it as it is.
SNAPSHOT_POSITION = _snapshot_position()


def report_position(position: str | None, observer: PositionObserver) -> None:
    """Hand a read's position column (text, or None when it carries none) to ``observer``."""
    observer.saw(parse_lsn(position) if position else None)
