"""What a database error says about the node: down, busy, or nothing (the request's own error).

The rule, in one place, because the router, the monitor and the API's error handlers must agree
on it:

* **DOWN** only for evidence that the node is not serving: the connection was refused, reset or
  closed under us (``OSError`` other than a timeout, asyncpg's ``ConnectionDoesNotExistError``
  and the other ``08xxx`` connection errors, an ``InterfaceError`` about a closed connection),
  the server is shutting down or starting (``57P01`` ``AdminShutdownError``, ``57P02``
  ``CrashShutdownError``, ``57P03`` ``CannotConnectNowError``), or it was demoted (``25006``
  read-only transaction on what we took for the writer). The router marks such a node
  *suspect* and may move the request to another node.
* **BUSY** for every timeout: a connect timeout, a pool checkout timeout, a command timeout
  (``asyncio`` ``TimeoutError``), a server-side ``statement_timeout`` (``57014``
  ``QueryCanceledError``), and ``53300`` ``TooManyConnectionsError``. A timeout is what a
  saturated service sees from a perfectly healthy node: when this process's own CPU is full,
  the answer sits in the socket while the event loop runs other requests. Treating it as a
  dead node moves the read to another node and then to the primary, adding load exactly when
  there is too much of it, and finally reports a primary that is up as unreachable (a
  metastable failure). So a timeout never marks a node; the request is answered 503
  ``DATABASE_BUSY`` with ``Retry-After``, and a node that really stopped answering (a
  partition, a frozen server) is found by the monitor's probes, which count a timeout only
  when the monitor's own event loop was responsive (service/routing/monitor.py).
* **FULL** when the node (or the blob directory) has no room left: ``53100`` ``DiskFullError``
  (a table, index or temporary file could not be extended or written) and an ``OSError``
  ``ENOSPC`` or ``EDQUOT`` (the filesystem blob store's write; before this verdict such an
  ``OSError`` counted as DOWN). The node serves reads and will take writes again once space
  is freed, so it is not marked; the request is answered 503 ``STORAGE_FULL`` with
  ``Retry-After``. A primary that cannot write *WAL* does not raise this: it PANICs and
  restarts or shuts down, which reaches us as DOWN (docs/operations.md#a-full-disk).
* **REQUEST** for everything else (a unique violation, a bad cursor): the node is fine, the
  error belongs to the request.
"""

from __future__ import annotations

import errno
from enum import StrEnum

import asyncpg
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from service.db.driver_pools import DriverPoolExhaustedError


class Verdict(StrEnum):
    DOWN = "down"
    BUSY = "busy"
    FULL = "full"
    REQUEST = "request"


# SQLSTATEs that say the node cannot serve: connection errors, shutdown/startup, read-only.
DOWN_STATES = {"25006", "57P01", "57P02", "57P03"}
DOWN_STATE_PREFIX = "08"
# SQLSTATEs that say the node is busy: statement_timeout, too many connections.
BUSY_STATES = {"57014", "53300"}
# SQLSTATE and errnos that say the node's disk (or the blob directory's) is full.
FULL_STATES = {"53100"}
FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
# OSErrors that are a timeout in all but type (a connect that the kernel gave up on).
TIMEOUT_ERRNOS = {errno.ETIMEDOUT}


def _sqlstate(error: BaseException) -> str | None:
    for candidate in (error, getattr(error, "orig", None), error.__cause__):
        state = getattr(candidate, "sqlstate", None) or getattr(candidate, "pgcode", None)
        if isinstance(state, str):
            return state
    return None


def _causes(error: BaseException) -> list[BaseException]:
    """The error, what SQLAlchemy wraps (``orig``) and what it was raised from."""
    found = [error]
    for candidate in (getattr(error, "orig", None), error.__cause__):
        if isinstance(candidate, BaseException) and candidate not in found:
            found.append(candidate)
    return found


def files_are_full(error: BaseException) -> bool:
    """True when a file write of ours (the blob directory) found no room: ``ENOSPC``."""
    return any(
        isinstance(cause, OSError) and cause.errno in FULL_ERRNOS for cause in _causes(error)
    )


def _is_timeout(error: BaseException) -> bool:
    if isinstance(error, TimeoutError | PoolTimeoutError | DriverPoolExhaustedError):
        return True
    return isinstance(error, OSError) and error.errno in TIMEOUT_ERRNOS


def classify(error: BaseException) -> Verdict:
    """DOWN, BUSY, FULL or REQUEST for ``error`` (raised by asyncpg, SQLAlchemy, a socket or
    a file write)."""
    causes = _causes(error)
    if any(_is_timeout(cause) for cause in causes):
        return Verdict.BUSY
    if files_are_full(error):
        return Verdict.FULL
    state = _sqlstate(error)
    if state is not None:
        if state in FULL_STATES:
            return Verdict.FULL
        if state in BUSY_STATES:
            return Verdict.BUSY
        if state in DOWN_STATES or state.startswith(DOWN_STATE_PREFIX):
            return Verdict.DOWN
        return Verdict.REQUEST
    for cause in causes:
        if isinstance(cause, OSError):  # refused, reset, broken pipe, unreachable
            return Verdict.DOWN
        if isinstance(cause, asyncpg.InterfaceError) and "closed" in str(cause):
            return Verdict.DOWN
    if isinstance(error, DBAPIError) and error.connection_invalidated:
        return Verdict.DOWN
    return Verdict.REQUEST


def is_node_failure(error: BaseException) -> bool:
    """True when ``error`` is evidence that the node is down (see the module's rule)."""
    return classify(error) is Verdict.DOWN


def is_busy(error: BaseException) -> bool:
    """True when ``error`` is a timeout or a full pool: capacity, not failure."""
    return classify(error) is Verdict.BUSY


def is_storage_full(error: BaseException) -> bool:
    """True when ``error`` says the disk is full: no room, not a failure of the node."""
    return classify(error) is Verdict.FULL
