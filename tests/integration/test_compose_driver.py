"""The compose driver: its docker calls are recorded by a fake docker that acts on a local
cluster as compose would on containers, while everything else runs over SQL for real."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from replication.cluster import Cluster
from replication.drivers.local import LocalDriver
from replication.topology import require_state, save_state
from tests.integration.clusters import reachable_temp_dir, replikit, running_cluster

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def compose_cluster() -> Iterator[tuple[Cluster, Path, dict[str, str]]]:
    with running_cluster(replicas=2, name="compose-driver") as local:
        driver = local.driver
        assert isinstance(driver, LocalDriver)
        work = reachable_temp_dir("replikit-fake-docker-")
        bin_dir = work / "bin"
        bin_dir.mkdir()
        docker = bin_dir / "docker"
        docker.write_text(
            f'#!/bin/sh\nexec {sys.executable} -m tests.integration.fake_docker "$@"\n'
        )
        docker.chmod(0o755)
        nodes = {
            node.name: {
                "env": {
                    **driver._script_env(node),
                    "REPLIKIT_PRIMARY_HOST": "127.0.0.1",
                    "SCRIPTS": str(driver.scripts_dir),
                    "LOG_FILE": str(driver.log_file(node)),
                }
            }
            for node in local.state.nodes
        }
        compose_dir = work / "compose"
        compose_dir.mkdir()
        state = local.state.model_copy(deep=True)
        state.driver = "compose"
        state.compose_file = str(work / "docker-compose.yml")
        for node in state.nodes:  # "containers" reach each other on loopback ports here
            node.internal_host, node.internal_port = "127.0.0.1", node.port
        save_state(compose_dir, state)
        env = {
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "FAKE_DOCKER_LOG": str(work / "calls.jsonl"),
            "FAKE_DOCKER_NODES": json.dumps(nodes),
            "PYTHONPATH": str(ROOT),
        }
        yield local, compose_dir, env


def calls(env: dict[str, str]) -> list[list[str]]:
    lines = Path(env["FAKE_DOCKER_LOG"]).read_text().splitlines()
    return [json.loads(line) for line in lines]


def compose_args(call: list[str]) -> list[str]:
    return call[call.index("--project-directory") + 2 :]


@pytest.mark.destructive
def test_kill_failover_rejoin_through_docker_compose(
    compose_cluster: tuple[Cluster, Path, dict[str, str]],
) -> None:
    local, compose_dir, env = compose_cluster
    d = ("--data-dir", str(compose_dir))

    killed = replikit("cluster", "kill", "primary", *d, env=env)
    assert killed.returncode == 0, killed.stderr
    assert "pg0 crashed" in killed.stdout
    assert ["kill", "-s", "SIGQUIT", "pg0"] in [compose_args(c) for c in calls(env)]
    assert not local.driver.is_running(local.state.node("pg0"))

    failover = replikit("cluster", "failover", "--json", *d, env=env)
    assert failover.returncode == 0, failover.stderr
    result = json.loads(failover.stdout)
    new = result["new_primary"]
    fence = [compose_args(c) for c in calls(env) if compose_args(c)[0] == "run"]
    assert fence[0][:6] == ["run", "--rm", "--no-deps", "--user", "postgres", "--entrypoint"]
    assert fence[0][-3:] == ["pg0", "-c", 'touch "$PGDATA/standby.signal"']
    state = require_state(compose_dir)
    assert (state.primary, state.fenced) == (new, ["pg0"])

    rejoined = replikit("cluster", "rejoin", "pg0", "--json", *d, env=env)
    assert rejoined.returncode == 0, rejoined.stderr
    run_calls = [compose_args(c) for c in calls(env) if compose_args(c)[0] == "run"]
    rejoin_call = run_calls[-1]
    assert rejoin_call[-3:] == ["pg0", "-c", "bash /replikit/scripts/rejoin-node.sh"]
    assert f"REPLIKIT_PRIMARY_PORT={state.node(new).port}" in rejoin_call
    assert ["start", "pg0"] in [compose_args(c) for c in calls(env)]

    status = json.loads(replikit("cluster", "status", "--json", *d, env=env).stdout)["nodes"]
    roles = {n["name"]: (n["role"], n["state"]) for n in status}
    assert roles[new] == ("primary", "writable")
    assert roles["pg0"] == ("replica", "streaming")


def test_attach_compose_records_nodes_passwords_and_the_live_primary(cluster: Cluster) -> None:
    work = reachable_temp_dir("replikit-attach-")
    state = cluster.state
    env_file = work / ".env"
    env_file.write_text(
        f"REPLIKIT_SUPERUSER_PASSWORD={state.passwords.superuser}\n"
        f"REPLIKIT_REPLICATION_PASSWORD={state.passwords.replication}\n"
        f"REPLIKIT_APP_PASSWORD={state.passwords.app}\n"
        + "".join(f"REPLIKIT_{n.name.upper()}_PORT={n.port}\n" for n in state.nodes)
    )
    target = work / "compose-state"
    args = (
        "cluster",
        "attach-compose",
        "--compose-file",
        str(ROOT / "docker-compose.yml"),
        "--data-dir",
        str(target),
    )
    result = replikit(*args, "--env-file", str(env_file))
    assert result.returncode == 0, result.stderr
    attached = require_state(target)
    assert attached.driver == "compose"
    assert attached.primary == "pg0"
    assert [(n.name, n.port, n.internal_host, n.internal_port) for n in attached.nodes] == [
        (n.name, n.port, n.name, 5432) for n in state.nodes
    ]
    assert (target / "state.json").stat().st_mode & 0o777 == 0o600

    missing = replikit(*args, "--env-file", str(work / "nope.env"))
    assert missing.returncode != 0
    assert "copy .env.example to .env" in missing.stderr
    partial = work / "partial.env"
    partial.write_text("REPLIKIT_SUPERUSER_PASSWORD=x\n")
    refused = replikit(*args, "--env-file", str(partial))
    assert "lacks REPLIKIT_REPLICATION_PASSWORD" in refused.stderr
