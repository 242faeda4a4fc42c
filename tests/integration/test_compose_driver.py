"""The compose driver: its docker calls are recorded by a fake docker that acts on a local
cluster as compose would on containers, while everything else runs over SQL for real."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from replication.cluster import Cluster
from replication.topology import Manager, ServiceEndpoints, SyncMode, require_state
from tests.integration.clusters import reachable_temp_dir, replikit, running_cluster
from tests.integration.compose_fakes import FakeCompose, fake_compose

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def compose_cluster() -> Iterator[tuple[Cluster, FakeCompose]]:
    with (
        running_cluster(replicas=2, name="compose-driver") as local,
        fake_compose(local, persona="v1", project="rkfake") as fake,
    ):
        yield local, fake


@pytest.mark.destructive
def test_kill_failover_rejoin_through_docker_compose_v1(
    compose_cluster: tuple[Cluster, FakeCompose],
) -> None:
    local, fake = compose_cluster
    env, compose_dir = fake.env, fake.data_dir
    d = ("--data-dir", str(compose_dir))

    killed = replikit("cluster", "kill", "primary", *d, env=env)
    assert killed.returncode == 0, killed.stderr
    assert "pg0 crashed" in killed.stdout
    assert ["kill", "-s", "SIGQUIT", "pg0"] in fake.verbs()
    # Every call names the stack's project and env file, so it cannot touch another stack.
    for call in fake.calls():
        assert call[call.index("-p") + 1] == "rkfake"
        assert call[call.index("--env-file") + 1].endswith("stack.env")
    assert not local.driver.is_running(local.state.node("pg0"))
    # With the project known, "is it running?" asks the docker client by compose's labels
    # (milliseconds) instead of a compose ps (a second or more on v1).
    assert (fake.docker_calls()[0][:4]) == [
        "ps",
        "-q",
        "--filter",
        "label=com.docker.compose.project=rkfake",
    ]
    assert not any(verb[0] == "ps" for verb in fake.verbs())
    assert fake.programs() == {"docker-compose"}  # v1

    failover = replikit("cluster", "failover", "--json", *d, env=env)
    assert failover.returncode == 0, failover.stderr
    result = json.loads(failover.stdout)
    new = result["new_primary"]
    fence = [v for v in fake.verbs() if v[0] == "run"]
    assert fence[0][:6] == ["run", "--rm", "--no-deps", "--user", "postgres", "--entrypoint"]
    # The fake client has no `docker cp`, so the fence falls back to a one-off container (the
    # copy is exercised on a real engine by tests/compose/test_compose_failover.py).
    assert fence[0][-3:] == [
        "pg0", "-c", 'touch "$PGDATA/standby.signal" "$PGDATA/replikit.fenced"'
    ]  # fmt: skip
    state = require_state(compose_dir)
    assert (state.primary, state.fenced) == (new, ["pg0"])

    rejoined = replikit("cluster", "rejoin", "pg0", "--json", *d, env=env)
    assert rejoined.returncode == 0, rejoined.stderr
    run_calls = [v for v in fake.verbs() if v[0] == "run"]
    rejoin_call = run_calls[-1]
    assert rejoin_call[-3:] == ["pg0", "-c", "bash /replikit/scripts/rejoin-node.sh"]
    assert f"REPLIKIT_PRIMARY_PORT={state.node(new).port}" in rejoin_call
    assert ["start", "pg0"] in fake.verbs()

    status = json.loads(replikit("cluster", "status", "--json", *d, env=env).stdout)["nodes"]
    roles = {n["name"]: (n["role"], n["state"]) for n in status}
    assert roles[new] == ("primary", "writable")
    assert roles["pg0"] == ("replica", "streaming")


def stack_env_file(cluster: Cluster, work: Path) -> Path:
    """An env file as a stack's: the local cluster's passwords and ports."""
    state = cluster.state
    env_file = work / ".env"
    env_file.write_text(
        f"REPLIKIT_SUPERUSER_PASSWORD={state.passwords.superuser}\n"
        f"REPLIKIT_REPLICATION_PASSWORD={state.passwords.replication}\n"
        f"REPLIKIT_APP_PASSWORD={state.passwords.app}\n"
        f"REPLIKIT_OWNER_PASSWORD={state.passwords.owner}\n"
        + "".join(f"REPLIKIT_{n.name.upper()}_PORT={n.port}\n" for n in state.nodes)
        + "REPLIKIT_HTTP_PORT=7781\nREPLIKIT_ADMIN_PORT=7782\n"
    )
    return env_file


def test_attach_compose_records_nodes_passwords_and_the_live_primary(cluster: Cluster) -> None:
    work = reachable_temp_dir("replikit-attach-")
    state = cluster.state
    env_file = stack_env_file(cluster, work)
    target = work / "compose-state"
    args = (
        "cluster",
        "attach-compose",
        "--compose-file",
        str(ROOT / "docker-compose.yml"),
        "--data-dir",
        str(target),
    )
    result = replikit(*args, "--env-file", str(env_file), "--project-name", "rkattach")
    assert result.returncode == 0, result.stderr
    assert "service http://127.0.0.1:7781" in result.stdout
    attached = require_state(target)
    assert attached.driver == "compose"
    assert attached.primary == "pg0"
    assert (attached.compose_project, attached.compose_env_file) == ("rkattach", str(env_file))
    assert attached.service == ServiceEndpoints(
        url="http://127.0.0.1:7781", admin_url="http://127.0.0.1:7782"
    )
    assert [(n.name, n.port, n.internal_host, n.internal_port) for n in attached.nodes] == [
        (n.name, n.port, n.name, 5432) for n in state.nodes
    ]
    assert attached.passwords == state.passwords
    assert (target / "state.json").stat().st_mode & 0o777 == 0o600

    missing = replikit(*args, "--env-file", str(work / "nope.env"))
    assert missing.returncode != 0
    assert "copy .env.example to .env" in missing.stderr
    partial = work / "partial.env"
    partial.write_text("REPLIKIT_SUPERUSER_PASSWORD=x\n")
    refused = replikit(*args, "--env-file", str(partial))
    assert "lacks REPLIKIT_REPLICATION_PASSWORD" in refused.stderr


HA_COMPOSE_TEXT = """services:
  etcd0: {}
  pg0: {ports: ["${REPLIKIT_PG0_PORT:-6432}:5432"]}
  pg1: {ports: ["${REPLIKIT_PG1_PORT:-6433}:5432"]}
  pg2: {ports: ["${REPLIKIT_PG2_PORT:-6434}:5432"]}
"""


def test_an_attached_ha_stack_is_left_to_patroni(cluster: Cluster) -> None:
    """A stack whose nodes are Patroni agents (it has etcd members) is recorded as such, and
    every command that would promote, restart or stop nodes behind the agents refuses in one
    sentence, changing nothing; status and the lag tools go on working over SQL."""
    work = reachable_temp_dir("replikit-attach-ha-")
    compose_file = work / "docker-compose.yml"
    compose_file.write_text(HA_COMPOSE_TEXT)
    target = work / "compose-state"
    d = ("--data-dir", str(target))
    attached = replikit(
        "cluster", "attach-compose", "--compose-file", str(compose_file),
        "--env-file", str(stack_env_file(cluster, work)), "--project-name", "rkattachha", *d,
    )  # fmt: skip
    assert attached.returncode == 0, attached.stderr
    state = require_state(target)
    assert (state.manager, state.sync, state.primary) == (Manager.PATRONI, SyncMode.ON, "pg0")
    recorded = (target / "state.json").read_bytes()

    for command in (
        ("failover", "--to", "pg1", "--force"),
        ("switchover", "--to", "pg1"),
        ("rejoin", "pg1"),
        ("down",),
        ("up",),
    ):
        refused = replikit("cluster", *command, *d)
        assert refused.returncode != 0, command
        assert "is left to Patroni on this compose HA stack" in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr
    experiment = replikit("experiment", "failover", *d, "--duration", "5")
    assert experiment.returncode != 0
    assert "does not drive the compose HA stack" in experiment.stderr, experiment.stderr

    assert (target / "state.json").read_bytes() == recorded
    status = replikit("cluster", "status", "--json", *d)
    assert status.returncode == 0, status.stderr
    roles = {row["name"]: row["role"] for row in json.loads(status.stdout)["nodes"]}
    assert roles == {"pg0": "primary", "pg1": "replica", "pg2": "replica"}
