"""Nodes as containers of docker-compose.yml: process control through docker compose.

Building nodes is the containers' own job (their entrypoint runs the same scripts the local
driver runs); this driver only starts, stops and inspects them, and runs the file-level steps
(rejoin, fence, pg_controldata) in one-off containers on the node's volume, as the postgres
account. Everything else (roles, promotion, repointing, lag) goes over SQL, as for local nodes.

Every call works with compose v2 (``docker compose``) and v1 (``docker-compose`` 1.29, the one
Debian ships): :func:`replication.compose.command.compose_program` picks the program, and only
options both versions accept are used (``ps --services --filter status=running``, not v2's
``ps --status``).
"""

from __future__ import annotations

import functools
import io
import re
import shlex
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

from replication.admin import fetchval
from replication.compose.command import ComposeProgram, compose_program
from replication.drivers.base import StopMode, rejoin_method
from replication.errors import BadInputError, ClusterTimeoutError, NodeCommandError
from replication.poolers import SHOW_POOLS_PSQL, PoolerStats, parse_show_pools
from replication.topology import ClusterState, NodeSpec

START_TIMEOUT_SECONDS = 90.0
# standby.signal keeps a started node read-only; the marker (see lib.sh) keeps the container's
# entrypoint from starting it at all until a rejoin removes it.
FENCE_FILES = ("standby.signal", "replikit.fenced")
STOP_TIMEOUT_SECONDS = 30.0


class ComposeDriver:
    def __init__(self, *, state: ClusterState, program: ComposeProgram | None = None) -> None:
        if state.compose_file is None:
            raise BadInputError(
                "This cluster has no compose file recorded; run 'replikit cluster "
                "attach-compose' again."
            )
        self.state = state
        self.compose_file = Path(state.compose_file)
        self._program = program

    @functools.cached_property
    def program(self) -> ComposeProgram:
        """Detected on first use: status and lag never need compose, only SQL."""
        return self._program or compose_program()

    def command(self, *args: str) -> list[str]:
        """The full argv of one compose call on this stack (file, directory, project, env)."""
        return self.program.project_command(
            *args,
            compose_file=self.compose_file,
            project_directory=self.compose_file.parent,
            env_file=self.state.compose_env_file,
            project_name=self.state.compose_project,
        )

    def logs_hint(self, service: str) -> str:
        """The command that shows a service's log, as the user would type it."""
        return shlex.join(self.command("logs", service))

    def _compose(self, *args: str, what: str, timeout: float = 300.0) -> str:
        result = subprocess.run(
            self.command(*args),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        if result.returncode != 0:
            output = (result.stderr or result.stdout).strip()
            raise NodeCommandError(f"{what} failed: {output or f'exit code {result.returncode}'}")
        return result.stdout

    def _one_off(self, node: NodeSpec, script: str, *, what: str, env: dict[str, str]) -> str:
        """Run ``sh -c script`` as postgres in a one-off container on the node's volume."""
        options = [option for key, value in env.items() for option in ("-e", f"{key}={value}")]
        return self._compose(
            "run",
            "--rm",
            "--no-deps",
            "--user",
            "postgres",
            *options,
            "--entrypoint",
            "sh",
            node.name,
            "-c",
            script,
            what=what,
        )

    def run_in(self, node: NodeSpec, argv: list[str], *, what: str, timeout: float = 300.0) -> str:
        """Run ``argv`` as postgres where the node's volumes are: in its running container
        (``exec``), else in a one-off container of its service; returns the output."""
        if self.is_running(node):
            return self._compose("exec", "-T", node.name, *argv, what=what, timeout=timeout)
        return self._one_off(node, f"exec {shlex.join(argv)}", what=what, env={})

    # NodeDriver ---------------------------------------------------------------------------
    def prepare(self) -> None:
        return None

    def has_data(self, node: NodeSpec) -> bool:
        return True  # the container's entrypoint builds an empty volume by itself

    def init_primary(self, node: NodeSpec) -> None:
        raise BadInputError("Compose nodes are built by 'docker compose up', not by replikit.")

    def bootstrap_replica(self, node: NodeSpec, primary: NodeSpec) -> None:
        raise BadInputError("Compose nodes are built by 'docker compose up', not by replikit.")

    def start(self, node: NodeSpec) -> None:
        self._compose("start", node.name, what=f"starting {node.name}")
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while True:
            try:
                fetchval(self.state, node, "SELECT 1")
            except Exception:  # not accepting connections yet, whatever the reason
                if time.monotonic() > deadline:
                    raise ClusterTimeoutError(
                        f"{node.name} did not accept connections within "
                        f"{START_TIMEOUT_SECONDS:.0f} s; see '{self.logs_hint(node.name)}'."
                    ) from None
                time.sleep(0.5)
                continue
            return

    def stop(self, node: NodeSpec, mode: StopMode = StopMode.FAST) -> None:
        # No "is it running?" call first: compose's kill and stop leave a stopped container
        # alone (checked on v1), and every compose call costs a second or more, which would
        # delay a crash the experiments time. Only a failure is checked against the state.
        try:
            if mode is StopMode.IMMEDIATE:
                # SIGQUIT is PostgreSQL's immediate shutdown: no checkpoint, like a crash.
                self._compose("kill", "-s", "SIGQUIT", node.name, what=f"crashing {node.name}")
                self._wait_refusing(node)  # kill only sends the signal; docker stop waits
            else:
                # The node image stops with SIGINT: a fast shutdown.
                self._compose("stop", node.name, what=f"stopping {node.name}")
        except NodeCommandError:
            if self.is_running(node):
                raise

    def _wait_refusing(self, node: NodeSpec) -> None:
        """Return once the node no longer accepts connections (an immediate shutdown takes
        milliseconds), so whoever crashed it never finds it still writable."""
        deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            try:
                fetchval(self.state, node, "SELECT 1")
            except Exception:  # refused, reset or timed out: it is down
                return
            time.sleep(0.05)
        raise ClusterTimeoutError(
            f"{node.name} still accepted connections {STOP_TIMEOUT_SECONDS:.0f} s after "
            f"SIGQUIT; see '{self.logs_hint(node.name)}'."
        )

    @functools.cached_property
    def docker(self) -> str | None:
        """The docker client, when the stack's project name is known: it answers "is this
        node's container running?" in milliseconds, where a compose v1 call takes a second or
        more (and failover asks it on the way to promotion)."""
        return shutil.which("docker") if self.state.compose_project else None

    def _containers(self, node: NodeSpec, *, running: bool) -> list[str] | None:
        """Ids of the node's service containers, through the docker client; None when that
        cannot be asked (no project name recorded, no client, or it failed)."""
        if self.docker is None or self.state.compose_project is None:
            return None
        return service_containers(
            self.docker, self.state.compose_project, node.name, running=running
        )

    def is_running(self, node: NodeSpec) -> bool:
        running = self._containers(node, running=True)
        if running is not None:
            return bool(running)
        # v1 ignores a service name after --services, so list them all and look for ours.
        output = self._compose(
            "ps",
            "--services",
            "--filter",
            "status=running",
            what="listing running services",
            timeout=60,
        )
        return node.name in output.split()

    def rejoin(self, node: NodeSpec, primary: NodeSpec, *, reclone: bool = False) -> str:
        host, port = self.state.replication_address(primary)
        output = self._one_off(
            node,
            "bash /replikit/scripts/rejoin-node.sh",
            what=f"rejoining {node.name}",
            env={
                "REPLIKIT_PRIMARY_HOST": host,
                "REPLIKIT_PRIMARY_PORT": str(port),
                "REPLIKIT_REJOIN_METHOD": rejoin_method(reclone=reclone),
            },
        )
        lines = output.strip().splitlines()
        return lines[-1].removeprefix("result=") if lines else "unknown"

    def fence(self, node: NodeSpec) -> None:
        """Put standby.signal and the fence marker in the stopped node's data directory.

        Failover does this before it promotes, so it is on the clients' critical path: copying
        the files into the stopped container's volume takes a fraction of a second, where a
        one-off container takes several (compose v1). The one-off stays the fallback.
        """
        containers = self._containers(node, running=False)
        if containers and self._copy_fence_files(containers[0]):
            return
        touch = " ".join(f'"$PGDATA/{name}"' for name in FENCE_FILES)
        self._one_off(node, f"touch {touch}", what=f"fencing {node.name}", env={})

    def _copy_fence_files(self, container: str) -> bool:
        """``docker cp`` the fence files in, owned like PG_VERSION (the server's account), so
        the scripts that later replace or remove them, as that account, may."""
        assert self.docker is not None
        inspect = subprocess.run(
            [self.docker, "inspect", "-f", "{{range .Config.Env}}{{println .}}{{end}}", container],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        pgdata = next(
            (line.partition("=")[2] for line in inspect.stdout.splitlines()
             if line.startswith("PGDATA=")),
            None,
        )  # fmt: skip
        if not pgdata:
            return False
        probe = subprocess.run(
            [self.docker, "cp", f"{container}:{pgdata}/PG_VERSION", "-"],
            capture_output=True, timeout=60, check=False,
        )  # fmt: skip
        if probe.returncode != 0:
            return False
        with tarfile.open(fileobj=io.BytesIO(probe.stdout)) as archive:
            owner = archive.getmembers()[0]
        files = io.BytesIO()
        with tarfile.open(fileobj=files, mode="w") as archive:
            for name in FENCE_FILES:
                member = tarfile.TarInfo(name)
                member.uid, member.gid, member.mode = owner.uid, owner.gid, 0o600
                member.mtime = int(time.time())
                archive.addfile(member, io.BytesIO(b""))
        copied = subprocess.run(
            [self.docker, "cp", "-", f"{container}:{pgdata}"],
            input=files.getvalue(), capture_output=True, timeout=60, check=False,
        )  # fmt: skip
        return copied.returncode == 0

    def reload(self, node: NodeSpec) -> None:
        self._compose(
            "exec", "-T", "--user", "postgres", node.name,
            "sh", "-c", 'pg_ctl reload --pgdata="$PGDATA"',
            what=f"reloading {node.name}",
        )  # fmt: skip

    def controldata(self, node: NodeSpec) -> dict[str, str]:
        output = self._one_off(
            node, 'pg_controldata "$PGDATA"', what=f"pg_controldata of {node.name}", env={}
        )
        return {
            key.strip(): value.strip()
            for key, _, value in (line.partition(":") for line in output.splitlines())
        }

    def pooler_stats(self, node: NodeSpec) -> PoolerStats | None:
        """``SHOW POOLS`` of ``pooler<i>``, the stack's pooler in front of ``pg<i>``
        (docker-compose.yml), asked inside its container as the stats user; None when the
        stack has no such pooler running or it does not answer."""
        project = self.state.compose_project
        if self.docker is None or project is None:
            return None
        pooler = "pooler" + node.name.removeprefix("pg")
        containers = service_containers(self.docker, project, pooler, running=True)
        if not containers:
            return None
        result = subprocess.run(
            [
                self.docker, "exec", containers[0], "sh", "-c",
                f'PGPASSWORD="$REPLIKIT_POOLER_PASSWORD" {SHOW_POOLS_PSQL}',
            ],
            capture_output=True, text=True, timeout=30, check=False, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        if result.returncode != 0:
            return None
        try:
            return parse_show_pools(result.stdout)
        except ValueError:
            return None


def service_containers(
    docker: str, project: str, service: str, *, running: bool
) -> list[str] | None:
    """Ids of one compose service's containers, asked of the docker client by the labels
    compose v1 and v2 both set; None when the client fails. One-off ``run`` containers
    (fence, rejoin) carry oneoff=True and do not count."""
    project = re.sub(r"[^-_a-z0-9]", "", project.lower())
    filters = [
        f"label=com.docker.compose.project={project}",
        f"label=com.docker.compose.service={service}",
        "label=com.docker.compose.oneoff=False",
    ]
    if running:
        filters.append("status=running")
    command = [docker, "ps", "-q", *(a for f in filters for a in ("--filter", f))]
    if not running:
        command.insert(2, "-a")
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=60, check=False,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    return result.stdout.split() if result.returncode == 0 else None
