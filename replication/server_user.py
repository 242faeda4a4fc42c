"""Run server programs as an account PostgreSQL accepts.

The server refuses to run as root. When replikit runs as root (tests, CI, containers' init),
every server program runs as the ``postgres`` OS account through ``runuser``, and every path
that account needs is created and owned for it. As any other user, programs run directly.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from replication.errors import BadInputError, NodeCommandError

SERVER_ACCOUNT = "postgres"


@dataclass(frozen=True)
class ServerUser:
    """The OS account server processes run as, and how to switch to it."""

    name: str
    uid: int
    gid: int
    switch: bool

    @classmethod
    def detect(cls) -> ServerUser:
        if os.geteuid() != 0:
            entry = pwd.getpwuid(os.geteuid())
            return cls(entry.pw_name, entry.pw_uid, entry.pw_gid, switch=False)
        try:
            entry = pwd.getpwnam(SERVER_ACCOUNT)
        except KeyError:
            raise BadInputError(
                "PostgreSQL refuses to run as root and there is no 'postgres' account to run it "
                "as; install the postgresql package (it creates the account) or run replikit "
                "as an ordinary user."
            ) from None
        if shutil.which("runuser") is None:
            raise BadInputError("Running as root needs the runuser program (util-linux).")
        return cls(entry.pw_name, entry.pw_uid, entry.pw_gid, switch=True)

    def argv(self, argv: Sequence[str]) -> list[str]:
        return ["runuser", "-u", self.name, "--", *argv] if self.switch else list(argv)

    def run(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        what: str,
        timeout: float = 120.0,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """Run a program as this account; unless ``check`` is off, raise with its output
        when it fails."""
        full_env = {**os.environ, **(env or {})}
        result = subprocess.run(
            self.argv(argv),
            env=full_env,
            cwd=cwd or Path("/"),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if check and result.returncode != 0:
            output = (result.stderr or result.stdout).strip()
            raise NodeCommandError(f"{what} failed: {output or f'exit code {result.returncode}'}")
        return result

    def make_dir(self, path: Path, mode: int = 0o750) -> None:
        """Create a directory this account owns (root creates it, then hands it over)."""
        path.mkdir(parents=True, exist_ok=True)
        if self.switch:
            os.chown(path, self.uid, self.gid)
        path.chmod(mode)

    def hand_over(self, path: Path) -> None:
        """Give this account a file it must own (a server's private key: PostgreSQL refuses
        one owned by anybody else with mode 0600)."""
        if self.switch:
            os.chown(path, self.uid, self.gid)

    def can_reach(self, path: Path) -> bool:
        """True when this account can traverse into ``path`` (every parent searchable)."""
        if not self.switch:
            return os.access(path, os.X_OK)
        result = subprocess.run(self.argv(["test", "-x", str(path)]), cwd="/", check=False)
        return result.returncode == 0

    def require_reachable(self, path: Path) -> None:
        """Fail with the exact directory to fix when the account cannot reach ``path``."""
        existing = path
        while not existing.exists():
            existing = existing.parent
        if self.can_reach(existing):
            return
        blocker = existing
        for parent in [existing, *existing.parents][::-1]:
            if not self.can_reach(parent):
                blocker = parent
                break
        raise BadInputError(
            f"The '{self.name}' account cannot reach {path} because {blocker} is not searchable "
            f"by it; choose a data directory elsewhere (for example --data-dir "
            f"/var/tmp/replikit) or run"  # noqa: S108 - an example in a message
            f" 'chmod o+x {blocker}'."
        )
