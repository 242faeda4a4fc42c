"""Locate the PostgreSQL server programs without assuming one major version."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from replication.errors import BinariesNotFoundError

REQUIRED_PROGRAMS = ("postgres", "initdb", "pg_ctl", "pg_basebackup", "psql", "pg_controldata")
INSTALL_HINT = (
    "install the PostgreSQL server (on Debian or Ubuntu: apt-get install postgresql; "
    "elsewhere your distribution's postgresql-server package) or pass --pg-bin / set PG_BIN"
)


@dataclass(frozen=True)
class PgBinaries:
    """A directory holding a complete set of PostgreSQL server programs."""

    directory: Path
    major_version: int

    def program(self, name: str) -> str:
        return str(self.directory / name)


def _is_complete(directory: Path) -> bool:
    return all(os.access(directory / name, os.X_OK) for name in REQUIRED_PROGRAMS)


def _major_version(directory: Path) -> int:
    output = subprocess.run(
        [str(directory / "postgres"), "--version"], capture_output=True, text=True, check=True
    ).stdout
    match = re.search(r"(\d+)(?:\.\d+)?", output)
    if match is None:
        raise BinariesNotFoundError(f"Could not read the PostgreSQL version from {directory}.")
    return int(match.group(1))


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", path.parent.name) or ["0"])


def _candidates() -> list[Path]:
    found: list[Path] = []
    env_dir = os.environ.get("PG_BIN")
    if env_dir:
        found.append(Path(env_dir))
    pg_config = shutil.which("pg_config")
    if pg_config:
        result = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        if result.returncode == 0 and result.stdout.strip():
            found.append(Path(result.stdout.strip()))
    for pattern_root, pattern in (("/usr/lib/postgresql", "*/bin"), ("/usr", "pgsql-*/bin")):
        found.extend(sorted(Path(pattern_root).glob(pattern), key=_version_key, reverse=True))
    initdb = shutil.which("initdb")
    if initdb:
        found.append(Path(initdb).parent)
    return found


def find_pg_binaries(explicit: str | Path | None = None) -> PgBinaries:
    """Return the first complete set: --pg-bin, PG_BIN, pg_config, newest packaged, PATH.

    An explicit directory that is incomplete is an error rather than silently skipped, so
    a typo in --pg-bin is never papered over by another installation.
    """
    if explicit is not None:
        directory = Path(explicit)
        if not _is_complete(directory):
            missing = [n for n in REQUIRED_PROGRAMS if not os.access(directory / n, os.X_OK)]
            raise BinariesNotFoundError(
                f"{directory} lacks the PostgreSQL programs {', '.join(missing)}; {INSTALL_HINT}."
            )
        return PgBinaries(directory.resolve(), _major_version(directory))
    for directory in _candidates():
        if _is_complete(directory):
            return PgBinaries(directory.resolve(), _major_version(directory))
    raise BinariesNotFoundError(f"No PostgreSQL server programs were found; {INSTALL_HINT}.")
