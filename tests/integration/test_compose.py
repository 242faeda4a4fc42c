"""The compose topology, checked without Docker: the files parse, the wiring is what the README
says, and a rehearsal runs the PostgreSQL services' own entrypoint and environment as local
processes, then serves an upload through the service configured exactly as the app service."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from replication.cluster import Cluster
from replication.pgbin import find_pg_binaries
from replication.server_user import ServerUser
from service import migrate
from service.settings import Settings
from tests.integration.clusters import free_base_port, reachable_temp_dir
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
    services = config["services"]
    core = {*PG_SERVICES, "migrate", "app", "lb"}
    assert core <= set(services)
    for name in set(services) - core:  # everything else is opt-in
        assert services[name].get("profiles"), f"{name} runs without a profile"
    for name in PG_SERVICES:
        assert services[name]["image"].startswith("postgres:17.")
        assert "healthcheck.sh" in " ".join(services[name]["healthcheck"]["test"])
        assert services[name]["environment"]["REPLIKIT_NODE_NAME"] == name
        assert all(
            port["host_ip"] == "127.0.0.1"
            if isinstance(port, dict)
            else port.startswith("127.0.0.1:")
            for port in services[name]["ports"]
        )
    assert services["pg0"]["environment"]["REPLIKIT_ROLE"] == "primary"
    for name in ("pg1", "pg2"):
        assert services[name]["environment"]["REPLIKIT_ROLE"] == "replica"
        assert services[name]["depends_on"]["pg0"]["condition"] == "service_healthy"
    assert services["migrate"]["command"] == ["replikit", "migrate"]
    assert services["migrate"]["depends_on"]["pg0"]["condition"] == "service_healthy"
    assert services["app"]["depends_on"]["migrate"]["condition"] == (
        "service_completed_successfully"
    )
    assert services["app"]["deploy"]["replicas"] >= 2
    assert services["lb"]["depends_on"]["app"]["condition"] == "service_healthy"


def test_every_service_variable_is_a_setting(config: dict[str, Any]) -> None:
    for name in ("app", "migrate"):
        for key in config["services"][name]["environment"]:
            assert key.startswith("REPLIKIT_"), key
            assert key.removeprefix("REPLIKIT_").lower() in Settings.model_fields, key


def test_dockerfile_is_pinned_multi_stage_and_non_root() -> None:
    text = (ROOT / "deploy/service/Dockerfile").read_text()
    bases = re.findall(r"^FROM (\S+)", text, re.MULTILINE)
    assert len(bases) == 2
    assert all(re.search(r":\d+\.\d+\.\d+-slim", base) for base in bases), bases
    final_stage = text.split("\nFROM ")[-1]
    user = re.search(r"^USER (\S+)", final_stage, re.MULTILINE)
    assert user is not None
    assert user.group(1) not in {"root", "0"}
    assert "HEALTHCHECK" in final_stage
    assert "uv" not in final_stage.split("COPY --from=build")[0].split("RUN useradd")[0]


def _local_env(
    service: dict[str, Any], ports: dict[str, int], root: Path, pg_bin: Path
) -> dict[str, str]:
    """The service's environment with container paths and host names made local."""
    env = {key: str(value) for key, value in service["environment"].items()}
    name = env["REPLIKIT_NODE_NAME"]
    (root / f"{name}-run").mkdir(exist_ok=True)
    env.update(
        {
            "PGDATA": str(root / name),
            "PGPORT": str(ports[name]),
            "PGBIN": str(pg_bin),
            "REPLIKIT_LISTEN_ADDRESSES": "127.0.0.1",
            "REPLIKIT_SOCKET_DIR": str(root / f"{name}-run"),
            "REPLIKIT_PRIMARY_HOST": "127.0.0.1",
            "REPLIKIT_PRIMARY_PORT": str(ports[env["REPLIKIT_PRIMARY_HOST"]]),
        }
    )
    return env


def _local_url(url: str, ports: dict[str, int]) -> str:
    for name, port in ports.items():
        url = url.replace(f"@{name}:5432/", f"@127.0.0.1:{port}/")
    return url


@contextlib.contextmanager
def rehearsal_nodes(config: dict[str, Any], root: Path) -> Iterator[dict[str, int]]:
    user = ServerUser.detect()
    pg_bin = find_pg_binaries().directory
    scripts = root / "scripts"
    shutil.copytree(ROOT / "replication/scripts", scripts)
    for node in PG_SERVICES:
        # What the container's root step does for its volume: owned by postgres.
        user.make_dir(root / f"{node}-run", mode=0o755)
        user.make_dir(root / node, mode=0o700)
    base = free_base_port(len(PG_SERVICES))
    ports = {name: base + index for index, name in enumerate(PG_SERVICES)}
    processes: list[subprocess.Popen[bytes]] = []
    envs: dict[str, dict[str, str]] = {}
    try:
        for name in PG_SERVICES:
            service = config["services"][name]
            entrypoint = service["entrypoint"]
            assert entrypoint[-1] == "/replikit/scripts/container-entrypoint.sh"
            env = _local_env(service, ports, root, pg_bin)
            envs[name] = env
            log = (root / f"{name}.log").open("wb")
            processes.append(
                subprocess.Popen(
                    user.argv(["bash", str(scripts / "container-entrypoint.sh")]),
                    env={**os.environ, **env},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd="/",
                )
            )
            deadline = time.monotonic() + 90
            while (
                user.run(
                    ["bash", str(scripts / "healthcheck.sh")],
                    env=env,
                    what="healthcheck",
                    timeout=10,
                    check=False,
                ).returncode
                != 0
            ):
                log_tail = (root / f"{name}.log").read_text()[-2000:]
                assert processes[-1].poll() is None, f"{name} entrypoint exited: {log_tail}"
                assert time.monotonic() < deadline, log_tail
                time.sleep(0.3)
        yield ports
    finally:
        for name, env in envs.items():
            user.run(
                [
                    str(pg_bin / "pg_ctl"),
                    "--pgdata",
                    env["PGDATA"],
                    "--mode",
                    "fast",
                    "--wait",
                    "stop",
                ],
                what=f"stopping {name}",
                check=False,
            )
        for process in processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(15)
            if process.poll() is None:
                process.kill()


async def test_rehearsal_runs_the_compose_topology_from_its_own_scripts(
    config: dict[str, Any], workdir: Path
) -> None:
    import asyncio

    root = workdir / "rehearsal"
    root.mkdir()
    root.chmod(0o755)
    manager = rehearsal_nodes(config, root)
    ports = await asyncio.to_thread(manager.__enter__)
    try:
        app_env = config["services"]["app"]["environment"]
        values: dict[str, Any] = {
            key.removeprefix("REPLIKIT_").lower(): _local_url(str(value), ports)
            for key, value in app_env.items()
        }
        settings = Settings.model_validate(values)
        assert len(settings.replica_urls) == 2
        await asyncio.to_thread(migrate.upgrade, settings.primary_url)
        async with service_client(settings) as client:
            created = await upload(client, image_bytes("PNG"))
            assert created.status_code == 201, created.text
            read = await client.get(
                f"/api/v1/images/{created.json()['id']}",
                headers={"X-Replikit-LSN": created.headers["X-Replikit-LSN"]},
            )
            assert read.status_code == 200
            view = (await client.get("/cluster")).json()
        roles = {node["name"]: node["role"] for node in view["nodes"]}
        assert roles == {"pg0": "primary", "pg1": "replica", "pg2": "replica"}
    finally:
        await asyncio.to_thread(manager.__exit__, None, None, None)


@pytest.mark.parametrize("profiles", [["loadtest"], ["monitoring"], ["loadtest", "monitoring"]])
def test_every_profile_combination_parses(workdir: Path, profiles: list[str]) -> None:
    options = [arg for profile in profiles for arg in ("--profile", profile)]
    result = compose(*options, "config", env_file=compose_env_file(workdir))
    assert result.returncode == 0, result.stderr
    services = set(yaml.safe_load(result.stdout)["services"])
    if "loadtest" in profiles:
        assert {"locust-master", "locust-worker"} <= services
    if "monitoring" in profiles:
        assert {"prometheus", "grafana", "pg0-exporter", "pg1-exporter", "pg2-exporter"} <= services


def test_dashboard_queries_name_metrics_that_are_exported(migrated: Cluster) -> None:
    """Every metric a Grafana panel queries is one the service exports (or the exporter's)."""
    import asyncio

    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/replikit.json").read_text())
    expressions = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    assert len(expressions) >= 8

    async def exported() -> str:
        settings = Settings(
            _env_file=None, primary_url=migrated.state.app_url(migrated.state.primary_node)
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
