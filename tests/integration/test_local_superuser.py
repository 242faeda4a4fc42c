"""The database superuser on the local socket belongs to the OS account that owns the cluster.

init-primary.sh maps whoever runs it (the ``postgres`` account as root or in a container, the
user themself otherwise) to the superuser with the peer map ``replikit``; every other OS
account, and every other database role, is refused on the socket. Without the map an ordinary
user's cluster could not even create its roles (peer auth only admitted an OS account named
``postgres``).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from replication.pgbin import PgBinaries, find_pg_binaries
from replication.server_user import ServerUser
from tests.integration.clusters import free_base_port, reachable_temp_dir
from tests.integration.compose_files import ROOT


@dataclass(frozen=True)
class SocketPrimary:
    """A running primary built by init-primary.sh that listens on a Unix socket."""

    owner: ServerUser
    binaries: PgBinaries
    socket_dir: Path
    port: int
    passwords: dict[str, str]

    def psql(
        self, *, user: str, sql: str, as_account: list[str] | None = None, password: str = ""
    ) -> subprocess.CompletedProcess[str]:
        """Run one statement through the socket as ``user``, from the owning OS account
        unless ``as_account`` (a runuser prefix) names another one."""
        argv = [
            self.binaries.program("psql"),
            f"--host={self.socket_dir}",
            f"--port={self.port}",
            f"--username={user}",
            "--dbname=postgres",
            "--no-psqlrc",
            "--tuples-only",
            "--no-align",
            f"--command={sql}",
        ]
        full = [*as_account, *argv] if as_account else self.owner.argv(argv)
        return subprocess.run(
            full,
            env={**os.environ, "PGPASSWORD": password, "PGCONNECT_TIMEOUT": "5"},
            cwd="/",
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )


@pytest.fixture(scope="module")
def socket_primary() -> Iterator[SocketPrimary]:
    owner = ServerUser.detect()
    binaries = find_pg_binaries()
    root = reachable_temp_dir("replikit-socket-")
    scripts = root / "scripts"
    shutil.copytree(ROOT / "replication/scripts", scripts)
    socket_dir = root / "run"
    owner.make_dir(socket_dir, mode=0o755)
    pgdata = root / "pg0"
    owner.make_dir(pgdata, mode=0o700)
    port = free_base_port(1)
    passwords = {
        name: secrets.token_urlsafe(16) for name in ("postgres", "replicator", "owner", "app")
    }
    env = {
        "PGDATA": str(pgdata),
        "PGPORT": str(port),
        "PGBIN": str(binaries.directory),
        "REPLIKIT_NODE_NAME": "pg0",
        "REPLIKIT_SOCKET_DIR": str(socket_dir),
        "REPLIKIT_SUPERUSER_PASSWORD": passwords["postgres"],
        "REPLIKIT_REPLICATION_PASSWORD": passwords["replicator"],
        "REPLIKIT_OWNER_PASSWORD": passwords["owner"],
        "REPLIKIT_APP_PASSWORD": passwords["app"],
    }
    pg_ctl = binaries.program("pg_ctl")
    try:
        owner.run(["bash", str(scripts / "init-primary.sh")], env=env, what="init-primary.sh")
        owner.run(
            [pg_ctl, f"--pgdata={pgdata}", f"--log={socket_dir / 'pg0.log'}", "--wait", "start"],
            what="starting pg0",
        )
        yield SocketPrimary(owner, binaries, socket_dir, port, passwords)
    finally:
        owner.run(
            [pg_ctl, f"--pgdata={pgdata}", "--mode=immediate", "--wait", "stop"],
            what="stopping pg0",
            check=False,
        )
        shutil.rmtree(root, ignore_errors=True)


def test_the_owning_account_is_the_superuser_on_the_socket(
    socket_primary: SocketPrimary,
) -> None:
    result = socket_primary.psql(
        user="postgres",
        sql="SELECT current_user, rolsuper FROM pg_roles WHERE rolname = 'postgres'",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "postgres|t"


def test_the_peer_map_names_only_the_owning_account(socket_primary: SocketPrimary) -> None:
    result = socket_primary.psql(
        user="postgres",
        sql="SELECT map_name, sys_name, pg_username FROM pg_ident_file_mappings "
        "UNION ALL SELECT 'hba', array_to_string(user_name, ','), "
        "array_to_string(options, ',') FROM pg_hba_file_rules WHERE type = 'local'",
    )
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.split()) == sorted(
        [f"replikit|{socket_primary.owner.name}|postgres", "hba|postgres|map=replikit"]
    )


@pytest.mark.parametrize("role", ["app", "replicator"])
def test_other_roles_are_refused_on_the_socket_even_with_their_password(
    socket_primary: SocketPrimary, role: str
) -> None:
    result = socket_primary.psql(user=role, sql="SELECT 1", password=socket_primary.passwords[role])
    assert result.returncode != 0
    assert "no pg_hba.conf entry" in result.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="trying another OS account needs root")
def test_another_os_account_cannot_be_the_superuser_even_with_its_password(
    socket_primary: SocketPrimary,
) -> None:
    result = socket_primary.psql(
        user="postgres",
        sql="SELECT 1",
        as_account=["runuser", "-u", "nobody", "--"],
        password=socket_primary.passwords["postgres"],
    )
    assert result.returncode != 0
    assert "Peer authentication failed" in result.stderr
