"""Read docker-compose.yml the way Docker would, without a Docker engine (docker-compose v1)."""

from __future__ import annotations

import secrets
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"


def compose_env_file(directory: Path) -> Path:
    """An env file with fresh URL-safe passwords, as a user's .env would have."""
    path = directory / "compose.env"
    path.write_text(
        "".join(
            f"REPLIKIT_{name}_PASSWORD={secrets.token_hex(16)}\n"
            for name in ("SUPERUSER", "REPLICATION", "OWNER", "APP", "GRAFANA")
        )
    )
    return path


def compose(*args: str, env_file: Path | None) -> subprocess.CompletedProcess[str]:
    command = shutil.which("docker-compose")
    assert command, "docker-compose is missing; `make setup` installs it"
    options = ["--env-file", str(env_file)] if env_file else ["--env-file", "/dev/null"]
    return subprocess.run(
        [command, *options, "-f", str(COMPOSE_FILE), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
        timeout=60,
    )


def resolved_config(env_file: Path, *options: str) -> dict[str, Any]:
    """The merged file as compose sees it; ``options`` go before ``config`` (``--profile``)."""
    result = compose(*options, "config", env_file=env_file)
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    return config
