"""The rule of service/routing/failures.py, on the exception types asyncpg, SQLAlchemy and
the socket layer really raise: only evidence that a node is down marks it; every timeout is
"busy"; a full disk is "full", neither down nor the request's own fault."""

from __future__ import annotations

import errno

import asyncpg
import pytest
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from service.db.driver_pools import DriverPoolExhaustedError
from service.routing.failures import (
    Verdict,
    classify,
    is_busy,
    is_node_failure,
    is_storage_full,
)

DOWN = [
    ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"),
    OSError(errno.ECONNREFUSED, "Connect call failed"),
    ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"),
    BrokenPipeError(errno.EPIPE, "Broken pipe"),
    OSError(errno.EHOSTUNREACH, "No route to host"),
    asyncpg.CannotConnectNowError("the database system is starting up"),
    asyncpg.AdminShutdownError("terminating connection due to administrator command"),
    asyncpg.exceptions.CrashShutdownError("terminating connection because of crash"),
    asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
    asyncpg.exceptions.ConnectionFailureError("connection failure"),
    asyncpg.ReadOnlySQLTransactionError("cannot execute INSERT in a read-only transaction"),
    asyncpg.InterfaceError("cannot call Connection.fetch(): connection is closed"),
]
BUSY = [
    TimeoutError(),
    OSError(errno.ETIMEDOUT, "Connection timed out"),
    asyncpg.QueryCanceledError("canceling statement due to statement timeout"),
    asyncpg.TooManyConnectionsError("sorry, too many clients already"),
    PoolTimeoutError("QueuePool limit of size 10 overflow 10 reached"),
    DriverPoolExhaustedError(),
]
FULL = [
    asyncpg.exceptions.DiskFullError('could not extend file "base/16387/16411"'),
    OSError(errno.ENOSPC, "No space left on device"),  # the filesystem blob store's write
    OSError(errno.EDQUOT, "Disk quota exceeded"),
    DBAPIError("INSERT", {}, asyncpg.exceptions.DiskFullError("could not extend file")),
]
REQUEST = [
    asyncpg.UniqueViolationError("duplicate key value violates unique constraint"),
    asyncpg.InterfaceError("cannot perform operation: another operation is in progress"),
    ValueError("not a node problem"),
]


@pytest.mark.parametrize("error", DOWN, ids=lambda e: type(e).__name__)
def test_evidence_that_a_node_is_down_marks_it(error: BaseException) -> None:
    assert classify(error) is Verdict.DOWN
    assert is_node_failure(error)


@pytest.mark.parametrize("error", BUSY, ids=lambda e: type(e).__name__)
def test_timeouts_and_full_pools_are_busy_never_down(error: BaseException) -> None:
    assert classify(error) is Verdict.BUSY
    assert is_busy(error)
    assert not is_node_failure(error)


@pytest.mark.parametrize("error", FULL, ids=lambda e: type(e).__name__)
def test_a_full_disk_is_full_never_down_nor_busy(error: BaseException) -> None:
    # ENOSPC is an OSError like a refused connection: before this verdict it marked a
    # healthy primary down.
    assert classify(error) is Verdict.FULL
    assert is_storage_full(error)
    assert not is_node_failure(error)
    assert not is_busy(error)


def test_a_full_disk_raised_from_inside_a_wrapper_is_still_full() -> None:
    error = RuntimeError("upload failed")
    error.__cause__ = OSError(errno.ENOSPC, "No space left on device")
    assert classify(error) is Verdict.FULL


@pytest.mark.parametrize("error", REQUEST, ids=lambda e: type(e).__name__)
def test_the_request_s_own_errors_say_nothing_about_the_node(error: BaseException) -> None:
    assert classify(error) is Verdict.REQUEST


def test_sqlalchemy_wrappers_are_judged_by_what_they_wrap() -> None:
    refused = OperationalError("INSERT", {}, ConnectionRefusedError(errno.ECONNREFUSED, "no"))
    timed_out = DBAPIError("COMMIT", {}, TimeoutError(), connection_invalidated=True)
    assert classify(refused) is Verdict.DOWN
    # Invalidated because it timed out: the timeout decides, not the invalidation.
    assert classify(timed_out) is Verdict.BUSY


def test_a_timeout_raised_from_a_refusal_is_still_a_timeout() -> None:
    error = TimeoutError()
    error.__cause__ = ConnectionResetError(errno.ECONNRESET, "reset")
    assert classify(error) is Verdict.BUSY
