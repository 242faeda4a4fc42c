"""Long-running helper processes that replikit starts on this machine (etcd members, Patroni
agents): started detached as the server account, recorded by pid, signalled and waited for.

A recorded pid counts as running only while it belongs to a live process whose command line
names the expected marker: pids get reused, and on a machine whose init reaps late a killed
process lingers as a zombie that ``kill -0`` still calls alive.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from replication.server_user import ServerUser


def is_zombie(pid: int) -> bool:
    """True when ``pid`` has exited but is not reaped yet (or is gone altogether)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
    return "\nState:\tZ" in status


class ProcessTable:
    """Processes under ``<data_dir>/run/<name>.pid`` with their output in ``logs/``."""

    def __init__(self, *, data_dir: Path, user: ServerUser) -> None:
        self.data_dir = data_dir
        self.user = user

    def pid_file(self, process: str) -> Path:
        return self.data_dir / "run" / f"{process}.pid"

    def log_file(self, process: str) -> Path:
        return self.data_dir / "logs" / f"{process}.log"

    def spawn(self, process: str, argv: list[str]) -> None:
        """Start a long-running process as the server account, detached from this one
        (its own session), its output in logs/<process>.log and its pid in run/."""
        self.pid_file(process).parent.mkdir(exist_ok=True)
        log = self.log_file(process).open("ab")
        try:
            account: dict[str, Any] = (
                {"user": self.user.uid, "group": self.user.gid, "extra_groups": []}
                if self.user.switch
                else {}
            )
            child = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                start_new_session=True,
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"},
                **account,
            )
        finally:
            log.close()
        self.pid_file(process).write_text(f"{child.pid}\n")

    def pid(self, process: str, marker: str) -> int | None:
        """The pid of a process replikit started, if it still runs: the recorded pid must
        belong to a live process whose command line names ``marker``."""
        try:
            pid = int(self.pid_file(process).read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return None
        if marker.encode() not in cmdline or is_zombie(pid):
            return None
        return pid

    def signal(self, process: str, marker: str, sig: signal.Signals, timeout: float) -> None:
        """Send ``sig`` and wait until the process is gone; SIGKILL it after ``timeout``."""
        pid = self.pid(process, marker)
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while self.pid(process, marker) is not None:
            if time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)
        # Reap it when it is our child (a CLI that started it and stops it in one run).
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)
