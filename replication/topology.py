"""The cluster's shape and its state file.

The state file (``<data-dir>/state.json``, mode 0600) is the one record of what ``cluster up``
built: node names and ports, generated passwords, the binaries used, and which node the tools
currently treat as primary. Roles are never taken from it for status; they are discovered.
"""

from __future__ import annotations

import os
import secrets
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from urllib.parse import quote

from pydantic import BaseModel, Field

from replication.errors import BadInputError, DataDirConflictError

STATE_FILE_NAME = "state.json"
MAX_REPLICAS = 8
LOOPBACK = "127.0.0.1"
# max_slot_wal_keep_size of a new cluster: how much WAL a replica's slot may hold back on the
# primary before PostgreSQL invalidates the slot (the replica is then re-cloned on rejoin).
DEFAULT_MAX_SLOT_WAL_KEEP_SIZE = "4GB"


class SyncMode(StrEnum):
    OFF = "off"
    ON = "on"
    QUORUM = "quorum"


class Manager(StrEnum):
    """Who moves the primary role: replikit's commands (native) or Patroni agents over etcd."""

    NATIVE = "native"
    PATRONI = "patroni"


class PatroniSettings(BaseModel):
    """What a Patroni-managed cluster adds to the state: its etcd members, each agent's REST
    port, the REST API's generated credentials and the timing it was built with."""

    scope: str = "replikit"
    etcd_client_ports: list[int]
    etcd_peer_ports: list[int]
    rest_ports: dict[str, int]
    rest_user: str = "replikit"
    rest_password: str
    ttl: int
    loop_wait: int
    retry_timeout: int
    python: str  # the interpreter of the Patroni virtualenv (its bin/ holds patroni, patronictl)

    @property
    def etcd_hosts(self) -> str:
        return ",".join(f"{LOOPBACK}:{port}" for port in self.etcd_client_ports)


class ArchiveSettings(BaseModel):
    """Continuous WAL archiving of a local cluster (``cluster up --archive``): which backup tool
    (:mod:`replication.backup`), the directory under the cluster's own that holds its
    repository and configuration, the repository's generated passphrase, and what every node
    is started with: the archive command, the archive timeout and the socket directory the
    tool reaches the servers through."""

    tool: str
    directory: str
    cipher_pass: str
    archive_command: str
    archive_timeout: str = "1s"
    socket_dir: str

    def script_env(self) -> dict[str, str]:
        """What the node scripts read (lib.sh's write_archive_conf, write_node_conf)."""
        return {
            "REPLIKIT_ARCHIVE_COMMAND": self.archive_command,
            "REPLIKIT_ARCHIVE_TIMEOUT": self.archive_timeout,
            "REPLIKIT_SOCKET_DIR": self.socket_dir,
        }


class TlsSettings(BaseModel):
    """Transport security of a local cluster (``cluster up --tls on``, the default): the
    directory holding its certificates (names in :mod:`replication.tls.files`), and whether the
    kit's CA issued them (its key is there, so ``replikit certs rotate`` issues new ones) or
    the user brought their own (``cluster up --tls-dir``; rotating copies new ones in)."""

    directory: str
    kit_ca: bool = True


class Passwords(BaseModel):
    superuser: str
    replication: str
    app: str
    # The migrations' role. None only in a state file written before the owner/app split, whose
    # database the app role still owns (and migrates).
    owner: str | None = None

    @classmethod
    def generate(cls) -> Passwords:
        # token_urlsafe is safe unquoted in URLs, conninfo strings and config files alike.
        return cls(
            superuser=secrets.token_urlsafe(24),
            replication=secrets.token_urlsafe(24),
            app=secrets.token_urlsafe(24),
            owner=secrets.token_urlsafe(24),
        )


class NodeSpec(BaseModel):
    name: str
    port: int  # where replikit reaches it (127.0.0.1:port)
    # Where the other nodes reach it, when that differs (a compose service name and 5432).
    internal_host: str | None = None
    internal_port: int | None = None


class ServiceEndpoints(BaseModel):
    """Where an already deployed service answers (a compose stack's load balancer).

    ``url`` takes the client traffic; ``admin_url`` serves the router's view (``/cluster``,
    ``/metrics``), which a public entry point does not expose.
    """

    url: str
    admin_url: str


class ClusterState(BaseModel):
    version: int = 1
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    host: str = LOOPBACK
    database: str = "replikit"
    app_user: str = "app"
    owner_user: str = "replikit_owner"
    replication_user: str = "replicator"
    superuser: str = "postgres"
    pg_bin: str
    pg_major: int
    sync: SyncMode
    base_port: int
    nodes: list[NodeSpec]
    primary: str
    passwords: Passwords
    wal_keep_size: str = "256MB"
    # The most WAL a replication slot may hold back (docs/operations.md, "Bounded WAL
    # retention"); a cluster built before the setting existed gets PostgreSQL's -1 (none).
    max_slot_wal_keep_size: str = "-1"
    driver: str = "local"  # local | compose
    manager: Manager = Manager.NATIVE
    patroni: PatroniSettings | None = None
    # None: the nodes archive no WAL and there are no backups.
    archive: ArchiveSettings | None = None
    # None: plain TCP (``--tls off``, or a cluster built before TLS existed).
    tls: TlsSettings | None = None
    compose_file: str | None = None
    # The compose project and env file the stack was brought up with (None: compose's default),
    # so every compose call addresses that stack and no other.
    compose_project: str | None = None
    compose_env_file: str | None = None
    # The deployed service in front of this cluster; None means the experiments start their
    # own service instances (local clusters).
    service: ServiceEndpoints | None = None
    # Former primaries that must be rejoined before they run again (never as a primary).
    fenced: list[str] = Field(default_factory=list)
    # The primary before the last switchover or failover: the default switchover target.
    previous_primary: str | None = None

    @property
    def replicas(self) -> list[NodeSpec]:
        """Every node but the recorded primary, fenced ones included."""
        return [node for node in self.nodes if node.name != self.primary]

    def fence(self, name: str) -> None:
        if name not in self.fenced:
            self.fenced.append(name)

    def unfence(self, name: str) -> None:
        if name in self.fenced:
            self.fenced.remove(name)

    @property
    def primary_node(self) -> NodeSpec:
        return self.node(self.primary)

    def node(self, name: str) -> NodeSpec:
        for node in self.nodes:
            if node.name == name:
                return node
        known = ", ".join(node.name for node in self.nodes)
        raise BadInputError(f"There is no node named '{name}'; the nodes are {known}.")

    def replication_address(self, node: NodeSpec) -> tuple[str, int]:
        """Host and port the other nodes use to stream from ``node``."""
        return node.internal_host or self.host, node.internal_port or node.port

    def app_url(self, node: NodeSpec) -> str:
        """SQLAlchemy asyncpg URL for the app role on one node: what the service runs as."""
        return self._url(self.app_user, self.passwords.app, node)

    @property
    def migration_credentials(self) -> tuple[str, str]:
        """User and password the migrations run as: the owner role, or the app role in a
        cluster built before the split (it owns that database)."""
        if self.passwords.owner is None:
            return self.app_user, self.passwords.app
        return self.owner_user, self.passwords.owner

    def owner_url(self, node: NodeSpec) -> str:
        """SQLAlchemy asyncpg URL for the migrations' role on one node."""
        return self._url(*self.migration_credentials, node)

    def _url(self, user: str, password: str, node: NodeSpec) -> str:
        return (
            f"postgresql+asyncpg://{quote(user, safe='')}:{quote(password, safe='')}"
            f"@{self.host}:{node.port}/{self.database}"
        )


def build_state(
    *,
    replicas: int,
    sync: SyncMode,
    base_port: int,
    pg_bin: Path,
    pg_major: int,
    wal_keep_size: str = "256MB",
    max_slot_wal_keep_size: str = DEFAULT_MAX_SLOT_WAL_KEEP_SIZE,
) -> ClusterState:
    validate_shape(replicas=replicas, base_port=base_port)
    nodes = [NodeSpec(name=f"pg{i}", port=base_port + i) for i in range(replicas + 1)]
    return ClusterState(
        pg_bin=str(pg_bin),
        pg_major=pg_major,
        sync=sync,
        base_port=base_port,
        nodes=nodes,
        primary="pg0",
        passwords=Passwords.generate(),
        wal_keep_size=wal_keep_size,
        max_slot_wal_keep_size=max_slot_wal_keep_size,
    )


def validate_shape(*, replicas: int, base_port: int) -> None:
    if not 0 <= replicas <= MAX_REPLICAS:
        raise BadInputError(f"--replicas must be between 0 and {MAX_REPLICAS}, not {replicas}.")
    if not 1024 <= base_port <= 65535 - replicas:
        raise BadInputError(
            f"--base-port must leave room for {replicas + 1} ports between 1024 and 65535, "
            f"not {base_port}."
        )


def state_path(data_dir: Path) -> Path:
    return data_dir / STATE_FILE_NAME


def load_state(data_dir: Path) -> ClusterState | None:
    """The saved state, None for a missing or empty directory, or an error for anything else."""
    path = state_path(data_dir)
    if path.is_file():
        return ClusterState.model_validate_json(path.read_text())
    if data_dir.exists() and (not data_dir.is_dir() or any(data_dir.iterdir())):
        raise DataDirConflictError(
            f"{data_dir} already holds files that are not a replikit cluster; "
            f"choose another --data-dir or empty it."
        )
    return None


def require_state(data_dir: Path) -> ClusterState:
    state = load_state(data_dir)
    if state is None:
        raise BadInputError(
            f"There is no cluster in {data_dir}; create one with 'replikit cluster up'."
        )
    return state


def save_state(data_dir: Path, state: ClusterState) -> None:
    """Write atomically with mode 0600: the file holds passwords."""
    path = state_path(data_dir)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(state.model_dump_json(indent=2))
    os.replace(tmp, path)
