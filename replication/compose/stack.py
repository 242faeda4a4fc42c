"""Build, start, wait for and stop the docker compose stack (``replikit compose ...``).

Plain ``docker compose up --wait`` would do part of this on v2 only; Debian ships v1, which
prints its usage for ``--wait`` and exits 0. So the waiting is ours, on both versions: every
service with a health check must be healthy, every one-shot service (label
``replikit.one-shot``) must have exited 0, every other one must run. A failure names the
service and shows its last log lines.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement

from replication.compose.command import ComposeProgram, compose_program
from replication.errors import ClusterTimeoutError, NodeCommandError, ReplikitError

ONE_SHOT_LABEL = "replikit.one-shot"
SERVICE_LABEL = "com.docker.compose.service"
# The images' interpreter: Debian 13's python3. The wheelhouse is downloaded for it.
IMAGE_PYTHON = "3.13"
REQUIREMENTS = Path("deploy/service/requirements-experiments.txt")
WHEELHOUSE = Path("deploy/wheelhouse")
BASE_IMAGE_SCRIPT = Path("deploy/base/build-base-image.sh")
DEFAULT_BASE_IMAGE = "debian:13.8-slim"


class Variant(StrEnum):
    """Which stack: the default one (replikit fails over on command) or the HA one (Patroni
    and etcd fail over by themselves; deploy/compose/ha.yml over docker-compose.yml)."""

    DEFAULT = "default"
    HA = "ha"

    @property
    def extra_files(self) -> tuple[Path, ...]:
        return (Path("deploy/compose/ha.yml"),) if self is Variant.HA else ()


def default_project_name(root: Path, variant: Variant) -> str | None:
    """None (compose's own default, the directory's name) for the default stack; that name
    plus ``-ha`` for the HA one, so its volumes never meet the default stack's data
    directories (a Patroni agent must not adopt a cluster it did not bootstrap)."""
    if variant is Variant.DEFAULT:
        return None
    return re.sub(r"[^-_a-z0-9]", "", root.absolute().name.lower()) + "-ha"


@dataclass
class ContainerState:
    service: str
    name: str
    status: str  # created | running | exited | ...
    health: str | None  # healthy | unhealthy | starting | None (no health check)
    exit_code: int
    one_shot: bool

    @property
    def ready(self) -> bool:
        if self.one_shot:
            return self.status == "exited" and self.exit_code == 0
        if self.health is not None:
            return self.status == "running" and self.health == "healthy"
        return self.status == "running"

    @property
    def failed(self) -> bool:
        """Cannot become ready without someone acting."""
        if self.one_shot:
            return self.status == "exited" and self.exit_code != 0
        return self.status in {"exited", "dead"}


@dataclass
class ComposeStack:
    """One compose project: the file (plus the variant's), its .env and (for tests) a
    project name of its own."""

    root: Path
    env_file: Path
    project_name: str | None = None
    compose_file: Path | None = None
    variant: Variant = Variant.DEFAULT
    program: ComposeProgram = field(default_factory=compose_program)
    #: Files merged after the variant's, e.g. deploy/compose/ha-hosts.yml for one host of
    #: the three-host layout.
    overlays: tuple[Path, ...] = ()
    #: Variables every compose and docker call of this stack gets over the process's own:
    #: DOCKER_HOST for a stack on another engine, REPLIKIT_HOST_ADDRESS for one host's share.
    environment: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.project_name is None:
            self.project_name = default_project_name(self.root, self.variant)

    @property
    def file(self) -> Path:
        return self.compose_file or self.root / "docker-compose.yml"

    @property
    def files(self) -> list[Path]:
        variant_files = [self.root / extra for extra in self.variant.extra_files]
        return [self.file, *variant_files, *self.overlays]

    def argv(self, *args: str) -> list[str]:
        return self.program.project_command(
            *args,
            compose_file=self.file,
            extra_files=self.files[1:],
            project_directory=self.root,
            env_file=self.env_file,
            project_name=self.project_name,
        )

    def run(
        self,
        *args: str,
        what: str,
        timeout: float = 900.0,
        capture: bool = True,
        overrides: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run compose; ``overrides`` win over the .env file (compose prefers the shell's)."""
        try:
            result = subprocess.run(
                self.argv(*args),
                cwd=self.root,
                capture_output=capture,
                text=True,
                timeout=timeout,
                check=False,
                stdin=subprocess.DEVNULL,
                env=self.env(overrides),
            )
        except subprocess.TimeoutExpired:
            raise ClusterTimeoutError(f"{what} took longer than {timeout:.0f} s.") from None
        if result.returncode != 0:
            output = ((result.stderr or "") + (result.stdout or "")).strip()
            tail = "\n".join(output.splitlines()[-20:])
            raise NodeCommandError(f"{what} failed (exit {result.returncode}): {tail}")
        return result

    def env(self, overrides: Mapping[str, str] | None = None) -> dict[str, str]:
        """The process environment with this stack's variables (and ``overrides``) over it."""
        return {**os.environ, **self.environment, **(overrides or {})}

    # build -----------------------------------------------------------------------------------
    def build(self, *, profiles: Sequence[str] = (), services: Sequence[str] = ()) -> None:
        ensure_base_image(self.root)
        build_wheelhouse(self.root)
        flags = [flag for profile in profiles for flag in ("--profile", profile)]
        self.run(
            *flags, "build", *services,
            what="building the images", timeout=3600, overrides=self._builder(),
        )  # fmt: skip

    def _builder(self) -> dict[str, str]:
        """Compose v2 builds through buildx; without that plugin (Debian's docker.io has none)
        it waits forever, so it is told to use the engine's own builder, as v1 always does."""
        if self.program.major < 2 or "DOCKER_BUILDKIT" in os.environ:
            return {}
        buildx = subprocess.run(
            ["docker", "buildx", "version"], capture_output=True, check=False, timeout=30
        )
        return {} if buildx.returncode == 0 else {"DOCKER_BUILDKIT": "0"}

    # up / wait / down ------------------------------------------------------------------------
    def up(
        self,
        *,
        services: Sequence[str] = (),
        profiles: Sequence[str] = (),
        scale: dict[str, int] | None = None,
        timeout: float = 300.0,
    ) -> list[ContainerState]:
        flags = [flag for profile in profiles for flag in ("--profile", profile)]
        scales = [f for name, n in (scale or {}).items() for f in ("--scale", f"{name}={n}")]
        self.run(*flags, "up", "-d", "--no-build", *scales, *services, what="starting the stack")
        return self.wait_ready(services=services, profiles=profiles, timeout=timeout)

    def containers(self, *, profiles: Sequence[str] = ()) -> list[ContainerState]:
        flags = [flag for profile in profiles for flag in ("--profile", profile)]
        ids = self.run(*flags, "ps", "-a", "-q", what="listing containers").stdout.split()
        if not ids:
            return []
        inspected = subprocess.run(
            ["docker", "inspect", *ids],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
            env=self.env(),
        )
        states = []
        for item in json.loads(inspected.stdout or "[]"):
            state = item["State"]
            labels = item["Config"].get("Labels") or {}
            states.append(
                ContainerState(
                    service=labels.get(SERVICE_LABEL, "?"),
                    name=item["Name"].lstrip("/"),
                    status=state.get("Status", "?"),
                    health=(state.get("Health") or {}).get("Status"),
                    exit_code=int(state.get("ExitCode", 0)),
                    one_shot=labels.get(ONE_SHOT_LABEL) == "true",
                )
            )
        return sorted(states, key=lambda s: s.name)

    def wait_ready(
        self,
        *,
        services: Sequence[str] = (),
        profiles: Sequence[str] = (),
        timeout: float = 300.0,
    ) -> list[ContainerState]:
        """Return once every (named) service is ready; raise naming the first that is not."""
        deadline = time.monotonic() + timeout
        while True:
            states = [
                s
                for s in self.containers(profiles=profiles)
                if not services or s.service in services
            ]
            pending = [s for s in states if not s.ready]
            if states and not pending:
                return states
            failed = [s for s in pending if s.failed]
            if failed or time.monotonic() >= deadline:
                if not pending:
                    raise ClusterTimeoutError("The stack has no containers; see compose's output.")
                culprit = (failed or pending)[0]
                status = culprit.health or culprit.status
                if culprit.status == "exited":
                    status = f"exited with code {culprit.exit_code}"
                raise ClusterTimeoutError(
                    f"{culprit.service} is not ready ({status}).\n"
                    f"Last log lines of {culprit.name}:\n{self.logs(culprit.name)}"
                )
            time.sleep(1.0)

    def logs(self, container: str, lines: int = 30) -> str:
        result = subprocess.run(
            ["docker", "logs", "--tail", str(lines), container],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
            env=self.env(),
        )
        return (result.stdout + result.stderr).rstrip()

    def load(
        self, *, scenario: str, users: int, spawn_rate: float, seconds: int
    ) -> subprocess.CompletedProcess[str]:
        """A headless Locust run from the loadtest image, through the load balancer.

        Every Locust user of one container reaches the service from one address, so the upload
        rate limit (per client address) would measure itself, not the service: the app
        instances run with the limit off for the run and are put back afterwards.
        """
        no_limit = {"REPLIKIT_UPLOAD_RATE_LIMIT": "0"}
        self.run("up", "-d", "--no-build", "app", what="restarting app", overrides=no_limit)
        try:
            self.wait_ready(services=["app", "lb"], timeout=120)
            locust = (
                "exec locust -f \"$(python3 -c 'import loadtests.locustfile as m; "
                "print(m.__file__)')\" --headless --only-summary --host http://lb:8080 "
                f"-u {users} -r {spawn_rate} -t {seconds}s {scenario}"
            )
            return self.run(
                "--profile", "loadtest", "run", "--rm", "--no-deps", "locust-master",
                "sh", "-c", locust,
                what="the Locust run", timeout=seconds + 180,
            )  # fmt: skip
        finally:
            self.run("up", "-d", "--no-build", "app", what="restoring app")
            self.wait_ready(services=["app", "lb"], timeout=120)

    def down(self, *, volumes: bool = False) -> None:
        flags = ["--profile", "loadtest", "--profile", "monitoring", "--profile", "grafana"]
        extra = ["-v"] if volumes else []
        self.run(*flags, "down", "--remove-orphans", *extra, what="stopping the stack", timeout=300)


def ensure_base_image(root: Path) -> None:
    """Pull the pinned Debian base, or make it from the Debian archive (see the script)."""
    result = subprocess.run(
        ["bash", str(root / BASE_IMAGE_SCRIPT)],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
        timeout=1800,
    )
    if result.returncode != 0:
        raise NodeCommandError(
            "Making the Debian base image failed: "
            + "\n".join((result.stderr + result.stdout).strip().splitlines()[-10:])
        )


def _image_environment() -> dict[str, str]:
    """Marker values for the images' interpreter (Linux, CPython IMAGE_PYTHON, this machine)."""
    env: dict[str, str] = {k: str(v) for k, v in default_environment().items()}
    env.update(
        python_version=IMAGE_PYTHON,
        python_full_version=f"{IMAGE_PYTHON}.0",
        implementation_name="cpython",
        platform_python_implementation="CPython",
        sys_platform="linux",
        os_name="posix",
        platform_system="Linux",
        platform_machine=platform.machine(),
    )
    return env


def wheel_pins(requirements: str) -> list[str]:
    """``name==version`` of every requirement whose marker holds for the images' Python."""
    env = _image_environment()
    pins = []
    for line in requirements.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", "--")):
            continue
        requirement = Requirement(line.rstrip("\\").strip())
        if requirement.marker is None or requirement.marker.evaluate(env):
            pins.append(f"{requirement.name}{requirement.specifier}")
    return pins


def _uv() -> str:
    found = shutil.which("uv")
    if found:
        return found
    for candidate in (Path(".tools/bin/uv"), Path(__file__).resolve().parents[2] / ".tools/bin/uv"):
        if candidate.is_file():
            return str(candidate.absolute())
    raise ReplikitError("The wheelhouse needs uv; run 'make setup' first.")


def build_wheelhouse(root: Path) -> Path:
    """Download the images' wheels on the host, which can verify PyPI, into deploy/wheelhouse.

    Skipped when the wheelhouse was made from the same pins for the same machine.
    """
    wheelhouse = root / WHEELHOUSE
    pins = wheel_pins((root / REQUIREMENTS).read_text())
    machine = platform.machine()
    stamp = wheelhouse / "pins.txt"
    wanted = "\n".join([f"# {IMAGE_PYTHON} {machine}", *pins]) + "\n"
    if stamp.is_file() and stamp.read_text() == wanted:
        return wheelhouse
    for old in wheelhouse.glob("*.whl"):
        old.unlink()
    (wheelhouse / "pins.in").write_text("\n".join(pins) + "\n")
    platforms = [
        f"manylinux_2_{minor}_{machine}" for minor in (39, 36, 34, 31, 28, 27, 24, 17, 12, 5)
    ]
    platforms += [f"manylinux2014_{machine}", f"manylinux1_{machine}", f"linux_{machine}"]
    abi = "cp" + IMAGE_PYTHON.replace(".", "")
    command = [_uv(), "tool", "run", "--from", "pip", "pip", "download", "--quiet"]
    command += ["--no-deps", "--only-binary=:all:", "--python-version", IMAGE_PYTHON]
    command += ["--implementation", "cp", "--abi", abi, "--abi", "abi3", "--abi", "none"]
    command += [flag for p in platforms for flag in ("--platform", p)]
    command += ["-r", str(wheelhouse / "pins.in"), "-d", str(wheelhouse)]
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never", "PIP_FIND_LINKS": ""}
    result = subprocess.run(
        command, capture_output=True, text=True, check=False, timeout=1800, env=env
    )
    if result.returncode != 0:
        errors = [line for line in result.stderr.splitlines() if "ERROR" in line]
        raise NodeCommandError(
            "Downloading the images' wheels failed: " + "\n".join(errors[-5:] or ["see pip"])
        )
    stamp.write_text(wanted)
    return wheelhouse
