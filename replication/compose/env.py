"""The compose stack's .env: generated passwords, ports and a private subnet of its own.

docker-compose.yml refuses to start without the passwords, and a user should not have to invent
six of them; nor should two stacks on one host (a user's and a test's) collide on ports or on
the subnet that gives the load balancer its fixed address (the one address the service trusts
for X-Forwarded-For), nor on the HA variant's peer network. An existing file is never
rewritten: only missing keys are appended.
"""

from __future__ import annotations

import ipaddress
import json
import secrets
import subprocess
from collections.abc import Mapping
from pathlib import Path

from dotenv import dotenv_values

from replication.ports import find_free_port_range

PASSWORD_KEYS = (
    "REPLIKIT_SUPERUSER_PASSWORD",
    "REPLIKIT_REPLICATION_PASSWORD",
    "REPLIKIT_OWNER_PASSWORD",
    "REPLIKIT_APP_PASSWORD",
    "REPLIKIT_MONITOR_PASSWORD",
    "REPLIKIT_GRAFANA_PASSWORD",
    # The poolers' lookup role (PgBouncer's auth_query), in front of every node.
    "REPLIKIT_POOLER_PASSWORD",
    # The HA variant's Patroni REST API (its unsafe endpoints: switchover, restart, ...).
    "REPLIKIT_PATRONI_REST_PASSWORD",
    # pgBackRest's repository key (aes-256-cbc): without it no backup can be read.
    "REPLIKIT_BACKUP_PASSPHRASE",
)
DEFAULT_PORTS = {
    "REPLIKIT_HTTP_PORT": 8080,
    "REPLIKIT_ADMIN_PORT": 8081,
    "REPLIKIT_PG0_PORT": 6432,
    "REPLIKIT_PG1_PORT": 6433,
    "REPLIKIT_PG2_PORT": 6434,
    "REPLIKIT_LOCUST_PORT": 8089,
    "REPLIKIT_PROMETHEUS_PORT": 9090,
    "REPLIKIT_GRAFANA_PORT": 3000,
}
# 172.31.240.0/20 is rarely used by Docker's own pools (it hands out 172.17-172.30 first).
SUBNET_POOL = ipaddress.ip_network("172.31.240.0/20")
LB_HOST_INDEX = 250


def free_ports() -> dict[str, int]:
    """Every published port of the stack on free ports of this host, for a second stack (a
    test's, a benchmark's) beside the user's."""
    base = find_free_port_range(len(DEFAULT_PORTS))
    return {key: base + index for index, key in enumerate(DEFAULT_PORTS)}


def read_env(path: Path) -> dict[str, str]:
    return {k: v or "" for k, v in dotenv_values(path).items()} if path.is_file() else {}


def docker_subnets() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """Subnets of the Docker networks that exist now (none when Docker does not answer)."""
    try:
        ids = subprocess.run(
            ["docker", "network", "ls", "-q"], capture_output=True, text=True, timeout=30
        ).stdout.split()
        if not ids:
            return []
        inspected = subprocess.run(
            ["docker", "network", "inspect", *ids], capture_output=True, text=True, timeout=30
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    subnets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for network in json.loads(inspected or "[]"):
        for config in (network.get("IPAM") or {}).get("Config") or []:
            if config.get("Subnet"):
                subnets.append(ipaddress.ip_network(config["Subnet"], strict=False))
    return subnets


def free_subnet(taken: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> str:
    for candidate in SUBNET_POOL.subnets(new_prefix=24):
        if not any(candidate.overlaps(other) for other in taken if other.version == 4):
            return str(candidate)
    raise RuntimeError(f"every /24 of {SUBNET_POOL} is used by a Docker network")


def lb_address(subnet: str) -> str:
    return str(ipaddress.ip_network(subnet)[LB_HOST_INDEX])


def missing_settings(
    existing: Mapping[str, str], *, ports: Mapping[str, int] | None = None
) -> dict[str, str]:
    """The keys a stack needs that ``existing`` lacks, with generated or default values."""
    values: dict[str, str] = {}
    for key in PASSWORD_KEYS:
        if not existing.get(key):
            values[key] = secrets.token_hex(24)
    for key, default in {**DEFAULT_PORTS, **(ports or {})}.items():
        if not existing.get(key):
            values[key] = str(default)
    taken = docker_subnets()
    subnet = existing.get("REPLIKIT_SUBNET")
    if not subnet:
        subnet = values["REPLIKIT_SUBNET"] = free_subnet(taken)
    if not existing.get("REPLIKIT_LB_ADDRESS"):
        values["REPLIKIT_LB_ADDRESS"] = lb_address(subnet)
    # The HA variant's second network (etcd, Patroni, replication), from the same pool: left
    # to Docker, it could take a /16 that overlaps another stack's subnet.
    if not existing.get("REPLIKIT_PEER_SUBNET"):
        values["REPLIKIT_PEER_SUBNET"] = free_subnet([*taken, ipaddress.ip_network(subnet)])
    return values


def ensure_env_file(path: Path, *, ports: Mapping[str, int] | None = None) -> dict[str, str]:
    """Append what is missing to ``path`` (creating it 0600); return the keys written."""
    existing = read_env(path)
    added = missing_settings(existing, ports=ports)
    if added:
        is_new = not path.exists()
        with path.open("a") as env_file:
            if is_new:
                path.chmod(0o600)
                env_file.write(
                    "# Written by replikit compose up: generated passwords, ports and the "
                    "stack's subnet.\n# Never commit this file. See .env.example for every "
                    "setting.\n"
                )
            for key, value in added.items():
                env_file.write(f"{key}={value}\n")
    return added
