"""The compose stack's generated settings and the images' wheel pins, without Docker."""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
from pathlib import Path

import pytest

from replication.compose import env as compose_env
from replication.compose.stack import REQUIREMENTS, wheel_pins

ROOT = Path(__file__).resolve().parents[2]


def test_missing_settings_generate_distinct_passwords_and_keep_what_is_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(compose_env, "docker_subnets", list)
    values = compose_env.missing_settings({"REPLIKIT_APP_PASSWORD": "mine"})
    assert "REPLIKIT_APP_PASSWORD" not in values
    assert "REPLIKIT_OWNER_PASSWORD" in compose_env.PASSWORD_KEYS
    passwords = [values[key] for key in compose_env.PASSWORD_KEYS if key in values]
    assert len(passwords) == len(compose_env.PASSWORD_KEYS) - 1 == 8
    assert len(set(passwords)) == 8
    assert all(len(p) == 48 for p in passwords)
    assert values["REPLIKIT_HTTP_PORT"] == "8080"
    subnet = ipaddress.ip_network(values["REPLIKIT_SUBNET"])
    assert ipaddress.ip_address(values["REPLIKIT_LB_ADDRESS"]) in subnet
    assert not ipaddress.ip_network(values["REPLIKIT_PEER_SUBNET"]).overlaps(subnet)


def test_the_subnet_avoids_every_docker_network() -> None:
    taken = [ipaddress.ip_network("172.31.240.0/24"), ipaddress.ip_network("172.31.242.0/23")]
    assert compose_env.free_subnet(taken) == "172.31.241.0/24"
    taken.append(ipaddress.ip_network("172.31.241.0/24"))
    assert compose_env.free_subnet(taken) == "172.31.244.0/24"


def test_an_existing_env_file_only_gains_missing_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(compose_env, "docker_subnets", list)
    path = tmp_path / ".env"
    path.write_text("REPLIKIT_HTTP_PORT=9999\n")
    added = compose_env.ensure_env_file(path)
    assert "REPLIKIT_HTTP_PORT" not in added
    assert path.read_text().startswith("REPLIKIT_HTTP_PORT=9999\n")
    assert compose_env.ensure_env_file(path) == {}


def test_wheel_pins_follow_markers_for_the_images_python() -> None:
    pins = wheel_pins(
        "numpy==2.4.6 ; python_full_version < '3.12' \\\n"
        "    --hash=sha256:aa\n"
        "numpy==2.5.5 ; python_full_version >= '3.12' \\\n"
        "colorama==0.4.6 ; sys_platform == 'win32'\n"
        "# a comment\n"
        "alembic==1.20.1\n"
    )
    assert pins == ["numpy==2.5.5", "alembic==1.20.1"]


@pytest.mark.parametrize(
    ("path", "extras"),
    [
        ("deploy/service/requirements.txt", []),
        (str(REQUIREMENTS), ["--extra", "experiments"]),
    ],
)
def test_image_requirements_match_the_lock(path: str, extras: list[str]) -> None:
    """Regenerate with `make requirements` after changing dependencies."""
    uv = shutil.which("uv") or str(ROOT / ".tools/bin/uv")
    exported = subprocess.run(
        [uv, "export", "--frozen", "--no-dev", "--no-emit-project", "--no-header", *extras,
         "--format", "requirements-txt"],
        capture_output=True, text=True, check=True, cwd=ROOT,
    ).stdout  # fmt: skip
    assert (ROOT / path).read_text() == exported, "run `make requirements`"
