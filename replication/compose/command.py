"""Which docker compose to call: v2 (``docker compose``) or v1 (``docker-compose``).

Debian ships compose v1 only (1.29); most users have v2. Everything replikit runs through
compose uses flags both understand, and this module picks the program once: the
``REPLIKIT_COMPOSE`` variable when set (e.g. ``docker-compose`` or ``docker compose``), else v2
when the docker client has the plugin, else v1 when it is on PATH.
"""

from __future__ import annotations

import functools
import os
import shlex
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from replication.errors import BadInputError

OVERRIDE_VARIABLE = "REPLIKIT_COMPOSE"


@dataclass(frozen=True)
class ComposeProgram:
    """The argv prefix of the compose program and its major version."""

    argv: tuple[str, ...]
    major: int

    def command(self, *args: str) -> list[str]:
        return [*self.argv, *args]

    def project_command(
        self,
        *args: str,
        compose_file: Path,
        project_directory: Path,
        env_file: str | Path | None = None,
        project_name: str | None = None,
        extra_files: Sequence[Path] = (),
    ) -> list[str]:
        """One call on one stack: its file (and the files merged over it, such as the HA
        variant's), directory, env file and project name, which every replikit call names so
        that a second stack on the host is never touched."""
        options = [flag for f in (compose_file, *extra_files) for flag in ("-f", str(f))]
        options += ["--project-directory", str(project_directory)]
        if project_name:
            options += ["-p", project_name]
        if env_file:
            options += ["--env-file", str(env_file)]
        return self.command(*options, *args)


def _answers(argv: list[str]) -> str | None:
    """The program's ``version --short`` output, or None when it is not a working compose."""
    try:
        result = subprocess.run(
            [*argv, "version", "--short"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() if result.returncode == 0 and result.stdout.strip() else None


def _major(version: str) -> int:
    digits = version.lstrip("v").split(".", 1)[0]
    return int(digits) if digits.isdigit() else 2


@functools.cache
def compose_program() -> ComposeProgram:
    override = os.environ.get(OVERRIDE_VARIABLE, "").strip()
    if override:
        argv = shlex.split(override)
        version = _answers(argv)
        if version is None:
            raise BadInputError(
                f"{OVERRIDE_VARIABLE}={override!r} does not run docker compose; set it to "
                "'docker compose' or 'docker-compose', or unset it to detect one."
            )
        return ComposeProgram(tuple(argv), _major(version))
    docker = shutil.which("docker")
    if docker is not None:
        version = _answers([docker, "compose"])
        if version is not None:
            return ComposeProgram((docker, "compose"), _major(version))
    legacy = shutil.which("docker-compose")
    if legacy is not None:
        version = _answers([legacy])
        if version is not None:
            return ComposeProgram((legacy,), _major(version))
    raise BadInputError(
        "Neither 'docker compose' (v2) nor 'docker-compose' (v1) works here; install one "
        "(on Debian, as root: apt-get install docker.io docker-compose) or run 'make compose-up', "
        "which installs them."
    )
