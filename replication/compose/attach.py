"""Describe a docker-compose cluster in a state file, so the `replikit cluster` commands
(status, kill, failover, switchover, rejoin, lag) work on it through the compose driver, and
the experiments drive its load balancer.

Ports are the ones the stack publishes: the env file's ``REPLIKIT_*_PORT`` values, else the
default the compose file itself gives (``${REPLIKIT_HTTP_PORT:-8080}``), so the two never
disagree.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
from pathlib import Path

import yaml
from dotenv import dotenv_values

from replication.compose.command import compose_program
from replication.drivers.compose.driver import service_containers
from replication.errors import BadInputError
from replication.probe import choose_primary, read_all
from replication.topology import (
    LOOPBACK,
    ClusterState,
    Manager,
    NodeSpec,
    Passwords,
    ServiceEndpoints,
    SyncMode,
    load_state,
    save_state,
)

NODE_SERVICE = re.compile(r"^pg\d+$")
ETCD_SERVICE = re.compile(r"^etcd\d+$")
HTTP_PORT_VARIABLE = "REPLIKIT_HTTP_PORT"
ADMIN_PORT_VARIABLE = "REPLIKIT_ADMIN_PORT"


def stack_value(compose_text: str, values: dict[str, str], variable: str) -> str | None:
    """What ``variable`` is in the stack: its env-file value, else the compose file's default
    (``${VARIABLE:-default}``), else None."""
    if values.get(variable):
        return values[variable]
    default = re.search(r"\$\{" + re.escape(variable) + r":?-([^}]*)\}", compose_text)
    return default.group(1) if default else None


def published_port(compose_text: str, values: dict[str, str], variable: str) -> int | None:
    """The port ``variable`` publishes, as :func:`stack_value` finds it."""
    value = stack_value(compose_text, values, variable)
    return int(value) if value else None


def recorded_stack_value(state: ClusterState, variable: str) -> str | None:
    """:func:`stack_value` for an attached stack, from its recorded compose and env files."""
    if state.compose_file is None:
        return None
    env_file = Path(state.compose_env_file or Path(state.compose_file).parent / ".env")
    values = {k: v or "" for k, v in dotenv_values(env_file).items()} if env_file.is_file() else {}
    return stack_value(Path(state.compose_file).read_text(), values, variable)


def service_endpoints(compose_text: str, values: dict[str, str]) -> ServiceEndpoints | None:
    """The load balancer's public and admin URLs, or None when the stack has no admin port."""
    http = published_port(compose_text, values, HTTP_PORT_VARIABLE)
    admin = published_port(compose_text, values, ADMIN_PORT_VARIABLE)
    if http is None or admin is None:
        return None
    return ServiceEndpoints(url=f"http://{LOOPBACK}:{http}", admin_url=f"http://{LOOPBACK}:{admin}")


PROJECT_LABEL_FORMAT = '{{index .Config.Labels "com.docker.compose.project"}}'


def running_project(compose_file: Path, env_file: Path, service: str) -> str | None:
    """The project name compose gave the running stack (its default is derived from the
    directory), read off a container's label. Recording it lets the driver ask the docker
    client directly, in milliseconds, instead of compose (a second or more per v1 call)."""
    program = compose_program()
    listed = subprocess.run(
        program.project_command(
            "ps", "-a", "-q", service,
            compose_file=compose_file, project_directory=compose_file.parent, env_file=env_file,
        ),
        capture_output=True, text=True, timeout=60, check=False, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    ids = listed.stdout.split()
    if listed.returncode != 0 or not ids:
        return None
    label = subprocess.run(
        ["docker", "inspect", "-f", PROJECT_LABEL_FORMAT, ids[0]],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    if label.returncode != 0:
        return None
    return label.stdout.strip() or None


def runs_patroni(services: dict[str, object], project_name: str | None) -> bool:
    """True for the HA variant (deploy/compose/ha.yml), whose nodes are Patroni agents: its
    compose file names etcd members, or the running project has one (the HA stack attached
    with the default file and the HA project name)."""
    if any(ETCD_SERVICE.match(name) for name in services):
        return True
    docker = shutil.which("docker")
    if docker is None or project_name is None:
        return False
    return bool(service_containers(docker, project_name, "etcd0", running=True))


def compose_cluster_state(
    compose_file: Path,
    env_file: Path,
    project_name: str | None = None,
    existing: ClusterState | None = None,
) -> ClusterState:
    """The stack's nodes, published ports and passwords as a cluster state (not saved), so
    the probe and the tools can read the nodes; ``existing`` keeps what a saved state knew."""
    if not compose_file.is_file():
        raise BadInputError(f"There is no compose file at {compose_file}.")
    if not env_file.is_file():
        raise BadInputError(
            f"There is no {env_file}; copy .env.example to .env and set the passwords."
        )
    values = {k: v or "" for k, v in dotenv_values(env_file).items()}
    missing = [
        name
        for name in ("SUPERUSER", "REPLICATION", "OWNER", "APP")
        if not values.get(f"REPLIKIT_{name}_PASSWORD")
    ]
    if missing:
        raise BadInputError(
            f"{env_file} lacks REPLIKIT_{missing[0]}_PASSWORD; set every password in it."
        )
    compose_text = compose_file.read_text()
    services = (yaml.safe_load(compose_text) or {}).get("services", {})
    names = sorted((s for s in services if NODE_SERVICE.match(s)), key=lambda s: int(s[2:]))
    if not names:
        raise BadInputError(f"{compose_file} has no pg0, pg1, ... services.")
    nodes = [
        NodeSpec(
            name=name,
            port=published_port(compose_text, values, f"REPLIKIT_{name.upper()}_PORT")
            or 6432 + int(name[2:]),
            internal_host=name,
            internal_port=5432,
        )
        for name in names
    ]
    if project_name is None:
        project_name = running_project(compose_file, env_file, names[0])
    patroni = runs_patroni(services, project_name)
    return ClusterState(
        pg_bin="",
        pg_major=0,
        # The HA variant's own default is on (ha.yml), the default stack's off.
        sync=SyncMode(values.get("REPLIKIT_SYNC_MODE") or ("on" if patroni else "off")),
        manager=Manager.PATRONI if patroni else Manager.NATIVE,
        base_port=nodes[0].port,
        nodes=nodes,
        primary=existing.primary if existing else names[0],
        passwords=Passwords(
            superuser=values["REPLIKIT_SUPERUSER_PASSWORD"],
            replication=values["REPLIKIT_REPLICATION_PASSWORD"],
            app=values["REPLIKIT_APP_PASSWORD"],
            owner=values["REPLIKIT_OWNER_PASSWORD"],
        ),
        driver="compose",
        compose_file=str(compose_file.absolute()),
        compose_project=project_name,
        compose_env_file=str(env_file.absolute()),
        service=service_endpoints(compose_text, values),
        fenced=existing.fenced if existing else [],
        previous_primary=existing.previous_primary if existing else None,
    )


def attach_compose(
    data_dir: Path, compose_file: Path, env_file: Path, project_name: str | None = None
) -> ClusterState:
    data_dir = data_dir.absolute()
    existing = load_state(data_dir)
    if existing is not None and existing.driver != "compose":
        raise BadInputError(
            f"{data_dir} holds a local cluster; choose another --data-dir for the compose one."
        )
    state = compose_cluster_state(compose_file, env_file, project_name, existing)
    discovered = choose_primary(asyncio.run(read_all(state)))
    if discovered is not None:
        state.primary = discovered
    data_dir.mkdir(parents=True, exist_ok=True)
    save_state(data_dir, state)
    return state
