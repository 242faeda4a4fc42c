"""Nodes whose PostgreSQL a Patroni agent runs, all local processes on this machine.

Each node keeps the local driver's layout (``<data-dir>/<node>/`` is its PGDATA, so pg_ctl and
pg_controldata work the same) and adds::

    etcd/etcd0..2/      etcd members' data (the server account's, 0700; see ``etcd``)
    patroni/<node>.yml  the agent's configuration (JSON, which YAML reads; 0600: passwords)
    patroni/<node>.env  the bootstrap environment of init-primary.sh (0600)
    run/<proc>.pid      pids of the etcd members and agents replikit started
    logs/<proc>.log     their output

:class:`LocalAgents` is the node driver the Patroni manager hands the local driver's nodes
through: it differs in one way, a node is started and stopped through its agent, because a
PostgreSQL started behind Patroni's back would be a second, unmanaged writer candidate.
``stop(IMMEDIATE)`` is a lost machine (agent SIGKILLed, then PostgreSQL crashed);
:meth:`LocalAgents.crash_postgres` is the crash an agent sees. Everything else (building,
rewinding, pg_controldata) is the local driver's.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from replication.drivers.base import StopMode
from replication.drivers.local.driver import LocalDriver
from replication.drivers.local.processes import ProcessTable
from replication.errors import BadInputError, ClusterTimeoutError, NodeCommandError
from replication.managers.patroni.config import (
    AgentSettings,
    Credentials,
    Timing,
    agent_config,
    write_private,
)
from replication.managers.patroni.etcd import HTTP_TIMEOUT_SECONDS, LocalEtcd
from replication.poolers import PoolerStats
from replication.topology import LOOPBACK, NodeSpec, PatroniSettings

DEFAULT_VENV = Path("/opt/replikit/patroni")
INSTALL_SCRIPT = Path(__file__).resolve().parents[3] / "deploy" / "install-patroni.sh"
AGENT_START_TIMEOUT_SECONDS = 90.0
AGENT_STOP_TIMEOUT_SECONDS = 60.0


def patroni_venv() -> Path:
    return Path(os.environ.get("REPLIKIT_PATRONI_VENV", str(DEFAULT_VENV)))


def ensure_installed() -> Path:
    """etcd and the Patroni virtualenv, installed by deploy/install-patroni.sh when missing
    (the script `make setup` runs); returns the virtualenv's python."""
    python = patroni_venv() / "bin" / "python"
    if shutil.which("etcd") and (patroni_venv() / "bin" / "patroni").exists():
        return python
    result = subprocess.run(
        ["bash", str(INSTALL_SCRIPT)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise BadInputError(
            f"The patroni manager needs etcd and Patroni: {result.stderr.strip()} "
            f"(or run deploy/install-patroni.sh as root)."
        )
    return python


@dataclass(frozen=True)
class Member:
    """One row of Patroni's /cluster: what the agents agree on through etcd."""

    name: str
    role: str  # leader | replica | sync_standby | quorum_standby | standby_leader
    state: str  # running | streaming | starting | stopped | crashed | ...
    timeline: int | None
    lag: int | str | None

    @property
    def is_leader(self) -> bool:
        return self.role == "leader"


class LocalAgents:
    """The local driver's nodes, each behind its Patroni agent, and the etcd members the
    agents elect a leader through. A :class:`~replication.drivers.base.NodeDriver`."""

    def __init__(self, local: LocalDriver) -> None:
        if local.state.patroni is None:
            raise BadInputError(f"The cluster in {local.data_dir} has no Patroni settings.")
        self.local = local
        self.data_dir = local.data_dir
        self.state = local.state
        self.user = local.user
        self.settings: PatroniSettings = local.state.patroni
        self.processes = ProcessTable(data_dir=local.data_dir, user=local.user)
        self.etcd = LocalEtcd(
            data_dir=local.data_dir,
            user=local.user,
            settings=self.settings,
            processes=self.processes,
        )

    # paths -------------------------------------------------------------------------------
    def config_file(self, node: NodeSpec) -> Path:
        return self.data_dir / "patroni" / f"{node.name}.yml"

    @property
    def bin_dir(self) -> Path:
        return Path(self.settings.python).parent

    # agent configuration -----------------------------------------------------------------
    def _bootstrap_env(self, node: NodeSpec) -> str:
        env = {**self.local.script_env(node), "REPLIKIT_SYNC_MODE": "off"}
        env.pop("REPLIKIT_STANDBY_NAMES", None)
        return "".join(f"export {key}={_shell_quote(value)}\n" for key, value in env.items())

    def agent_settings(self, node: NodeSpec) -> AgentSettings:
        state, settings = self.state, self.settings
        env_file = self.data_dir / "patroni" / f"{node.name}.env"
        address = f"{state.host}:{node.port}"
        rest = f"{LOOPBACK}:{settings.rest_ports[node.name]}"
        return AgentSettings(
            scope=settings.scope,
            name=node.name,
            rest_listen=rest,
            rest_connect=rest,
            rest=Credentials(settings.rest_user, settings.rest_password),
            etcd_hosts=settings.etcd_hosts,
            bootstrap_command=f"bash {self.local.scripts_dir / 'patroni-bootstrap.sh'} {env_file}",
            pg_listen=address,
            pg_connect=address,
            data_dir=str(self.local.pgdata(node)),
            bin_dir=str(self.local.binaries.directory),
            pgpass=str(self.data_dir / "patroni" / f"{node.name}.pgpass"),
            superuser=Credentials(state.superuser, state.passwords.superuser),
            replication=Credentials(state.replication_user, state.passwords.replication),
            timing=Timing(settings.ttl, settings.loop_wait, settings.retry_timeout),
            sync=state.sync.value,
            wal_keep_size=state.wal_keep_size,
            max_slot_wal_keep_size=state.max_slot_wal_keep_size,
        )

    def agent_config(self, node: NodeSpec) -> dict[str, Any]:
        return agent_config(self.agent_settings(node))

    def write_config(self, node: NodeSpec) -> None:
        """The agent's configuration and bootstrap environment, readable by the server
        account only (they hold passwords)."""
        directory = self.data_dir / "patroni"
        self.user.make_dir(directory, mode=0o700)
        for path, text in (
            (self.config_file(node), json.dumps(self.agent_config(node), indent=2)),
            (directory / f"{node.name}.env", self._bootstrap_env(node)),
        ):
            write_private(path, text)
            if self.user.switch:
                os.chown(path, self.user.uid, self.user.gid)

    # NodeDriver --------------------------------------------------------------------------
    def prepare(self) -> None:
        self.local.prepare()
        run_dir = self.data_dir / "run"
        run_dir.mkdir(exist_ok=True)
        self.etcd.start()
        for node in self.state.nodes:
            # The agent (the server account) fills it: bootstrap, base backup or re-clone.
            self.user.make_dir(self.local.pgdata(node), mode=0o700)
            self.write_config(node)

    def agent_running(self, node: NodeSpec) -> bool:
        return self.processes.pid(f"patroni-{node.name}", str(self.config_file(node))) is not None

    def start(self, node: NodeSpec) -> None:
        """Start the node's agent (it starts PostgreSQL) and return once PostgreSQL answers
        as the leader or a replica."""
        if not self.agent_running(node):
            self.processes.spawn(
                f"patroni-{node.name}",
                [str(self.bin_dir / "patroni"), str(self.config_file(node))],
            )
        deadline = time.monotonic() + AGENT_START_TIMEOUT_SECONDS
        while True:
            health = self.rest_get(node, "/health")
            if health is not None and health.get("state") == "running":
                return
            if not self.agent_running(node):
                log = self.data_dir / "logs" / f"patroni-{node.name}.log"
                raise NodeCommandError(
                    f"The Patroni agent of {node.name} exited; {log}:\n{_tail(log)}"
                )
            if time.monotonic() > deadline:
                raise ClusterTimeoutError(
                    f"{node.name} was not running under Patroni after "
                    f"{AGENT_START_TIMEOUT_SECONDS:.0f} s; see {self.data_dir / 'logs'}."
                )
            time.sleep(0.2)

    def stop(self, node: NodeSpec, mode: StopMode = StopMode.FAST) -> None:
        """FAST: the agent stops PostgreSQL cleanly and exits (a leader hands its lease
        back). IMMEDIATE: the machine is lost: the agent is SIGKILLed first (so nothing
        restarts PostgreSQL), then PostgreSQL is crashed."""
        process, marker = f"patroni-{node.name}", str(self.config_file(node))
        if mode is StopMode.IMMEDIATE:
            self.processes.signal(process, marker, signal.SIGKILL, 5)
        else:
            self.processes.signal(process, marker, signal.SIGTERM, AGENT_STOP_TIMEOUT_SECONDS)
        self.local.stop(node, mode)

    def empty_data_dir(self, node: NodeSpec) -> None:
        """Remove everything in the stopped node's data directory (kept, with its owner and
        mode): its agent then clones the node from the leader as a new member."""
        self.user.run(
            ["find", str(self.local.pgdata(node)), "-mindepth", "1", "-delete"],
            what=f"emptying {node.name}'s data directory",
        )

    def crash_postgres(self, node: NodeSpec) -> None:
        """Crash PostgreSQL only (immediate shutdown, no checkpoint); its agent sees it."""
        self.local.stop(node, StopMode.IMMEDIATE)

    def fence(self, node: NodeSpec) -> None:
        """Nothing to do: a former leader's agent rewinds it before it runs again."""

    def is_running(self, node: NodeSpec) -> bool:
        """True while the node's PostgreSQL runs (whether or not its agent does)."""
        return self.local.is_running(node)

    def has_data(self, node: NodeSpec) -> bool:
        return self.local.has_data(node)

    def reload(self, node: NodeSpec) -> None:
        """A reload of the node's PostgreSQL (its agent keeps running and notices nothing)."""
        self.local.reload(node)

    def init_primary(self, node: NodeSpec) -> None:
        raise BadInputError("Patroni nodes are built by their agents, not by replikit.")

    def bootstrap_replica(self, node: NodeSpec, primary: NodeSpec) -> None:
        raise BadInputError("Patroni nodes are built by their agents, not by replikit.")

    def rejoin(self, node: NodeSpec, primary: NodeSpec, *, reclone: bool = False) -> str:
        raise BadInputError("A Patroni agent rejoins its node itself; start the agent.")

    def controldata(self, node: NodeSpec) -> dict[str, str]:
        return self.local.controldata(node)

    def pooler_stats(self, node: NodeSpec) -> PoolerStats | None:
        return self.local.pooler_stats(node)

    def stop_all(self, leader: str | None) -> None:
        """Replicas' agents first, then the leader's, then etcd: with no replica left to
        take over, stopping the leader hands the role to nobody."""
        for node in sorted(self.state.nodes, key=lambda n: n.name == leader):
            self.stop(node)
        self.etcd.stop()

    def discard(self) -> None:
        """Every agent and PostgreSQL crashed, then etcd stopped: nothing left running."""
        for node in self.state.nodes:
            with contextlib.suppress(Exception):
                self.stop(node, StopMode.IMMEDIATE)
        self.etcd.stop()

    # REST API ----------------------------------------------------------------------------
    def rest_url(self, node: NodeSpec, path: str) -> str:
        return f"http://{LOOPBACK}:{self.settings.rest_ports[node.name]}{path}"

    def rest_get(self, node: NodeSpec, path: str) -> dict[str, Any] | None:
        """GET a Patroni endpoint; None when the agent does not answer. Health endpoints
        answer 503 with a body for "not that role", which is still an answer."""
        try:
            with urllib.request.urlopen(  # noqa: S310 - http on loopback
                self.rest_url(node, path), timeout=HTTP_TIMEOUT_SECONDS
            ) as response:
                body: dict[str, Any] = json.loads(response.read())
                return body
        except urllib.error.HTTPError as error:
            with contextlib.suppress(ValueError):
                answer: dict[str, Any] = json.loads(error.read())
                return answer
            return None
        except (OSError, ValueError):
            return None

    def rest_post(self, node: NodeSpec, path: str, body: dict[str, Any]) -> tuple[int, str]:
        """POST with the REST API's generated credentials; (status, response text)."""
        token = base64.b64encode(
            f"{self.settings.rest_user}:{self.settings.rest_password}".encode()
        ).decode()
        request = urllib.request.Request(  # noqa: S310 - http on loopback
            self.rest_url(node, path),
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Basic {token}"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=90) as response:  # noqa: S310
                return response.status, response.read().decode(errors="replace")
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode(errors="replace")
        except OSError as error:
            return 0, str(error)

    def members(self) -> list[Member]:
        """The members as any answering agent sees them in etcd ([] when none answers)."""
        for node in self.state.nodes:
            answer = self.rest_get(node, "/cluster")
            if answer is not None and "members" in answer:
                return [
                    Member(
                        name=str(m["name"]),
                        role=str(m.get("role", "")),
                        state=str(m.get("state", "")),
                        timeline=m.get("timeline"),
                        lag=m.get("lag"),
                    )
                    for m in answer["members"]
                ]
        return []

    def leader(self) -> str | None:
        return next((m.name for m in self.members() if m.is_leader), None)


def _shell_quote(value: str) -> str:
    return "'" + value.replace("'", "'\\''") + "'"


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
