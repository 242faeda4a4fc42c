"""The HTTP servers the bench compares, each started on a free loopback port and always stopped:
the service (``replikit serve``, one worker) with a given environment, the same service from
another checkout (an older revision, for before/after figures), and the bare app of
:mod:`loadtests.benchmarks.bare_app` (uvicorn, one worker) with direct or multi-host DSNs.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from replication.ports import find_free_port_range
from replication.serving.process import start_service, stop_service
from replication.topology import ClusterState

START_TIMEOUT_SECONDS = 30.0


@dataclass
class Endpoint:
    """Where a configuration answers, and the process whose memory we report."""

    url: str
    pid: int


def plain_dsn(url: str) -> str:
    """asyncpg/libpq DSN from the service's SQLAlchemy URL."""
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


def multihost_dsn(state: ClusterState, target_session_attrs: str) -> str:
    """One libpq multi-host DSN over every node, the recorded primary first."""
    first = plain_dsn(state.app_url(state.primary_node))
    credentials = first.split("@", 1)[0]
    hosts = ",".join(f"{state.host}:{node.port}" for node in [state.primary_node, *state.replicas])
    return f"{credentials}@{hosts}/{state.database}?target_session_attrs={target_session_attrs}"


@contextlib.contextmanager
def replikit_service(
    scratch: Path, env: dict[str, str], workers: int = 1, port_start: int = 43000
) -> Iterator[Endpoint]:
    """``replikit serve`` with ``workers`` processes and ``env`` on top of the bench's own
    settings, on the first free port from ``port_start``."""
    record_dir = scratch / f"service-{time.monotonic_ns()}"
    port = find_free_port_range(1, start=port_start)
    try:
        # start_service stops the process itself when it fails or is interrupted before it
        # answers; once it answers, it is recorded and stop_service finds it.
        record = start_service(record_dir, host="127.0.0.1", port=port, workers=workers, env=env)
        yield Endpoint(url=record.url, pid=record.pid)
    finally:
        stop_service(record_dir)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=1) as response:  # noqa: S310
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


@contextlib.contextmanager
def _server(
    argv: list[str], *, name: str, port: int, log_file: Path, env: dict[str, str], cwd: Path
) -> Iterator[Endpoint]:
    """Run ``argv`` in a process group of its own until the block ends; yield once /health
    answers on ``port``."""
    with log_file.open("ab") as log:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not _healthy(url):
            if process.poll() is not None or time.monotonic() > deadline:
                tail = log_file.read_text(errors="replace").splitlines()[-10:]
                raise RuntimeError(f"{name} did not start on {url}: " + " | ".join(tail))
            time.sleep(0.2)
        yield Endpoint(url=url, pid=process.pid)
    finally:
        _stop_group(process)


@contextlib.contextmanager
def bare_app(
    scratch: Path, *, write_dsn: str, read_dsns: list[str], workers: int = 1
) -> Iterator[Endpoint]:
    """The bare Starlette + asyncpg app under uvicorn (httptools, uvloop: what ``replikit
    serve`` runs on) with ``workers`` processes."""
    port = find_free_port_range(1, start=44000)
    scratch.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "BENCH_WRITE_DSN": write_dsn, "BENCH_READ_DSNS": " ".join(read_dsns)}
    argv = [
        sys.executable,
        "-m",
        "uvicorn",
        "loadtests.benchmarks.bare_app:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--http",
        "httptools",
        "--loop",
        "uvloop",
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    with _server(
        argv,
        name="The bare app",
        port=port,
        log_file=scratch / f"bare-app-{port}.log",
        env=env,
        cwd=Path.cwd(),
    ) as endpoint:
        yield endpoint


# Runs another checkout's CLI with this interpreter: started in that checkout's directory,
# ``-c`` puts it first on sys.path, so its own ``replication`` and ``service`` are imported
# (older checkouts have no ``replication/__main__.py``).
CHECKOUT_CLI = (
    "import sys; sys.argv = ['replikit', *sys.argv[1:]]; from replication.cli import main; main()"
)


@contextlib.contextmanager
def checkout_service(tree: Path, scratch: Path, env: dict[str, str]) -> Iterator[Endpoint]:
    """``replikit serve`` of the checkout in ``tree`` (another revision), one worker, trusting
    the loopback's X-Forwarded-For, with ``env`` on top of this process's environment."""
    port = find_free_port_range(1, start=45000)
    scratch.mkdir(parents=True, exist_ok=True)
    argv = [
        sys.executable,
        "-c",
        CHECKOUT_CLI,
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--forwarded-allow-ips",
        "127.0.0.1",
        "--data-dir",
        str(scratch / f"checkout-service-{port}"),
    ]
    with _server(
        argv,
        name=f"The service of {tree}",
        port=port,
        log_file=scratch / f"checkout-service-{port}.log",
        env={**os.environ, **env},
        cwd=tree,
    ) as endpoint:
        yield endpoint
