"""Describe a docker-compose cluster in a state file, so the `replikit cluster` commands
(status, kill, failover, switchover, rejoin, lag) work on it through the compose driver."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import yaml
from dotenv import dotenv_values

from replication.errors import BadInputError
from replication.probe import choose_primary, read_all
from replication.topology import (
    ClusterState,
    NodeSpec,
    Passwords,
    SyncMode,
    load_state,
    save_state,
)

NODE_SERVICE = re.compile(r"^pg\d+$")


def attach_compose(data_dir: Path, compose_file: Path, env_file: Path) -> ClusterState:
    data_dir = data_dir.absolute()
    existing = load_state(data_dir)
    if existing is not None and existing.driver != "compose":
        raise BadInputError(
            f"{data_dir} holds a local cluster; choose another --data-dir for the compose one."
        )
    if not compose_file.is_file():
        raise BadInputError(f"There is no compose file at {compose_file}.")
    if not env_file.is_file():
        raise BadInputError(
            f"There is no {env_file}; copy .env.example to .env and set the passwords."
        )
    values = {k: v or "" for k, v in dotenv_values(env_file).items()}
    missing = [
        name
        for name in ("SUPERUSER", "REPLICATION", "APP")
        if not values.get(f"REPLIKIT_{name}_PASSWORD")
    ]
    if missing:
        raise BadInputError(
            f"{env_file} lacks REPLIKIT_{missing[0]}_PASSWORD; set every password in it."
        )
    services = (yaml.safe_load(compose_file.read_text()) or {}).get("services", {})
    names = sorted((s for s in services if NODE_SERVICE.match(s)), key=lambda s: int(s[2:]))
    if not names:
        raise BadInputError(f"{compose_file} has no pg0, pg1, ... services.")
    nodes = [
        NodeSpec(
            name=name,
            port=int(values.get(f"REPLIKIT_{name.upper()}_PORT") or 6432 + int(name[2:])),
            internal_host=name,
            internal_port=5432,
        )
        for name in names
    ]
    state = ClusterState(
        pg_bin="",
        pg_major=0,
        sync=SyncMode(values.get("REPLIKIT_SYNC_MODE") or "off"),
        base_port=nodes[0].port,
        nodes=nodes,
        primary=existing.primary if existing else names[0],
        passwords=Passwords(
            superuser=values["REPLIKIT_SUPERUSER_PASSWORD"],
            replication=values["REPLIKIT_REPLICATION_PASSWORD"],
            app=values["REPLIKIT_APP_PASSWORD"],
        ),
        driver="compose",
        compose_file=str(compose_file.absolute()),
        fenced=existing.fenced if existing else [],
        previous_primary=existing.previous_primary if existing else None,
    )
    discovered = choose_primary(asyncio.run(read_all(state)))
    if discovered is not None:
        state.primary = discovered
    data_dir.mkdir(parents=True, exist_ok=True)
    save_state(data_dir, state)
    return state
