"""Run the image service in the background for `make up`, and stop it for `make down`.

The process is recorded in ``<data-dir>/service.json`` (pid, URL); its output goes to
``<data-dir>/service.log``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from replication.errors import ClusterTimeoutError, NodeCommandError

START_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 15.0


@dataclass
class ServiceRecord:
    pid: int
    host: str
    port: int
    ops_port: int = 0  # 0: no operations listener

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ops_url(self) -> str:
        """Where /cluster and /metrics answer (the operations listener, on loopback)."""
        return f"http://127.0.0.1:{self.ops_port}" if self.ops_port else self.url


def record_path(data_dir: Path) -> Path:
    return data_dir / "service.json"


def log_path(data_dir: Path) -> Path:
    return data_dir / "service.log"


def _alive(pid: int) -> bool:
    # Reap it first when it is our own child, or a zombie would look alive forever.
    with contextlib.suppress(ChildProcessError):
        reaped, _ = os.waitpid(pid, os.WNOHANG)
        if reaped == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def running_service(data_dir: Path) -> ServiceRecord | None:
    path = record_path(data_dir)
    if not path.is_file():
        return None
    record = ServiceRecord(**json.loads(path.read_text()))
    if _alive(record.pid):
        return record
    path.unlink(missing_ok=True)
    return None


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=1) as response:  # noqa: S310
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def start_service(
    data_dir: Path,
    *,
    host: str,
    port: int,
    workers: int,
    env: dict[str, str],
    ops_port: int = 0,
) -> ServiceRecord:
    """Start ``replikit serve`` detached and return once /health answers."""
    data_dir.mkdir(parents=True, exist_ok=True)
    log = log_path(data_dir).open("ab")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "replication",
            "serve",
            "--host",
            host,
            "--port",
            str(port),
            "--ops-port",
            str(ops_port),
            "--workers",
            str(workers),
            "--data-dir",
            str(data_dir),
        ],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, **env},
        start_new_session=True,
    )
    record = ServiceRecord(pid=process.pid, host=host, port=port, ops_port=ops_port)
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    try:
        while not _healthy(record.url):
            if process.poll() is not None or time.monotonic() > deadline:
                tail = log_path(data_dir).read_text(errors="replace").splitlines()[-10:]
                raise NodeCommandError(
                    f"The service did not start on {record.url}: " + " | ".join(tail)
                )
            time.sleep(0.2)
    except BaseException:
        # Not yet recorded, so no `serve --stop` could find it: stop it here, workers and
        # decode processes included (its own session), also on Ctrl-C.
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        raise
    record_path(data_dir).write_text(json.dumps(asdict(record)))
    return record


def stop_service(data_dir: Path) -> ServiceRecord | None:
    """SIGTERM the recorded service (uvicorn shuts down gracefully); None if none ran."""
    record = running_service(data_dir)
    if record is None:
        return None
    os.killpg(record.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
    while _alive(record.pid):
        if time.monotonic() > deadline:
            raise ClusterTimeoutError(f"The service (pid {record.pid}) did not stop in time.")
        time.sleep(0.1)
    record_path(data_dir).unlink(missing_ok=True)
    return record
