"""`make setup` (deploy/setup-host.sh) as an ordinary user and as root, with fake system tools.

An ordinary user gets everything that needs no privileges (uv, .venv) and the one command that
installs the rest as root; setup never calls sudo or apt-get for them. Root gets the packages
installed with apt-get. The script runs from a copy, with a PATH of fakes that record their
calls, so nothing on this machine is installed or changed.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PYTHON = "/usr/bin/python3"

RECORDER = """#!/bin/bash
echo "${{0##*/}} $*" >>"{calls}"
"""


def _fake_host(tmp_path: Path, *, uid: int) -> tuple[Path, dict[str, str]]:
    """A copy of the script and a PATH where shellcheck and docker-compose are missing,
    PostgreSQL is present, ``id -u`` answers ``uid`` and every installer records its call."""
    repo = tmp_path / "repo"
    (repo / "deploy").mkdir(parents=True)
    shutil.copy(ROOT / "deploy/setup-host.sh", repo / "deploy/setup-host.sh")
    shutil.copy(ROOT / "deploy/install-patroni.sh", repo / "deploy/install-patroni.sh")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    for tool in ("uv", "apt-get", "sudo"):
        (bin_dir / tool).write_text(RECORDER.format(calls=calls))
    # etcd, pgbackrest, promtool and the Patroni virtualenv are there unless a test removes them.
    (bin_dir / "etcd").write_text("#!/bin/bash\n")
    (bin_dir / "pgbackrest").write_text("#!/bin/bash\n")
    (bin_dir / "promtool").write_text("#!/bin/bash\n")
    venv_bin = tmp_path / "patroni-venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "patroni").write_text("#!/bin/bash\necho patroni 4.1.5\n")
    (venv_bin / "patroni").chmod(0o755)
    grep = shutil.which("grep")
    assert grep
    (bin_dir / "grep").symlink_to(grep)
    (bin_dir / "id").write_text(
        f'#!/bin/bash\nif [ "$1" = -u ]; then echo {uid}; else echo someone; fi\n'
    )
    dirname = shutil.which("dirname")
    assert dirname
    (bin_dir / "dirname").symlink_to(dirname)
    pg_bin = tmp_path / "pg"
    pg_bin.mkdir()
    (pg_bin / "initdb").write_text("#!/bin/bash\n")
    for program in [*bin_dir.iterdir(), pg_bin / "initdb"]:
        if not program.is_symlink():
            program.chmod(0o755)
    env = {
        "PATH": str(bin_dir),
        "PG_BIN": str(pg_bin),
        "REPLIKIT_PYTHON": PYTHON,
        "REPLIKIT_PATRONI_VENV": str(tmp_path / "patroni-venv"),
    }
    return repo, env


def _calls(tmp_path: Path) -> list[str]:
    calls = tmp_path / "calls"
    return calls.read_text().splitlines() if calls.exists() else []


def _run_setup(repo: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["/bin/bash", str(repo / "deploy/setup-host.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.skipif(not Path(PYTHON).exists(), reason="needs the system python3")
def test_an_ordinary_user_gets_the_venv_and_the_one_root_command_and_no_sudo(
    tmp_path: Path,
) -> None:
    repo, env = _fake_host(tmp_path, uid=1000)
    result = _run_setup(repo, env)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "setup: replikit needs shellcheck docker-compose, which only root can install; as root "
        "(e.g. with sudo) run: apt-get install --no-install-recommends shellcheck docker-compose "
        "(then run make setup again)."
    )
    assert _calls(tmp_path) == [f"uv sync --locked --extra dev --python {PYTHON} --quiet"]


@pytest.mark.skipif(not Path(PYTHON).exists(), reason="needs the system python3")
def test_root_installs_the_missing_packages_with_apt_get(tmp_path: Path) -> None:
    repo, env = _fake_host(tmp_path, uid=0)
    result = _run_setup(repo, env)
    assert result.returncode == 0, result.stderr
    assert _calls(tmp_path) == [
        "apt-get update -qq",
        "apt-get install -y -qq --no-install-recommends shellcheck docker-compose",
        f"uv sync --locked --extra dev --python {PYTHON} --quiet",
    ]


@pytest.mark.skipif(not Path(PYTHON).exists(), reason="needs the system python3")
def test_root_installs_etcd_for_the_patroni_manager_with_the_other_packages(
    tmp_path: Path,
) -> None:
    repo, env = _fake_host(tmp_path, uid=0)
    (tmp_path / "bin" / "etcd").unlink()
    result = _run_setup(repo, env)
    # setup's own apt-get call carries etcd-server with the other packages (the recording
    # apt-get installs nothing, so install-patroni.sh then asks for it once more).
    assert _calls(tmp_path)[:2] == [
        "apt-get update -qq",
        "apt-get install -y -qq --no-install-recommends shellcheck docker-compose etcd-server",
    ], result.stderr


@pytest.mark.skipif(not Path(PYTHON).exists(), reason="needs the system python3")
def test_root_installs_pgbackrest_for_archiving_with_the_other_packages(tmp_path: Path) -> None:
    repo, env = _fake_host(tmp_path, uid=0)
    (tmp_path / "bin" / "pgbackrest").unlink()
    result = _run_setup(repo, env)
    assert result.returncode == 0, result.stderr
    assert _calls(tmp_path)[:2] == [
        "apt-get update -qq",
        "apt-get install -y -qq --no-install-recommends shellcheck docker-compose pgbackrest",
    ]


@pytest.mark.skipif(not Path(PYTHON).exists(), reason="needs the system python3")
def test_promtool_is_taken_out_of_the_prometheus_package_not_installed(tmp_path: Path) -> None:
    repo, env = _fake_host(tmp_path, uid=0)
    (tmp_path / "bin" / "promtool").unlink()
    for tool in ("mktemp", "rm"):
        program = shutil.which(tool)
        assert program
        (tmp_path / "bin" / tool).symlink_to(program)
    # No .deb was downloaded, so the real dpkg-deb would fail too.
    recorder = RECORDER.format(calls=tmp_path / "calls")
    (tmp_path / "bin" / "dpkg-deb").write_text(recorder + "exit 1\n")
    (tmp_path / "bin" / "dpkg-deb").chmod(0o755)
    result = _run_setup(repo, env)
    calls = _calls(tmp_path)
    assert "apt-get download -qq prometheus" in calls, calls
    assert not any(call.startswith("apt-get install") and "prometheus" in call for call in calls)
    # The recording apt-get downloads nothing, so there is no promtool: setup says so and fails.
    assert result.returncode == 1
    assert "promtool could not be extracted" in result.stderr
