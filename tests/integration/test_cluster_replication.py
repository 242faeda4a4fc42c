"""Behaviour of a running 1+2 cluster: replication, status, env, roles and authentication."""

from __future__ import annotations

import json
import subprocess

import asyncpg
import pytest

from replication.cluster import Cluster, cluster_up
from replication.drivers.local.driver import LocalDriver
from replication.probe import cluster_status
from tests.integration.clusters import REPLIKIT, replikit
from tests.integration.conftest import connect, insert_marker, wait_for_marker, wait_until

STATUS_KEYS = {
    "name",
    "port",
    "role",
    "timeline",
    "state",
    "sync_state",
    "lag_bytes",
    "lag_seconds",
    "slot",
}


async def test_row_written_on_primary_is_readable_on_every_replica(cluster: Cluster) -> None:
    marker = await insert_marker(cluster)
    for replica in cluster.state.replicas:
        await wait_for_marker(cluster, replica, marker, within=5)


async def test_status_json_shows_one_primary_and_streaming_replicas_at_rest(
    cluster: Cluster,
) -> None:
    async def at_rest() -> bool:
        rows = await cluster_status(cluster.state)
        return all(row.lag_bytes == 0 for row in rows if row.role == "replica")

    await wait_until(at_rest, within=10, what="replicas catching up")
    result = replikit("cluster", "status", "--json", "--data-dir", str(cluster.data_dir))
    assert result.returncode == 0, result.stderr
    nodes = json.loads(result.stdout)["nodes"]
    assert [node["name"] for node in nodes] == ["pg0", "pg1", "pg2"]
    for node in nodes:
        assert node.keys() >= STATUS_KEYS
    primary, *replicas = nodes
    assert primary["role"] == "primary"
    assert primary["timeline"] == 1
    for node in replicas:
        assert node["role"] == "replica"
        assert node["state"] == "streaming"
        assert node["sync_state"] == "async"
        assert node["slot"] == node["name"]
        assert node["lag_bytes"] == 0
        assert node["lag_seconds"] == 0
        assert node["timeline"] == 1


async def test_replicas_stream_over_their_own_named_slots(cluster: Cluster) -> None:
    primary = await connect(cluster, cluster.state.primary_node, superuser=True)
    try:
        slots = await primary.fetch(
            "SELECT slot_name, active FROM pg_replication_slots ORDER BY slot_name"
        )
        senders = await primary.fetch(
            "SELECT application_name FROM pg_stat_replication ORDER BY application_name"
        )
        checksums = await primary.fetchval("SHOW data_checksums")
        wal_log_hints = await primary.fetchval("SHOW wal_log_hints")
    finally:
        await primary.close()
    assert [(s["slot_name"], s["active"]) for s in slots] == [("pg1", True), ("pg2", True)]
    assert [s["application_name"] for s in senders] == ["pg1", "pg2"]
    assert checksums == "on"
    assert wal_log_hints == "on"


def test_up_on_a_running_cluster_changes_nothing(cluster: Cluster) -> None:
    driver = cluster.driver
    assert isinstance(driver, LocalDriver)

    def postmaster_pids() -> list[str]:
        return [
            (driver.pgdata(node) / "postmaster.pid").read_text().split()[0]
            for node in cluster.state.nodes
        ]

    before_pids = postmaster_pids()
    before_state = (cluster.data_dir / "state.json").read_text()
    result = replikit("cluster", "up", "--data-dir", str(cluster.data_dir))
    assert result.returncode == 0, result.stderr
    assert "streaming" in result.stdout
    assert postmaster_pids() == before_pids
    assert (cluster.data_dir / "state.json").read_text() == before_state
    # The same through the Python API with the shape spelled out.
    cluster_up(cluster.data_dir, replicas=2, base_port=cluster.state.base_port)
    assert postmaster_pids() == before_pids


def test_env_output_evaluates_in_a_shell_to_app_urls(cluster: Cluster) -> None:
    script = (
        f'eval "$({REPLIKIT} cluster env --data-dir {cluster.data_dir})" && '
        'printf "%s\\n%s\\n" "$REPLIKIT_PRIMARY_URL" "$REPLIKIT_REPLICA_URLS"'
    )
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    primary_url, replica_urls = result.stdout.splitlines()
    ports = [node.port for node in cluster.state.nodes]
    assert primary_url.startswith("postgresql+asyncpg://app:")
    assert primary_url.endswith(f"@127.0.0.1:{ports[0]}/replikit")
    replicas = replica_urls.split(",")
    assert [url.rsplit(":", 1)[1] for url in replicas] == [f"{p}/replikit" for p in ports[1:]]


async def test_env_urls_connect_as_the_app_role(cluster: Cluster) -> None:
    result = replikit("cluster", "env", "--data-dir", str(cluster.data_dir))
    urls = [line.split("=", 1)[1].strip("'") for line in result.stdout.splitlines()]
    primary_url = urls[0].replace("postgresql+asyncpg", "postgresql")
    connection = await asyncpg.connect(primary_url, timeout=5)
    try:
        assert await connection.fetchval("SELECT current_user") == "app"
        assert await connection.fetchval("SELECT pg_is_in_recovery()") is False
    finally:
        await connection.close()


async def test_app_role_is_not_superuser_and_cannot_create_roles(cluster: Cluster) -> None:
    connection = await connect(cluster, cluster.state.primary_node)
    try:
        flags = await connection.fetchrow(
            "SELECT rolsuper, rolcreaterole, rolreplication FROM pg_roles "
            "WHERE rolname = current_user"
        )
        assert tuple(flags) == (False, False, False)
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await connection.execute("CREATE ROLE intruder LOGIN")
        owner = await connection.fetchval(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()"
        )
        assert owner == cluster.state.owner_user  # the migrations' role, not the service's
    finally:
        await connection.close()


async def test_pg_hba_allows_only_tls_with_scram_or_a_certificate_from_loopback(
    cluster: Cluster,
) -> None:
    """TCP only over TLS from 127.0.0.1: SCRAM, or the replicator's client certificate;
    plain TCP rejected from anywhere (docs/security.md, "Transport security")."""
    for node in cluster.state.nodes:
        connection = await connect(cluster, node, superuser=True)
        try:
            rules = await connection.fetch(
                "SELECT type, database, user_name, address, auth_method, options "
                "FROM pg_hba_file_rules"
            )
            listen = await connection.fetchval("SHOW listen_addresses")
        finally:
            await connection.close()
        assert listen == "127.0.0.1"
        assert {rule["type"] for rule in rules} == {"local", "hostssl", "host"}
        for rule in rules:
            assert rule["auth_method"] in {"scram-sha-256", "reject", "peer", "cert"}
            if rule["type"] == "hostssl":
                assert rule["address"] == "127.0.0.1"
            if rule["type"] == "host":
                assert rule["auth_method"] == "reject"
            if rule["auth_method"] == "cert":
                assert rule["user_name"] == [cluster.state.replication_user]
                assert rule["database"] == ["replication"]
            if rule["auth_method"] == "peer":
                # Only the superuser, and only for the OS account mapped to it in pg_ident.
                assert rule["type"] == "local"
                assert rule["user_name"] == [cluster.state.superuser]
                assert rule["options"] == ["map=replikit"]


def test_state_file_is_private_and_passwords_are_not_printed(cluster: Cluster) -> None:
    assert (cluster.data_dir / "state.json").stat().st_mode & 0o777 == 0o600
    status = replikit("cluster", "status", "--data-dir", str(cluster.data_dir))
    up = replikit("cluster", "up", "--data-dir", str(cluster.data_dir))
    for password in cluster.state.passwords.model_dump().values():
        assert password not in status.stdout + status.stderr
        assert password not in up.stdout + up.stderr


def test_up_with_other_replica_count_is_refused_and_changes_nothing(cluster: Cluster) -> None:
    before = (cluster.data_dir / "state.json").read_text()
    result = replikit("cluster", "up", "--replicas", "3", "--data-dir", str(cluster.data_dir))
    assert result.returncode != 0
    assert result.stderr.strip() == (
        f"error: The cluster in {cluster.data_dir} has 2 replicas, not 3; run 'replikit "
        "cluster down --purge' first to build a different shape."
    )
    assert (cluster.data_dir / "state.json").read_text() == before
    assert not (cluster.data_dir / "pg3").exists()
