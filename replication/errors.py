"""The one exception hierarchy of the replication package.

Every error a user can cause or meet is a :class:`ReplikitError` whose message is a single
plain sentence, with the fix when there is one; the CLI prints it and exits non-zero. Anything
else escaping is a bug and keeps its traceback.
"""


class ReplikitError(Exception):
    """A failure explained in one sentence for the person at the terminal."""

    exit_code: int = 1


class BadInputError(ReplikitError):
    """The request cannot be carried out as asked; nothing was changed."""

    exit_code = 2


class BinariesNotFoundError(ReplikitError):
    """PostgreSQL server programs are missing."""


class PortInUseError(BadInputError):
    """A port the cluster needs is held by another process."""


class DataDirConflictError(BadInputError):
    """The data directory holds something that is not this cluster."""


class NodeCommandError(ReplikitError):
    """A server program or node script failed; the message carries its output."""


class ClusterTimeoutError(ReplikitError):
    """The cluster did not reach the expected state in time."""
