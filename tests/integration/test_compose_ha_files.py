"""The HA variant's compose files, checked without Docker: what it adds to the default stack,
what it keeps, and that on three hosts every address comes from a variable
(tests/compose/test_compose_ha.py runs the variant on a real engine)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from replication.compose.stack import Variant
from tests.integration.clusters import reachable_temp_dir
from tests.integration.compose_files import ROOT, compose, compose_env_file, resolved_config

HA_FILES = [ROOT / f for f in Variant.HA.extra_files]
HOSTS_FILE = ROOT / "deploy" / "compose" / "ha-hosts.yml"
NODES = ["pg0", "pg1", "pg2"]
ETCD = ["etcd0", "etcd1", "etcd2"]
# One address per host: etcd<i> and pg<i> live on host i.
HOSTS = {
    "REPLIKIT_ETCD0_ADDRESS": "10.9.0.1",
    "REPLIKIT_ETCD1_ADDRESS": "10.9.0.2",
    "REPLIKIT_ETCD2_ADDRESS": "10.9.0.3",
    "REPLIKIT_PG0_ADDRESS": "10.9.0.1",
    "REPLIKIT_PG1_ADDRESS": "10.9.0.2",
    "REPLIKIT_PG2_ADDRESS": "10.9.0.3",
}


@pytest.fixture(scope="module")
def env_file() -> Iterator[Path]:
    directory = reachable_temp_dir("replikit-compose-ha-")
    path = compose_env_file(directory)
    with path.open("a") as handle:
        handle.write("REPLIKIT_PATRONI_REST_PASSWORD=rest-secret\n")
    yield path
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def config(env_file: Path) -> dict[str, Any]:
    return resolved_config(env_file, extra_files=HA_FILES)


def test_ha_variant_adds_etcd_and_patroni_nodes_and_keeps_the_service(
    config: dict[str, Any],
) -> None:
    services = config["services"]
    assert {*ETCD, *NODES, "migrate", "app", "lb"} <= set(services)
    for name in NODES:
        node = services[name]
        assert node["image"] == "replikit-patroni:17"
        assert node["build"]["target"] == "patroni"
        assert node["entrypoint"][-1] == "/replikit/scripts/patroni-container.sh"
        assert "readiness" in " ".join(node["healthcheck"]["test"])
        env = node["environment"]
        assert env["REPLIKIT_PEER_ADDRESS"] == f"{name}-peer"
        assert env["REPLIKIT_ETCD_HOSTS"] == "etcd0:2379,etcd1:2379,etcd2:2379"
        # Synchronous by default: a partitioned leader cannot acknowledge what nobody has.
        assert env["REPLIKIT_SYNC_MODE"] == "on"
        assert node["networks"]["peers"]["aliases"] == [f"{name}-peer"]
        assert "default" in node["networks"]
        # On one host only PostgreSQL is published, on the loopback; etcd and REST are not.
        assert [port.split(":")[0::2] for port in node["ports"]] == [["127.0.0.1", "5432/tcp"]]
    for name in ETCD:
        assert list(services[name]["networks"]) == ["peers"]
        assert "ports" not in services[name]
    depends = services["migrate"]["depends_on"]
    assert {name: depends[name]["condition"] for name in NODES} == dict.fromkeys(
        NODES, "service_healthy"
    )


def test_the_service_is_the_default_stacks_and_the_default_stack_is_unchanged(
    env_file: Path, config: dict[str, Any]
) -> None:
    default = resolved_config(env_file)
    # The same instances and load balancer, on the client network only: the service finds
    # the leader as it does after a manual failover, by asking every node its role.
    for name in ("app", "lb"):
        assert config["services"][name] == default["services"][name]
    assert "peers" not in config["services"]["app"].get("networks", {})
    assert not any(name.startswith("etcd") for name in default["services"])
    assert default["services"]["pg0"]["build"]["target"] == "node"
    assert default["services"]["pg0"]["environment"]["REPLIKIT_SYNC_MODE"] == "off"


def test_on_three_hosts_every_address_is_a_variable(env_file: Path) -> None:
    env = {**os.environ, **HOSTS, "REPLIKIT_HOST_ADDRESS": "10.9.0.2"}
    config = resolved_config(env_file, extra_files=[*HA_FILES, HOSTS_FILE], env=env)
    services = config["services"]
    text = json.dumps(
        {name: services[name].get("environment", {}) for name in [*ETCD, *NODES, "app"]}
    )
    for default_name in ("pg0-peer", "pg1-peer", "pg2-peer", "etcd0:", "etcd1:", "etcd2:"):
        assert default_name not in text
    assert services["pg1"]["environment"]["REPLIKIT_PEER_ADDRESS"] == "10.9.0.2"
    assert (
        services["pg0"]["environment"]["REPLIKIT_ETCD_HOSTS"]
        == "10.9.0.1:2379,10.9.0.2:2379,10.9.0.3:2379"
    )
    assert services["etcd2"]["environment"]["ETCD_INITIAL_CLUSTER"] == (
        "etcd0=http://10.9.0.1:2380,etcd1=http://10.9.0.2:2380,etcd2=http://10.9.0.3:2380"
    )
    assert services["etcd1"]["environment"]["ETCD_ADVERTISE_CLIENT_URLS"] == (
        "http://10.9.0.2:2379"
    )
    assert "@10.9.0.1:6432/" in services["app"]["environment"]["REPLIKIT_PRIMARY_URL"]
    assert "@10.9.0.3:5432/" in services["migrate"]["environment"]["REPLIKIT_REPLICA_URLS"]
    on_this_host = {
        name: sorted(port for port in services[name].get("ports", []) if "10.9.0.2" in port)
        for name in [*ETCD, *NODES]
    }
    assert on_this_host["etcd1"] == ["10.9.0.2:2379:2379/tcp", "10.9.0.2:2380:2380/tcp"]
    assert on_this_host["pg1"] == ["10.9.0.2:5432:5432/tcp", "10.9.0.2:8008:8008/tcp"]


def test_three_hosts_refuse_a_missing_host_address(env_file: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "REPLIKIT_HOST_ADDRESS"} | HOSTS
    result = compose("config", env_file=env_file, extra_files=[*HA_FILES, HOSTS_FILE], env=env)
    assert result.returncode != 0
    assert "REPLIKIT_HOST_ADDRESS" in result.stderr
