"""Patroni agent configuration: the one source for the local manager and the containers.

The local Patroni manager (replication/managers/patroni/agents.py) and the compose HA variant
(deploy/compose/ha.yml) run the same agent with the same timing, bootstrap method and
PostgreSQL parameters; only addresses, paths and credentials differ. Both build their file
with :func:`agent_config`.

This module uses the standard library only: the HA node image copies it in and runs it at
start (``python3 patroni_config.py OUT``) to write the agent's file from the container's
environment (see :func:`container_agent`), so the image needs no replikit install.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Failover timing (docs/operations.md, "The patroni manager"). ttl is the leader lease: a
# dead or isolated leader's key expires at most ttl seconds after its last renewal, which is
# what node loss or a partition costs; 20 is the smallest Patroni accepts. loop_wait is how
# often each agent looks at its PostgreSQL and renews the lease: 1 s finds a crashed
# PostgreSQL within a second. The rule loop_wait + 2 * retry_timeout <= ttl leaves
# retry_timeout at most 9; 5 s still rides out a slow etcd or PostgreSQL answer on a busy
# 2-core host without demoting the leader, and an isolated leader demotes itself within
# about loop_wait + retry_timeout, well before its lease can expire.
DEFAULT_TTL = 20
DEFAULT_LOOP_WAIT = 1
DEFAULT_RETRY_TIMEOUT = 5
SYNC_MODES = ("off", "on", "quorum")
# As replication.topology's (this module imports nothing from replikit): the most WAL one
# member's slot may hold back before PostgreSQL invalidates it (docs/operations.md).
DEFAULT_MAX_SLOT_WAL_KEEP_SIZE = "4GB"

# In the HA containers: fixed ports inside each container (the addresses are variables).
CONTAINER_PG_PORT = 5432
CONTAINER_REST_PORT = 8008
CONTAINER_ETCD_CLIENT_PORT = 2379
CONTAINER_SCRIPTS = "/replikit/scripts"
# Where patroni-container.sh writes the agent's file (its socket directory), for patronictl.
CONTAINER_AGENT_CONFIG = "/var/run/postgresql/patroni.yml"


@dataclass(frozen=True)
class Timing:
    ttl: int = DEFAULT_TTL
    loop_wait: int = DEFAULT_LOOP_WAIT
    retry_timeout: int = DEFAULT_RETRY_TIMEOUT


def dcs_settings(
    *,
    timing: Timing,
    sync: str,
    wal_keep_size: str,
    max_slot_wal_keep_size: str = DEFAULT_MAX_SLOT_WAL_KEEP_SIZE,
) -> dict[str, Any]:
    """Patroni's cluster-wide (DCS) settings, written to etcd when the cluster bootstraps."""
    if sync not in SYNC_MODES:
        raise ValueError(f"sync mode must be one of {', '.join(SYNC_MODES)}, not {sync!r}")
    postgres_parameters = {
        "wal_keep_size": wal_keep_size,
        "max_slot_wal_keep_size": max_slot_wal_keep_size,
        "max_wal_senders": 20,
        "max_replication_slots": 20,
        "hot_standby": "on",
        "hot_standby_feedback": "on",
        "wal_log_hints": "on",
        "wal_receiver_status_interval": "1s",
        # How soon a replica retries its primary after losing it (default 5 s). A leader's
        # PostgreSQL restarted in place by its agent is back within about 2 s, and with sync
        # on no commit is acknowledged until its synchronous standby reconnects: with the
        # default every crash window was 4.93-4.96 s on an idle machine (docs/benchmarks.md).
        "wal_retrieve_retry_interval": "1s",
        "max_connections": 200,
    }
    return {
        "ttl": timing.ttl,
        "loop_wait": timing.loop_wait,
        "retry_timeout": timing.retry_timeout,
        # A replica more than 1 MB behind is not promoted automatically (asynchronous
        # mode); in synchronous modes only a synchronous standby is promoted anyway.
        "maximum_lag_on_failover": 1048576,
        # A crashed leader PostgreSQL is restarted in place first; this bounds the time
        # it may take before the agent gives up the lease instead.
        "primary_start_timeout": 10,
        "synchronous_mode": {"off": False, "on": True}.get(sync, "quorum"),
        # As the native --sync on/quorum: commits wait while no synchronous standby is
        # connected, instead of silently running asynchronously. This is also what keeps a
        # partitioned leader from acknowledging a commit the others never received.
        "synchronous_mode_strict": sync != "off",
        "synchronous_node_count": 1,
        "postgresql": {
            "use_pg_rewind": True,
            "use_slots": True,
            "parameters": postgres_parameters,
        },
    }


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str

    def as_config(self) -> dict[str, str]:
        return {"username": self.username, "password": self.password}


@dataclass(frozen=True)
class AgentSettings:
    """Everything that differs between one agent and another, or between local and
    container agents."""

    scope: str
    name: str
    rest_listen: str  # host:port
    rest_connect: str  # host:port the other agents use
    rest: Credentials
    etcd_hosts: str  # host:port,host:port,...
    bootstrap_command: str
    pg_listen: str  # host:port
    pg_connect: str  # host:port the replicas and pg_rewind use
    data_dir: str
    bin_dir: str
    pgpass: str
    superuser: Credentials
    replication: Credentials
    socket_dir: str = ""
    timing: Timing = field(default_factory=Timing)
    sync: str = "off"
    wal_keep_size: str = "256MB"
    max_slot_wal_keep_size: str = DEFAULT_MAX_SLOT_WAL_KEEP_SIZE


def agent_config(agent: AgentSettings) -> dict[str, Any]:
    """The agent's configuration file (JSON, which Patroni's YAML loader reads)."""
    return {
        "scope": agent.scope,
        "name": agent.name,
        "restapi": {
            "listen": agent.rest_listen,
            "connect_address": agent.rest_connect,
            "authentication": agent.rest.as_config(),
        },
        "etcd3": {"hosts": agent.etcd_hosts},
        "bootstrap": {
            "dcs": dcs_settings(
                timing=agent.timing,
                sync=agent.sync,
                wal_keep_size=agent.wal_keep_size,
                max_slot_wal_keep_size=agent.max_slot_wal_keep_size,
            ),
            # init-primary.sh, as the native manager runs it: same roles, pg_hba, checksums.
            "method": "replikit",
            "replikit": {"command": agent.bootstrap_command, "no_params": True},
        },
        "postgresql": {
            "listen": agent.pg_listen,
            "connect_address": agent.pg_connect,
            "data_dir": agent.data_dir,
            "bin_dir": agent.bin_dir,
            "pgpass": agent.pgpass,
            "authentication": {
                "superuser": agent.superuser.as_config(),
                "replication": agent.replication.as_config(),
            },
            "basebackup": [{"checkpoint": "fast"}],
            # Patroni sets cluster_name to the scope on every member; the router names
            # nodes by replikit.node_name first (service/routing/monitor.py).
            "parameters": {
                "unix_socket_directories": agent.socket_dir,
                "replikit.node_name": agent.name,
            },
        },
    }


class ContainerConfigError(ValueError):
    """A variable the HA container needs is missing or wrong (the message says which)."""


def _required(env: Mapping[str, str], name: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise ContainerConfigError(f"environment variable {name} must be set")
    return value


def _seconds(env: Mapping[str, str], name: str, default: int) -> int:
    value = env.get(name, "").strip()
    if not value:
        return default
    if not value.isdigit():
        raise ContainerConfigError(f"{name} must be a whole number of seconds, not {value!r}")
    return int(value)


def container_agent(env: Mapping[str, str]) -> AgentSettings:
    """An HA container's agent from its environment (docker-compose.yml + deploy/compose/ha.yml).

    REPLIKIT_NODE_NAME, REPLIKIT_PEER_ADDRESS (where the other agents reach this node: its
    PostgreSQL on 5432 and REST API on 8008), REPLIKIT_ETCD_HOSTS, PGDATA and the superuser,
    replication and REST passwords are required; timing and sync mode default as above.
    """
    timing = Timing(
        ttl=_seconds(env, "REPLIKIT_PATRONI_TTL", DEFAULT_TTL),
        loop_wait=_seconds(env, "REPLIKIT_PATRONI_LOOP_WAIT", DEFAULT_LOOP_WAIT),
        retry_timeout=_seconds(env, "REPLIKIT_PATRONI_RETRY_TIMEOUT", DEFAULT_RETRY_TIMEOUT),
    )
    if timing.ttl < 20:
        raise ContainerConfigError("REPLIKIT_PATRONI_TTL must be at least 20 (Patroni's minimum)")
    if timing.loop_wait < 1 or timing.loop_wait + 2 * timing.retry_timeout > timing.ttl:
        raise ContainerConfigError(
            "REPLIKIT_PATRONI_LOOP_WAIT (at least 1) + 2 * REPLIKIT_PATRONI_RETRY_TIMEOUT must "
            "not exceed REPLIKIT_PATRONI_TTL"
        )
    sync = env.get("REPLIKIT_SYNC_MODE", "").strip() or "on"
    if sync not in SYNC_MODES:
        raise ContainerConfigError(f"REPLIKIT_SYNC_MODE must be off, on or quorum, not {sync!r}")
    peer = _required(env, "REPLIKIT_PEER_ADDRESS")
    postgres = shutil.which("postgres", path=env.get("PATH"))
    socket_dir = env.get("REPLIKIT_SOCKET_DIR", "/var/run/postgresql")
    return AgentSettings(
        scope=env.get("REPLIKIT_PATRONI_SCOPE", "").strip() or "replikit",
        name=_required(env, "REPLIKIT_NODE_NAME"),
        rest_listen=f"0.0.0.0:{CONTAINER_REST_PORT}",
        rest_connect=f"{peer}:{CONTAINER_REST_PORT}",
        rest=Credentials(
            env.get("REPLIKIT_PATRONI_REST_USER", "").strip() or "replikit",
            _required(env, "REPLIKIT_PATRONI_REST_PASSWORD"),
        ),
        etcd_hosts=_required(env, "REPLIKIT_ETCD_HOSTS"),
        bootstrap_command=f"bash {CONTAINER_SCRIPTS}/patroni-bootstrap.sh",
        pg_listen=f"0.0.0.0:{CONTAINER_PG_PORT}",
        pg_connect=f"{peer}:{CONTAINER_PG_PORT}",
        data_dir=_required(env, "PGDATA"),
        bin_dir=str(Path(postgres).parent) if postgres else "",
        pgpass=str(Path(socket_dir) / "patroni.pgpass"),
        superuser=Credentials(
            env.get("REPLIKIT_SUPERUSER", "").strip() or "postgres",
            _required(env, "REPLIKIT_SUPERUSER_PASSWORD"),
        ),
        replication=Credentials(
            env.get("REPLIKIT_REPLICATION_USER", "").strip() or "replicator",
            _required(env, "REPLIKIT_REPLICATION_PASSWORD"),
        ),
        socket_dir=socket_dir,
        timing=timing,
        sync=sync,
        wal_keep_size=env.get("REPLIKIT_WAL_KEEP_SIZE", "").strip() or "256MB",
        max_slot_wal_keep_size=env.get("REPLIKIT_MAX_SLOT_WAL_KEEP_SIZE", "").strip()
        or DEFAULT_MAX_SLOT_WAL_KEEP_SIZE,
    )


def write_private(path: Path, text: str) -> None:
    """Write ``text`` readable by its owner only (the file holds passwords)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


def main(argv: list[str]) -> int:
    """``python3 patroni_config.py OUT``: the container's agent file from its environment."""
    if len(argv) != 2:
        print("usage: patroni_config.py OUT", file=sys.stderr)
        return 2
    try:
        agent = container_agent(os.environ)
    except ContainerConfigError as error:
        print(f"replikit patroni config: error: {error}", file=sys.stderr)
        return 1
    write_private(Path(argv[1]), json.dumps(agent_config(agent), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
