"""Real compose stacks for tests: a Docker engine (started when we can), images built once,
and stacks each under a project name, ports and subnet of their own, removed with their
volumes and networks afterwards, also on failure."""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from replication.compose.env import (
    DEFAULT_PORTS,
    docker_subnets,
    ensure_env_file,
    free_ports,
    free_subnet,
    lb_address,
    read_env,
)
from replication.compose.stack import ComposeStack, Variant
from replication.ports import find_free_port_range

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


RESERVATIONS = Path(tempfile.gettempdir()) / "replikit-test-stacks"
PORT_COUNT = len(DEFAULT_PORTS)


def _live_reservations() -> list[str]:
    """Names of what other live test processes hold; a dead holder's file is removed."""
    held = []
    for entry in RESERVATIONS.glob("[!.]*"):
        with contextlib.suppress(ValueError, OSError):
            os.kill(int(entry.read_text()), 0)
            held.append(entry.name)
            continue
        entry.unlink(missing_ok=True)
    return held


def _free_port_base(held: list[str]) -> int:
    # REPLIKIT_TEST_PORTS=LOW-HIGH keeps a run within its own range (as for local clusters).
    low = os.environ.get("REPLIKIT_TEST_PORTS", "").partition("-")[0]
    start = int(low) if low.isdigit() else 20000
    while True:
        base = find_free_port_range(PORT_COUNT, start=start)
        if f"ports-{base}" not in held:
            return base
        start = base + PORT_COUNT


@contextlib.contextmanager
def reserved_addresses() -> Iterator[dict[str, str]]:
    """The stack's two subnets and its published ports, held from the choice until the stack
    is gone.

    Docker learns a subnet or a port only when compose creates the network or the container,
    seconds after the .env is written, so two test processes choosing at once (two checkouts'
    suites, a helper's beside CI's) could take the same ones ("Pool overlaps with other one on
    this address space"). The choice is made under a lock against what Docker and this
    machine use and what every live test process still holds."""
    RESERVATIONS.mkdir(exist_ok=True)
    mine: list[Path] = []
    with (RESERVATIONS / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        held = _live_reservations()
        taken: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = [
            *docker_subnets(),
            *(
                ipaddress.ip_network(n.removeprefix("net-").replace("_", "/"))
                for n in held
                if n.startswith("net-")
            ),
        ]
        subnets = []
        for _ in range(2):
            subnets.append(free_subnet(taken))
            taken.append(ipaddress.ip_network(subnets[-1]))
        base = _free_port_base(held)
        for name in (*(f"net-{s.replace('/', '_')}" for s in subnets), f"ports-{base}"):
            mine.append(RESERVATIONS / name)
            mine[-1].write_text(str(os.getpid()))
    try:
        yield {
            "REPLIKIT_SUBNET": subnets[0],
            "REPLIKIT_LB_ADDRESS": lb_address(subnets[0]),
            "REPLIKIT_PEER_SUBNET": subnets[1],
            **{key: str(base + i) for i, key in enumerate(DEFAULT_PORTS)},
        }
    finally:
        for entry in mine:
            entry.unlink(missing_ok=True)


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
    The project is named ``rkt<name><random>`` (REPLIKIT_TEST_PROJECT_PREFIX replaces
    ``rkt``, to keep several people's stacks apart on one engine)."""
    scratch = Path(tempfile.mkdtemp(prefix=f"replikit-{name}-"))
    suffix = uuid.uuid4().hex[:6]
    prefix = os.environ.get("REPLIKIT_TEST_PROJECT_PREFIX", "rkt")
    project = f"{prefix}{name}{suffix}"
    with reserved_addresses() as reserved:
        (scratch / ".env").write_text("".join(f"{k}={v}\n" for k, v in reserved.items()))
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


def replikit(*args: str, check: bool = True, timeout: float = 1200) -> str:
    """Run the ``replikit`` CLI of this environment in the checkout; its output, after
    asserting it succeeded (``check``) with the output as the message."""
    result = replikit_result(*args, timeout=timeout)
    if check:
        assert result.returncode == 0, f"replikit {' '.join(args)}: {result.stdout}{result.stderr}"
    return result.stdout


def replikit_result(*args: str, timeout: float = 1200) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).parent / "replikit"), *args],
        capture_output=True, text=True, cwd=ROOT, timeout=timeout, check=False,
    )  # fmt: skip


def attach(stack: ComposeStack, data_dir: str) -> None:
    """``replikit cluster attach-compose`` of the stack into ``data_dir``."""
    assert stack.project_name is not None
    replikit(
        "cluster", "attach-compose", "--env-file", str(stack.env_file),
        "-p", stack.project_name, "--data-dir", data_dir,
    )  # fmt: skip
