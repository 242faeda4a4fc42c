"""Which compose program replikit calls, what argv the compose driver builds with it, and
which ports an attached stack publishes: no Docker, no cluster."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from replication.backup.base import BackupSource, BackupType
from replication.backup.containers import ContainerPgBackRest
from replication.compose.attach import published_port, service_endpoints
from replication.compose.command import OVERRIDE_VARIABLE, ComposeProgram, compose_program
from replication.compose.stack import ComposeStack, Variant
from replication.drivers.compose.driver import ComposeDriver
from replication.errors import BadInputError
from replication.topology import ClusterState, NodeSpec, Passwords, ServiceEndpoints, SyncMode

COMPOSE_TEXT = """
services:
  lb:
    ports:
      - "127.0.0.1:${REPLIKIT_HTTP_PORT:-8080}:8080"
      - "127.0.0.1:${REPLIKIT_ADMIN_PORT:-8081}:8081"
  pg0:
    ports:
      - "127.0.0.1:${REPLIKIT_PG0_PORT-6432}:5432"
"""


def compose_state(**changes: object) -> ClusterState:
    state = ClusterState(
        pg_bin="",
        pg_major=0,
        sync=SyncMode.OFF,
        base_port=6432,
        nodes=[NodeSpec(name="pg0", port=6432)],
        primary="pg0",
        passwords=Passwords(superuser="s", replication="r", app="a"),
        driver="compose",
        compose_file="/stack/docker-compose.yml",
    )
    return state.model_copy(update=changes)


def test_v1_and_v2_calls_differ_only_in_the_program() -> None:
    state = compose_state(compose_project="rkdriver", compose_env_file="/stack/test.env")
    tail = [
        "-f",
        "/stack/docker-compose.yml",
        "--project-directory",
        "/stack",
        "-p",
        "rkdriver",
        "--env-file",
        "/stack/test.env",
        "ps",
        "--services",
        "--filter",
        "status=running",
    ]
    v1 = ComposeDriver(state=state, program=ComposeProgram(("docker-compose",), 1))
    v2 = ComposeDriver(state=state, program=ComposeProgram(("docker", "compose"), 2))
    args = ("ps", "--services", "--filter", "status=running")
    assert v1.command(*args) == ["docker-compose", *tail]
    assert v2.command(*args) == ["docker", "compose", *tail]


def test_a_stack_attached_without_project_or_env_file_uses_compose_defaults() -> None:
    driver = ComposeDriver(state=compose_state(), program=ComposeProgram(("docker-compose",), 1))
    assert driver.command("start", "pg0") == [
        "docker-compose",
        "-f",
        "/stack/docker-compose.yml",
        "--project-directory",
        "/stack",
        "start",
        "pg0",
    ]
    assert driver.logs_hint("pg0").endswith("--project-directory /stack logs pg0")


@pytest.fixture
def fake_bin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty PATH directory of our own, and a fresh detection afterwards."""
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv(OVERRIDE_VARIABLE, raising=False)
    compose_program.cache_clear()
    yield tmp_path
    compose_program.cache_clear()


def script(path: Path, body: str) -> None:
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


def test_v1_is_chosen_when_docker_has_no_compose_plugin(fake_bin: Path) -> None:
    # Docker 20.10 from Debian: 'docker compose' is an unknown command.
    script(fake_bin / "docker", "echo \"docker: 'compose' is not a docker command.\" >&2; exit 1")
    script(fake_bin / "docker-compose", "echo 1.29.2")
    assert compose_program() == ComposeProgram((str(fake_bin / "docker-compose"),), 1)


def test_v2_is_preferred_when_both_work(fake_bin: Path) -> None:
    script(fake_bin / "docker", 'test "$1" = compose && echo v2.29.7')
    script(fake_bin / "docker-compose", "echo 1.29.2")
    assert compose_program() == ComposeProgram((str(fake_bin / "docker"), "compose"), 2)


def test_an_override_that_does_not_run_compose_is_refused(
    fake_bin: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(OVERRIDE_VARIABLE, str(fake_bin / "nothing-here"))
    with pytest.raises(BadInputError, match="does not run docker compose"):
        compose_program()


def test_no_compose_at_all_names_the_packages(fake_bin: Path) -> None:
    with pytest.raises(BadInputError, match=r"apt-get install docker\.io docker-compose"):
        compose_program()


def test_published_ports_come_from_the_env_file_else_the_compose_default() -> None:
    assert published_port(COMPOSE_TEXT, {}, "REPLIKIT_HTTP_PORT") == 8080
    assert published_port(COMPOSE_TEXT, {"REPLIKIT_HTTP_PORT": "7780"}, "REPLIKIT_HTTP_PORT") == (
        7780
    )
    assert published_port(COMPOSE_TEXT, {}, "REPLIKIT_PG0_PORT") == 6432
    assert published_port(COMPOSE_TEXT, {}, "REPLIKIT_GRAFANA_PORT") is None
    assert service_endpoints(COMPOSE_TEXT, {"REPLIKIT_ADMIN_PORT": "7781"}) == ServiceEndpoints(
        url="http://127.0.0.1:8080", admin_url="http://127.0.0.1:7781"
    )
    assert service_endpoints("services: {}", {}) is None


def test_an_unknown_variant_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    result = subprocess.run(
        [str(Path(sys.executable).parent / "replikit"), "compose", "up", "--variant", "hq",
         "--env-file", str(env_file)],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip() == "error: Unknown variant 'hq'; choose default or ha."
    assert not env_file.exists()


def test_the_ha_variant_merges_its_file_under_a_project_of_its_own() -> None:
    program = ComposeProgram(("docker-compose",), 1)
    ha = ComposeStack(
        root=Path("/srv/My Stack"), env_file=Path("/srv/.env"), variant=Variant.HA,
        program=program,
    )  # fmt: skip
    argv = ha.argv("ps")
    assert argv[:5] == [
        "docker-compose", "-f", "/srv/My Stack/docker-compose.yml",
        "-f", "/srv/My Stack/deploy/compose/ha.yml",
    ]  # fmt: skip
    assert argv[argv.index("-p") + 1] == "mystack-ha"
    default = ComposeStack(root=Path("/srv/My Stack"), env_file=Path("/srv/.env"), program=program)
    assert "-p" not in default.argv("ps")


def test_a_compose_stack_refuses_a_backup_from_a_replica_naming_what_it_does_instead() -> None:
    driver = ComposeDriver(state=compose_state(), program=ComposeProgram(("false",), 2))
    with pytest.raises(BadInputError, match=r"from its primary only.*--from primary\.$"):
        ContainerPgBackRest(driver).backup(BackupType.FULL, source=BackupSource.REPLICA)
