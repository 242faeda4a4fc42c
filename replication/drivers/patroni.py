"""Nodes run by Patroni agents over a 3-member etcd, all local processes on this machine.

Each node keeps the native layout (``<data-dir>/<node>/`` is its PGDATA, so pg_ctl and
pg_controldata work the same) and adds::

    etcd/e0..e2/        etcd members' data (the server account's, 0700)
    patroni/<node>.yml  the agent's configuration (JSON, which YAML reads; 0600: passwords)
    patroni/<node>.env  the bootstrap environment of init-primary.sh (0600)
    run/<proc>.pid      pids of the etcd members and agents replikit started
    logs/<proc>.log     their output

Process control differs from the native driver in one way: a node is started and stopped
through its agent, because PostgreSQL started behind Patroni's back would be a second,
unmanaged writer candidate. ``stop(IMMEDIATE)`` is a lost machine (agent SIGKILLed, then
PostgreSQL crashed); :meth:`PatroniDriver.crash_postgres` is the crash an agent sees.
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
from replication.drivers.local import LocalDriver
from replication.errors import BadInputError, ClusterTimeoutError, NodeCommandError
from replication.patroni_config import (
    DEFAULT_LOOP_WAIT,
    DEFAULT_RETRY_TIMEOUT,
    DEFAULT_TTL,
    AgentSettings,
    Credentials,
    Timing,
    agent_config,
    write_private,
)
from replication.pgbin import PgBinaries
from replication.server_user import ServerUser
from replication.topology import LOOPBACK, ClusterState, NodeSpec, PatroniSettings

ETCD_MEMBERS = 3
__all__ = ["DEFAULT_LOOP_WAIT", "DEFAULT_RETRY_TIMEOUT", "DEFAULT_TTL", "Member", "PatroniDriver"]
DEFAULT_VENV = Path("/opt/replikit/patroni")
INSTALL_SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "install-patroni.sh"
HTTP_TIMEOUT_SECONDS = 3.0
AGENT_START_TIMEOUT_SECONDS = 90.0
AGENT_STOP_TIMEOUT_SECONDS = 60.0
# Patroni's default ``namespace``: its keys live under /service/<scope>/ in etcd.
PATRONI_NAMESPACE = "/service"


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


@dataclass(frozen=True)
class DcsView:
    """What etcd holds for the cluster at one instant: who holds the leader key (None once
    its lease expired or was released) and the state each agent last published for its
    member (``running``, ``crashed``, ``starting``, ...; a lost agent's member key expires
    with its lease, like the leader key)."""

    leader: str | None
    member_states: dict[str, str]


class PatroniDriver(LocalDriver):
    """Local nodes behind Patroni agents, plus the etcd members they elect a leader through."""

    def __init__(
        self, *, data_dir: Path, state: ClusterState, binaries: PgBinaries, user: ServerUser
    ) -> None:
        super().__init__(data_dir=data_dir, state=state, binaries=binaries, user=user)
        if state.patroni is None:
            raise BadInputError(f"The cluster in {data_dir} has no Patroni settings.")
        self.settings: PatroniSettings = state.patroni

    # paths -------------------------------------------------------------------------------
    def config_file(self, node: NodeSpec) -> Path:
        return self.data_dir / "patroni" / f"{node.name}.yml"

    def pid_file(self, process: str) -> Path:
        return self.data_dir / "run" / f"{process}.pid"

    @property
    def bin_dir(self) -> Path:
        return Path(self.settings.python).parent

    # processes ---------------------------------------------------------------------------
    def _spawn(self, process: str, argv: list[str]) -> None:
        """Start a long-running process as the server account, detached from this one
        (its own session), its output in logs/<process>.log and its pid in run/."""
        log = (self.data_dir / "logs" / f"{process}.log").open("ab")
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

    def _pid(self, process: str, marker: str) -> int | None:
        """The pid of a process replikit started, if it still runs: the recorded pid must
        belong to a process whose command line names ``marker`` (pids get reused)."""
        try:
            pid = int(self.pid_file(process).read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return None
        if marker.encode() not in cmdline:
            return None
        with contextlib.suppress(OSError):
            status = Path(f"/proc/{pid}/status").read_text()
            if "\nState:\tZ" in status:
                return None
        return pid

    def _signal(self, process: str, marker: str, sig: signal.Signals, timeout: float) -> None:
        pid = self._pid(process, marker)
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while self._pid(process, marker) is not None:
            if time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)
        # Reap it when it is our child (a CLI that started it and stops it in one run).
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)

    # etcd --------------------------------------------------------------------------------
    def _etcd_name(self, index: int) -> str:
        return f"etcd{index}"

    def etcd_running(self, index: int) -> bool:
        name = self._etcd_name(index)
        return self._pid(name, str(self.data_dir / "etcd" / name)) is not None

    def start_etcd(self) -> None:
        """Start every etcd member that is not running; return once the cluster is healthy.

        Loopback only, for clients and peers. The v3 API Patroni's etcd3 backend uses is on
        by default; the v2 API stays off. Heartbeat 100 ms and election timeout 1 s are
        etcd's own defaults, ample on loopback.
        """
        peers = ",".join(
            f"{self._etcd_name(i)}=http://{LOOPBACK}:{port}"
            for i, port in enumerate(self.settings.etcd_peer_ports)
        )
        for index in range(ETCD_MEMBERS):
            if self.etcd_running(index):
                continue
            name = self._etcd_name(index)
            member_dir = self.data_dir / "etcd" / name
            self.user.make_dir(member_dir, mode=0o700)
            client = f"http://{LOOPBACK}:{self.settings.etcd_client_ports[index]}"
            peer = f"http://{LOOPBACK}:{self.settings.etcd_peer_ports[index]}"
            self._spawn(
                name,
                [
                    shutil.which("etcd") or "etcd",
                    f"--name={name}",
                    f"--data-dir={member_dir}",
                    f"--listen-client-urls={client}",
                    f"--advertise-client-urls={client}",
                    f"--listen-peer-urls={peer}",
                    f"--initial-advertise-peer-urls={peer}",
                    f"--initial-cluster={peers}",
                    f"--initial-cluster-token={self.settings.scope}",
                    "--initial-cluster-state=new",
                    "--log-level=warn",
                ],
            )
        deadline = time.monotonic() + 30
        while not all(self._etcd_healthy(port) for port in self.settings.etcd_client_ports):
            if time.monotonic() > deadline:
                raise ClusterTimeoutError(
                    f"etcd did not become healthy within 30 s; see {self.data_dir / 'logs'}."
                )
            time.sleep(0.1)

    def _etcd_healthy(self, port: int) -> bool:
        try:
            with urllib.request.urlopen(
                f"http://{LOOPBACK}:{port}/health", timeout=HTTP_TIMEOUT_SECONDS
            ) as response:
                return bool(json.loads(response.read()).get("health") == "true")
        except (OSError, ValueError):
            return False

    def dcs_view(self) -> DcsView | None:
        """The leader key and member keys straight from etcd (one range read over the v3
        JSON gateway), not through an agent, whose view lags by up to a loop; None when no
        etcd member answers."""
        prefix = f"{PATRONI_NAMESPACE}/{self.settings.scope}/".encode()
        body = json.dumps(
            {
                "key": base64.b64encode(prefix).decode(),
                # The range [prefix, prefix with its last byte + 1) is every key under it.
                "range_end": base64.b64encode(prefix[:-1] + bytes([prefix[-1] + 1])).decode(),
            }
        ).encode()
        for port in self.settings.etcd_client_ports:
            request = urllib.request.Request(
                f"http://{LOOPBACK}:{port}/v3/kv/range", data=body, method="POST"
            )
            try:
                with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_SECONDS) as response:  # noqa: S310
                    answer = json.loads(response.read())
            except (OSError, ValueError):
                continue
            keys = {
                base64.b64decode(kv["key"])[len(prefix) :].decode(): base64.b64decode(
                    kv.get("value", "")
                ).decode()
                for kv in answer.get("kvs", [])
            }
            states = {}
            for key, value in keys.items():
                if key.startswith("members/"):
                    with contextlib.suppress(ValueError, KeyError, TypeError):
                        states[key.removeprefix("members/")] = str(json.loads(value)["state"])
            return DcsView(leader=keys.get("leader") or None, member_states=states)
        return None

    def stop_etcd(self) -> None:
        for index in range(ETCD_MEMBERS):
            name = self._etcd_name(index)
            self._signal(name, str(self.data_dir / "etcd" / name), signal.SIGTERM, 15)

    # agent configuration -----------------------------------------------------------------
    def _bootstrap_env(self, node: NodeSpec) -> str:
        env = {**self._script_env(node), "REPLIKIT_SYNC_MODE": "off"}
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
            bootstrap_command=f"bash {self.scripts_dir / 'patroni-bootstrap.sh'} {env_file}",
            pg_listen=address,
            pg_connect=address,
            data_dir=str(self.pgdata(node)),
            bin_dir=str(self.binaries.directory),
            pgpass=str(self.data_dir / "patroni" / f"{node.name}.pgpass"),
            superuser=Credentials(state.superuser, state.passwords.superuser),
            replication=Credentials(state.replication_user, state.passwords.replication),
            timing=Timing(settings.ttl, settings.loop_wait, settings.retry_timeout),
            sync=state.sync.value,
            wal_keep_size=state.wal_keep_size,
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
        super().prepare()
        run_dir = self.data_dir / "run"
        run_dir.mkdir(exist_ok=True)
        self.start_etcd()
        for node in self.state.nodes:
            # The agent (the server account) fills it: bootstrap, base backup or re-clone.
            self.user.make_dir(self.pgdata(node), mode=0o700)
            self.write_config(node)

    def agent_running(self, node: NodeSpec) -> bool:
        return self._pid(f"patroni-{node.name}", str(self.config_file(node))) is not None

    def start(self, node: NodeSpec) -> None:
        """Start the node's agent (it starts PostgreSQL) and return once PostgreSQL answers
        as the leader or a replica."""
        if not self.agent_running(node):
            self._spawn(
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
            self._signal(process, marker, signal.SIGKILL, 5)
        else:
            self._signal(process, marker, signal.SIGTERM, AGENT_STOP_TIMEOUT_SECONDS)
        super().stop(node, mode)

    def crash_postgres(self, node: NodeSpec) -> None:
        """Crash PostgreSQL only (immediate shutdown, no checkpoint); its agent sees it."""
        super().stop(node, StopMode.IMMEDIATE)

    def fence(self, node: NodeSpec) -> None:
        """Nothing to do: a former leader's agent rewinds it before it runs again."""

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
