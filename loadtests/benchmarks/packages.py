"""Programs the bench needs from Debian (wrk, pgpool2): found on PATH, else installed with
apt-get when running as root, else a clear error naming the command to run.

The bench installs them itself so `make bench` works on a fresh clone; it never calls sudo.
"""

from __future__ import annotations

import os
import shutil
import subprocess

SBIN = ("/usr/sbin", "/sbin")


class MissingProgramError(RuntimeError):
    """A program the bench needs is not installed and could not be installed."""


def find_program(program: str) -> str | None:
    found = shutil.which(program)
    if found:
        return found
    for directory in SBIN:
        candidate = os.path.join(directory, program)
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def require_program(program: str, package: str) -> str:
    """The path of ``program``, installing Debian's ``package`` first when it is missing."""
    found = find_program(program)
    if found:
        return found
    apt = shutil.which("apt-get")
    if os.geteuid() != 0 or apt is None:
        raise MissingProgramError(
            f"The bench needs '{program}'; install it as root with: apt-get install -y {package}"
        )
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [apt, "install", "-y", "--no-install-recommends", package]
    if subprocess.run(install, env=environment, capture_output=True).returncode != 0:
        subprocess.run([apt, "update"], env=environment, capture_output=True, check=False)
        result = subprocess.run(install, env=environment, capture_output=True, text=True)
        if result.returncode != 0:
            raise MissingProgramError(
                f"apt-get could not install {package}: {result.stderr.strip()[-400:]}"
            )
    found = find_program(program)
    if found is None:
        raise MissingProgramError(f"{package} is installed but '{program}' is not found.")
    return found
