"""Backups of the default compose stack on a real Docker engine: every node archives into the
stack's repository volume, the archive continues on the new timeline after a crash failover,
`backup`, `backup list` and `backup verify` work through the compose driver, a target outside
the window is refused, and a restore to a time between two uploads builds a new stack that
holds exactly the first. The HA variant's archive continues across a Patroni leader change."""

from __future__ import annotations

import json
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from replication.compose.ha import HaStack
from replication.compose.stack import ComposeStack, Variant
from replication.managers.patroni.config import DEFAULT_TTL
from tests.compose.stacks import (
    ROOT,
    attach,
    compose_stack,
    leftovers,
    replikit,
    replikit_result,
    reserved_addresses,
)
from tests.compose.test_compose_stack import superuser_fetch, upload

pytestmark = [pytest.mark.compose, pytest.mark.destructive, pytest.mark.slow]


def replikit_json(*args: str) -> dict[str, object]:
    parsed: dict[str, object] = json.loads(replikit(*args, "--json"))
    return parsed


def upload_until_accepted(stack: ComposeStack, seed: int, timeout: float = 60.0) -> str:
    """The new image's id; retried while the service finds a new primary."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            response = upload(stack, seed)
        except httpx.HTTPError:
            response = None
        if response is not None and response.status_code == 201:
            return str(response.json()["id"])
        assert time.monotonic() < deadline, response.text if response is not None else "no answer"
        time.sleep(0.5)


def test_archive_follows_a_failover_and_a_restore_between_two_uploads_brings_back_the_first(
    docker_images: None,
) -> None:
    with (
        compose_stack("backup", REPLIKIT_UPLOAD_RATE_LIMIT="0") as stack,
        tempfile.TemporaryDirectory(prefix="replikit-compose-backup-") as scratch,
    ):
        project = stack.project_name
        assert project is not None
        source = str(Path(scratch) / "compose")
        attach(stack, source)
        taken = replikit_json("backup", "--data-dir", source)
        assert (taken["type"], taken["source"]) == ("full", "pg0")

        first = upload_until_accepted(stack, 1)
        time.sleep(1.5)
        target = datetime.now(UTC)
        time.sleep(1.5)
        second = upload_until_accepted(stack, 2)

        # A crash of the primary and a failover: the new primary archives on timeline 2.
        replikit("cluster", "kill", "primary", "--data-dir", source)
        replikit("cluster", "failover", "--data-dir", source)
        third = upload_until_accepted(stack, 3)
        verified = replikit_json("backup", "verify", "--data-dir", source)
        assert verified["ok"] is True, verified
        assert verified["missing"] == []
        assert int(str(verified["last_wal"])[:8], 16) == 2, verified
        after = replikit_json("backup", "--type", "incr", "--data-dir", source)
        assert after["source"] != "pg0", after
        assert after["type"] == "incr", after
        listing = replikit_json("backup", "list", "--data-dir", source)
        assert len(listing["backups"]) == 2  # type: ignore[arg-type]

        refused = replikit_result(
            "restore", "--from", source, "--data-dir", str(Path(scratch) / "never"),
            "--to", "2020-01-01T00:00:00+00:00",
        )  # fmt: skip
        assert refused.returncode == 2  # bad input
        assert "is outside the recoverable window, " in refused.stderr + refused.stdout
        assert not (Path(scratch) / "never").exists()

        restored_dir = Path(scratch) / "restored"
        restored_project = f"{project}r"
        with reserved_addresses() as reserved:
            try:
                result = replikit_json(
                    "restore", "--from", source, "--data-dir", str(restored_dir),
                    "--to", target.isoformat(), "--project", restored_project,
                    "--base-port", reserved["REPLIKIT_HTTP_PORT"],
                )  # fmt: skip
                assert result["replicas"] == 2
                print(f"compose restore: {result['seconds']} s, steps {result['steps']}")
                restored = ComposeStack(
                    root=ROOT, env_file=restored_dir / ".env", project_name=restored_project
                )
                rows = superuser_fetch(restored, "pg0", "SELECT id::text FROM images")
                assert [row[0] for row in rows] == [first], (first, second, third)
                # The new stack archives into its own repository, and takes backups.
                replikit("backup", "--data-dir", str(restored_dir))
                assert replikit_json("backup", "verify", "--data-dir", str(restored_dir))["ok"]
            finally:
                replikit_result(
                    "compose", "down", "--env-file", str(restored_dir / ".env"),
                    "-p", restored_project, "--volumes",
                )  # fmt: skip
        assert leftovers(restored_project) == {"containers": [], "volumes": [], "networks": []}

        # Scheduled backups: the backup service, here every 2 s and each one full; the
        # retention keeps the newest 2 full backups (with their incremental ones).
        before = {backup["label"] for backup in listing["backups"]}  # type: ignore[attr-defined]
        stack.run(
            "up", "-d", "--no-build", "backup", what="scheduling backups",
            overrides={"REPLIKIT_BACKUP_INTERVAL": "2", "REPLIKIT_BACKUP_FULL_EVERY": "1"},
        )  # fmt: skip
        deadline = time.monotonic() + 240
        while True:
            backups: list[dict[str, str]] = replikit_json("backup", "list", "--data-dir", source)[
                "backups"
            ]  # type: ignore[assignment]
            scheduled = [backup for backup in backups if backup["label"] not in before]
            if len(scheduled) >= 2 and len(scheduled) == len(backups):
                break
            assert time.monotonic() < deadline, backups
            time.sleep(3)
        assert {backup["type"] for backup in scheduled} == {"full"}
        assert len(backups) == 2, backups  # the first full backup and its incr expired


def test_the_ha_variant_archives_on_across_a_patroni_leader_change(ha_images: None) -> None:
    with (
        compose_stack("habackup", Variant.HA, REPLIKIT_UPLOAD_RATE_LIMIT="0") as stack,
        tempfile.TemporaryDirectory(prefix="replikit-ha-backup-") as scratch,
    ):
        ha = HaStack(stack)
        leader = ha.wait_settled()
        source = str(Path(scratch) / "ha")
        attach(stack, source)
        taken = replikit_json("backup", "--data-dir", source)
        assert taken["source"] == leader
        upload_until_accepted(stack, 1)

        # No command: Patroni elects a new leader, which archives on its new timeline.
        ha.crash(leader)
        new = ha.wait_writer(other_than=leader, timeout=DEFAULT_TTL + 30)
        upload_until_accepted(stack, 2)
        verified = replikit_json("backup", "verify", "--data-dir", source)
        assert verified["ok"] is True, verified
        assert int(str(verified["last_wal"])[:8], 16) >= 2, verified
        after = replikit_json("backup", "--type", "incr", "--data-dir", source)
        assert after["source"] == new, after
