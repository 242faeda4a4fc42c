"""Real compose stacks for tests: a Docker engine (started when we can), images built once,
and stacks each under a project name, ports and subnet of their own, removed with their
volumes and networks afterwards, also on failure."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from replication.compose.env import ensure_env_file, free_ports, read_env
from replication.compose.stack import ComposeStack, Variant

ROOT = Path(__file__).resolve().parents[2]
PROFILES = ("loadtest", "monitoring")


@contextlib.contextmanager
def docker_engine() -> Iterator[None]:
    """A Docker engine that answers, or a skip that says why; stop the engine if we started it."""
    scratch = Path(tempfile.mkdtemp(prefix="replikit-dockerd-"))
    pidfile = scratch / "dockerd.pid"
    env = {
        **os.environ,
        "REPLIKIT_DOCKERD_PIDFILE": str(pidfile),
        "REPLIKIT_DOCKERD_LOG": str(ROOT / ".replikit" / "dockerd.log"),
    }
    result = subprocess.run(
        ["bash", str(ROOT / "deploy" / "docker-host.sh")],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=900,
    )
    if result.returncode != 0:
        reason = (result.stderr.strip().splitlines() or ["docker-host.sh failed"])[-1]
        shutil.rmtree(scratch, ignore_errors=True)
        pytest.skip(f"no Docker engine: {reason}")
    try:
        yield
    finally:
        if pidfile.is_file():
            stop_engine(int(pidfile.read_text()))
        shutil.rmtree(scratch, ignore_errors=True)


def stop_engine(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            os.kill(pid, 0)
            time.sleep(0.2)
        os.kill(pid, signal.SIGKILL)


def write_env(path: Path, **settings: str) -> None:
    ensure_env_file(path, ports=free_ports())
    with path.open("a") as env_file:
        for key, value in settings.items():
            env_file.write(f"{key}={value}\n")


def build_images(variant: Variant = Variant.DEFAULT) -> None:
    """Every image the tests run, once per session (cached layers make repeats quick)."""
    scratch = Path(tempfile.mkdtemp(prefix="replikit-build-"))
    try:
        write_env(scratch / "build.env")
        stack = ComposeStack(root=ROOT, env_file=scratch / "build.env", variant=variant)
        stack.build(profiles=PROFILES if variant is Variant.DEFAULT else ())
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def leftovers(project: str) -> dict[str, list[str]]:
    label = f"label=com.docker.compose.project={project}"
    found = {}
    for kind, command in {
        "containers": ["docker", "ps", "-a", "-q", "--filter", label],
        "volumes": ["docker", "volume", "ls", "-q", "--filter", label],
        "networks": ["docker", "network", "ls", "-q", "--filter", label],
    }.items():
        output = subprocess.run(command, capture_output=True, text=True, check=False).stdout
        found[kind] = output.split()
    return found


@contextlib.contextmanager
def compose_stack(
    name: str, variant: Variant = Variant.DEFAULT, **settings: str
) -> Iterator[ComposeStack]:
    """A stack of the variant's services, healthy, removed with its volumes afterwards.
    The project is named ``rkt<name><random>``, or ``<name>-<random>`` for a name that ends
    in a hyphen (a helper's own prefix)."""
    scratch = Path(tempfile.mkdtemp(prefix=f"replikit-{name}-"))
    suffix = uuid.uuid4().hex[:6]
    project = f"{name}{suffix}" if name.endswith("-") else f"rkt{name}{suffix}"
    write_env(scratch / ".env", **settings)
    stack = ComposeStack(
        root=ROOT, env_file=scratch / ".env", project_name=project, variant=variant
    )
    try:
        stack.up(timeout=240)
        yield stack
    finally:
        with contextlib.suppress(Exception):
            stack.down(volumes=True)
        shutil.rmtree(scratch, ignore_errors=True)


def settings_of(stack: ComposeStack) -> dict[str, str]:
    return read_env(stack.env_file)


def api_url(stack: ComposeStack) -> str:
    return f"http://127.0.0.1:{settings_of(stack)['REPLIKIT_HTTP_PORT']}"


def admin_url(stack: ComposeStack) -> str:
    return f"http://127.0.0.1:{settings_of(stack)['REPLIKIT_ADMIN_PORT']}"


def containers_of(stack: ComposeStack, service: str) -> list[str]:
    return [c.name for c in stack.containers() if c.service == service]
