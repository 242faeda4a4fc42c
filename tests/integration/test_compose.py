"""The compose files, checked without Docker, for what the real-engine tests (tests/compose)
cannot see: missing passwords refused, loopback-only ports, no dependency on one node's role,
every image from the one pinned base, and the dashboard's metrics exported."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy.engine import make_url

from replication.cluster import Cluster
from replication.serving.env import MigrationCredentials
from service.settings import Settings
from tests.integration.clusters import reachable_temp_dir
from tests.integration.compose_files import ROOT, compose, compose_env_file, resolved_config
from tests.integration.service_fixtures import image_bytes, service_client, upload

PG_SERVICES = ["pg0", "pg1", "pg2"]


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    path = reachable_temp_dir("replikit-compose-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def config(workdir: Path) -> dict[str, Any]:
    return resolved_config(compose_env_file(workdir))


def test_compose_file_parses_and_refuses_missing_passwords(workdir: Path) -> None:
    assert compose("config", "-q", env_file=compose_env_file(workdir)).returncode == 0
    empty = workdir / "empty.env"
    empty.write_text("")
    missing = compose("config", "-q", env_file=empty)
    assert missing.returncode != 0
    assert "set REPLIKIT_SUPERUSER_PASSWORD in .env" in missing.stderr


def test_services_health_checks_and_dependencies(config: dict[str, Any]) -> None:
    """What the real run does not show: the wiring that keeps failovers and ports safe."""
    services = config["services"]
    core = {*PG_SERVICES, "pooler0", "pooler1", "pooler2", "migrate", "app", "lb", "backup"}
    assert core <= set(services)
    for name in set(services) - core:  # everything else is opt-in
        assert services[name].get("profiles"), f"{name} runs without a profile"
    for name, service in services.items():
        for port in service.get("ports", []):
            host_ip = port["host_ip"] if isinstance(port, dict) else port.split(":")[0]
            assert host_ip == "127.0.0.1", f"{name} publishes {port} beyond loopback"
    for name in PG_SERVICES:
        assert services[name]["image"] == "replikit-postgres:17"
        assert "healthcheck.sh" in " ".join(services[name]["healthcheck"]["test"])
        assert services[name]["environment"]["REPLIKIT_NODE_NAME"] == name
        assert services[name]["environment"]["REPLIKIT_PEERS"] == ",".join(PG_SERVICES)
        # Nothing may wait on one particular node being healthy: roles move on failover.
        assert "depends_on" not in services[name]
        # One repository, on the same path in every node, whichever is primary.
        assert "backup-repo:/var/lib/pgbackrest:rw" in services[name]["volumes"], name
        assert services[name]["environment"]["REPLIKIT_ARCHIVE_COMMAND"] == (
            "pgbackrest archive-push %p"
        )
    # Scheduled backups ask every node which is the primary; they publish nothing and hold
    # no repository (the primary's server runs the backup in its own container).
    assert services["backup"]["environment"]["REPLIKIT_PEERS"] == ",".join(PG_SERVICES)
    assert "ports" not in services["backup"]
    assert not any("backup-repo" in volume for volume in services["backup"]["volumes"])
    assert services["pg0"]["environment"]["REPLIKIT_ROLE"] == "primary"
    for name in ("pg1", "pg2"):
        assert services[name]["environment"]["REPLIKIT_ROLE"] == "replica"
    assert services["migrate"]["command"][:3] == ["replikit", "migrate", "--wait-for-primary"]
    assert "depends_on" not in services["migrate"]
    assert services["app"]["depends_on"]["migrate"]["condition"] == (
        "service_completed_successfully"
    )
    lb_address = services["lb"]["networks"]["default"]["ipv4_address"]
    assert services["app"]["command"][-2:] == ["--forwarded-allow-ips", lb_address]
    for one_shot in ("migrate", "locust-master", "locust-worker"):
        assert services[one_shot]["labels"]["replikit.one-shot"] == "true"
        assert "healthcheck" not in services[one_shot]


def test_every_service_variable_is_a_setting(config: dict[str, Any]) -> None:
    migration_keys = {f"REPLIKIT_MIGRATION_{f.upper()}" for f in MigrationCredentials.model_fields}
    for name in ("app", "migrate"):
        for key in config["services"][name]["environment"]:
            assert key.startswith("REPLIKIT_"), key
            if name == "migrate" and key in migration_keys:
                continue
            assert key.removeprefix("REPLIKIT_").lower() in Settings.model_fields, key


def test_migrate_logs_in_as_the_owner_and_the_app_never_sees_its_password(workdir: Path) -> None:
    """Least privilege: only the one-shot migration holds the owner's password."""
    env_file = compose_env_file(workdir)
    env = dict(line.split("=", 1) for line in env_file.read_text().splitlines())
    owner_password, app_password = env["REPLIKIT_OWNER_PASSWORD"], env["REPLIKIT_APP_PASSWORD"]
    services = resolved_config(env_file, "--profile", "monitoring", "--profile", "loadtest")[
        "services"
    ]
    migrate = services["migrate"]["environment"]
    assert migrate["REPLIKIT_MIGRATION_USER"] == "replikit_owner"
    assert migrate["REPLIKIT_MIGRATION_PASSWORD"] == owner_password
    # It discovers the primary among every node, as app, straight to the nodes; the service
    # reaches the same nodes through their poolers.
    assert "@pg0:5432/" in migrate["REPLIKIT_PRIMARY_URL"]
    assert "@pooler0:6432/" in services["app"]["environment"]["REPLIKIT_PRIMARY_URL"]
    app = services["app"]["environment"]
    assert all(make_url(url).username == "app" for url in _urls(app))
    assert all(make_url(url).password == app_password for url in _urls(app))
    for name, service in services.items():
        values = " ".join(str(v) for v in (service.get("environment") or {}).values())
        if name not in {"migrate", *PG_SERVICES}:
            assert owner_password not in values, f"{name} holds the owner's password"
    for name in PG_SERVICES:  # init-primary.sh makes the role from it
        assert services[name]["environment"]["REPLIKIT_OWNER_PASSWORD"] == owner_password


def _urls(environment: dict[str, str]) -> list[str]:
    return [environment["REPLIKIT_PRIMARY_URL"], *environment["REPLIKIT_REPLICA_URLS"].split(",")]


def test_a_missing_owner_password_is_refused(workdir: Path) -> None:
    without_owner = workdir / "no-owner.env"
    without_owner.write_text(
        "".join(
            line + "\n"
            for line in compose_env_file(workdir).read_text().splitlines()
            if not line.startswith("REPLIKIT_OWNER_PASSWORD=")
        )
    )
    missing = compose("config", "-q", env_file=without_owner)
    assert missing.returncode != 0
    assert "set REPLIKIT_OWNER_PASSWORD in .env" in missing.stderr


def test_every_image_is_built_from_the_one_pinned_debian_base_and_runs_unprivileged() -> None:
    dockerfiles = sorted((ROOT / "deploy").glob("*/Dockerfile"))
    assert {path.parent.name for path in dockerfiles} == {
        "etcd",
        "haproxy",
        "pgbouncer",
        "pgbouncer-exporter",
        "postgres",
        "postgres-exporter",
        "prometheus",
        "service",
    }
    for path in dockerfiles:
        text = path.read_text()
        assert re.findall(r"^ARG BASE=(\S+)", text, re.MULTILINE) == ["debian:13.8-slim"], path
        for base in re.findall(r"^FROM (\S+)", text, re.MULTILINE):
            assert base == "${BASE}" or not base.startswith(("debian", "python", "postgres")), path
        final_stage = text.split("\nFROM ")[-1]
        user = re.findall(r"^USER (\S+)", final_stage, re.MULTILINE)
        assert user, path
        assert user[-1] not in {"root", "0"}, path
        # Health is the compose file's to say per service (one-shot services have none).
        assert "HEALTHCHECK" not in text, path


@pytest.mark.parametrize(
    "profiles",
    [["loadtest"], ["monitoring"], ["monitoring", "grafana"], ["loadtest", "monitoring"]],
)
def test_every_profile_combination_parses(workdir: Path, profiles: list[str]) -> None:
    options = [arg for profile in profiles for arg in ("--profile", profile)]
    result = compose(*options, "config", env_file=compose_env_file(workdir))
    assert result.returncode == 0, result.stderr
    services = set(yaml.safe_load(result.stdout)["services"])
    if "loadtest" in profiles:
        assert {"locust-master", "locust-worker"} <= services
    if "monitoring" in profiles:
        exporters = {f"{kind}{i}-exporter" for kind in ("pg", "pooler") for i in range(3)}
        assert {"prometheus", *exporters} <= services


def test_dashboard_queries_name_metrics_that_are_exported(migrated: Cluster) -> None:
    """Every metric a Grafana panel queries is one the service exports (or the exporter's)."""
    import asyncio

    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/replikit.json").read_text())
    expressions = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    assert len(expressions) >= 8

    async def exported() -> str:
        settings = Settings(
            _env_file=None,
            primary_url=migrated.state.app_url(migrated.state.primary_node),
            ops_public=True,  # in-process: no operations listener to ask
        )
        async with service_client(settings) as client:
            await upload(client, image_bytes("PNG"))
            return str((await client.get("/metrics")).text)

    text = asyncio.run(exported())
    families = set(re.findall(r"^# TYPE (\S+)", text, re.MULTILINE))
    for expression in expressions:
        for metric in re.findall(r"\b(replikit_[a-z_]+|pg_[a-z_]+)\b", expression):
            base = re.sub(r"_(bucket|total|count|sum)$", "", metric)
            if metric.startswith("pg_"):
                assert metric == "pg_up", metric  # postgres-exporter's own
                continue
            assert base in families or metric in families, f"{metric} is not exported"
