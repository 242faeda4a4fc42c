"""Read docker-compose.yml the way Docker would, without a Docker engine (docker-compose v1)."""

from __future__ import annotations

import secrets
import shutil
import subprocess
from collections.abc import Sequence
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
            for name in ("SUPERUSER", "REPLICATION", "OWNER", "APP", "GRAFANA", "POOLER")
        )
        + f"REPLIKIT_BACKUP_PASSPHRASE={secrets.token_hex(16)}\n"
    )
    return path


def compose(
    *args: str,
    env_file: Path | None,
    extra_files: Sequence[Path] = (),
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """docker-compose on docker-compose.yml (and ``extra_files`` merged over it); ``env``
    replaces the process environment (compose prefers it to the env file)."""
    command = shutil.which("docker-compose")
    assert command, "docker-compose is missing; `make setup` installs it"
    options = ["--env-file", str(env_file)] if env_file else ["--env-file", "/dev/null"]
    files = [flag for f in (COMPOSE_FILE, *extra_files) for flag in ("-f", str(f))]
    return subprocess.run(
        [command, *options, *files, *args],
        env=env,
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
        timeout=60,
    )


def resolved_config(
    env_file: Path,
    *options: str,
    extra_files: Sequence[Path] = (),
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The merged file as compose sees it; ``options`` go before ``config`` (``--profile``)."""
    result = compose(*options, "config", env_file=env_file, extra_files=extra_files, env=env)
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    return config
