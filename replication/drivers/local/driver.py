"""Nodes as plain PostgreSQL processes on this machine, one data directory each.

Layout under the cluster's data directory::

    state.json        cluster state (0600, owned by the invoking user)
    scripts/          copies of replication/scripts, reachable by the server account
    logs/<node>.log   server log of each node
    <node>/           PGDATA of each node
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from pathlib import Path

from replication.drivers.base import StopMode, rejoin_method
from replication.drivers.local.processes import is_zombie
from replication.errors import ClusterTimeoutError, NodeCommandError
from replication.pgbin import PgBinaries
from replication.poolers import PoolerStats
from replication.server_user import ServerUser
from replication.tls.provision import cluster_layout
from replication.topology import ClusterState, NodeSpec

SCRIPTS_SOURCE = Path(__file__).resolve().parents[2] / "scripts"
START_TIMEOUT_SECONDS = 60
STALE_LOCK_WAIT_SECONDS = 10.0
LOCK_FILE = "postmaster.pid"


class LocalDriver:
    def __init__(
        self, *, data_dir: Path, state: ClusterState, binaries: PgBinaries, user: ServerUser
    ) -> None:
        self.data_dir = data_dir
        self.state = state
        self.binaries = binaries
        self.user = user

    # paths -------------------------------------------------------------------------------
    def pgdata(self, node: NodeSpec) -> Path:
        return self.data_dir / node.name

    def log_file(self, node: NodeSpec) -> Path:
        return self.data_dir / "logs" / f"{node.name}.log"

    @property
    def scripts_dir(self) -> Path:
        return self.data_dir / "scripts"

    # lifecycle ---------------------------------------------------------------------------
    def prepare(self) -> None:
        """Create the shared directories and refresh the script copies.

        The scripts are copied rather than run in place because the checkout may sit under a
        directory the server account cannot enter (a root home, a 0700 temp dir).
        """
        self.user.require_reachable(self.data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o755)
        self.user.make_dir(self.data_dir / "logs")
        shutil.copytree(SCRIPTS_SOURCE, self.scripts_dir, dirs_exist_ok=True)
        self.scripts_dir.chmod(0o755)
        for script in self.scripts_dir.iterdir():
            script.chmod(0o755 if script.suffix == ".sh" and script.name != "lib.sh" else 0o644)
        if self.state.tls is not None:
            # The servers (and replicas' walreceivers) read the keys as the server account.
            for _, key in cluster_layout(self.state).pairs():
                self.user.hand_over(key)

    def has_data(self, node: NodeSpec) -> bool:
        return (self.pgdata(node) / "PG_VERSION").is_file()

    def tls_env(self, node: NodeSpec) -> dict[str, str]:
        """What the node scripts read for TLS (lib.sh); nothing for a cluster without it."""
        if self.state.tls is None:
            return {}
        layout = cluster_layout(self.state)
        role = self.state.replication_user
        return {
            "REPLIKIT_SSL_CERT_FILE": str(layout.server_cert(node.name)),
            "REPLIKIT_SSL_KEY_FILE": str(layout.server_key(node.name)),
            "REPLIKIT_SSL_CA_FILE": str(layout.ca_cert),
            "REPLIKIT_REPLICATION_SSLCERT": str(layout.client_cert(role)),
            "REPLIKIT_REPLICATION_SSLKEY": str(layout.client_key(role)),
        }

    def script_env(self, node: NodeSpec) -> dict[str, str]:
        state = self.state
        archive = state.archive.script_env() if state.archive is not None else {}
        return {
            **archive,
            **self.tls_env(node),
            "PGDATA": str(self.pgdata(node)),
            "PGPORT": str(node.port),
            "PGBIN": str(self.binaries.directory),
            "REPLIKIT_NODE_NAME": node.name,
            "REPLIKIT_LISTEN_ADDRESSES": state.host,
            "REPLIKIT_HBA_ADDRESS": f"{state.host}/32",
            "REPLIKIT_SUPERUSER": state.superuser,
            "REPLIKIT_REPLICATION_USER": state.replication_user,
            "REPLIKIT_APP_USER": state.app_user,
            "REPLIKIT_OWNER_USER": state.owner_user,
            "REPLIKIT_DATABASE": state.database,
            "REPLIKIT_SUPERUSER_PASSWORD": state.passwords.superuser,
            "REPLIKIT_REPLICATION_PASSWORD": state.passwords.replication,
            "REPLIKIT_APP_PASSWORD": state.passwords.app,
            "REPLIKIT_OWNER_PASSWORD": state.migration_credentials[1],
            "REPLIKIT_SYNC_MODE": state.sync.value,
            "REPLIKIT_STANDBY_NAMES": ",".join(n.name for n in state.replicas),
            "REPLIKIT_WAL_KEEP_SIZE": state.wal_keep_size,
            "REPLIKIT_MAX_SLOT_WAL_KEEP_SIZE": state.max_slot_wal_keep_size,
        }

    def _run_script(self, script: str, node: NodeSpec, extra: dict[str, str]) -> None:
        self.user.make_dir(self.pgdata(node), mode=0o700)
        self.user.run(
            ["bash", str(self.scripts_dir / script)],
            env={**self.script_env(node), **extra},
            cwd=self.data_dir,
            what=f"{script} for {node.name}",
        )

    def init_primary(self, node: NodeSpec) -> None:
        self._run_script("init-primary.sh", node, {})

    def bootstrap_replica(self, node: NodeSpec, primary: NodeSpec) -> None:
        self._run_script(
            "bootstrap-replica.sh",
            node,
            {"REPLIKIT_PRIMARY_HOST": self.state.host, "REPLIKIT_PRIMARY_PORT": str(primary.port)},
        )

    def rejoin(self, node: NodeSpec, primary: NodeSpec, *, reclone: bool = False) -> str:
        """Run rejoin-node.sh; returns unchanged, rewound or recloned."""
        result = self.user.run(
            ["bash", str(self.scripts_dir / "rejoin-node.sh")],
            env={
                **self.script_env(node),
                "REPLIKIT_PRIMARY_HOST": self.state.host,
                "REPLIKIT_PRIMARY_PORT": str(primary.port),
                "REPLIKIT_REJOIN_METHOD": rejoin_method(reclone=reclone),
            },
            cwd=self.data_dir,
            what=f"rejoin-node.sh for {node.name}",
            timeout=600,
        )
        last = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
        return last.removeprefix("result=") or "unknown"

    def fence(self, node: NodeSpec) -> None:
        """Make the stopped node start read-only (as a standby with no upstream) whatever
        starts it, so a failed-over primary can never come back writable."""
        if self.has_data(node):
            self.user.run(
                ["touch", str(self.pgdata(node) / "standby.signal")], what=f"fencing {node.name}"
            )

    def controldata(self, node: NodeSpec) -> dict[str, str]:
        output = self.user.run(
            [self.binaries.program("pg_controldata"), str(self.pgdata(node))],
            what=f"pg_controldata of {node.name}",
        ).stdout
        return {
            key.strip(): value.strip()
            for key, _, value in (line.partition(":") for line in output.splitlines())
        }

    def pooler_stats(self, node: NodeSpec) -> PoolerStats | None:
        """Local clusters run no pooler (docs/compose.md, "Connection poolers": the host's
        PgBouncer is too old for asyncpg's prepared statements in transaction pooling)."""
        return None

    def _pg_ctl(self, node: NodeSpec, *args: str, what: str, timeout: float = 120.0) -> None:
        self.user.run(
            [self.binaries.program("pg_ctl"), "--pgdata", str(self.pgdata(node)), *args],
            cwd=self.data_dir,
            what=what,
            timeout=timeout,
        )

    def _postmaster_pid(self, node: NodeSpec) -> int | None:
        """The pid postmaster.pid records (None when there is no lock file)."""
        try:
            return int((self.pgdata(node) / LOCK_FILE).read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def _processes_in(self, directory: Path) -> list[int]:
        """Live processes whose working directory is ``directory``: every PostgreSQL process
        of a node works in its PGDATA, so these are the node's, whoever their parent is."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                if Path(os.readlink(entry / "cwd")) == directory and not is_zombie(int(entry.name)):
                    found.append(int(entry.name))
        return found

    def _clear_stale_lock(self, node: NodeSpec) -> None:
        """Remove the lock file of a postmaster that was killed but not yet reaped.

        A zombie still answers ``kill -0``, so PostgreSQL would refuse to start ("is another
        postmaster running?") until init reaps it, seconds later on some machines. Once none
        of the node's processes is alive (its backends exit when they see the postmaster
        gone), the lock protects nothing and goes; a node with live processes is left as it
        is and ``pg_ctl start`` says why.
        """
        pid = self._postmaster_pid(node)
        if pid is None or not is_zombie(pid):
            return
        deadline = time.monotonic() + STALE_LOCK_WAIT_SECONDS
        while self._processes_in(self.pgdata(node).resolve()):
            if time.monotonic() > deadline:
                return
            time.sleep(0.05)
        with contextlib.suppress(FileNotFoundError):
            (self.pgdata(node) / LOCK_FILE).unlink()

    def start(self, node: NodeSpec) -> None:
        self._clear_stale_lock(node)
        try:
            self._pg_ctl(
                node,
                "--wait",
                f"--timeout={START_TIMEOUT_SECONDS}",
                f"--log={self.log_file(node)}",
                "start",
                what=f"starting {node.name}",
                timeout=START_TIMEOUT_SECONDS + 10,
            )
        except NodeCommandError as error:
            raise NodeCommandError(
                f"{error} (server log: {self.log_file(node)}:\n{self._log_tail(node)})"
            ) from None

    def stop(self, node: NodeSpec, mode: StopMode = StopMode.FAST) -> None:
        if not self.is_running(node):
            return
        try:
            self._pg_ctl(node, "--wait", "--mode", mode.value, "stop", what=f"stopping {node.name}")
        except NodeCommandError as error:
            if self.is_running(node):
                raise ClusterTimeoutError(f"{node.name} did not stop: {error}") from None

    def reload(self, node: NodeSpec) -> None:
        self._pg_ctl(node, "reload", what=f"reloading {node.name}", timeout=30)

    def is_running(self, node: NodeSpec) -> bool:
        """True while the node's postmaster runs. ``pg_ctl status`` alone calls a killed,
        not yet reaped postmaster (a zombie) running, so the recorded pid is checked first."""
        if not self.has_data(node):
            return False
        pid = self._postmaster_pid(node)
        if pid is None or is_zombie(pid):
            return False
        try:
            self._pg_ctl(node, "status", what=f"status of {node.name}", timeout=10)
        except NodeCommandError:
            return False
        return True

    def _log_tail(self, node: NodeSpec, lines: int = 15) -> str:
        try:
            text = self.log_file(node).read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])
