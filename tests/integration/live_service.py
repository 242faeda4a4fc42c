"""A real uvicorn process serving the app on the test cluster, for what needs a real socket:
connection resets, wire-level framing, and fuzzing over HTTP as a client would see it."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from replication.cluster import Cluster
from replication.serving.process import log_path, running_service, start_service, stop_service
from replication.serving.urls import service_urls
from tests.integration.clusters import reachable_temp_dir


@dataclass(frozen=True)
class LiveService:
    url: str
    host: str
    port: int
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def live_service(cluster: Cluster, **settings: str) -> Iterator[LiveService]:
    """uvicorn on a free port, reads on the replicas, settings as ``REPLIKIT_*`` variables.

    Always stopped afterwards; if SIGTERM does not end it, it is killed and reaped, so no
    process outlives the test.
    """
    data_dir = reachable_temp_dir("replikit-live-")
    env = {**service_urls(cluster.state), "REPLIKIT_UPLOAD_RATE_LIMIT": "0"}
    env.update({f"REPLIKIT_{name.upper()}": value for name, value in settings.items()})
    record = start_service(data_dir, host="127.0.0.1", port=free_port(), workers=1, env=env)
    try:
        yield LiveService(record.url, record.host, record.port, log_path(data_dir))
    finally:
        try:
            stop_service(data_dir)
        finally:
            if running_service(data_dir) is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(record.pid, signal.SIGKILL)
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(record.pid, 0)
            shutil.rmtree(data_dir, ignore_errors=True)
